// The teacher at the paper's shape (ViT-B/16, 384 px, random weights): inference and training
// images/s in float32 and with bf16 autocast (float32 master weights, as torch.autocast), against
// the matmul rates measured in the same run.
//   bench_teacher [batch] [reps] [cpu|cuda] [inference batch]
#include <cstdio>
#include <cstdlib>

#include "bench_util.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/models/layers.h"
#include "emovlm/models/vit.h"
#include "emovlm/train/trainer.h"

using namespace emovlm;

int main(int argc, char** argv) {
  const int64_t B = argc > 1 ? std::stoll(argv[1]) : 8;
  const int reps = argc > 2 ? std::stoi(argv[2]) : 3;
  const torch::Device device(argc > 3 ? argv[3] : "cpu");
  const int64_t Bi = argc > 4 ? std::stoll(argv[4]) : B;
  compat::set_num_threads(0);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  VitConfig c;  // ViT-B/16 at 384 px
  c.num_labels = 8;
  VitForImageClassification m(c);
  m->to(device);
  bench::fast_random_fill(*m);
  const double flops_fwd = 2.0 * (m->num_parameters() - 768 * 577) * 577 + 4.0 * 12 * 577 * 577 * 768;  // per image
  torch::Tensor x = torch::randn({std::max(B, Bi), 3, 384, 384}, torch::TensorOptions().device(device));
  torch::Tensor y = torch::randint(0, 8, {B}, torch::TensorOptions().dtype(torch::kInt64).device(device));
  std::printf("ViT-B/16-384, %s, train batch %lld, inference batch %lld, threads %d\n", device.str().c_str(),
              static_cast<long long>(B), static_cast<long long>(Bi), torch::get_num_threads());
  torch::optim::Adam opt(m->parameters(), torch::optim::AdamOptions(3e-5).weight_decay(1e-5));
  for (bool autocast : {false, true}) {
    const char* name = autocast ? "bf16 autocast" : "f32";
    const double mm = bench::matmul_rate(autocast ? torch::kBFloat16 : torch::kFloat32, device, 2048, 3);
    m->eval();
    double ti;
    {
      torch::NoGradGuard ng;
      torch::Tensor xi = x.narrow(0, 0, Bi);
      ti = bench::median_seconds(
          [&] {
            compat::AutocastGuard ac(device.type(), torch::kBFloat16, autocast);
            m->forward(xi);
          },
          reps);
    }
    m->train();
    torch::Tensor xt = x.narrow(0, 0, B);
    // a training step as `emovlm teacher train` takes it (multi_tensor: the trainer's _foreach
    // Adam) and with torch::optim::Adam's own step (about ten kernels per parameter tensor)
    auto train_step = [&](bool multi_tensor) {
      opt.zero_grad();
      torch::Tensor logits;
      {
        compat::AutocastGuard ac(device.type(), torch::kBFloat16, autocast);
        logits = m->forward(xt);
      }
      torch::cross_entropy_loss(logits.to(torch::kFloat32), y).backward();
      if (multi_tensor)
        multi_tensor_adam_step(opt, false);
      else
        opt.step();
    };
    const double tt = bench::median_seconds([&] { train_step(true); }, reps);
    const double tt_torch = bench::median_seconds([&] { train_step(false); }, reps);
    std::printf("%s (matmul 2048^3 %.0f GFLOP/s): inference %.2f images/s (%.0f%% of the rate), training %.2f images/s (%.0f%%); "
                "training with torch's Adam step %.2f images/s\n",
                name, mm / 1e9, Bi / ti, 100 * flops_fwd * Bi / ti / mm, B / tt, 100 * 3 * flops_fwd * B / tt / mm, B / tt_torch);
  }
  {
    // inference with the weights themselves in bf16 (no per-call casts)
    m->to(torch::kBFloat16);
    m->eval();
    torch::NoGradGuard ng;
    torch::Tensor xi = x.narrow(0, 0, Bi).to(torch::kBFloat16);
    const double ti = bench::median_seconds([&] { m->forward(xi); }, reps);
    std::printf("bf16 weights: inference %.2f images/s\n", Bi / ti);
  }
  return 0;
}
