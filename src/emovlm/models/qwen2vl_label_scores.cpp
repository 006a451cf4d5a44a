// Label scoring over a token tree.
#include "emovlm/models/qwen2vl_label_scores.h"

#include <algorithm>
#include <cstdint>

#include "emovlm/core/error.h"

namespace emovlm {

namespace {

// Scores candidates after a cached prefix of `rows` prompts whose last-position logits are given.
// All candidates continue the prompt in one forward pass over a token tree: the candidates' common
// first tokens ("{'emotion': '" for every label) once, then each candidate's remaining tokens as a
// branch that sees the prompt, the common tokens and its own earlier tokens (a tree-shaped mask;
// each token at the position it has in its own sequence). The cache is extended by the tree.
torch::Tensor score_after_prefix(Qwen2VLImpl& model, KVCache& cache,
                                 const torch::Tensor& last_logits, const torch::Tensor& key_mask,
                                 const torch::Tensor& rope_deltas,
                                 const std::vector<std::vector<int32_t>>& cands) {
  const int64_t R = last_logits.size(0), C = static_cast<int64_t>(cands.size());
  size_t shortest = SIZE_MAX;
  for (const auto& c : cands) {
    if (c.empty()) throw Error("label scoring: an empty candidate answer");
    shortest = std::min(shortest, c.size());
  }
  size_t P = 0;  // the length of the common first tokens
  while (P < shortest && std::all_of(cands.begin(), cands.end(),
                                     [&](const auto& c) { return c[P] == cands[0][P]; }))
    ++P;
  const torch::Device dev = last_logits.device();
  auto cpu_long = [](const std::vector<int64_t>& v) { return torch::tensor(v, torch::kInt64); };

  // the first token from the prefix's last logits (log-probabilities in float64 on the model's
  // device; only the picked values come back): [R, V] -> [R, C]
  std::vector<int64_t> first(C);
  for (int64_t c = 0; c < C; ++c) first[c] = cands[c][0];
  torch::Tensor scores = torch::log_softmax(last_logits.to(torch::kFloat64), -1)
                             .index_select(1, cpu_long(first).to(dev))
                             .to(torch::kCPU);

  // The tree: tokens 0..P-1 of the common part, then for each candidate its tokens P..n-2 (the last
  // token is only predicted). depth = the token's index in its own sequence; parent = the tree
  // node before it in that sequence (-1: the prompt). Each node's output predicts the next token
  // of its sequence: (node, target token, candidate) triples, a common node serving every
  // candidate.
  std::vector<int64_t> ids, depth, parent, pick_node, pick_token, pick_cand;
  for (size_t j = 0; j < P; ++j) {
    ids.push_back(cands[0][j]);
    depth.push_back(static_cast<int64_t>(j));
    parent.push_back(static_cast<int64_t>(j) - 1);
  }
  for (int64_t c = 0; c < C; ++c) {
    const auto& t = cands[c];
    int64_t prev = static_cast<int64_t>(P) - 1;  // the last common node
    for (size_t i = 0; i + 1 < t.size(); ++i) {
      int64_t node;
      if (i < P) {
        node = static_cast<int64_t>(i);
      } else {
        node = static_cast<int64_t>(ids.size());
        ids.push_back(t[i]);
        depth.push_back(static_cast<int64_t>(i));
        parent.push_back(prev);
        prev = node;
      }
      pick_node.push_back(node);
      pick_token.push_back(t[i + 1]);
      pick_cand.push_back(c);
    }
  }
  const int64_t T = static_cast<int64_t>(ids.size());
  if (T == 0) return scores;  // single-token candidates: the prefix's logits were all it took

  // [T, T]: a node sees itself and its ancestors
  std::vector<int64_t> sees(static_cast<size_t>(T * T), 0);
  for (int64_t n = 0; n < T; ++n)
    for (int64_t a = n; a >= 0; a = parent[a]) sees[n * T + a] = 1;
  torch::Tensor tree = cpu_long(sees).view({T, T}).to(torch::kBool);
  const int64_t past = cache.length;
  // keys: the prompt (its own padding masked) then the tree: [R, 1, T, past + T]
  torch::Tensor km =
      key_mask.to(torch::kCPU).to(torch::kBool).view({R, 1, 1, past}).expand({R, 1, T, past});
  torch::Tensor mask = torch::cat({km, tree.view({1, 1, T, T}).expand({R, 1, T, T})}, -1).to(dev);
  // every M-RoPE axis of a text token: cache length + depth + delta; [R, T] -> [3, R, T]
  torch::Tensor pos =
      cpu_long(depth).view({1, T}) + past + rope_deltas.to(torch::kCPU).view({R, 1});
  pos = pos.unsqueeze(0).expand({3, R, T}).contiguous().to(dev);
  torch::Tensor emb = model.model->embed_tokens(cpu_long(ids).view({1, T}).expand({R, T}).to(dev));
  torch::Tensor h = model.model->forward(emb, pos, mask, &cache);
  torch::Tensor logits = model.lm_head(h);  // [R, T, V]
  // a pick's log-probability is its logit minus its node's log-sum-exp: only the picked logits and
  // one log-sum-exp per node leave [R, T, V] (no float64 copy of all of it)
  const int64_t V = logits.size(2);
  torch::Tensor lse =
      torch::logsumexp(logits.to(torch::kFloat32), -1).to(torch::kFloat64);  // [R, T]
  std::vector<int64_t> flat(pick_node.size());
  for (size_t k = 0; k < flat.size(); ++k) flat[k] = pick_node[k] * V + pick_token[k];
  // [R, T, V] -> [R, T*V] -> [R, picks]
  torch::Tensor picked =
      logits.reshape({R, T * V}).index_select(1, cpu_long(flat).to(dev)).to(torch::kFloat64) -
      lse.index_select(1, cpu_long(pick_node).to(dev));
  return scores.index_add(1, cpu_long(pick_cand), picked.to(torch::kCPU));
}

}  // namespace

torch::Tensor pool_image_features(const torch::Tensor& features, const std::vector<GridTHW>& grids,
                                  int64_t m) {
  std::vector<torch::Tensor> out;
  int64_t off = 0;
  for (const GridTHW& g : grids) {
    const int64_t n = g[0] * g[1] * g[2] / (m * m);
    out.push_back(features.narrow(0, off, n).to(torch::kFloat32).mean(0));
    off += n;
  }
  return torch::stack(out).to(torch::kCPU);
}

torch::Tensor label_scores(Qwen2VLImpl& model, const Qwen2VLProcessor& processor,
                           const std::vector<VlmPrompt>& prompts,
                           const std::vector<std::vector<int32_t>>& candidates, bool deterministic,
                           torch::Tensor* pooled) {
  std::vector<torch::Tensor> rows, pools;
  auto run = [&](const std::vector<VlmPrompt>& batch) {
    torch::Tensor pool;
    rows.push_back(label_scores(model, processor.build(batch, model.device()), candidates,
                                pooled ? &pool : nullptr));
    if (pool.defined()) pools.push_back(pool);
  };
  if (deterministic) {
    for (const VlmPrompt& p : prompts) run({p});
  } else {
    run(prompts);
  }
  if (pooled) *pooled = pools.empty() ? torch::Tensor() : torch::cat(pools, 0);
  return torch::cat(rows, 0);
}

torch::Tensor label_scores(Qwen2VLImpl& model, const Qwen2VLInputs& in,
                           const std::vector<std::vector<int32_t>>& candidates,
                           torch::Tensor* pooled) {
  return label_scores(model, prefill(model, in), candidates, pooled);
}

torch::Tensor label_scores(Qwen2VLImpl& model, Prefill pf,
                           const std::vector<std::vector<int32_t>>& candidates,
                           torch::Tensor* pooled) {
  torch::NoGradGuard ng;
  torch::Tensor scores =
      score_after_prefix(model, pf.cache, pf.last_logits, pf.key_mask, pf.rope_deltas, candidates);
  if (pooled)
    *pooled = pf.grids.empty() ? torch::Tensor()
                               : pool_image_features(pf.image_features, pf.grids,
                                                     model.config().vision.spatial_merge_size);
  return scores;
}

}  // namespace emovlm
