// Qwen2 language model with M-RoPE.
#include "emovlm/models/qwen2vl_text.h"

#include "emovlm/core/error.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/models/grad_checkpoint.h"

namespace emovlm {

// ------------------------------------------------------------------------------------ KV cache

std::pair<torch::Tensor, torch::Tensor> KVCache::append(size_t layer, const torch::Tensor& k_new,
                                                        const torch::Tensor& v_new) {
  if (is_fixed()) {
    if (layer >= k.size() || k_new.size(2) != 1)
      throw Error(cat("KV cache (fixed): layer ", layer, " of ", k.size(), ", ", k_new.size(2),
                      " new positions (1 expected)"));
    k[layer].index_copy_(2, slot, k_new);
    v[layer].index_copy_(2, slot, v_new);
    return {k[layer], v[layer]};
  }
  if (k.size() <= layer) {
    k.resize(layer + 1);
    v.resize(layer + 1);
  }
  const int64_t t = k_new.size(2), need = length + t;
  if (!k[layer].defined() || k[layer].size(2) < need) {
    // grow geometrically: [B, kvh, cap, hd]
    int64_t cap = std::max<int64_t>(need, k[layer].defined() ? 2 * k[layer].size(2) : need + 64);
    auto sizes = k_new.sizes().vec();
    sizes[2] = cap;
    torch::Tensor nk = torch::empty(sizes, k_new.options()),
                  nv = torch::empty(sizes, v_new.options());
    if (length > 0) {
      nk.narrow(2, 0, length).copy_(k[layer].narrow(2, 0, length));
      nv.narrow(2, 0, length).copy_(v[layer].narrow(2, 0, length));
    }
    k[layer] = nk;
    v[layer] = nv;
  }
  k[layer].narrow(2, length, t).copy_(k_new);
  v[layer].narrow(2, length, t).copy_(v_new);
  return {k[layer].narrow(2, 0, need), v[layer].narrow(2, 0, need)};
}

void KVCache::commit(int64_t t) {
  length += t;
  if (is_fixed()) slot.add_(t);
}

KVCache KVCache::fixed(int64_t capacity) const {
  if (empty() || is_fixed()) throw Error("KV cache: fixed() needs a filled growing cache");
  if (capacity < length)
    throw Error(cat("KV cache: capacity ", capacity, " below the ", length, " cached positions"));
  KVCache out;
  out.length = length;
  for (size_t i = 0; i < k.size(); ++i) {
    auto sizes = k[i].sizes().vec();  // [B, kvh, capacity, hd], zeros past `length`
    sizes[2] = capacity;
    out.k.push_back(torch::zeros(sizes, k[i].options()));
    out.v.push_back(torch::zeros(sizes, v[i].options()));
    out.k[i].narrow(2, 0, length).copy_(k[i].narrow(2, 0, length));
    out.v[i].narrow(2, 0, length).copy_(v[i].narrow(2, 0, length));
  }
  out.slot =
      torch::full({1}, length, torch::TensorOptions().dtype(torch::kInt64).device(k[0].device()));
  return out;
}

void KVCache::select(const torch::Tensor& rows) {
  if (is_fixed()) throw Error("KV cache: select() of a fixed cache");
  for (size_t i = 0; i < k.size(); ++i) {
    k[i] = k[i].index_select(0, rows);
    v[i] = v[i].index_select(0, rows);
  }
}

// ----------------------------------------------------------------------------------- layers

TextAttentionImpl::TextAttentionImpl(const Qwen2VLTextConfig& c)
    : heads_(c.num_attention_heads), kv_heads_(c.num_key_value_heads), head_dim_(c.head_dim()) {
  q_proj = register_module("q_proj", Linear(c.hidden_size, heads_ * head_dim_, true));
  k_proj = register_module("k_proj", Linear(c.hidden_size, kv_heads_ * head_dim_, true));
  v_proj = register_module("v_proj", Linear(c.hidden_size, kv_heads_ * head_dim_, true));
  o_proj = register_module("o_proj", Linear(heads_ * head_dim_, c.hidden_size, false));
}

torch::Tensor TextAttentionImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                         const torch::Tensor& sin, const torch::Tensor& mask,
                                         KVCache* cache, size_t layer) {
  const int64_t b = x.size(0), t = x.size(1), groups = heads_ / kv_heads_;
  // [B, T, H*hd] -> [B, T, H, hd]
  torch::Tensor q = q_proj(x).view({b, t, heads_, head_dim_});
  torch::Tensor k = k_proj(x).view({b, t, kv_heads_, head_dim_});
  torch::Tensor v =
      v_proj(x).view({b, t, kv_heads_, head_dim_}).transpose(1, 2);  // [B, kvh, T, hd]
  // cos/sin [B, T, hd] -> [B, T, 1, hd]
  torch::Tensor c = cos.unsqueeze(2), s = sin.unsqueeze(2);
  q = q * c + rotate_half(q) * s;
  k = (k * c + rotate_half(k) * s).transpose(1, 2);  // [B, kvh, T, hd]
  if (cache) std::tie(k, v) = cache->append(layer, k, v);
  torch::Tensor o;
  if (t == 1 && groups > 1) {
    // one new token (decoding): the query heads that share a key/value head attend as rows of one
    // head, [B, 1, kvh*G, hd] -> [B, kvh, G, hd], so the cache is read as it is, never repeated
    o = compat::scaled_dot_product_attention(q.view({b, kv_heads_, groups, head_dim_}), k, v, mask);
    o = o.reshape({b, 1, heads_ * head_dim_});  // [B, kvh, G, hd] -> [B, 1, H*hd]
  } else {
    if (groups > 1) {
      // grouped-query attention: [B, kvh, Tk, hd] -> [B, H, Tk, hd]
      k = k.repeat_interleave(groups, 1);
      v = v.repeat_interleave(groups, 1);
    }
    o = compat::scaled_dot_product_attention(q.transpose(1, 2), k, v, mask);  // q [B, H, T, hd]
    o = o.transpose(1, 2).reshape({b, t, heads_ * head_dim_});  // [B, H, T, hd] -> [B, T, H*hd]
  }
  return o_proj(o);
}

TextMlpImpl::TextMlpImpl(const Qwen2VLTextConfig& c) : act_(c.hidden_act) {
  gate_proj = register_module("gate_proj", Linear(c.hidden_size, c.intermediate_size, false));
  up_proj = register_module("up_proj", Linear(c.hidden_size, c.intermediate_size, false));
  down_proj = register_module("down_proj", Linear(c.intermediate_size, c.hidden_size, false));
}

torch::Tensor TextMlpImpl::forward(const torch::Tensor& x) {
  return down_proj(activation(act_, gate_proj(x)) * up_proj(x));
}

DecoderLayerImpl::DecoderLayerImpl(const Qwen2VLTextConfig& c) {
  self_attn = register_module("self_attn", TextAttention(c));
  mlp = register_module("mlp", TextMlp(c));
  input_layernorm = register_module("input_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
  post_attention_layernorm =
      register_module("post_attention_layernorm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor DecoderLayerImpl::forward(const torch::Tensor& x, const torch::Tensor& cos,
                                        const torch::Tensor& sin, const torch::Tensor& mask,
                                        KVCache* cache, size_t layer) {
  torch::Tensor h = x + self_attn(input_layernorm(x), cos, sin, mask, cache, layer);
  return h + mlp(post_attention_layernorm(h));
}

// ------------------------------------------------------------------------------------ model

Qwen2VLTextModelImpl::Qwen2VLTextModelImpl(const Qwen2VLTextConfig& c) : cfg_(c) {
  c.validate();
  embed_tokens = register_module("embed_tokens", Embedding(c.vocab_size, c.hidden_size));
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) layers->push_back(DecoderLayer(c));
  norm = register_module("norm", RMSNorm(c.hidden_size, c.rms_norm_eps));
}

torch::Tensor Qwen2VLTextModelImpl::inv_freq(torch::Device device) const {
  const int64_t hd = cfg_.head_dim();
  return (1.0 / torch::pow(cfg_.rope_theta,
                           torch::arange(0, hd, 2, torch::kFloat32) / static_cast<float>(hd)))
      .to(device);
}

std::pair<torch::Tensor, torch::Tensor> Qwen2VLTextModelImpl::rope(
    const torch::Tensor& position_ids, torch::ScalarType dtype,
    const torch::Tensor& inv_freq_given) const {
  const torch::Tensor freq =
      inv_freq_given.defined() ? inv_freq_given : inv_freq(position_ids.device());
  // [3, B, T, 1] * [hd/2] -> [3, B, T, hd/2] -> [3, B, T, hd]
  torch::Tensor freqs = position_ids.to(torch::kFloat32).unsqueeze(-1) * freq;
  torch::Tensor emb = torch::cat({freqs, freqs}, -1);
  torch::Tensor cos = emb.cos(), sin = emb.sin();
  // M-RoPE: the head dim is cut into mrope_section * 2 chunks; chunk i takes axis i % 3.
  std::vector<torch::Tensor> cs, ss;
  int64_t off = 0;
  for (int rep = 0; rep < 2; ++rep)
    for (int axis = 0; axis < 3; ++axis) {
      const int64_t n = cfg_.mrope_section[axis];
      cs.push_back(cos[axis].narrow(-1, off, n));
      ss.push_back(sin[axis].narrow(-1, off, n));
      off += n;
    }
  return {torch::cat(cs, -1).to(dtype), torch::cat(ss, -1).to(dtype)};
}

torch::Tensor Qwen2VLTextModelImpl::forward(const torch::Tensor& inputs_embeds,
                                            const torch::Tensor& position_ids,
                                            const torch::Tensor& mask, KVCache* cache) {
  auto [cos, sin] = rope(position_ids, inputs_embeds.scalar_type());
  return forward_rotary(inputs_embeds, cos, sin, mask, cache);
}

torch::Tensor Qwen2VLTextModelImpl::forward_rotary(const torch::Tensor& inputs_embeds,
                                                   const torch::Tensor& cos,
                                                   const torch::Tensor& sin,
                                                   const torch::Tensor& mask, KVCache* cache) {
  torch::Tensor h = inputs_embeds;
  const bool recompute =
      gradient_checkpointing && is_training() && !cache && torch::GradMode::is_enabled();
  size_t i = 0;
  for (const auto& m : *layers) {
    auto layer = std::dynamic_pointer_cast<DecoderLayerImpl>(m);
    if (recompute) {
      // the closure outlives this call (it runs again in backward): tensors and layer by value
      h = checkpointed(
          [layer, cos = cos, sin = sin, mask](const torch::Tensor& x) {
            return layer->forward(x, cos, sin, mask, nullptr, 0);
          },
          h);
    } else {
      h = layer->forward(h, cos, sin, mask, cache, i);
    }
    ++i;
  }
  if (cache) cache->commit(inputs_embeds.size(1));
  return norm(h);
}

}  // namespace emovlm
