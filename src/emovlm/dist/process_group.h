// Data parallelism across processes with libtorch's c10d: one process per device (a GPU, or a
// share of the CPU cores), launched as torchrun or Slurm launch them. The ranks meet through a
// TCPStore at MASTER_ADDR:MASTER_PORT and then talk over Gloo (CPU) or NCCL (CUDA, when the
// libtorch has it).
//
// One process is the default and costs nothing: without a launcher's environment (or with
// WORLD_SIZE=1) nothing here starts, every collective is a no-op, rank() is 0 and is_main() true.
//
// Failures are errors, never hangs: a rank that exits makes the collectives of the others fail
// at once (the connection closes), and one that hangs makes them fail after the timeout.
#pragma once

#include <ATen/core/Tensor.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

namespace emovlm::dist {

// Where this process stands, from the launcher's environment variables.
struct LaunchEnv {
  int rank = 0, world_size = 1;
  int local_rank = 0, local_world_size = 1;  // within the machine
  std::string master_addr;                   // the TCPStore's host (rank 0's machine)
  int master_port = 0;
  // torchrun's static rendezvous (--master-addr with --nnodes): its agent already hosts the
  // store at MASTER_ADDR:MASTER_PORT, and every rank joins it as a client under the prefix
  // of the restart attempt.
  bool agent_store = false;
  int restart_count = 0;
  std::string launcher;  // "torchrun", "slurm" or "" (one process)

  // torchrun's RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
  // TORCHELASTIC_USE_AGENT_STORE, TORCHELASTIC_RESTART_COUNT; else Slurm's SLURM_PROCID,
  // SLURM_NTASKS, SLURM_LOCALID, SLURM_NTASKS_PER_NODE with MASTER_ADDR from the job script
  // (MASTER_PORT: 29500 unless set). Inconsistent values are an error naming the variable.
  static LaunchEnv from_environment(const std::function<const char*(const char*)>& getenv_fn);
  static LaunchEnv from_environment();
  bool distributed() const { return world_size > 1; }
};

struct Options {
  std::string backend = "auto";  // auto (nccl for CUDA when built with it, else gloo) | gloo | nccl
  // How long a collective (and the first meeting) waits for the other ranks before failing.
  std::chrono::milliseconds timeout{std::chrono::minutes(30)};
  // Training sums each step's gradients while backward runs (GradReducer); false: after it.
  bool overlap_gradients = true;
};

// Joins the process group (nothing for one process). Under CUDA with NCCL, the current device
// becomes cuda:LOCAL_RANK. Logs "[rank N] " before every line this process writes to stderr;
// ranks other than 0 show no progress bars and print nothing on stdout (the command's result is
// rank 0's). Once per process.
void init(const LaunchEnv& env, const Options& options);
// Leaves it (waits for the others first, so that no rank exits while one still reads from it).
void shutdown();

bool active();  // more than one process
int rank();
int world_size();
bool is_main();  // rank 0: the one that writes checkpoints, reports and outputs
const Options& options();

// Sums the tensors over the ranks in place. Tensors of one dtype and device travel in flat
// buckets of at most kBucketBytes, all sent before the first is waited for.
void all_reduce_sum(std::vector<at::Tensor>& tensors);
constexpr int64_t kBucketBytes = int64_t{25} << 20;

// The buckets all_reduce_sum and GradReducer send: indices into `tensors`, runs of consecutive
// tensors of one dtype and device holding at most kBucketBytes (a larger tensor alone), walked
// from the last tensor to the first when `last_first`.
std::vector<std::vector<size_t>> bucket_indices(const std::vector<at::Tensor>& tensors,
                                                bool last_first = false);

// A sum over the ranks started at construction and finished by wait(), so that work can go on
// while it travels (the gradients of the layers backward is done with, say). Tensors of one dtype
// and device; they travel as one flat copy, and wait() writes the sums into them. Every rank must
// start the same sums in the same order. One process: nothing travels, wait() leaves the tensors.
class PendingSum {
 public:
  PendingSum() = default;
  explicit PendingSum(std::vector<at::Tensor> tensors);
  void wait();
  bool started() const { return static_cast<bool>(wait_); }

 private:
  std::function<void()> wait_;  // waits for the backend's work and copies the flat sum back
};
// Copies root's tensors into the others' (same shapes and dtypes on every rank).
void broadcast(std::vector<at::Tensor>& tensors, int root = 0);
// Root's bytes to every rank (any length).
void broadcast_bytes(std::string& bytes, int root = 0);
// Every rank's bytes (any length, one string a rank) to every rank, in rank order.
std::vector<std::string> all_gather_bytes(const std::string& mine);
// Runs `fn` on rank 0 and gives its result to every rank. An exception on rank 0 is rethrown
// there and stops the others with an Error quoting it (they do not wait for a result that will
// never come). One process: fn().
std::string from_main(const std::function<std::string()>& fn);
void barrier();

// The rows [begin, end) of a global batch of n rows that this rank computes: contiguous
// shares, the first n % world_size ranks one row more.
std::pair<int64_t, int64_t> shard_range(int64_t n);
at::Tensor shard_rows(const at::Tensor& rows);

// The global micro-batches of one optimizer step that this rank computes, when each
// micro-batch is one example (stage 1): micro-batch j of the step (0-based) is rank j % world's.
bool owns_micro_batch(int64_t index_in_step);

}  // namespace emovlm::dist
