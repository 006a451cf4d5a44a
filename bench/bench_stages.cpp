// Stages 2 and 3 from a cache: one epoch over 100,000 cached images (3584-d features, 8 classes)
// of the distillation head ([1024], KD loss, Adam) and of the concat gate; images/s and the
// head's FLOP rate against the fp32 matmul rate measured in the same run.
//   bench_stages [images] [batch]
#include <cstdio>

#include "bench_util.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/models/gates.h"
#include "emovlm/models/heads.h"
#include "emovlm/models/weights.h"

using namespace emovlm;

int main(int argc, char** argv) {
  const int64_t N = argc > 1 ? std::stoll(argv[1]) : 100000,
                B = argc > 2 ? std::stoll(argv[2]) : 64;
  const bool bf16 = argc > 3 ? std::string(argv[3]) == "bf16" : true;
  const int64_t D = 3584, C = 8;
  compat::set_num_threads(0);
  torch::manual_seed(0);
  torch::Tensor feats = torch::randn({N, D}), teacher = torch::randn({N, C}),
                y = torch::randint(0, C, {N}, torch::kInt64);
  const double mm = bench::matmul_rate(torch::kFloat32, torch::kCPU, 1024, 3);
  std::printf("images %lld, batch %lld, threads %d; fp32 matmul 1024^3: %.1f GFLOP/s\n",
              static_cast<long long>(N), static_cast<long long>(B), torch::get_num_threads(),
              mm / 1e9);

  DistillHeadConfig hc;
  hc.in_dim = D;
  hc.hidden = {1024};
  hc.num_classes = C;
  hc.compute_dtype = bf16 ? ComputeDtype::bf16 : ComputeDtype::f32;
  DistillHead head(hc);
  const double mm16 = bench::matmul_rate(torch::kBFloat16, torch::kCPU, 1024, 3);
  std::printf("head compute %s; bf16 matmul 1024^3: %.1f GFLOP/s\n", bf16 ? "bf16" : "f32",
              mm16 / 1e9);
  torch::optim::Adam opt(head->parameters(), torch::optim::AdamOptions(1e-3).weight_decay(1e-4));
  torch::Tensor order = torch::randperm(N);
  double t = bench::seconds_of([&] {
    for (int64_t i = 0; i < N; i += B) {
      torch::Tensor idx = order.narrow(0, i, std::min(B, N - i));
      opt.zero_grad();
      kd_loss(head->forward(feats.index_select(0, idx)), teacher.index_select(0, idx),
              y.index_select(0, idx))
          .loss.backward();
      opt.step();
    }
  });
  const double flops = 6.0 * N * count_parameters(*head);  // forward + backward
  const double rate = bf16 ? mm16 : mm;
  std::printf("stage 2 epoch: %.2f s, %.0f images/s, %.1f GFLOP/s = %.0f%% of the %s matmul rate\n",
              t, N / t, flops / t / 1e9, 100 * flops / t / rate, bf16 ? "bf16" : "f32");

  GateConfig gc;
  gc.num_classes = C;
  Gate gate = make_gate(gc);
  torch::optim::Adam gopt(gate->parameters(), torch::optim::AdamOptions(1e-3).weight_decay(1e-4));
  torch::Tensor vlm =
      torch::nn::functional::one_hot(torch::randint(0, C, {N}), C).to(torch::kFloat32);
  torch::Tensor hl;
  double th = bench::seconds_of([&] {
    torch::NoGradGuard ng;
    head->eval();
    hl = head->forward(feats);
  });
  double tg = bench::seconds_of([&] {
    for (int64_t i = 0; i < N; i += B) {
      torch::Tensor idx = order.narrow(0, i, std::min(B, N - i));
      gopt.zero_grad();
      torch::cross_entropy_loss(gate->forward(vlm.index_select(0, idx), hl.index_select(0, idx)),
                                y.index_select(0, idx))
          .backward();
      gopt.step();
    }
  });
  std::printf("stage 3: head logits for all images %.2f s; gate epoch %.2f s, %.0f images/s\n", th,
              tg, N / tg);
  return 0;
}
