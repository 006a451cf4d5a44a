// The launcher's environment (torchrun, Slurm) read into a LaunchEnv, and one process's view of
// the collectives. Several processes are tested by tests/cli/distributed.sh.
#include <gtest/gtest.h>

#include <torch/torch.h>

#include <map>
#include <string>

#include "emovlm/core/error.h"
#include "emovlm/dist/grad_reducer.h"
#include "emovlm/dist/process_group.h"

using namespace emovlm;

namespace {

dist::LaunchEnv env_of(const std::map<std::string, std::string>& vars) {
  return dist::LaunchEnv::from_environment([&](const char* name) -> const char* {
    auto it = vars.find(name);
    return it == vars.end() ? nullptr : it->second.c_str();
  });
}

std::string error_of(const std::map<std::string, std::string>& vars) {
  try {
    env_of(vars);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Dist, NoLauncherIsOneProcess) {
  const dist::LaunchEnv e = env_of({});
  EXPECT_FALSE(e.distributed());
  EXPECT_EQ(e.rank, 0);
  EXPECT_EQ(e.world_size, 1);
  EXPECT_EQ(e.launcher, "");
  // torchrun with one process: nothing to join, no MASTER_ADDR needed
  EXPECT_FALSE(env_of({{"WORLD_SIZE", "1"}, {"RANK", "0"}}).distributed());
}

TEST(Dist, ReadsTorchrun) {
  const dist::LaunchEnv e = env_of({{"RANK", "5"},
                                    {"WORLD_SIZE", "16"},
                                    {"LOCAL_RANK", "1"},
                                    {"LOCAL_WORLD_SIZE", "4"},
                                    {"MASTER_ADDR", "node0"},
                                    {"MASTER_PORT", "29400"},
                                    {"TORCHELASTIC_USE_AGENT_STORE", "True"},
                                    {"TORCHELASTIC_RESTART_COUNT", "2"}});
  EXPECT_TRUE(e.distributed());
  EXPECT_EQ(e.launcher, "torchrun");
  EXPECT_EQ(e.rank, 5);
  EXPECT_EQ(e.world_size, 16);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world_size, 4);
  EXPECT_EQ(e.master_addr, "node0");
  EXPECT_EQ(e.master_port, 29400);
  EXPECT_TRUE(e.agent_store);
  EXPECT_EQ(e.restart_count, 2);
  // torchrun --standalone: rank 0 hosts the store itself
  EXPECT_FALSE(env_of({{"RANK", "0"},
                       {"WORLD_SIZE", "2"},
                       {"MASTER_ADDR", "127.0.0.1"},
                       {"TORCHELASTIC_USE_AGENT_STORE", "False"}})
                   .agent_store);
  EXPECT_EQ(env_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}).master_port, 29500);
}

TEST(Dist, ReadsSlurmAndTorchrunWins) {
  const dist::LaunchEnv e = env_of({{"SLURM_PROCID", "9"},
                                    {"SLURM_NTASKS", "16"},
                                    {"SLURM_LOCALID", "1"},
                                    {"SLURM_NTASKS_PER_NODE", "8"},
                                    {"MASTER_ADDR", "gpu001"}});
  EXPECT_EQ(e.launcher, "slurm");
  EXPECT_EQ(e.rank, 9);
  EXPECT_EQ(e.world_size, 16);
  EXPECT_EQ(e.local_rank, 1);
  EXPECT_EQ(e.local_world_size, 8);
  EXPECT_EQ(e.master_port, 29500);
  // torchrun started inside a Slurm job: its variables describe this process
  const dist::LaunchEnv t = env_of({{"SLURM_PROCID", "0"},
                                    {"SLURM_NTASKS", "1"},
                                    {"RANK", "3"},
                                    {"WORLD_SIZE", "8"},
                                    {"MASTER_ADDR", "h"}});
  EXPECT_EQ(t.launcher, "torchrun");
  EXPECT_EQ(t.rank, 3);
}

TEST(Dist, NamesTheBadVariable) {
  EXPECT_NE(error_of({{"RANK", "2"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}).find("RANK=2"),
            std::string::npos);
  EXPECT_NE(error_of({{"RANK", "x"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}}).find("RANK=x"),
            std::string::npos);
  EXPECT_NE(
      error_of({{"RANK", "0"}, {"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}})
          .find("MASTER_PORT"),
      std::string::npos);
  EXPECT_NE(error_of({{"WORLD_SIZE", "2"}}).find("RANK is not"), std::string::npos);
  const std::string no_addr = error_of({{"SLURM_PROCID", "1"}, {"SLURM_NTASKS", "4"}});
  EXPECT_NE(no_addr.find("MASTER_ADDR"), std::string::npos) << no_addr;
  EXPECT_NE(no_addr.find("scontrol show hostnames"), std::string::npos) << no_addr;
}

TEST(Dist, OneProcessCollectivesLeaveTensorsAlone) {
  ASSERT_FALSE(dist::active());
  EXPECT_TRUE(dist::is_main());
  std::vector<torch::Tensor> t{torch::arange(6, torch::kFloat32)};
  dist::all_reduce_sum(t);
  dist::broadcast(t);
  EXPECT_TRUE(torch::equal(t[0], torch::arange(6, torch::kFloat32)));
  EXPECT_EQ(dist::shard_range(7), std::make_pair(int64_t{0}, int64_t{7}));
  EXPECT_EQ(dist::shard_rows(torch::arange(7)).size(0), 7);
  for (int64_t j = 0; j < 5; ++j) EXPECT_TRUE(dist::owns_micro_batch(j));
  EXPECT_EQ(dist::all_gather_bytes(std::string("a\0b", 3)),
            std::vector<std::string>{std::string("a\0b", 3)});
  EXPECT_EQ(dist::all_gather_bytes(""), std::vector<std::string>{""});
  EXPECT_EQ(dist::from_main([] { return std::string("manifest"); }), "manifest");
  EXPECT_THROW(dist::from_main([]() -> std::string { throw Error("refused"); }), Error);
}

// Buckets: runs of one dtype and device up to kBucketBytes, a tensor larger than that alone, and
// the same cut walked from the end for the gradient reducer.
TEST(Dist, BucketsHoldOneDtypeUpToTheByteLimit) {
  const int64_t quarter = dist::kBucketBytes / 4 / 4;  // floats in a quarter of a bucket
  std::vector<torch::Tensor> t{
      torch::zeros({quarter}),                     // 0
      torch::zeros({quarter}),                     // 1
      torch::zeros({2}, torch::kFloat64),          // 2: another dtype
      torch::zeros({quarter}),                     // 3
      torch::zeros({dist::kBucketBytes / 4 + 1}),  // 4: over the limit
      torch::zeros({quarter}),                     // 5
      torch::zeros({quarter}),                     // 6
      torch::zeros({quarter}),                     // 7
      torch::zeros({quarter}),                     // 8: exactly full with 5..8
      torch::zeros({1}),                           // 9
  };
  using B = std::vector<std::vector<size_t>>;
  EXPECT_EQ(dist::bucket_indices(t), (B{{0, 1}, {2}, {3}, {4}, {5, 6, 7, 8}, {9}}));
  EXPECT_EQ(dist::bucket_indices(t, /*last_first=*/true),
            (B{{9, 8, 7, 6}, {5}, {4}, {3}, {2}, {1, 0}}));
  EXPECT_TRUE(dist::bucket_indices({}).empty());
}

// With one process the sums are the tensors themselves, so the reducer must leave every gradient
// as backward made it: accumulated over the step's batches, an unreached parameter given zeros,
// and the hooks gone with the reducer.
TEST(Dist, GradReducerLeavesOneProcessGradientsAsBackwardMadeThem) {
  ASSERT_FALSE(dist::active());
  torch::manual_seed(0);
  torch::nn::Linear a(4, 3), b(3, 2), unused(2, 2);
  std::vector<torch::Tensor> params;
  for (auto* m : {&a, &b, &unused})
    for (auto& p : (*m)->parameters()) params.push_back(p);
  const torch::Tensor x1 = torch::randn({5, 4}), x2 = torch::randn({5, 4});
  auto loss = [&](const torch::Tensor& x) { return b(torch::relu(a(x))).pow(2).sum(); };
  // the plain step: two batches' gradients accumulated
  loss(x1).backward();
  loss(x2).backward();
  std::vector<torch::Tensor> want;
  for (auto& p : params) want.push_back(p.grad().defined() ? p.grad().clone() : torch::Tensor());
  for (auto& p : params) p.mutable_grad() = torch::Tensor();
  {
    dist::GradReducer reducer(params);
    loss(x1).backward();
    reducer.arm();  // the step's last backward
    loss(x2).backward();
    reducer.finish();
    for (size_t i = 0; i < params.size(); ++i) {
      if (want[i].defined())
        EXPECT_TRUE(torch::equal(params[i].grad(), want[i])) << i;
      else
        EXPECT_TRUE(torch::equal(params[i].grad(), torch::zeros_like(params[i]))) << i;
    }
    // a parameter that backward reaches twice while armed would be sent before its second
    // gradient: refused, naming it
    for (auto& p : params) p.mutable_grad() = torch::Tensor();
    reducer.arm();
    torch::Tensor l = loss(x1);
    l.backward({}, /*retain_graph=*/true);
    try {
      l.backward();
      ADD_FAILURE() << "no error";
    } catch (const std::exception& e) {
      EXPECT_NE(std::string(e.what()).find("received a second gradient after its sum was sent"),
                std::string::npos)
          << e.what();
    }
  }
  // the reducer is gone: backward twice is plain accumulation again
  for (auto& p : params) p.mutable_grad() = torch::Tensor();
  torch::Tensor l = loss(x1);
  l.backward({}, true);
  EXPECT_NO_THROW(l.backward());
}
