// Qwen2-VL processor, generation and label scoring.
#include "emovlm/models/qwen2vl_generate.h"

#include <algorithm>
#include <cstdint>
#include <filesystem>

#include "emovlm/core/cuda.h"
#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/data/dataset.h"
#include "emovlm/text/chat.h"

namespace emovlm {

// ---------------------------------------------------------------------------------- processor

Qwen2VLProcessor::Qwen2VLProcessor(Tokenizer tokenizer, Qwen2VLImageConfig image_config)
    : tokenizer_(std::move(tokenizer)), image_config_(image_config) {
  pad_id_ = tokenizer_.token_to_id("<|endoftext|>");
  if (pad_id_ < 0) pad_id_ = 0;
}

Qwen2VLProcessor Qwen2VLProcessor::from_dir(const std::string& dir) {
  return Qwen2VLProcessor(Tokenizer::from_dir(dir), Qwen2VLImageConfig::from_dir(dir));
}

PreparedPrompt Qwen2VLProcessor::prepare(const VlmPrompt& p) const {
  PreparedPrompt out;
  std::vector<int64_t> counts;
  for (const RgbImage& img : p.images) {
    Qwen2VLPixels px = preprocess_qwen2vl(img, image_config_);
    counts.push_back(px.num_tokens(image_config_.merge_size));
    out.grids.push_back(px.grid_thw);
    out.pixels.push_back(to_tensor(px.pixel_values));
  }
  out.ids = tokenizer_.encode(expand_image_pads(p.text, counts));
  return out;
}

Qwen2VLInputs Qwen2VLProcessor::collate(const std::vector<PreparedPrompt>& prompts,
                                        torch::Device device) const {
  if (prompts.empty()) throw Error("Qwen2VLProcessor: no prompts");
  Qwen2VLInputs in;
  std::vector<torch::Tensor> pixels;
  size_t longest = 0;
  for (const PreparedPrompt& p : prompts) {
    longest = std::max(longest, p.ids.size());
    for (const torch::Tensor& px : p.pixels) pixels.push_back(px.to(device));
    in.grids.insert(in.grids.end(), p.grids.begin(), p.grids.end());
  }
  const int64_t B = static_cast<int64_t>(prompts.size()), T = static_cast<int64_t>(longest);
  in.input_ids = torch::full({B, T}, pad_id_, torch::kInt64);
  in.attention_mask = torch::zeros({B, T}, torch::kInt64);
  for (int64_t b = 0; b < B; ++b) {
    const std::vector<int32_t>& ids = prompts[b].ids;
    const int64_t n = static_cast<int64_t>(ids.size()), off = T - n;  // left padding
    in.input_ids[b].narrow(0, off, n).copy_(
        torch::tensor(std::vector<int64_t>(ids.begin(), ids.end()), torch::kInt64));
    in.attention_mask[b].narrow(0, off, n).fill_(1);
  }
  if (!pixels.empty()) in.pixel_values = pixels.size() == 1 ? pixels[0] : torch::cat(pixels, 0);
  return in;
}

Qwen2VLInputs Qwen2VLProcessor::build(const std::vector<VlmPrompt>& prompts,
                                      torch::Device device) const {
  std::vector<PreparedPrompt> prepared;
  prepared.reserve(prompts.size());
  for (const VlmPrompt& p : prompts) prepared.push_back(prepare(p));
  return collate(prepared, device);
}

// --------------------------------------------------------------------------------- generation

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

FixedDecoder::FixedDecoder(Qwen2VLImpl& model, const KVCache& cache, const torch::Tensor& key_mask,
                           const torch::Tensor& rope_deltas, int64_t max_new, bool cuda_graph)
    : model_(model), capacity_(cache.length + max_new) {
  if (max_new < 1) throw Error(cat("FixedDecoder: room for ", max_new, " new positions"));
  const torch::Device dev = model.device();
  const int64_t B = key_mask.size(0);
  if (key_mask.size(1) != cache.length)
    throw Error(cat("FixedDecoder: key mask ", shape_str(key_mask.sizes().vec()),
                    " for a cache of ", cache.length, " positions"));
  cache_ = cache.fixed(capacity_);
  ids_ = torch::zeros({B, 1}, torch::TensorOptions().dtype(torch::kInt64).device(dev));
  valid_ = torch::zeros({B, capacity_}, torch::TensorOptions().dtype(torch::kBool).device(dev));
  valid_.narrow(1, 0, cache.length).copy_(key_mask.to(dev).to(torch::kBool));
  deltas_ = rope_deltas.to(dev).to(torch::kInt64).view({B});
  inv_freq_ = model.model->inv_freq(dev);
  if (cuda_graph) graph_ = std::make_unique<CudaGraph>(dev);
}

FixedDecoder::~FixedDecoder() = default;

void FixedDecoder::run() {
  const int64_t B = ids_.size(0);
  valid_.index_fill_(1, cache_.slot, true);  // the new position is a key from now on
  // every M-RoPE axis of a generated token is at slot + delta: [B] -> [3, B, 1]
  torch::Tensor pos = (cache_.slot + deltas_).view({1, B, 1}).expand({3, B, 1});
  auto [cos, sin] = model_.model->rope(pos, model_.dtype(), inv_freq_);
  torch::Tensor emb = model_.model->embed_tokens(ids_);
  // [B, capacity] -> [B, 1, 1, capacity]: one query row per sequence
  torch::Tensor h =
      model_.model->forward_rotary(emb, cos, sin, valid_.view({B, 1, 1, capacity_}), &cache_);
  logits_ = model_.lm_head(h).select(1, 0);  // [B, 1, V] -> [B, V]
}

torch::Tensor FixedDecoder::step(const torch::Tensor& ids) {
  torch::NoGradGuard ng;
  const int64_t before = cache_.length;
  if (before >= capacity_)
    throw Error(cat("FixedDecoder: the cache is full (", capacity_, " positions)"));
  if (ids.sizes() != ids_.sizes())
    throw Error(cat("FixedDecoder: ids ", shape_str(ids.sizes().vec()), ", expected ",
                    shape_str(ids_.sizes().vec())));
  ids_.copy_(ids);
  if (!graph_) {
    run();
  } else if (steps_ == 0) {
    graph_->run_eager([&] { run(); });  // the first step: warm-up, the same work
  } else {
    if (!graph_->captured()) graph_->capture([&] { run(); });
    graph_->replay();
  }
  // the cache's host-side count moves only when run() runs on the host, not at replays
  cache_.length = before + 1;
  ++steps_;
  return logits_;
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

// ------------------------------------------------------------------------------ label scores

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

CategoricalQuery categorical_query(const Tokenizer& tokenizer, const LabelSet& labels) {
  CategoricalQuery q;
  q.prompt = render_chat({ChatMessage::text("system", kEmotionSystemMessage),
                          ChatMessage::text_then_image("user", categorical_prompt(labels))},
                         true);
  for (const auto& l : labels.labels)
    q.candidates.push_back(tokenizer.encode(categorical_answer(l) + "<|im_end|>"));
  return q;
}

uint64_t prompt_seed(uint64_t seed, const std::vector<RgbImage>& images) {
  uint64_t h = seed;
  for (const RgbImage& im : images) {
    const int64_t size[2] = {im.width, im.height};
    uint64_t content = fnv1a64(size, sizeof size);
    content = fnv1a64(im.pixels.data(), im.pixels.size(), content);
    h = mix_seed(h, content);
  }
  return h;
}

GenerationConfig reference_sampling(const std::string& vlm_dir, double temperature,
                                    int max_new_tokens, uint64_t seed, bool cuda_graph) {
  GenerationConfig caller;
  caller.do_sample = true;
  caller.temperature = temperature;
  caller.top_p = 1.0;
  caller.max_new_tokens = max_new_tokens;
  caller.seed = seed;
  caller.cuda_graph = cuda_graph;
  return GenerationConfig::merge(GenerationConfig::from_dir(vlm_dir), caller);
}

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
