#include "emovlm/dist/grad_reducer.h"

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <functional>
#include <mutex>

#include "emovlm/core/error.h"
#include "emovlm/dist/process_group.h"

namespace emovlm::dist {

namespace {

// Runs `fn` after the autograd node it is added to: on a parameter's gradient accumulator, once
// .grad holds what this backward brought.
class AfterNode : public torch::autograd::FunctionPostHook {
 public:
  explicit AfterNode(std::function<void()> fn) : fn_(std::move(fn)) {}
  torch::autograd::variable_list operator()(
      const torch::autograd::variable_list& outputs,
      const torch::autograd::variable_list& /*inputs*/) override {
    fn_();
    return outputs;
  }

 private:
  std::function<void()> fn_;
};

}  // namespace

struct GradReducer::State {
  std::vector<at::Tensor> params;
  // per parameter: its gradient accumulator (the tensor holds it weakly; a new one would lack the
  // hook) and the hook's key there
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators;
  std::vector<uintptr_t> hooks;
  std::vector<std::vector<size_t>> buckets;  // parameter indices, in sending order
  std::vector<size_t> bucket_of;             // per parameter
  // The armed backward: per parameter its final gradient (once seen), per bucket how many of its
  // parameters have none yet and its sum once sent; buckets before `next` are sent.
  std::vector<at::Tensor> totals;
  std::vector<bool> seen;
  std::vector<size_t> missing;
  std::vector<PendingSum> sums;
  size_t next = 0;
  bool armed = false;
  std::mutex mu;

  void reset() {
    totals.assign(params.size(), at::Tensor());
    seen.assign(params.size(), false);
    missing.clear();
    for (const auto& b : buckets) missing.push_back(b.size());
    sums.assign(buckets.size(), PendingSum());
    next = 0;
    armed = false;
  }

  // Sends the buckets whose parameters all have their gradient, in order, up to the first that
  // does not.
  void send_ready() {
    for (; next < buckets.size() && missing[next] == 0; ++next) {
      std::vector<at::Tensor> bucket;
      for (size_t i : buckets[next]) bucket.push_back(totals[i]);
      sums[next] = PendingSum(std::move(bucket));
    }
  }

  // Parameter i's gradient accumulated into .grad by this backward.
  void on_grad(size_t i) {
    std::lock_guard<std::mutex> lock(mu);
    if (!armed) return;
    if (seen[i])
      throw Error(cat("data parallel training: parameter ", i, " of ", params.size(), " (",
                      params[i].sizes(),
                      ") received a second gradient after its sum was sent (backward reached it "
                      "twice in the step's last backward; run with --dist-overlap=false)"));
    seen[i] = true;
    at::Tensor& g = params[i].mutable_grad();
    if (!g.defined()) g = torch::zeros_like(params[i]);  // (reached without a gradient)
    totals[i] = g;                                       // (the sum is written into .grad itself)
    --missing[bucket_of[i]];
    send_ready();
  }
};

GradReducer::GradReducer(std::vector<at::Tensor> params) : s_(std::make_shared<State>()) {
  s_->params = std::move(params);
  const size_t n = s_->params.size();
  // buckets from the last parameter to the first (backward reaches the last layers first)
  s_->buckets = bucket_indices(s_->params, /*last_first=*/true);
  s_->bucket_of.assign(n, 0);
  for (size_t k = 0; k < s_->buckets.size(); ++k)
    for (size_t j : s_->buckets[k]) s_->bucket_of[j] = k;
  s_->reset();
  std::weak_ptr<State> weak = s_;
  for (size_t i = 0; i < n; ++i) {
    s_->accumulators.push_back(torch::autograd::impl::grad_accumulator(s_->params[i]));
    if (!s_->accumulators.back())
      throw Error(cat("data parallel training: parameter ", i, " (", s_->params[i].sizes(),
                      ") is not a leaf that requires a gradient"));
    s_->hooks.push_back(
        s_->accumulators.back()->add_post_hook(std::make_unique<AfterNode>([weak, i] {
          if (auto s = weak.lock()) s->on_grad(i);
        })));
  }
}

GradReducer::~GradReducer() {
  for (size_t i = 0; i < s_->accumulators.size(); ++i)
    s_->accumulators[i]->del_post_hook(s_->hooks[i]);
}

void GradReducer::arm() {
  std::lock_guard<std::mutex> lock(s_->mu);
  s_->armed = true;
}

void GradReducer::finish() {
  std::lock_guard<std::mutex> lock(s_->mu);
  State& s = *s_;
  torch::NoGradGuard ng;
  // what backward did not reach: the gradient as it is (earlier batches of the step), or zeros
  for (size_t k = s.next; k < s.buckets.size(); ++k)
    for (size_t i : s.buckets[k])
      if (!s.seen[i]) {
        at::Tensor& g = s.params[i].mutable_grad();
        if (!g.defined()) g = torch::zeros_like(s.params[i]);
        s.totals[i] = g;
        s.seen[i] = true;
        --s.missing[k];
      }
  s.send_ready();
  for (PendingSum& sum : s.sums) sum.wait();
  for (size_t i = 0; i < s.params.size(); ++i) {
    at::Tensor& g = s.params[i].mutable_grad();
    if (!g.defined())
      g = s.totals[i];
    else if (!g.is_same(s.totals[i]))
      g.copy_(s.totals[i]);
  }
  s.reset();
}

}  // namespace emovlm::dist
