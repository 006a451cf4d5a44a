// The process group: c10d's TCPStore for the meeting, Gloo (and NCCL where the libtorch has it)
// for the collectives. The one file that includes c10d.
#include "emovlm/dist/process_group.h"

#include <torch/torch.h>
#include <torch/version.h>

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef EMOVLM_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <unistd.h>
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>

#include "emovlm/core/cuda.h"
#include "emovlm/core/error.h"
#include "emovlm/core/progress.h"
#include "emovlm/core/torch_compat.h"

namespace emovlm::dist {

namespace {

// What Gloo and NCCL derive from: c10d::ProcessGroup in libtorch 1.x, c10d::Backend in 2.x.
#if TORCH_VERSION_MAJOR >= 2
using BackendBase = c10d::Backend;
#else
using BackendBase = c10d::ProcessGroup;
#endif

struct State {
  bool initialized = false;
  LaunchEnv env;
  Options options;
  std::string backend = "none";
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<BackendBase> group;
};

State& state() {
  static State s;
  return s;
}

int parse_int(const std::function<const char*(const char*)>& get, const char* name, int fallback,
              int lo, int hi) {
  const char* v = get(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  errno = 0;
  const long x = std::strtol(v, &end, 10);
  if (errno != 0 || *end != '\0' || x < lo || x > hi)
    throw Error(cat("the environment variable ", name, "=", v, " is not a whole number in [", lo,
                    ", ", hi, "]"));
  return static_cast<int>(x);
}

// stderr with "[rank N] " before every line: glibc's custom streams (fopencookie) write through
// to the process's file descriptor 2 with the prefix, synchronously, so nothing is reordered or
// lost when the process ends.
struct PrefixCookie {
  std::string prefix;
  bool at_line_start = true;
};

ssize_t prefix_write(void* cookie, const char* buf, size_t size) {
  auto* c = static_cast<PrefixCookie*>(cookie);
  std::string out;
  out.reserve(size + c->prefix.size() * 2);
  for (size_t i = 0; i < size; ++i) {
    if (c->at_line_start) out += c->prefix;
    out += buf[i];
    c->at_line_start = buf[i] == '\n';
  }
  size_t done = 0;
  while (done < out.size()) {
    const ssize_t n = ::write(2, out.data() + done, out.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(size);
}

void prefix_stderr(const std::string& prefix) {
  static PrefixCookie cookie;
  cookie.prefix = prefix;
  cookie_io_functions_t io{};
  io.write = prefix_write;
  FILE* f = fopencookie(&cookie, "w", io);
  if (!f) return;  // unprefixed logs rather than none
  std::setvbuf(f, nullptr, _IOLBF, 0);
  std::fflush(stderr);
  stderr = f;
}

// The first line of a libtorch error (the rest is its C++ stack).
std::string first_line(const std::string& s) {
  const size_t nl = s.find('\n');
  return nl == std::string::npos ? s : s.substr(0, nl);
}

[[noreturn]] void fail(const std::string& what, const std::exception& e) {
  const State& s = state();
  throw Error(cat("rank ", s.env.rank, " of ", s.env.world_size, ": ", what,
                  " failed: another rank exited, hung longer than the ",
                  std::chrono::duration_cast<std::chrono::seconds>(s.options.timeout).count(),
                  " s timeout (--dist-timeout), or cannot be reached (", first_line(e.what()),
                  ")"));
}

template <typename Fn>
void collective(const std::string& what, Fn&& fn) {
  try {
    fn();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail(what, e);
  }
}

// NCCL works on CUDA tensors: a CPU tensor goes through the current device.
at::Tensor to_backend_device(const at::Tensor& t) {
  if (state().backend == "nccl" && !t.is_cuda()) return t.to(torch::Device(torch::kCUDA));
  return t;
}

template <typename WorkPtr>
void wait_all(std::vector<WorkPtr>& works) {
  for (auto& w : works) w->wait();
}

}  // namespace

LaunchEnv LaunchEnv::from_environment() {
  return from_environment([](const char* n) { return std::getenv(n); });
}

LaunchEnv LaunchEnv::from_environment(const std::function<const char*(const char*)>& get) {
  LaunchEnv e;
  constexpr int kMaxRanks = 1 << 20;
  const bool torchrun = get("WORLD_SIZE") && *get("WORLD_SIZE");
  const bool slurm =
      !torchrun && get("SLURM_NTASKS") && *get("SLURM_NTASKS") && get("SLURM_PROCID");
  if (torchrun) {
    e.launcher = "torchrun";
    e.world_size = parse_int(get, "WORLD_SIZE", 1, 1, kMaxRanks);
    if (e.world_size > 1 && !(get("RANK") && *get("RANK")))
      throw Error("WORLD_SIZE is set but RANK is not");
    e.rank = parse_int(get, "RANK", 0, 0, e.world_size - 1);
    e.local_world_size = parse_int(get, "LOCAL_WORLD_SIZE", e.world_size, 1, e.world_size);
    e.local_rank = parse_int(get, "LOCAL_RANK", e.rank % e.local_world_size, 0, e.world_size - 1);
    const char* agent = get("TORCHELASTIC_USE_AGENT_STORE");
    e.agent_store = agent && std::string(agent) == "True";
    e.restart_count = parse_int(get, "TORCHELASTIC_RESTART_COUNT", 0, 0, kMaxRanks);
  } else if (slurm) {
    e.launcher = "slurm";
    e.world_size = parse_int(get, "SLURM_NTASKS", 1, 1, kMaxRanks);
    e.rank = parse_int(get, "SLURM_PROCID", 0, 0, e.world_size - 1);
    e.local_rank = parse_int(get, "SLURM_LOCALID", 0, 0, e.world_size - 1);
    // SLURM_NTASKS_PER_NODE is set with --ntasks-per-node; "8" or "8(x2)"-style lists otherwise
    const char* per_node = get("SLURM_NTASKS_PER_NODE");
    e.local_world_size =
        per_node && std::strchr(per_node, '(') == nullptr && std::strchr(per_node, ',') == nullptr
            ? parse_int(get, "SLURM_NTASKS_PER_NODE", e.world_size, 1, e.world_size)
            : e.local_rank + 1;
  }
  if (e.world_size > 1) {
    const char* addr = get("MASTER_ADDR");
    if (!addr || !*addr)
      throw Error(cat("running as rank ", e.rank, " of ", e.world_size, " (", e.launcher,
                      ") needs MASTER_ADDR: the host of rank 0 (under Slurm: export "
                      "MASTER_ADDR=$(scontrol show "
                      "hostnames \"$SLURM_JOB_NODELIST\" | head -n 1))"));
    e.master_addr = addr;
    e.master_port = parse_int(get, "MASTER_PORT", 29500, 1, 65535);
  }
  return e;
}

void init(const LaunchEnv& env, const Options& options) {
  State& s = state();
  if (s.initialized) throw Error("the process group is already initialised");
  if (options.backend != "auto" && options.backend != "gloo" && options.backend != "nccl")
    throw Error(cat("--dist-backend must be auto, gloo or nccl, not '", options.backend, "'"));
  s.env = env;
  s.options = options;
  s.initialized = true;
  if (!env.distributed()) return;

  prefix_stderr(cat("[rank ", env.rank, "] "));
  if (env.rank != 0) {
    Progress::set_enabled_globally(false);
    // the command's result (its report on stdout) is rank 0's to print
    std::fflush(stdout);
    if (!std::freopen("/dev/null", "w", stdout))
      throw Error(cat("rank ", env.rank, ": cannot silence stdout"));
  }

  // one process per GPU: "cuda" and --device auto mean this process's GPU (its local rank, modulo
  // the machine's GPUs), whichever backend carries the collectives
  if (torch::cuda::is_available())
    use_cuda_device(env.local_rank % static_cast<int>(torch::cuda::device_count()));

  bool use_nccl = options.backend == "nccl";
#ifdef EMOVLM_WITH_NCCL
  if (options.backend == "auto") use_nccl = torch::cuda::is_available();
#else
  if (use_nccl)
    throw Error("--dist-backend nccl: this build of emovlm has no NCCL (it needs a CUDA libtorch)");
#endif
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(env.master_port);
    so.isServer = !env.agent_store && env.rank == 0;
    so.numWorkers = static_cast<std::size_t>(env.world_size);
    so.waitWorkers = !env.agent_store;
    so.timeout = options.timeout;
    so.multiTenant = true;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env.master_addr, so);
    s.store = env.agent_store
                  ? c10::intrusive_ptr<c10d::Store>(c10::make_intrusive<c10d::PrefixStore>(
                        cat("/worker/attempt_", env.restart_count), tcp))
                  : c10::intrusive_ptr<c10d::Store>(tcp);
  } catch (const std::exception& e) {
    throw Error(cat("rank ", env.rank, " of ", env.world_size, ": cannot meet the other ranks at ",
                    env.master_addr, ":", env.master_port, " (MASTER_ADDR:MASTER_PORT) within ",
                    std::chrono::duration_cast<std::chrono::seconds>(options.timeout).count(),
                    " s: ", first_line(e.what())));
  }
  try {
#ifdef EMOVLM_WITH_NCCL
    if (use_nccl) {
      // (also here: a build with -DEMOVLM_CUDA_GRAPHS=OFF compiles use_cuda_device without CUDA)
      c10::cuda::set_device(static_cast<c10::DeviceIndex>(
          env.local_rank % static_cast<int>(torch::cuda::device_count())));
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = options.timeout;
      s.group = c10::make_intrusive<c10d::ProcessGroupNCCL>(s.store, env.rank, env.world_size, o);
      s.backend = "nccl";
    }
#endif
    if (!use_nccl) {
      auto o = c10d::ProcessGroupGloo::Options::create(options.timeout);
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      o->devices.push_back(ifname && *ifname
                               ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                               : c10d::ProcessGroupGloo::createDefaultDevice());
      s.group = c10::make_intrusive<c10d::ProcessGroupGloo>(s.store, env.rank, env.world_size, o);
      s.backend = "gloo";
    }
  } catch (const std::exception& e) {
    throw Error(cat("rank ", env.rank, " of ", env.world_size, ": cannot start the ",
                    use_nccl ? "NCCL" : "Gloo", " process group: ", first_line(e.what())));
  }
  std::fprintf(stderr, "rank %d of %d (local %d of %d, %s via %s:%d, %s)\n", env.rank,
               env.world_size, env.local_rank, env.local_world_size, env.launcher.c_str(),
               env.master_addr.c_str(), env.master_port, s.backend.c_str());
}

void shutdown() {
  State& s = state();
  if (!s.group) return;
  try {
    barrier();
  } catch (const Error&) {
    // a rank that already failed: nothing left to wait for
  }
  s.group.reset();
  s.store.reset();
}

bool active() {
  return state().env.world_size > 1 && state().group;
}
int rank() {
  return state().env.rank;
}
int world_size() {
  return state().env.world_size;
}
bool is_main() {
  return state().env.rank == 0;
}
const Options& options() {
  return state().options;
}

PendingSum::PendingSum(std::vector<at::Tensor> tensors) {
  if (!active() || tensors.empty()) return;
  collective("all-reduce", [&] {
    torch::NoGradGuard ng;
    std::vector<at::Tensor> parts;
    for (const at::Tensor& t : tensors) parts.push_back(t.reshape({-1}));  // [numel]
    at::Tensor flat = to_backend_device(torch::cat(parts));                // [sum of numels]
    // Gloo sums float32/float64 and the integers; half precision is summed in float32
    if (state().backend == "gloo" &&
        (flat.scalar_type() == torch::kBFloat16 || flat.scalar_type() == torch::kHalf))
      flat = flat.to(torch::kFloat32);
    std::vector<at::Tensor> one{flat};
    auto work = state().group->allreduce(one);
    wait_ = [tensors = std::move(tensors), flat, work]() mutable {
      work->wait();
      torch::NoGradGuard ng;
      int64_t offset = 0;
      for (at::Tensor& t : tensors) {
        t.copy_(flat.narrow(0, offset, t.numel()).view(t.sizes()));  // (to t's dtype and device)
        offset += t.numel();
      }
    };
  });
}

void PendingSum::wait() {
  if (!wait_) return;
  auto finish = std::move(wait_);
  wait_ = nullptr;
  collective("all-reduce", finish);
}

std::vector<std::vector<size_t>> bucket_indices(const std::vector<at::Tensor>& tensors,
                                                bool last_first) {
  std::vector<std::vector<size_t>> buckets;
  int64_t bytes = 0;
  const size_t n = tensors.size();
  for (size_t k = 0; k < n; ++k) {
    const size_t i = last_first ? n - 1 - k : k;
    const at::Tensor& t = tensors[i];
    const int64_t b = t.numel() * static_cast<int64_t>(t.element_size());
    const bool same = !buckets.empty() &&
                      tensors[buckets.back().front()].scalar_type() == t.scalar_type() &&
                      tensors[buckets.back().front()].device() == t.device();
    if (!same || bytes + b > kBucketBytes) {
      buckets.emplace_back();
      bytes = 0;
    }
    buckets.back().push_back(i);
    bytes += b;
  }
  return buckets;
}

void all_reduce_sum(std::vector<at::Tensor>& tensors) {
  if (!active() || tensors.empty()) return;
  // every bucket sent before the first is waited for
  std::vector<PendingSum> sums;
  for (const auto& indices : bucket_indices(tensors)) {
    std::vector<at::Tensor> bucket;
    for (size_t i : indices) bucket.push_back(tensors[i]);  // (shares storage: sums written there)
    sums.emplace_back(std::move(bucket));
  }
  for (PendingSum& s : sums) s.wait();
}

void broadcast(std::vector<at::Tensor>& tensors, int root) {
  if (!active() || tensors.empty()) return;
  collective("broadcast", [&] {
    torch::NoGradGuard ng;
    c10d::BroadcastOptions o;
    o.rootRank = root;
    // each tensor travels as its bytes (any dtype), from a contiguous copy on the backend's device
    std::vector<at::Tensor> staged, bytes;
    for (auto& t : tensors) {
      staged.push_back(to_backend_device(t).contiguous());
      const at::Tensor& s = staged.back();
      bytes.push_back(
          torch::from_blob(s.data_ptr(), {s.numel() * static_cast<int64_t>(s.element_size())},
                           torch::TensorOptions().dtype(torch::kUInt8).device(s.device())));
    }
    std::vector<decltype(state().group->broadcast(std::declval<std::vector<at::Tensor>&>(), o))>
        works;
    for (auto& b : bytes) {
      std::vector<at::Tensor> one{b};
      works.push_back(state().group->broadcast(one, o));
    }
    wait_all(works);
    for (size_t i = 0; i < tensors.size(); ++i)
      if (!staged[i].is_same(tensors[i])) tensors[i].copy_(staged[i]);
  });
}

void broadcast_bytes(std::string& bytes, int root) {
  if (!active()) return;
  std::vector<at::Tensor> size{torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kInt64)};
  broadcast(size, root);
  const int64_t n = size[0].item<int64_t>();
  std::vector<at::Tensor> data{rank() == root
                                   ? torch::from_blob(bytes.data(), {n}, torch::kUInt8).clone()
                                   : torch::empty({n}, torch::kUInt8)};
  broadcast(data, root);
  data[0] = data[0].cpu();
  bytes.assign(reinterpret_cast<const char*>(data[0].data_ptr<uint8_t>()), static_cast<size_t>(n));
}

std::vector<std::string> all_gather_bytes(const std::string& mine) {
  if (!active()) return {mine};
  const int w = world_size();
  std::vector<at::Tensor> sizes{torch::zeros({w}, torch::kInt64)};  // [world]
  sizes[0][rank()] = static_cast<int64_t>(mine.size());
  all_reduce_sum(sizes);
  const at::Tensor counts = sizes[0].cpu();
  const int64_t longest = counts.max().item<int64_t>();
  // every rank sends `longest` bytes (its own, zero-padded); each keeps the true lengths
  at::Tensor padded = torch::zeros({std::max<int64_t>(longest, 1)}, torch::kUInt8);
  if (!mine.empty()) std::memcpy(padded.data_ptr<uint8_t>(), mine.data(), mine.size());
  std::vector<at::Tensor> gathered;
  collective("all-gather", [&] {
    std::vector<at::Tensor> in{to_backend_device(padded)};
    std::vector<std::vector<at::Tensor>> out(1);
    for (int r = 0; r < w; ++r) out[0].push_back(torch::empty_like(in[0]));
    state().group->allgather(out, in)->wait();
    for (auto& t : out[0]) gathered.push_back(t.cpu());
  });
  std::vector<std::string> all;
  for (int r = 0; r < w; ++r)
    all.emplace_back(reinterpret_cast<const char*>(gathered[r].data_ptr<uint8_t>()),
                     static_cast<size_t>(counts[r].item<int64_t>()));
  return all;
}

std::string from_main(const std::function<std::string()>& fn) {
  if (!active()) return fn();
  std::string message;
  if (is_main()) {
    try {
      message = "1" + fn();
    } catch (const std::exception& e) {
      message = std::string("0") + e.what();
      broadcast_bytes(message);
      throw;
    }
  }
  broadcast_bytes(message);
  if (message.empty() || message[0] != '1')
    throw Error(cat("rank 0 stopped: ", message.empty() ? "" : message.substr(1)));
  return message.substr(1);
}

void barrier() {
  if (!active()) return;
  collective("barrier", [&] { state().group->barrier()->wait(); });
}

std::pair<int64_t, int64_t> shard_range(int64_t n) {
  const int64_t w = world_size(), r = rank();
  const int64_t base = n / w, extra = n % w;
  const int64_t begin = r * base + std::min(r, extra);
  return {begin, begin + base + (r < extra ? 1 : 0)};
}

at::Tensor shard_rows(const at::Tensor& rows) {
  if (!active()) return rows;
  const auto [begin, end] = shard_range(rows.size(0));
  return rows.narrow(0, begin, end - begin);  // [end - begin, ...]
}

bool owns_micro_batch(int64_t index_in_step) {
  return index_in_step % world_size() == rank();
}

}  // namespace emovlm::dist
