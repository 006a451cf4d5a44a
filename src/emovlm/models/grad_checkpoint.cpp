// Gradient checkpointing as a custom autograd function.
#include "emovlm/models/grad_checkpoint.h"

#include <ATen/autocast_mode.h>

#include "emovlm/core/torch_compat.h"

namespace emovlm {

namespace {

// What the backward pass needs to run the forward again, held by the autograd graph.
struct Recompute : torch::CustomClassHolder {
  std::function<torch::Tensor(const torch::Tensor&)> fn;
  torch::Device device{torch::kCPU};
  torch::Tensor cpu_rng, device_rng;  // generator states at the forward
  bool autocast = false;
  torch::ScalarType autocast_dtype = torch::kBFloat16;
};

const at::Generator& generator(torch::Device d) {
  return at::globalContext().defaultGenerator(d);
}

struct CheckpointFunction : torch::autograd::Function<CheckpointFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, torch::Tensor x,
                               c10::intrusive_ptr<Recompute> r) {
    r->device = x.device();
    r->cpu_rng = generator(torch::kCPU).get_state();
    if (!x.device().is_cpu()) r->device_rng = generator(x.device()).get_state();
    r->autocast = compat::AutocastGuard::is_enabled(x.device().type());
    if (r->autocast) r->autocast_dtype = compat::AutocastGuard::dtype(x.device().type());
    ctx->saved_data["recompute"] = c10::IValue::make_capsule(r);
    ctx->save_for_backward({x});
    torch::NoGradGuard ng;
    return r->fn(x);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto r =
        c10::static_intrusive_pointer_cast<Recompute>(ctx->saved_data["recompute"].toCapsule());
    torch::Tensor x = ctx->get_saved_variables()[0].detach().requires_grad_(true);
    // Run the forward again from the forward's RNG state, then put the generators back.
    at::Generator cpu = generator(torch::kCPU);
    torch::Tensor cpu_now = cpu.get_state(), device_now;
    cpu.set_state(r->cpu_rng);
    if (r->device_rng.defined()) {
      at::Generator dev = generator(r->device);
      device_now = dev.get_state();
      dev.set_state(r->device_rng);
    }
    torch::Tensor y;
    {
      torch::AutoGradMode on(true);
      compat::AutocastGuard ac(r->device.type(), r->autocast_dtype, r->autocast);
      y = r->fn(x);
    }
    cpu.set_state(cpu_now);
    if (device_now.defined()) {
      at::Generator dev = generator(r->device);
      dev.set_state(device_now);
    }
    torch::autograd::backward({y}, {grads[0]});
    return {x.grad(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor checkpointed(std::function<torch::Tensor(const torch::Tensor&)> fn,
                           const torch::Tensor& x) {
  if (!torch::GradMode::is_enabled()) return fn(x);
  auto r = c10::make_intrusive<Recompute>();
  r->fn = std::move(fn);
  // The output must carry a gradient edge even when x does not (frozen embeddings under LoRA):
  // a leaf that requires grad stands in for it, as transformers' enable_input_require_grads.
  return CheckpointFunction::apply(x.requires_grad() ? x : x.detach().requires_grad_(true), r);
}

}  // namespace emovlm
