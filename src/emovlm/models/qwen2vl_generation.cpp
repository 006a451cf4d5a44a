// Qwen2-VL generation: settings, token choice, prefill and the decoding loop.
#include "emovlm/models/qwen2vl_generation.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <limits>

#include "emovlm/core/cuda.h"
#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"
#include "emovlm/models/qwen2vl_fixed_decoder.h"

namespace emovlm {

GenerationConfig GenerationConfig::from_dir(const std::string& dir) {
  GenerationConfig g;
  std::string p = (std::filesystem::path(dir) / "generation_config.json").string();
  if (!std::filesystem::exists(p)) return g;
  json j = read_json_file(p);
  if (j.contains("max_new_tokens")) g.max_new_tokens = json_required<int>(j, "max_new_tokens", p);
  if (j.contains("do_sample")) g.do_sample = json_required<bool>(j, "do_sample", p);
  if (j.contains("temperature")) g.temperature = json_required<double>(j, "temperature", p);
  if (j.contains("top_k")) g.top_k = json_required<int>(j, "top_k", p);
  if (j.contains("top_p")) g.top_p = json_required<double>(j, "top_p", p);
  if (j.contains("repetition_penalty"))
    g.repetition_penalty = json_required<double>(j, "repetition_penalty", p);
  if (j.contains("eos_token_id")) {
    if (j["eos_token_id"].is_array())
      g.eos_token_ids = j["eos_token_id"].get<std::vector<int64_t>>();
    else
      g.eos_token_ids = {json_required<int64_t>(j, "eos_token_id", p)};
  }
  return g;
}

GenerationConfig GenerationConfig::merge(const GenerationConfig& file,
                                         const GenerationConfig& caller) {
  GenerationConfig g = file;
  if (caller.max_new_tokens) g.max_new_tokens = caller.max_new_tokens;
  if (caller.do_sample) g.do_sample = caller.do_sample;
  if (caller.temperature) g.temperature = caller.temperature;
  if (caller.top_k) g.top_k = caller.top_k;
  if (caller.top_p) g.top_p = caller.top_p;
  if (caller.repetition_penalty) g.repetition_penalty = caller.repetition_penalty;
  if (!caller.eos_token_ids.empty()) g.eos_token_ids = caller.eos_token_ids;
  g.seed = caller.seed;
  g.cuda_graph = caller.cuda_graph;
  return g;
}

int64_t next_token(torch::Tensor logits, const std::vector<int64_t>& seen,
                   const GenerationConfig& cfg, at::Generator& gen) {
  logits = logits.to(torch::kCPU).to(torch::kFloat32).contiguous().clone();
  float* l = logits.data_ptr<float>();
  const int64_t V = logits.numel();
  const double rp = cfg.repetition_penalty.value_or(1.0);
  if (rp != 1.0) {
    std::vector<bool> done(static_cast<size_t>(V), false);
    for (int64_t t : seen) {
      if (t < 0 || t >= V || done[t]) continue;
      done[t] = true;
      l[t] = l[t] < 0 ? static_cast<float>(l[t] * rp) : static_cast<float>(l[t] / rp);
    }
  }
  if (!cfg.sampling()) return logits.argmax().item<int64_t>();
  const double temp = cfg.temperature.value_or(1.0);
  if (temp <= 0) throw Error(cat("temperature must be positive, got ", temp));
  if (temp != 1.0) logits.div_(temp);
  const int top_k = cfg.top_k.value_or(0);
  torch::Tensor
      kept;  // top-k: the indices it keeps (ties at the k-th value included); undefined: all
  if (top_k > 0 && top_k < V) {
    float kth = std::get<0>(logits.topk(top_k)).min().item<float>();
    logits.masked_fill_(logits < kth, -std::numeric_limits<float>::infinity());
    kept = (logits >= kth).nonzero().squeeze(1);
  }
  const double top_p = cfg.top_p.value_or(1.0);
  if (top_p < 1.0) {
    // keep the smallest set of top tokens whose probability reaches top_p (at least one); after
    // top-k only its survivors can be kept, so only they are sorted (the others are already out)
    torch::Tensor vals = kept.defined() ? logits.index_select(0, kept) : logits;
    auto [sorted, order] = vals.sort(/*dim=*/-1, /*descending=*/false);
    torch::Tensor cum = torch::softmax(sorted, -1).cumsum(-1);
    torch::Tensor remove = cum <= (1.0 - top_p);
    remove[vals.size(0) - 1] = false;
    torch::Tensor out = order.masked_select(remove);
    if (kept.defined()) {
      out = kept.index_select(0, out);
      kept = kept.index_select(0, order.masked_select(remove.logical_not()));
    }
    logits.index_put_({out}, -std::numeric_limits<float>::infinity());
  }
  // one candidate left (the Instruct checkpoints' top_k = 1): taken without a draw
  if (kept.defined() && kept.size(0) == 1) return kept[0].item<int64_t>();
  torch::Tensor probs = torch::softmax(logits, -1);
  return torch::multinomial(probs, 1, false, gen).item<int64_t>();
}

Prefill Prefill::row(int64_t r) const {
  Prefill p;
  torch::Tensor rows = torch::tensor({r}, torch::kInt64);
  p.cache = cache;
  p.cache.select(rows.to(last_logits.device()));  // index_select: the row's own copy
  p.last_logits = last_logits.narrow(0, r, 1);
  p.key_mask = key_mask.narrow(0, r, 1);
  p.input_ids = input_ids.narrow(0, r, 1);
  p.rope_deltas = rope_deltas.narrow(0, r, 1);
  return p;  // the image features stay with the batch (they are not split per row)
}

Prefill prefill(Qwen2VLImpl& model, const Qwen2VLInputs& in) {
  torch::NoGradGuard ng;
  Prefill p;
  Qwen2VLOutput out = model.forward(in, &p.cache, /*last_only=*/true);
  p.last_logits = out.logits.select(1, 0);  // [B, 1, V] -> [B, V]
  p.input_ids = in.input_ids.to(torch::kCPU).to(torch::kInt64);
  p.key_mask = in.attention_mask.defined() ? in.attention_mask.to(torch::kCPU).to(torch::kInt64)
                                           : torch::ones_like(p.input_ids);
  p.rope_deltas = out.rope_deltas;
  p.image_features = out.image_features;
  p.grids = in.grids;
  return p;
}

GenerationResult generate(Qwen2VLImpl& model, const Qwen2VLInputs& inputs,
                          const GenerationConfig& cfg,
                          const std::function<void(int64_t, int64_t)>& on_token) {
  return generate(model, prefill(model, inputs), cfg, on_token);
}

GenerationResult generate(Qwen2VLImpl& model, Prefill pf, const GenerationConfig& cfg,
                          const std::function<void(int64_t, int64_t)>& on_token) {
  torch::NoGradGuard ng;
  const int64_t B = pf.input_ids.size(0), T = pf.input_ids.size(1);
  std::vector<int64_t> eos = cfg.eos_token_ids;
  if (eos.empty()) eos = {model.config().eos_token_id};
  const int max_new = cfg.max_new_tokens_or(256);
  at::Generator gen = at::detail::createCPUGenerator(cfg.seed);

  KVCache& cache = pf.cache;
  torch::Tensor logits = pf.last_logits;  // [B, V]
  torch::Tensor key_mask = pf.key_mask;
  GenerationResult res;
  res.tokens.resize(B);
  res.stopped.assign(B, false);
  std::vector<std::vector<int64_t>> seen(B);  // each row's tokens, for the repetition penalty
  std::unique_ptr<FixedDecoder> fixed;        // cfg.cuda_graph: from the second token on
  {
    torch::Tensor ids = pf.input_ids.contiguous(), km = key_mask.contiguous();
    const int64_t* id = ids.data_ptr<int64_t>();
    const int64_t* k = km.data_ptr<int64_t>();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t)
        if (k[b * T + t]) seen[b].push_back(id[b * T + t]);
  }
  for (int step = 0; step < max_new; ++step) {
    std::vector<int64_t> next(B, eos[0]);
    bool all_done = true;
    // [B, V] to the host once per step (one copy and one sync for the batch, not one per row)
    const torch::Tensor host = logits.to(torch::kFloat32).to(torch::kCPU);
    for (int64_t b = 0; b < B; ++b) {
      if (res.stopped[b]) continue;
      int64_t tok = next_token(host[b], seen[b], cfg, gen);
      next[b] = tok;
      if (std::find(eos.begin(), eos.end(), tok) != eos.end()) {
        res.stopped[b] = true;
      } else {
        res.tokens[b].push_back(tok);
        seen[b].push_back(tok);
        if (on_token) on_token(b, tok);
        all_done = false;
      }
    }
    if (all_done || step + 1 == max_new) break;
    torch::Tensor ids = torch::tensor(next, torch::kInt64).view({B, 1});
    if (cfg.cuda_graph) {
      if (!fixed) {
        const bool graph = CudaGraph::available() && model.device().is_cuda();
        fixed =
            std::make_unique<FixedDecoder>(model, cache, key_mask, pf.rope_deltas, max_new, graph);
        cache = KVCache();  // copied into the fixed buffers
      }
      logits = fixed->step(ids);
      continue;
    }
    key_mask = torch::cat({key_mask, torch::ones({B, 1}, torch::kInt64)}, 1);
    logits = model.decode(ids, pf.rope_deltas, key_mask, cache);
  }
  return res;
}

}  // namespace emovlm
