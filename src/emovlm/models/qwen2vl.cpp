// Qwen2-VL for conditional generation.
#include "emovlm/models/qwen2vl.h"

#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/safetensors.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/models/lora.h"
#include "emovlm/models/weights.h"

namespace emovlm {

Qwen2VLImpl::Qwen2VLImpl(const Qwen2VLConfig& config) : cfg_(config) {
  config.validate();
  visual = register_module("visual", Qwen2VLVisionModel(config.vision));
  model = register_module("model", Qwen2VLTextModel(config.text));
  lm_head =
      register_module("lm_head", Linear(config.text.hidden_size, config.text.vocab_size, false));
}

std::shared_ptr<Qwen2VLImpl> Qwen2VLImpl::from_pretrained(const std::string& dir,
                                                          torch::ScalarType dtype,
                                                          torch::Device device,
                                                          const std::string& weights) {
  Qwen2VLConfig cfg = Qwen2VLConfig::from_dir(dir);
  auto m = std::make_shared<Qwen2VLImpl>(cfg);
  Checkpoint ck(weights.empty() ? dir : (std::filesystem::path(dir) / weights).string());
  const bool tied = !ck.contains("lm_head.weight");
  LoadOptions opt;
  opt.dtype = dtype;
  opt.device = device;
  // Hub layout (visual.*, model.*) or transformers 5 (model.visual.*, model.language_model.*)
  opt.candidates = [](const std::string& name) {
    std::vector<std::string> c{name};
    if (name.rfind("visual.", 0) == 0) c.push_back("model." + name);
    if (name.rfind("model.", 0) == 0) c.push_back("model.language_model." + name.substr(6));
    return c;
  };
  opt.optional = [tied](const std::string& name) { return tied && name == "lm_head.weight"; };
  opt.ignore_unused = [](const std::string& name) {
    return name.find("rotary_emb.inv_freq") != std::string::npos;
  };
  load_weights(*m, ck, opt);
  if (tied) m->lm_head->weight.set_data(m->model->embed_tokens->weight.data());
  m->eval();
  for (auto& p : m->parameters()) p.set_requires_grad(false);
  return m;
}

std::shared_ptr<Qwen2VLImpl> Qwen2VLImpl::from_pretrained(const std::string& dir,
                                                          const std::string& adapter,
                                                          torch::ScalarType dtype,
                                                          torch::Device device) {
  if (adapter.empty()) return from_pretrained(dir, dtype, device);
  auto m = from_pretrained(dir, torch::kFloat32, torch::kCPU);
  load_peft_adapter(*m, adapter);
  merge_lora(*m);
  m->move_to(device, dtype);
  for (auto& p : m->parameters()) p.set_requires_grad(false);
  return m;
}

void Qwen2VLImpl::save_pretrained(const std::string& dir, const std::string& assets_dir) const {
  namespace fs = std::filesystem;
  make_dirs(dir);
  NamedTensors ts;
  for (const auto& p : named_parameters()) {
    if (config().text.tie_word_embeddings && p.key() == "lm_head.weight") continue;
    ts.emplace_back(p.key(), p.value());
  }
  save_tensors((fs::path(dir) / "model.safetensors").string(), ts, {{"format", "pt"}});
  write_file_atomic((fs::path(dir) / "config.json").string(), config().to_json().dump(1) + "\n");
  if (assets_dir.empty() || fs::absolute(assets_dir) == fs::absolute(dir)) return;
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "chat_template.json",
                        "preprocessor_config.json", "generation_config.json"}) {
    const std::string from = (fs::path(assets_dir) / f).string();
    if (file_exists(from)) write_file_atomic((fs::path(dir) / f).string(), read_file(from));
  }
}

std::pair<torch::Tensor, torch::Tensor> Qwen2VLImpl::rope_index(
    const torch::Tensor& input_ids, const torch::Tensor& attention_mask,
    const std::vector<GridTHW>& grids) const {
  const int64_t B = input_ids.size(0), T = input_ids.size(1), m = cfg_.vision.spatial_merge_size;
  torch::Tensor ids = input_ids.to(torch::kCPU).to(torch::kInt64).contiguous();
  torch::Tensor mask = attention_mask.defined()
                           ? attention_mask.to(torch::kCPU).to(torch::kInt64).contiguous()
                           : torch::ones({B, T}, torch::kInt64);
  torch::Tensor pos = torch::ones({3, B, T}, torch::kInt64);
  torch::Tensor deltas = torch::zeros({B}, torch::kInt64);
  auto P = pos.accessor<int64_t, 3>();
  auto I = ids.accessor<int64_t, 2>();
  auto M = mask.accessor<int64_t, 2>();
  size_t image = 0;
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int64_t> cols;  // positions of real tokens
    for (int64_t t = 0; t < T; ++t)
      if (M[b][t]) cols.push_back(t);
    int64_t next = 0;  // the next text position
    int64_t maxpos = -1;
    size_t k = 0;
    while (k < cols.size()) {
      const int64_t tok = I[b][cols[k]];
      if (tok == cfg_.image_token_id) {
        if (image >= grids.size())
          throw Error(cat("the prompt has more images than the ", grids.size(), " grid(s) given"));
        const GridTHW g = grids[image++];
        const int64_t gh = g[1] / m, gw = g[2] / m, n = g[0] * gh * gw;
        for (int64_t f = 0; f < g[0]; ++f)
          for (int64_t y = 0; y < gh; ++y)
            for (int64_t x = 0; x < gw; ++x, ++k) {
              if (k >= cols.size() || I[b][cols[k]] != cfg_.image_token_id)
                throw Error(
                    cat("image ", image - 1, " needs ", n, " <|image_pad|> tokens in the prompt"));
              const int64_t c = cols[k];
              P[0][b][c] = next + f;
              P[1][b][c] = next + y;
              P[2][b][c] = next + x;
              maxpos = std::max({maxpos, P[0][b][c], P[1][b][c], P[2][b][c]});
            }
        next = maxpos + 1;
      } else {
        const int64_t c = cols[k++];
        P[0][b][c] = P[1][b][c] = P[2][b][c] = next;
        maxpos = std::max(maxpos, next);
        ++next;
      }
    }
    deltas[b] = maxpos + 1 - T;  // against the padded length, as the cache counts it
  }
  if (image != grids.size())
    throw Error(
        cat(grids.size(), " image grid(s) given but the prompts hold ", image, " image(s)"));
  return {pos, deltas};
}

torch::Tensor Qwen2VLImpl::embed(const Qwen2VLInputs& in, torch::Tensor* image_features) {
  torch::Tensor ids = in.input_ids.to(device());
  torch::Tensor emb = model->embed_tokens(ids);
  const int64_t n_pad = (ids == cfg_.image_token_id).sum().item<int64_t>();
  if (in.grids.empty()) {
    if (n_pad)
      throw Error(cat("the prompt holds ", n_pad, " <|image_pad|> tokens but no image was given"));
    return emb;
  }
  torch::Tensor feats = visual(in.pixel_values.to(device()).to(dtype()), in.grids).merged;
  if (image_features) *image_features = feats;
  if (feats.size(0) != n_pad)
    throw Error(cat("the images give ", feats.size(0), " visual tokens but the prompt holds ",
                    n_pad, " <|image_pad|>"));
  torch::Tensor where = (ids == cfg_.image_token_id).unsqueeze(-1).expand_as(emb);
  return emb.masked_scatter(where, feats.to(emb.scalar_type()));
}

void Qwen2VLImpl::move_to(torch::Device device, torch::ScalarType dtype) {
  const bool tied = lm_head->weight.data_ptr() == model->embed_tokens->weight.data_ptr();
  to(device, dtype);
  if (tied) lm_head->weight.set_data(model->embed_tokens->weight.data());
}

torch::Tensor causal_mask(const torch::Tensor& key_mask, int64_t t, int64_t past) {
  const int64_t B = key_mask.size(0), total = key_mask.size(1);
  auto dev = key_mask.device();
  torch::Tensor q =
      torch::arange(past, past + t, torch::TensorOptions().dtype(torch::kInt64).device(dev))
          .view({t, 1});
  torch::Tensor kk = torch::arange(total, torch::TensorOptions().dtype(torch::kInt64).device(dev))
                         .view({1, total});
  torch::Tensor causal = kk <= q;  // [T, total]
  torch::Tensor allowed =
      causal.unsqueeze(0) & key_mask.to(torch::kBool).view({B, 1, total});  // [B, T, total]
  allowed = allowed | (kk == q).unsqueeze(0);
  return allowed.unsqueeze(1);  // [B, 1, T, total]
}

Qwen2VLOutput Qwen2VLImpl::forward(const Qwen2VLInputs& in, KVCache* cache, bool last_only) {
  const int64_t B = in.input_ids.size(0), T = in.input_ids.size(1);
  torch::Tensor am =
      in.attention_mask.defined() ? in.attention_mask : torch::ones({B, T}, torch::kInt64);
  auto [pos, deltas] = rope_index(in.input_ids, am, in.grids);
  torch::Tensor feats;
  torch::Tensor emb = embed(in, &feats);
  torch::Tensor mask = causal_mask(am.to(device()), T, 0);
  torch::Tensor h = model(emb, pos.to(device()), mask, cache);
  if (last_only) h = h.narrow(1, T - 1, 1);
  return {lm_head(h), pos, deltas, feats};
}

torch::Tensor Qwen2VLImpl::extend(const torch::Tensor& ids, const torch::Tensor& rope_deltas,
                                  const torch::Tensor& key_mask, KVCache& cache) {
  const int64_t B = ids.size(0), T = ids.size(1), past = cache.length;
  // every axis: cache length + i + delta; [B, T] -> [3, B, T]
  torch::Tensor p = torch::arange(past, past + T, torch::kInt64).view({1, T}) +
                    rope_deltas.to(torch::kCPU).view({B, 1});
  torch::Tensor pos = p.unsqueeze(0).expand({3, B, T}).contiguous().to(device());
  torch::Tensor emb = model->embed_tokens(ids.to(device()));
  torch::Tensor mask = causal_mask(key_mask.to(device()), T, past);
  return lm_head(model(emb, pos, mask, &cache));
}

torch::Tensor Qwen2VLImpl::decode(const torch::Tensor& ids, const torch::Tensor& rope_deltas,
                                  const torch::Tensor& key_mask, KVCache& cache) {
  return extend(ids, rope_deltas, key_mask, cache).squeeze(1);
}

}  // namespace emovlm
