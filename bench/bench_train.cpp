// Stage 1 at the published shapes with random weights: the memory of the frozen base in bf16 vs
// NF4 (counted from the model's own layers), NF4 quantize/dequantize speed on one 7B MLP matrix,
// and tokens/s of a LoRA training step (forward + backward + AdamW) with a bf16 and an NF4 base.
// With `ckpt`, also the step with gradient checkpointing of the decoder layers.
//   bench_train [2b|7b] [tokens] [steps] [cpu|cuda] [ckpt]
#include <cstdio>

#include "bench_util.h"
#include "emovlm/core/cuda.h"
#include "emovlm/core/memory.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/models/layers.h"
#include "emovlm/models/lora.h"
#include "emovlm/models/nf4.h"
#include "emovlm/models/qwen2vl.h"
#include "emovlm/train/trainer.h"

using namespace emovlm;

namespace {

void memory_report(const char* name, const Qwen2VLConfig& cfg) {
  Qwen2VL m(cfg);  // parameters allocated, never touched
  double dense = 0, nf4 = 0, nf4_dq = 0, total = 0;
  for (const auto& item : m->named_modules()) {
    auto* lin = dynamic_cast<LinearImpl*>(item.value().get());
    if (!lin || item.key() == "lm_head") continue;
    const double n = static_cast<double>(lin->weight.numel());
    dense += n;
    nf4 += n / 2 + 4 * n / 64;
    nf4_dq += n / 2 + n / 64 + 4 * n / (64 * 256);
  }
  for (const auto& p : m->parameters()) total += static_cast<double>(p.numel());
  if (cfg.text.tie_word_embeddings)
    total -= static_cast<double>(m->lm_head->weight.numel());  // shares the embeddings
  const double rest = total - dense;  // embeddings, lm_head, norms, biases: bf16
  std::printf(
      "%s: %.2fB parameters; bf16 %.2f GB; NF4 base %.2f GB; NF4 + double quantization %.2f GB\n",
      name, total / 1e9, 2 * total / 1e9, (nf4 + 2 * rest) / 1e9, (nf4_dq + 2 * rest) / 1e9);
}

}  // namespace

int main(int argc, char** argv) {
  const std::string shape = argc > 1 ? argv[1] : "2b";
  const int64_t T = argc > 2 ? std::stoll(argv[2]) : 128;
  const int steps = argc > 3 ? std::stoi(argv[3]) : 3;
  const torch::Device device(argc > 4 ? argv[4] : "cpu");
  const bool with_ckpt = argc > 5 && std::string(argv[5]) == "ckpt";
  compat::set_num_threads(0);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  memory_report("Qwen2-VL-2B", Qwen2VLConfig::qwen2vl_2b());
  memory_report("Qwen2-VL-7B", Qwen2VLConfig::qwen2vl_7b());

  torch::Tensor w = torch::randn({18944, 3584}, torch::TensorOptions().device(device)) * 0.02;
  NF4Tensor q;
  double tq = bench::seconds_of([&] { q = nf4_quantize(w, 64, true); });
  double td = bench::median_seconds([&] { q.dequantize(torch::kBFloat16); }, 3);
  std::printf(
      "NF4 on one 18944x3584 matrix: quantize %.2f s, dequantize to bf16 %.3f s (%.1f M "
      "values/s)\n",
      tq, td, w.numel() / td / 1e6);

  Qwen2VLConfig cfg = shape == "7b" ? Qwen2VLConfig::qwen2vl_7b() : Qwen2VLConfig::qwen2vl_2b();
  std::vector<std::pair<bool, bool>> variants = {{false, false},
                                                 {true, false}};  // (NF4, checkpointing)
  if (with_ckpt) variants.push_back({true, true});
  for (auto [use_nf4, ckpt] : variants) {
    reset_peak_resident();  // each variant's own peak
    reset_cuda_peak();
    Qwen2VL m(cfg);
    // the NF4 base as `tune --qlora` loads it: bf16 on the host, quantized layer by layer onto the
    // device
    m->to(use_nf4 ? torch::Device(torch::kCPU) : device, torch::kBFloat16);
    bench::fast_random_fill(*m);
    for (auto& p : m->parameters()) p.set_requires_grad(false);
    if (use_nf4) {
      quantize_linears_nf4(
          *m, true, [](const std::string& n) { return n != "lm_head"; }, device);
      m->to(device);
    }
    LoraConfig lc;
    apply_lora(*m, lc, 0);
    const double load_peak = peak_resident_gib();  // random bf16 weights, then NF4: the load path
    const double loaded = resident_gib();
    const double gpu_load_peak = cuda_peak_allocated_gib();
    reset_peak_resident();  // training's own peak from here
    reset_cuda_peak();
    m->train();
    m->model->gradient_checkpointing = ckpt;
    std::vector<torch::Tensor> params;
    for (auto& p : m->parameters())
      if (p.requires_grad()) params.push_back(p);
    torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-4));
    torch::Tensor ids = torch::randint(0, 150000, {1, T},
                                       torch::TensorOptions().dtype(torch::kInt64).device(device));
    Qwen2VLInputs in{ids, torch::ones_like(ids), {}, {}};
    auto step = [&] {
      opt.zero_grad();
      torch::Tensor logits = m->forward(in).logits;
      torch::nn::functional::cross_entropy(logits[0].narrow(0, 0, T - 1).to(torch::kFloat32),
                                           ids[0].narrow(0, 1, T - 1))
          .backward();
      multi_tensor_adam_step(opt, /*adamw=*/true);  // the training loop's step
    };
    double t = bench::median_seconds(step, steps, 1);
    std::printf(
        "%s %s LoRA step, %lld tokens, %s base%s: %.3f s median, %.1f tokens/s, peak RSS %.2f GiB "
        "in training "
        "(%.2f GiB while loading, %.2f GiB resident after)\n",
        shape.c_str(), device.str().c_str(), static_cast<long long>(T), use_nf4 ? "NF4" : "bf16",
        ckpt ? ", gradient checkpointing" : "", t, T / t, peak_resident_gib(), load_peak, loaded);
    if (device.is_cuda())
      std::printf("  GPU memory allocated: peak %.2f GiB in training, %.2f GiB while loading\n",
                  cuda_peak_allocated_gib(), gpu_load_peak);
  }
  return 0;
}
