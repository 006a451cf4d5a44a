// Data-parallel stage 1 at a published shape with random weights: one optimizer step of a global
// batch of B sequences of T tokens, a LoRA (r=8, q/k/v/o) over a bf16 base. Each process computes
// its share of the B sequences (forward + backward), the LoRA gradients are summed over the
// processes (dist::all_reduce_sum, as `tune` does), then AdamW. Run it as one process and under
// torchrun with N at the same B:
//   bench_dist_step [2b|7b] [tokens] [global batch] [steps] [auto|gloo|nccl]
//   torchrun --standalone --nproc_per_node 2 --no_python ./build/bench/bench_dist_step 2b 128 4 3
// On a GPU machine each process uses the GPU of its local rank (two processes on one GPU need
// gloo: NCCL refuses two ranks on one device). Rank 0 prints the median step, the group's
// tokens/s and the all-reduce's time and bytes.
#include <cstdio>
#include <cstdlib>
#include <thread>

#include "bench_util.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/dist/process_group.h"
#include "emovlm/models/lora.h"
#include "emovlm/models/qwen2vl.h"
#include "emovlm/train/trainer.h"

using namespace emovlm;

int main(int argc, char** argv) {
  const std::string shape = argc > 1 ? argv[1] : "2b";
  const int64_t T = argc > 2 ? std::stoll(argv[2]) : 128;
  const int64_t B = argc > 3 ? std::stoll(argv[3]) : 4;
  const int steps = argc > 4 ? std::stoi(argv[4]) : 3;
  dist::Options options;
  if (argc > 5) options.backend = argv[5];
  const dist::LaunchEnv env = dist::LaunchEnv::from_environment();
  // the CLI's rule: OMP_NUM_THREADS, else the cores shared among the machine's processes
  const char* omp = std::getenv("OMP_NUM_THREADS");
  const int threads = omp && std::atoi(omp) > 0
                          ? std::atoi(omp)
                          : std::max(1, static_cast<int>(std::thread::hardware_concurrency()) /
                                            env.local_world_size);
  compat::set_num_threads(threads);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  dist::init(env, options);
  const torch::Device device = to_torch(ComputeDevice());

  Qwen2VLConfig cfg = shape == "7b" ? Qwen2VLConfig::qwen2vl_7b() : Qwen2VLConfig::qwen2vl_2b();
  Qwen2VL m(cfg);
  m->to(device, torch::kBFloat16);
  bench::fast_random_fill(*m);
  for (auto& p : m->parameters()) p.set_requires_grad(false);
  apply_lora(*m, LoraConfig{}, 0);
  m->train();
  std::vector<torch::Tensor> params;
  int64_t lora_numel = 0;
  for (auto& p : m->parameters())
    if (p.requires_grad()) params.push_back(p), lora_numel += p.numel();
  torch::optim::AdamW opt(params, torch::optim::AdamWOptions(1e-4));
  const auto [first, last] = dist::shard_range(B);  // this process's sequences of the global batch
  torch::manual_seed(1234);
  const torch::Tensor ids = torch::randint(0, 150000, {B, T}, torch::kInt64)
                                .to(device);  // [B, T], the same on every rank

  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  std::vector<double> step_s, reduce_s;
  for (int s = 0; s <= steps; ++s) {  // step 0 warms up
    double reduce = 0;
    const double t = bench::seconds_of([&] {
      opt.zero_grad();
      for (int64_t b = first; b < last; ++b) {
        const torch::Tensor row = ids.narrow(0, b, 1);  // [1, T]
        Qwen2VLInputs in{row, torch::ones_like(row), {}, {}};
        torch::Tensor logits = m->forward(in).logits;  // [1, T, vocab]
        (torch::nn::functional::cross_entropy(logits[0].narrow(0, 0, T - 1).to(torch::kFloat32),
                                              row[0].narrow(0, 1, T - 1)) /
         static_cast<double>(B))
            .backward();
      }
      std::vector<torch::Tensor> grads;
      for (auto& p : params) grads.push_back(p.grad());
      sync();
      reduce = bench::seconds_of([&] {
        dist::all_reduce_sum(grads);
        sync();
      });
      multi_tensor_adam_step(opt, /*adamw=*/true);
      sync();
    });
    if (s > 0) step_s.push_back(t), reduce_s.push_back(reduce);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  if (dist::is_main())
    std::printf(
        "%s on %s, %d process(es) x %d thread(s), global batch %lld x %lld tokens: step %.2f s "
        "(median of %d), "
        "%.1f tokens/s, all-reduce %.1f ms for %.1f MB of LoRA gradients\n",
        shape.c_str(), device.str().c_str(), dist::world_size(), threads, static_cast<long long>(B),
        static_cast<long long>(T), median(step_s), B * T / median(step_s), 1000 * median(reduce_s),
        4.0 * lora_numel / 1e6, steps);
  dist::shutdown();
  return 0;
}
