// The teacher at the paper's shape (ViT-B/16, 384 px, random weights): inference and training
// images/s, float32 and bf16, against the matmul rates measured in the same run.
//   bench_teacher [batch] [reps]
#include <cstdio>
#include <cstdlib>

#include "bench_util.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/models/layers.h"
#include "emovlm/models/vit.h"

using namespace emovlm;

int main(int argc, char** argv) {
  const int64_t B = argc > 1 ? std::stoll(argv[1]) : 8;
  const int reps = argc > 2 ? std::stoi(argv[2]) : 3;
  compat::set_num_threads(0);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  VitConfig c;  // ViT-B/16 at 384 px
  c.num_labels = 8;
  VitForImageClassification m(c);
  bench::fast_random_fill(*m);
  const double flops_fwd = 2.0 * (m->num_parameters() - 768 * 577) * 577 + 4.0 * 12 * 577 * 577 * 768;  // per image
  torch::Tensor x = torch::randn({B, 3, 384, 384});
  torch::Tensor y = torch::randint(0, 8, {B}, torch::kInt64);
  for (auto dt : {torch::kFloat32, torch::kBFloat16}) {
    const char* name = dt == torch::kFloat32 ? "f32" : "bf16";
    const double mm = bench::matmul_rate(dt, torch::kCPU, 1024, 3);
    m->to(dt);
    m->eval();
    double ti;
    {
      torch::NoGradGuard ng;
      ti = bench::median_seconds([&] { m->forward(x.to(dt)); }, reps);
    }
    if (dt != torch::kFloat32) {
      // libtorch 1.13's CPU Adam asserts on bf16 parameters (addcmul_): bf16 training needs float32
      // master weights (the autocast path, not on this build); inference only here.
      std::printf("%s (matmul %.0f GFLOP/s): inference %.2f images/s (%.0f%% of the rate), batch %lld\n", name, mm / 1e9,
                  B / ti, 100 * flops_fwd * B / ti / mm, static_cast<long long>(B));
      continue;
    }
    m->train();
    torch::optim::Adam opt(m->parameters(), torch::optim::AdamOptions(3e-5).weight_decay(1e-5));
    double tt = bench::median_seconds(
        [&] {
          opt.zero_grad();
          torch::cross_entropy_loss(m->forward(x.to(dt)).to(torch::kFloat32), y).backward();
          opt.step();
        },
        reps);
    std::printf("%s (matmul %.0f GFLOP/s): inference %.2f images/s (%.0f%% of the rate), training %.2f images/s (%.0f%%), batch %lld\n",
                name, mm / 1e9, B / ti, 100 * flops_fwd * B / ti / mm, B / tt, 100 * 3 * flops_fwd * B / tt / mm,
                static_cast<long long>(B));
  }
  return 0;
}
