// Qwen2-VL against the reference fixtures: vision features, position ids, logits (float32, bf16
// weights, bf16 compute), greedy decoding, the left-padded batch and label scores. Every case
// comes from the fixture directory's cases.json / extra_cases.json.
#include <gtest/gtest.h>

#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/data/labels.h"
#include "emovlm/models/qwen2vl.h"
#include "emovlm/models/qwen2vl_fixed_decoder.h"
#include "emovlm/models/qwen2vl_generation.h"
#include "emovlm/models/qwen2vl_label_scores.h"
#include "emovlm/models/qwen2vl_processor.h"
#include "emovlm/pipeline/emotion_query.h"
#include "emovlm/text/chat.h"
#include "test_sensitivity.h"
#include "test_util.h"

using namespace emovlm;

namespace {

std::string qdir() {
  return test::ref_path("qwen2vl_tiny");
}

struct Fixture {
  json cases, extra;  // extra: empty when extra_cases.json is absent
  std::map<std::string, torch::Tensor> expected, extra_expected;
  std::map<std::string, json> images;  // by name
  Fixture() {
    cases = read_json_file(qdir() + "/cases.json");
    expected = load_tensors(qdir() + "/expected.safetensors");
    if (file_exists(qdir() + "/extra_cases.json")) {
      extra = read_json_file(qdir() + "/extra_cases.json");
      extra_expected = load_tensors(qdir() + "/extra_expected.safetensors");
    }
    for (const auto& im : cases["images"]) images[im["name"]] = im;
  }
  GridTHW grid(const std::string& image) const {
    const json& im = images.at(image);
    std::string proc = im.value("reference_processor", std::string("pil"));
    auto g = im["grid_thw." + proc].get<std::vector<int64_t>>();
    return {g[0], g[1], g[2]};
  }
  torch::Tensor pixels(const std::string& image) const {
    std::string proc = images.at(image).value("reference_processor", std::string("pil"));
    return expected.at(image + ".pixel_values." + proc);
  }
  const json& prompt(const std::string& name) const {
    for (const auto& p : cases["prompts"])
      if (p["name"] == name) return p;
    throw Error("cases.json has no prompt " + name);
  }
  // The prompts of cases.json that have an image.
  std::vector<json> image_prompts() const {
    std::vector<json> out;
    for (const auto& p : cases["prompts"])
      if (!p["image"].is_null()) out.push_back(p);
    return out;
  }
  // Fixture prompts left-padded with `pad` into one batch, as the reference pads: their input ids
  // and the reference's pixel values.
  Qwen2VLInputs left_padded_batch(const std::vector<json>& prompts, int64_t pad) const {
    int64_t len = 0;
    for (const auto& p : prompts)
      len = std::max<int64_t>(len, static_cast<int64_t>(p["input_ids"].size()));
    std::vector<int64_t> ids, mask;
    Qwen2VLInputs in;
    std::vector<torch::Tensor> px;
    for (const auto& p : prompts) {
      auto row = p["input_ids"].get<std::vector<int64_t>>();
      const int64_t n_pad = len - static_cast<int64_t>(row.size());
      ids.insert(ids.end(), n_pad, pad);
      ids.insert(ids.end(), row.begin(), row.end());
      mask.insert(mask.end(), n_pad, 0);
      mask.insert(mask.end(), row.size(), 1);
      in.grids.push_back(grid(p["image"]));
      px.push_back(pixels(p["image"]));
    }
    const int64_t b = static_cast<int64_t>(prompts.size());
    in.input_ids = torch::tensor(ids, torch::kInt64).view({b, len});
    in.attention_mask = torch::tensor(mask, torch::kInt64).view({b, len});
    in.pixel_values = torch::cat(px);
    return in;
  }
  // The first two prompts with an image, left-padded (any fixture has them).
  Qwen2VLInputs two_prompt_batch() const {
    std::vector<json> ps = image_prompts();
    if (ps.size() < 2) throw Error("cases.json needs two prompts with an image");
    return left_padded_batch({ps[0], ps[1]}, Qwen2VLProcessor::from_dir(qdir()).pad_id());
  }
  // The model inputs of a fixture prompt, from its input_ids and the reference pixel values.
  Qwen2VLInputs inputs(const json& p) const {
    Qwen2VLInputs in;
    auto ids = p["input_ids"].get<std::vector<int64_t>>();
    in.input_ids = torch::tensor(ids, torch::kInt64).view({1, -1});
    in.attention_mask = torch::ones_like(in.input_ids);
    if (!p["image"].is_null()) {
      in.grids = {grid(p["image"])};
      in.pixel_values = pixels(p["image"]);
    }
    return in;
  }
  // An image as Pillow decoded it (NAME.rgb).
  RgbImage rgb(const std::string& image) const {
    torch::Tensor t = expected.at(image + ".rgb");
    RgbImage im(static_cast<int>(t.size(1)), static_cast<int>(t.size(0)));
    std::memcpy(im.pixels.data(), t.data_ptr(), im.pixels.size());
    return im;
  }
};

const Fixture& fixture() {
  static Fixture f;
  return f;
}

Qwen2VL& model_f32() {
  static Qwen2VL m = Qwen2VL(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32));
  return m;
}

double rel_err(const torch::Tensor& a, const torch::Tensor& b) {
  torch::Tensor x = a.to(torch::kFloat64), y = b.to(torch::kFloat64);
  return ((x - y).abs().max() / y.abs().max()).item<double>();
}

}  // namespace

TEST(Qwen2VL, ConfigFlatLayout) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/config.json");
  const json want = read_json_file(qdir() + "/config.json");
  Qwen2VLConfig c = Qwen2VLConfig::from_dir(qdir());
  const json& v = want["vision_config"];
  EXPECT_EQ(c.vision.embed_dim, v["embed_dim"].get<int64_t>());
  EXPECT_EQ(c.vision.depth, v["depth"].get<int64_t>());
  EXPECT_EQ(c.vision.num_heads, v["num_heads"].get<int64_t>());
  EXPECT_EQ(c.text.hidden_size, want["hidden_size"].get<int64_t>());
  EXPECT_EQ(c.text.num_hidden_layers, want["num_hidden_layers"].get<int64_t>());
  EXPECT_EQ(c.text.num_key_value_heads, want["num_key_value_heads"].get<int64_t>());
  EXPECT_DOUBLE_EQ(c.text.rope_theta, want["rope_theta"].get<double>());
  const auto sections = want["rope_scaling"]["mrope_section"].get<std::vector<int64_t>>();
  ASSERT_EQ(sections.size(), 3u);
  EXPECT_EQ(c.text.mrope_section, (std::array<int64_t, 3>{sections[0], sections[1], sections[2]}));
  EXPECT_EQ(c.image_token_id, want["image_token_id"].get<int64_t>());
  EXPECT_EQ(c.text.tie_word_embeddings, want.value("tie_word_embeddings", false));
  // written back with the published field types (transformers 5 rejects mlp_ratio 4.0)
  json j = c.to_json();
  EXPECT_TRUE(j["vision_config"]["mlp_ratio"].is_number_integer());
  EXPECT_EQ(j["vision_config"]["mlp_ratio"], v["mlp_ratio"]);
}

TEST(Qwen2VL, VisionMatchesReference) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  const Fixture& f = fixture();
  torch::NoGradGuard ng;
  for (const auto& im : f.cases["images"]) {
    const std::string name = im["name"];
    VisionOutput out = model_f32()->visual->forward(f.pixels(name), {f.grid(name)});
    EXPECT_LT(rel_err(out.merged, f.expected.at(name + ".vision.merged")), 1e-4) << name;
    EXPECT_LT(rel_err(out.merged.mean(0), f.expected.at(name + ".vision.pooled_mean")), 1e-4)
        << name;
    if (f.expected.count(name + ".vision.last_hidden"))
      EXPECT_LT(rel_err(out.last_hidden, f.expected.at(name + ".vision.last_hidden")), 1e-4)
          << name;
  }
}

TEST(Qwen2VL, SeveralImagesInOneCallMatchOneByOne) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  const Fixture& f = fixture();
  torch::NoGradGuard ng;
  std::vector<GridTHW> grids;
  std::vector<torch::Tensor> px, want;
  for (const auto& im : f.cases["images"]) {
    grids.push_back(f.grid(im["name"]));
    px.push_back(f.pixels(im["name"]));
    want.push_back(f.expected.at(im["name"].get<std::string>() + ".vision.merged"));
  }
  VisionOutput out = model_f32()->visual(torch::cat(px), grids);
  EXPECT_LT(rel_err(out.merged, torch::cat(want)), 1e-4);
}

TEST(Qwen2VL, PositionIdsAndLogitsMatchReference) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  const Fixture& f = fixture();
  torch::NoGradGuard ng;
  for (const auto& p : f.cases["prompts"]) {
    const std::string name = p["name"];
    Qwen2VLInputs in = f.inputs(p);
    Qwen2VLOutput out = model_f32()->forward(in);
    torch::Tensor want_pos = f.expected.at(name + ".position_ids");
    EXPECT_TRUE(torch::equal(out.position_ids.select(1, 0), want_pos)) << name;
    EXPECT_EQ(out.rope_deltas[0].item<int64_t>(), p["rope_delta"].get<int64_t>()) << name;
    EXPECT_LT(rel_err(out.logits[0], f.expected.at(name + ".logits")), 1e-4) << name;
  }
}

// float64 against the float64 reference: the logits of every prompt and the vision features of
// every image within twice their response to one-ulp weight moves, plus the fixture's float32
// storage rounding (test_sensitivity.h explains why no tighter bound holds).
TEST(Qwen2VL, Float64MatchesReference) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  const Fixture& f = fixture();
  torch::NoGradGuard ng;
  std::vector<std::string> names;
  std::vector<torch::Tensor> refs;
  for (const auto& p : f.cases["prompts"]) {
    names.push_back(p["name"].get<std::string>() + " logits");
    refs.push_back(f.expected.at(p["name"].get<std::string>() + ".logits"));
  }
  for (const auto& im : f.cases["images"]) {
    names.push_back(im["name"].get<std::string>() + " vision");
    refs.push_back(f.expected.at(im["name"].get<std::string>() + ".vision.merged"));
  }
  const test::Sensitivity s = test::sensitivity([&](uint64_t seed) {
    Qwen2VL m(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat64));
    if (seed) test::nudge_weights(*m, seed);
    std::vector<torch::Tensor> out;
    for (const auto& p : f.cases["prompts"]) {
      Qwen2VLInputs in = f.inputs(p);
      if (in.pixel_values.defined()) in.pixel_values = in.pixel_values.to(torch::kFloat64);
      out.push_back(m->forward(in).logits[0]);
    }
    for (const auto& im : f.cases["images"])
      out.push_back(
          m->visual->forward(f.pixels(im["name"]).to(torch::kFloat64), {f.grid(im["name"])})
              .merged);
    return out;
  });
  for (size_t i = 0; i < refs.size(); ++i) {
    const double err = test::max_rel(s.outputs[i], refs[i]);
    EXPECT_LT(err, 2 * s.move[i] + test::kStorageRounding)
        << names[i] << ": one-ulp weight moves move it by " << s.move[i];
    EXPECT_GT(s.move[i], 0.0) << names[i];
  }
}

// The float32 steps of the reference's float64 model: RMSNorm computes its variance and
// normalisation in float32, and the M-RoPE cos/sin are float32 values (angles and cos/sin in
// float32), cast to float64.
TEST(Qwen2VL, Float64KeepsTheReferencesFloat32Steps) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/config.json");
  torch::manual_seed(4);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  RMSNorm norm(16, 1e-6);
  norm->to(torch::kFloat64);
  torch::NoGradGuard ng;
  norm->weight.copy_(torch::rand({16}, f64) + 0.5);
  const torch::Tensor x = torch::randn({5, 16}, f64) * 3, xf = x.to(torch::kFloat32);
  const torch::Tensor want =
      norm->weight * (xf * torch::rsqrt(xf.pow(2).mean(-1, true) + 1e-6)).to(torch::kFloat64);
  const torch::Tensor all64 = norm->weight * x * torch::rsqrt(x.pow(2).mean(-1, true) + 1e-6);
  const torch::Tensor got = norm(x);
  EXPECT_EQ(got.scalar_type(), torch::kFloat64);
  EXPECT_LT((got - want).abs().max().item<double>(), 1e-12);
  EXPECT_GT((got - all64).abs().max().item<double>(), 1e-9);  // float32 rounding shows
  // rotary: positions up to 3000 on each axis, cos/sin exactly float32 values
  Qwen2VLTextModelImpl text(Qwen2VLConfig::from_dir(qdir()).text);
  const torch::Tensor pos =
      torch::arange(0, 3000, 7, torch::kInt64).view({1, 1, -1}).expand({3, 1, -1});
  auto [cos, sin] = text.rope(pos, torch::kFloat64);
  EXPECT_EQ(cos.scalar_type(), torch::kFloat64);
  for (const torch::Tensor& t : {cos, sin})
    EXPECT_TRUE(torch::equal(t.to(torch::kFloat32).to(torch::kFloat64), t));
}

TEST(Qwen2VL, Bf16WeightsFile) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model-bf16.safetensors");
  const Fixture& f = fixture();
  torch::NoGradGuard ng;
  Qwen2VL m(
      Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32, torch::kCPU, "model-bf16.safetensors"));
  for (const auto& p : f.cases["prompts"]) {
    const std::string key = p["name"].get<std::string>() + ".logits_bf16_weights";
    if (!f.expected.count(key)) continue;
    EXPECT_LT(rel_err(m->forward(f.inputs(p)).logits[0], f.expected.at(key)), 1e-4) << key;
  }
}

// bfloat16 compute against the float64 reference. calibration.json gives the reference stack's
// own bf16 error on the first categorical prompt (1.9e-2 of the max logit, 7e-3 on vision, arg-max
// agreeing at 90 of 91 positions). One prompt's figure is not a bound for the others: logits may
// sit at 1.25x that level for every prompt (measured here: 1.59e-2, 1.92e-2, 1.72e-2), and every
// arg-max disagreement must be a near-tie of the reference (top-2 margin within that error level).
// Vision features land at 9.4e-3 to 9.7e-3 (1.4x the reference's figure) with libtorch 1.13's bf16
// kernels; float32 attention scores and a float32 residual stream did not move it (tried), while
// the float32 path matches to 1e-6, so the gap is kernel rounding, not the algorithm: 1.5x here.
// With pip torch 2.11's CPU kernels (an H200 machine, 2026-11-26) the error bounds hold but
// cat_img_b's arg-max agrees at 120 of 127 positions (94.5%, under the 95% floor), every
// disagreement a near-tie within the bound; the floor is kept (the CI's libtorch 1.13 meets it).
TEST(Qwen2VL, Bf16Compute) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/calibration.json");
  const Fixture& f = fixture();
  json cal = read_json_file(qdir() + "/calibration.json")["cpu.bfloat16"];
  const double logit_tol = 1.25 * cal["logits_maxabs_over_maxref"].get<double>();
  const double vision_tol = 1.5 * cal["vision_maxabs_over_maxref"].get<double>();
  torch::NoGradGuard ng;
  Qwen2VL m(Qwen2VLImpl::from_pretrained(qdir(), torch::kBFloat16));
  for (const auto& p : f.cases["prompts"]) {
    if (p["image"].is_null()) continue;
    const std::string name = p["name"];
    torch::Tensor logits = m->forward(f.inputs(p)).logits[0].to(torch::kFloat32);
    torch::Tensor ref = f.expected.at(name + ".logits");
    EXPECT_LT(rel_err(logits, ref), logit_tol) << name;
    torch::Tensor ours = logits.argmax(-1), theirs = ref.argmax(-1);
    const double scale = ref.abs().max().item<double>();
    int disagree = 0;
    for (int64_t t = 0; t < ref.size(0); ++t) {
      if (ours[t].item<int64_t>() == theirs[t].item<int64_t>()) continue;
      ++disagree;
      double margin = (ref[t][theirs[t]] - ref[t][ours[t]]).item<double>();
      EXPECT_LE(margin, logit_tol * scale) << name << " position " << t << " is not a near-tie";
    }
    EXPECT_GE(1.0 - static_cast<double>(disagree) / ref.size(0), 0.95) << name;
    const std::string img = p["image"];
    torch::Tensor v = m->visual->forward(f.pixels(img), {f.grid(img)}).merged.to(torch::kFloat32);
    EXPECT_LT(rel_err(v, f.expected.at(img + ".vision.merged")), vision_tol) << img;
  }
}

TEST(Qwen2VL, GreedyDecodingMatchesReference) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  const Fixture& f = fixture();
  for (const auto& p : f.cases["prompts"]) {
    if (!p.contains("greedy_12")) continue;
    auto want = p["greedy_12"].get<std::vector<int64_t>>();
    for (bool fixed : {false, true}) {
      GenerationConfig g;
      g.max_new_tokens = static_cast<int>(want.size());
      g.eos_token_ids = {-1};  // EOS disabled, as the fixture
      g.cuda_graph = fixed;  // on the CPU: the fixed-shape steps a graph would replay, run eagerly
      GenerationResult r = generate(*model_f32(), f.inputs(p), g);
      EXPECT_EQ(r.tokens[0], want) << p["name"] << (fixed ? " (fixed-shape decoding)" : "");
    }
  }
}

TEST(Qwen2VL, OnePrefillServesScoresAndGeneration) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  // extract --vlm-mode generate: the label scores and each row's answer continue one prefill of
  // the batch; each must equal its own run from the inputs
  const Fixture& f = fixture();
  torch::NoGradGuard ng;
  const std::vector<json> ps = f.image_prompts();
  ASSERT_GE(ps.size(), 2u);
  Qwen2VLInputs in = f.two_prompt_batch();
  Qwen2VLImpl& m = *model_f32();
  const std::vector<std::vector<int32_t>> cands = {{5, 9, 11}, {5, 9, 3}, {7}};
  Prefill pf = prefill(m, in);
  std::vector<Prefill> greedy_rows = {pf.row(0), pf.row(1)}, sampled_rows = {pf.row(0), pf.row(1)};
  torch::Tensor pooled, want_pooled;
  torch::Tensor scores = label_scores(m, std::move(pf), cands, &pooled);
  EXPECT_TRUE(torch::equal(scores, label_scores(m, in, cands, &want_pooled)));
  EXPECT_TRUE(torch::equal(pooled, want_pooled));
  // greedy: each row of the padded batch decodes the reference's tokens for its prompt
  GenerationConfig greedy;
  greedy.max_new_tokens = 8;
  greedy.eos_token_ids = {-1};
  GenerationConfig sampled = greedy;
  sampled.do_sample = true;
  sampled.temperature = 0.8;
  for (int64_t r = 0; r < 2; ++r) {
    const json& p = ps[static_cast<size_t>(r)];
    GenerationResult g = generate(m, std::move(greedy_rows[r]), greedy);
    ASSERT_EQ(g.tokens.size(), 1u);
    if (p.contains("greedy_12")) {
      auto want = p["greedy_12"].get<std::vector<int64_t>>();
      want.resize(std::min<size_t>(want.size(), 8));
      g.tokens[0].resize(want.size());
      EXPECT_EQ(g.tokens[0], want) << p["name"] << ": row " << r << " of the padded batch";
    } else {
      EXPECT_EQ(g.tokens[0], generate(m, f.inputs(p), greedy).tokens[0]) << p["name"];
    }
    // sampled: the row draws what the prompt alone draws with the same seed
    sampled.seed = 7 + static_cast<uint64_t>(r);
    EXPECT_EQ(generate(m, std::move(sampled_rows[r]), sampled).tokens[0],
              generate(m, f.inputs(p), sampled).tokens[0])
        << p["name"] << ": row " << r << " sampled";
  }
  // one prompt (extract's default, --vlm-batch 1): the row is the prompt's own prefill, so the
  // sampled answer is the one generate() draws from the inputs
  for (const auto& p : ps) {
    Prefill one = prefill(m, f.inputs(p));
    Prefill row = one.row(0);
    EXPECT_TRUE(
        torch::equal(label_scores(m, std::move(one), cands), label_scores(m, f.inputs(p), cands)))
        << p["name"];
    EXPECT_EQ(generate(m, std::move(row), sampled).tokens[0],
              generate(m, f.inputs(p), sampled).tokens[0])
        << p["name"];
  }
}

TEST(Qwen2VL, FixedDecoderMatchesDecode) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  // a left-padded batch of two prompts (with the fixture's key/value heads: grouped-query
  // attention when fewer than the query heads)
  const Fixture& f = fixture();
  torch::NoGradGuard ng;
  Qwen2VLInputs in = f.two_prompt_batch();
  Qwen2VLImpl& m = *model_f32();
  KVCache cache;
  Qwen2VLOutput out = m.forward(in, &cache, true);
  const int64_t B = in.input_ids.size(0), steps = 5;
  FixedDecoder fixed(m, cache, in.attention_mask, out.rope_deltas, steps, /*cuda_graph=*/false);
  EXPECT_FALSE(fixed.uses_graph());
  torch::Tensor key_mask = in.attention_mask, next = out.logits.select(1, 0).argmax(-1, true);
  for (int64_t s = 0; s < steps; ++s) {
    key_mask = torch::cat({key_mask, torch::ones({B, 1}, torch::kInt64)}, 1);
    torch::Tensor want = m.decode(next, out.rope_deltas, key_mask, cache);
    torch::Tensor got = fixed.step(next);
    EXPECT_LT(rel_err(got, want), 1e-5) << "step " << s;
    EXPECT_EQ(fixed.length(), cache.length);
    next = want.argmax(-1, true);
  }
  EXPECT_THROW(fixed.step(next), Error);  // room for `steps` tokens only
  EXPECT_THROW(FixedDecoder(m, cache, in.attention_mask, out.rope_deltas, 2, false),
               Error);  // mask of another length
}

TEST(Qwen2VL, LeftPaddedBatchMatchesReference) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/extra_cases.json");
  const Fixture& f = fixture();
  const json& b = f.extra["batch_left_pad"];
  torch::NoGradGuard ng;
  std::vector<json> prompts;
  for (const auto& pn : b["prompts"]) prompts.push_back(f.prompt(pn));
  const int64_t pad = b.contains("pad_id") ? b["pad_id"].get<int64_t>()
                                           : Qwen2VLProcessor::from_dir(qdir()).pad_id();
  Qwen2VLInputs in = f.left_padded_batch(prompts, pad);
  // the reference's batch is the fixture prompts left-padded
  EXPECT_TRUE(torch::equal(in.input_ids, f.extra_expected.at("batch_left_pad.input_ids")));
  EXPECT_TRUE(
      torch::equal(in.attention_mask, f.extra_expected.at("batch_left_pad.attention_mask")));
  Qwen2VLOutput out = model_f32()->forward(in);
  torch::Tensor mask = in.attention_mask.to(torch::kBool);
  EXPECT_TRUE(torch::equal(out.position_ids.masked_select(mask.unsqueeze(0).expand({3, -1, -1})),
                           f.extra_expected.at("batch_left_pad.position_ids")
                               .masked_select(mask.unsqueeze(0).expand({3, -1, -1}))));
  torch::Tensor ref = f.extra_expected.at("batch_left_pad.logits");
  for (int64_t r = 0; r < in.input_ids.size(0); ++r) {
    torch::Tensor rows = mask[r].nonzero().squeeze(1);
    torch::Tensor got = out.logits[r].index_select(0, rows), want = ref[r].index_select(0, rows);
    ASSERT_TRUE(got.isfinite().all().item<bool>()) << "row " << r;
    if (!want.isfinite().all().item<bool>()) {
      // The reference's eager attention turns the fully masked padding rows into NaN, which then
      // reaches every position of a padded row (0 * NaN in the value product). The valid positions
      // of a left-padded row must equal the same prompt alone: compare with that reference instead.
      const std::string alone = b["prompts"][r].get<std::string>() + ".logits";
      want = f.expected.at(alone);
    }
    EXPECT_LT(rel_err(got, want), 1e-4) << "row " << r;
  }
  // The processor builds the same batch from the prompts' text and images
  Qwen2VLProcessor proc = Qwen2VLProcessor::from_dir(qdir());
  std::vector<VlmPrompt> vp;
  for (const auto& p : prompts) vp.push_back({p["text"], {f.rgb(p["image"])}});
  Qwen2VLInputs built = proc.build(vp);
  EXPECT_TRUE(torch::equal(built.input_ids, in.input_ids));
  EXPECT_TRUE(torch::equal(built.attention_mask, in.attention_mask));
}

TEST(Qwen2VL, LabelScoresMatchReference) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/extra_cases.json");
  const Fixture& f = fixture();
  const json& ls = f.extra["label_scores"];
  Qwen2VLProcessor proc = Qwen2VLProcessor::from_dir(qdir());
  for (auto it = ls["scores"].begin(); it != ls["scores"].end(); ++it) {
    const std::string pname = it.key();
    const json& prompt = f.prompt(pname);
    std::vector<std::vector<int32_t>> cands;
    std::vector<double> want;
    for (auto c = it.value().begin(); c != it.value().end(); ++c) {
      auto ids = c.value()["answer_ids"].get<std::vector<int32_t>>();
      // the answer ids are the tokenizer's for the answer text
      EXPECT_EQ(proc.tokenizer().encode(categorical_answer(c.key()) + "<|im_end|>"), ids)
          << c.key();
      cands.push_back(ids);
      want.push_back(c.value()["sum_logprob"].get<double>());
    }
    torch::Tensor s =
        label_scores(*model_f32(), proc, {{prompt["text"], {f.rgb(prompt["image"])}}}, cands);
    for (size_t c = 0; c < want.size(); ++c)
      EXPECT_NEAR(s[0][c].item<double>(), want[c], 1e-3) << pname << " " << c;
  }
}

// Deterministic mode: an image's label scores do not depend on the batch it came in.
TEST(Qwen2VL, LabelScoresIndependentOfBatch) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  const Fixture& f = fixture();
  Qwen2VLProcessor proc = Qwen2VLProcessor::from_dir(qdir());
  const LabelSet labels = LabelSet::from_spec("mikels8");
  const CategoricalQuery query = categorical_query(proc.tokenizer(), labels);
  const std::vector<std::vector<int32_t>>& cands = query.candidates;
  const std::string& text = query.prompt;
  std::vector<VlmPrompt> prompts;
  for (const auto& im : f.cases["images"]) prompts.push_back({text, {f.rgb(im["name"])}});
  torch::Tensor mixed = label_scores(*model_f32(), proc, prompts, cands, /*deterministic=*/true);
  torch::Tensor batched = label_scores(*model_f32(), proc, prompts, cands, /*deterministic=*/false);
  for (size_t i = 0; i < prompts.size(); ++i) {
    torch::Tensor alone = label_scores(*model_f32(), proc, {prompts[i]}, cands, true);
    EXPECT_TRUE(torch::equal(alone[0], mixed[i])) << i;
    EXPECT_LT((batched[i] - alone[0]).abs().max().item<double>(), 1e-3)
        << i;  // padded batch: same within float error
  }
}

// Label scores equal the plain sum of log-probabilities of each candidate appended to the prompt,
// whatever the candidates share: a common first part (run once), nothing, or one candidate being
// the start of another.
TEST(Qwen2VL, LabelScoresEqualFullSequenceLogProbs) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  const Fixture& f = fixture();
  torch::NoGradGuard ng;
  const json& p = f.cases["prompts"][0];
  Qwen2VLInputs in = f.inputs(p);
  const std::vector<std::vector<std::vector<int32_t>>> sets = {
      {{5, 9, 11, 40}, {5, 9, 12}, {5, 9, 11, 41, 42}},  // common first part of two tokens
      {{7, 3}, {8, 3, 4}, {9}},                          // nothing in common, one single token
      {{5, 9}, {5, 9, 11}, {5, 9, 11, 12}}};             // each the start of the next
  for (const auto& cands : sets) {
    torch::Tensor got = label_scores(*model_f32(), in, cands);
    for (size_t c = 0; c < cands.size(); ++c) {
      std::vector<int64_t> tail(cands[c].begin(), cands[c].end());
      Qwen2VLInputs full = in;
      full.input_ids =
          torch::cat({in.input_ids, torch::tensor(tail, torch::kInt64).view({1, -1})}, 1);
      full.attention_mask = torch::ones_like(full.input_ids);
      torch::Tensor lp =
          torch::log_softmax(model_f32()->forward(full).logits[0].to(torch::kFloat64), -1);
      const int64_t T = in.input_ids.size(1);
      double want = 0;
      for (size_t i = 0; i < tail.size(); ++i)
        want += lp[T - 1 + static_cast<int64_t>(i)][tail[i]].item<double>();
      EXPECT_NEAR(got[0][static_cast<int64_t>(c)].item<double>(), want, 1e-4)
          << "set of " << cands.size() << ", candidate " << c;
    }
  }
}

TEST(Qwen2VL, WeightErrorsNameTheTensors) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");
  test::TempDir dir;
  for (const char* f : {"config.json", "tokenizer.json"})
    std::filesystem::copy_file(qdir() + "/" + f, dir / f);
  const int64_t embed = Qwen2VLConfig::from_dir(qdir()).vision.embed_dim;
  auto w = load_tensors(qdir() + "/model.safetensors");
  w.erase("model.norm.weight");
  w["visual.merger.ln_q.bias"] = torch::zeros({embed + 3});
  w["extra.tensor"] = torch::zeros({1});
  save_tensors(dir / "model.safetensors", w);
  try {
    Qwen2VLImpl::from_pretrained(dir.path(), torch::kFloat32);
    FAIL();
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("missing 1 tensor(s): model.norm.weight"), std::string::npos) << m;
    EXPECT_NE(
        m.find(emovlm::cat("visual.merger.ln_q.bias [", embed + 3, "] (expected [", embed, "])")),
        std::string::npos)
        << m;
    EXPECT_NE(m.find("unexpected 1 tensor(s): extra.tensor"), std::string::npos) << m;
  }
}

// transformers 5 writes a nested config (text_config, rope_parameters) and model.language_model.*
// keys. The fixture's model loads from that layout, and the other embedding setting than the
// fixture's works too: an untied fixture without its lm_head ties it to the embeddings; a tied
// fixture given an lm_head keeps the two apart.
TEST(Qwen2VL, NestedLayoutAndTiedEmbeddings) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  const Fixture& f = fixture();
  test::TempDir dir;
  const json flat = read_json_file(qdir() + "/config.json");
  json nested = {{"model_type", "qwen2_vl"},
                 {"vision_config", flat["vision_config"]},
                 {"tie_word_embeddings", flat.value("tie_word_embeddings", false)}};
  for (const char* k : {"image_token_id", "vision_start_token_id", "vision_end_token_id",
                        "video_token_id", "eos_token_id"})
    if (flat.contains(k)) nested[k] = flat[k];
  json text = flat;
  text.erase("vision_config");
  text.erase("rope_scaling");
  text.erase("rope_theta");
  text["rope_parameters"] = {{"rope_type", "default"},
                             {"mrope_section", flat["rope_scaling"]["mrope_section"]},
                             {"rope_theta", flat["rope_theta"]}};
  nested["text_config"] = text;
  write_file_atomic(dir / "config.json", nested.dump(1));
  std::map<std::string, torch::Tensor> renamed;
  for (auto& [k, v] : load_tensors(qdir() + "/model.safetensors")) {
    if (k.rfind("visual.", 0) == 0)
      renamed["model." + k] = v;
    else if (k.rfind("model.", 0) == 0)
      renamed["model.language_model." + k.substr(6)] = v;
    else
      renamed[k] = v;
  }
  const bool fixture_tied = !renamed.count("lm_head.weight");
  save_tensors(dir / "model.safetensors", renamed);
  Qwen2VL m(Qwen2VLImpl::from_pretrained(dir.path(), torch::kFloat32));
  const json& p = f.cases["prompts"][0];
  const torch::Tensor want = f.expected.at(p["name"].get<std::string>() + ".logits");
  torch::NoGradGuard ng;
  EXPECT_LT(rel_err(m->forward(f.inputs(p)).logits[0], want), 1e-4);
  EXPECT_EQ(m->lm_head->weight.data_ptr() == m->model->embed_tokens->weight.data_ptr(),
            fixture_tied);

  // the other setting
  if (fixture_tied) {
    renamed["lm_head.weight"] = renamed.at("model.language_model.embed_tokens.weight").clone();
    nested["tie_word_embeddings"] = false;
    write_file_atomic(dir / "config.json", nested.dump(1));
  } else {
    renamed.erase("lm_head.weight");
  }
  save_tensors(dir / "model.safetensors", renamed);
  Qwen2VL other(Qwen2VLImpl::from_pretrained(dir.path(), torch::kFloat32));
  Qwen2VL& tied = fixture_tied ? m : other;
  Qwen2VL& untied = fixture_tied ? other : m;
  EXPECT_TRUE(torch::equal(tied->lm_head->weight, tied->model->embed_tokens->weight));
  if (fixture_tied)
    EXPECT_LT(rel_err(untied->forward(f.inputs(p)).logits[0], want),
              1e-4);  // the same values, untied
  // moved and cast, the two stay one tensor (Module::to alone makes two); the untied model's stay
  // two
  tied->move_to(torch::kCPU, torch::kBFloat16);
  EXPECT_EQ(tied->lm_head->weight.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(tied->lm_head->weight.data_ptr(), tied->model->embed_tokens->weight.data_ptr());
  untied->move_to(torch::kCPU, torch::kBFloat16);
  EXPECT_NE(untied->lm_head->weight.data_ptr(), untied->model->embed_tokens->weight.data_ptr());
}

TEST(Qwen2VL, GenerationConfigMerge) {
  test::TempDir dir;
  write_file_atomic(
      dir / "generation_config.json",
      R"({"do_sample": true, "top_k": 1, "top_p": 0.001, "repetition_penalty": 1.05, "eos_token_id": [681, 679]})");
  GenerationConfig file = GenerationConfig::from_dir(dir.path());
  GenerationConfig caller;
  caller.do_sample = true;
  caller.temperature = 0.8;
  caller.top_p = 1.0;
  GenerationConfig g = GenerationConfig::merge(file, caller);
  EXPECT_EQ(g.top_k.value(), 1);  // the file's top_k survives: the reference's sampling is greedy
  EXPECT_DOUBLE_EQ(g.top_p.value(), 1.0);
  EXPECT_DOUBLE_EQ(g.temperature.value(), 0.8);
  EXPECT_EQ(g.eos_token_ids, (std::vector<int64_t>{681, 679}));
  // top_k = 1 sampling picks the arg-max whatever the seed
  torch::Tensor logits = torch::randn({50});
  for (uint64_t seed : {1, 2, 3}) {
    at::Generator gen = at::detail::createCPUGenerator(seed);
    GenerationConfig s = g;
    s.repetition_penalty = 1.0;
    EXPECT_EQ(next_token(logits, {}, s, gen), logits.argmax().item<int64_t>());
  }
  // true sampling is reproducible for a seed
  GenerationConfig free;
  free.do_sample = true;
  free.temperature = 1.5;
  at::Generator g1 = at::detail::createCPUGenerator(7), g2 = at::detail::createCPUGenerator(7);
  std::vector<int64_t> a, b;
  for (int i = 0; i < 20; ++i)
    a.push_back(next_token(logits, {}, free, g1)), b.push_back(next_token(logits, {}, free, g2));
  EXPECT_EQ(a, b);
  EXPECT_GT(std::set<int64_t>(a.begin(), a.end()).size(), 1u);
  // repetition penalty: a seen positive logit is divided
  torch::Tensor two = torch::tensor({1.0f, 1.04f});
  at::Generator g3 = at::detail::createCPUGenerator(0);
  GenerationConfig rp;
  rp.repetition_penalty = 1.05;
  EXPECT_EQ(next_token(two, {1}, rp, g3), 0);
}

TEST(Qwen2VL, TopPAfterTopKSortsOnlyTheSurvivors) {
  // the filters written out over the whole vocabulary (top-k mask, then top-p over a full sort),
  // as the reference's warpers apply them: next_token must keep the same tokens and draw the same
  auto full = [](torch::Tensor l, const GenerationConfig& c, at::Generator& gen) {
    l = l.clone().div_(c.temperature.value_or(1.0));
    const float inf = std::numeric_limits<float>::infinity();
    if (c.top_k.value_or(0) > 0)
      l.masked_fill_(l < std::get<0>(l.topk(*c.top_k)).min().item<float>(), -inf);
    if (c.top_p.value_or(1.0) < 1.0) {
      auto [sorted, idx] = l.sort(-1, false);
      torch::Tensor remove = torch::softmax(sorted, -1).cumsum(-1) <= (1.0 - *c.top_p);
      remove[l.size(0) - 1] = false;
      l.index_put_({idx.masked_select(remove)}, -inf);
    }
    torch::Tensor finite = l.isfinite().nonzero().squeeze(1);
    if (finite.size(0) == 1) return finite[0].item<int64_t>();  // one left: no draw
    return torch::multinomial(torch::softmax(l, -1), 1, false, gen).item<int64_t>();
  };
  torch::Tensor logits = torch::randn({500}) * 3;
  for (auto [k, p] : std::vector<std::pair<int, double>>{
           {5, 0.7}, {40, 0.9}, {0, 0.5}, {3, 1.0}, {1, 0.001}, {50, 0.001}}) {
    GenerationConfig c;
    c.do_sample = true;
    c.temperature = 0.9;
    if (k > 0) c.top_k = k;
    c.top_p = p;
    at::Generator g1 = at::detail::createCPUGenerator(11), g2 = at::detail::createCPUGenerator(11);
    std::vector<int64_t> got, want;
    for (int i = 0; i < 30; ++i)
      got.push_back(next_token(logits, {}, c, g1)), want.push_back(full(logits, c, g2));
    EXPECT_EQ(got, want) << "top_k " << k << " top_p " << p;
  }
}
