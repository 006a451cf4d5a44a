// Prediction from a bundle.
#include "emovlm/pipeline/predictor.h"

#include <algorithm>
#include <filesystem>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/output_lock.h"
#include "emovlm/core/paths.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/data/labels.h"
#include "emovlm/data/loader.h"
#include "emovlm/image/resample.h"
#include "emovlm/models/gates.h"
#include "emovlm/models/heads.h"
#include "emovlm/models/qwen2vl_label_scores.h"
#include "emovlm/models/qwen2vl_processor.h"
#include "emovlm/pipeline/emotion_query.h"
#include "emovlm/pipeline/extract.h"
#include "emovlm/text/chat.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {

// Copies a file, as a hard link where the file system allows (the same bytes, no space taken).
void link_or_copy(const std::string& src, const std::string& dst) {
  std::error_code ec;
  fs::remove(dst, ec);
  fs::create_hard_link(src, dst, ec);
  if (ec) write_file_atomic(dst, read_file(src));
}

json read_bundle_json(const std::string& dir) {
  const std::string bpath = (fs::path(dir) / "bundle.json").string();
  json b = read_json_file(bpath);
  if (b.value("format", "") != "emovlm-bundle") throw Error(cat(bpath, ": not an emovlm bundle"));
  return b;
}

}  // namespace

void write_bundle(const std::string& out, const BundleSpec& s) {
  json hcfg, gcfg;
  DistillHeadImpl::from_pretrained(s.distill, &hcfg);
  GateImpl::from_pretrained(s.gate, &gcfg);
  if (hcfg["labels"] != gcfg["labels"])
    throw Error(cat(s.gate, ": the gate's labels ", gcfg["labels"].dump(),
                    " differ from the head's ", hcfg["labels"].dump()));
  // the parts must come from one VLM: the head's and the gate's caches, and the VLM named here
  const json vlm_id = vlm_identity(s.vlm, s.adapter);
  if (hcfg.contains("vlm_identity"))
    check_same_vlm(
        hcfg["vlm_identity"], cat("the head ", s.distill), vlm_id,
        cat("--vlm ", s.vlm, s.adapter.empty() ? "" : cat(" with --adapter ", s.adapter)));
  if (hcfg.contains("vlm_identity") && gcfg.contains("vlm_identity"))
    check_same_vlm(hcfg["vlm_identity"], cat("the head ", s.distill), gcfg["vlm_identity"],
                   cat("the gate ", s.gate));
  OutputLock lock(out, OutputLock::Kind::Directory);
  const std::string bpath = (fs::path(out) / "bundle.json").string();
  auto copy = [&](const std::string& src_dir, const std::string& file) {
    fs::path src = fs::is_directory(src_dir) ? fs::path(src_dir) / file : fs::path(src_dir);
    link_or_copy(src.string(), (fs::path(out) / file).string());
  };
  copy(s.distill, "head.safetensors");
  copy(s.gate, "gate.safetensors");
  // the adapter travels with the bundle; the VLM (gigabytes, shared by bundles) is named by its
  // path relative to the bundle and checked by its identity when the bundle is loaded
  json adapter = nullptr;
  if (!s.adapter.empty()) {
    const std::string dst = (fs::path(out) / "adapter").string();
    make_dirs(dst);
    for (const auto& e : fs::directory_iterator(s.adapter))
      if (e.is_regular_file())
        link_or_copy(e.path().string(), (fs::path(dst) / e.path().filename()).string());
    adapter = "adapter";
  }
  json b = {{"format", "emovlm-bundle"},       {"version", 2},
            {"vlm", store_path(s.vlm, bpath)}, {"adapter", adapter},
            {"vlm_identity", vlm_id},          {"head", "head.safetensors"},
            {"gate", "gate.safetensors"},      {"labels", hcfg["labels"]},
            {"vlm_input", gcfg["vlm_input"]},  {"gate_kind", gcfg["kind"]},
            {"dtype", dtype_name(s.dtype)},    {"cap_long_side", s.cap_long_side},
            {"prompt", "categorical"}};
  write_file_atomic(bpath, b.dump(1) + "\n");
}

struct Predictor::State {
  std::string dir;
  json bundle;
  LabelSet labels;
  Qwen2VL vlm{nullptr};
  std::unique_ptr<Qwen2VLProcessor> proc;
  DistillHead head{nullptr};
  Gate gate{nullptr};
  CategoricalQuery query;
  int cap = 1024;
};

Predictor::Predictor(const std::string& dir, ComputeDevice device) : s_(std::make_unique<State>()) {
  const std::string bpath = (fs::path(dir) / "bundle.json").string();
  s_->dir = dir;
  s_->bundle = read_bundle_json(dir);
  s_->labels.name = "bundle";
  s_->labels.labels = json_required<std::vector<std::string>>(s_->bundle, "labels", bpath);
  const std::string vdir =
      resolve_stored_path(json_required<std::string>(s_->bundle, "vlm", bpath), bpath);
  const std::string adapter =
      json_optional<std::string>(s_->bundle, "adapter", "", bpath).empty()
          ? ""
          : resolve_stored_path(s_->bundle["adapter"].get<std::string>(), bpath);
  if (!is_directory(vdir))
    throw Error(cat(bpath, ": the VLM ", vdir,
                    " is not there (the bundle names it relative to itself: move the bundle "
                    "with the VLM, or write the bundle again)"));
  if (s_->bundle.contains("vlm_identity"))
    check_same_vlm(
        s_->bundle["vlm_identity"], cat("the bundle ", dir), vlm_identity(vdir, adapter),
        cat("the VLM ", vdir, adapter.empty() ? "" : cat(" with the adapter ", adapter)));
  const std::string dt = json_optional<std::string>(s_->bundle, "dtype", "bf16", bpath);
  const ComputeDtype dtype = parse_compute_dtype(dt, bpath + ": dtype");
  s_->vlm = Qwen2VL(Qwen2VLImpl::from_pretrained(vdir, adapter, to_torch(dtype), to_torch(device)));
  s_->proc = std::make_unique<Qwen2VLProcessor>(Qwen2VLProcessor::from_dir(vdir));
  s_->head = DistillHeadImpl::from_pretrained(
      (fs::path(dir) / json_optional<std::string>(s_->bundle, "head", "head.safetensors", bpath))
          .string());
  s_->gate = GateImpl::from_pretrained(
      (fs::path(dir) / json_optional<std::string>(s_->bundle, "gate", "gate.safetensors", bpath))
          .string());
  s_->cap = json_optional<int>(s_->bundle, "cap_long_side", 1024, bpath);
  s_->query = categorical_query(s_->proc->tokenizer(), s_->labels);
}

Predictor::~Predictor() = default;

const std::vector<std::string>& Predictor::labels() const {
  return s_->labels.labels;
}
Qwen2VLImpl& Predictor::vlm() {
  return *s_->vlm;
}
const Qwen2VLProcessor& Predictor::processor() const {
  return *s_->proc;
}
int Predictor::image_cap() const {
  return s_->cap;
}

std::string Predictor::vlm_dir() const {
  std::string vdir = s_->bundle["vlm"].get<std::string>();
  if (fs::path(vdir).is_relative()) vdir = (fs::path(s_->dir) / vdir).string();
  return vdir;
}

json Predictor::identity() const {
  const json& b = s_->bundle;
  const std::string bpath = (fs::path(s_->dir) / "bundle.json").string();
  auto file_hash = [&](const char* key, const char* fallback) {
    return hex64(hash_file((fs::path(s_->dir) / b.value(key, fallback)).string()));
  };
  const std::string adapter =
      b["adapter"].is_string() ? resolve_stored_path(b["adapter"].get<std::string>(), bpath) : "";
  json settings = b;
  settings.erase("vlm");  // a path: the identities below say what it holds
  settings.erase("adapter");
  return {{"bundle", settings},
          {"vlm", vlm_identity(resolve_stored_path(b["vlm"].get<std::string>(), bpath), adapter)},
          {"head", file_hash("head", "head.safetensors")},
          {"gate", file_hash("gate", "gate.safetensors")}};
}

json Predictor::predict(const std::string& image_path) {
  json r = predict_batch({image_path}, true)[0];
  if (r.contains("error")) throw Error(r["error"].get<std::string>());
  return r;
}

std::vector<json> Predictor::predict_batch(const std::vector<std::string>& paths,
                                           bool deterministic) {
  std::vector<json> out;
  predict_stream(paths, deterministic ? 1 : static_cast<int>(std::max<size_t>(1, paths.size())),
                 [&](const json& r) { out.push_back(r); });
  return out;
}

void Predictor::predict_stream(const std::vector<std::string>& paths, int batch,
                               const std::function<void(const json&)>& emit) {
  if (batch < 1) throw Error(cat("predict: batch must be 1 or more, not ", batch));
  for_each_image_group(
      paths, s_->cap, static_cast<size_t>(batch),
      [&](std::vector<RgbImage>& images, const std::vector<size_t>& indices) {
        std::vector<std::string> names;
        for (size_t i : indices) names.push_back(paths[i]);
        for (const json& r : predict_capped(std::move(images), names, batch == 1)) emit(r);
      },
      [&](size_t i, const std::string& error) {
        emit(json{{"image", paths[i]}, {"error", error}});
      });
}

std::vector<json> Predictor::predict_images(std::vector<RgbImage> images,
                                            const std::vector<std::string>& names,
                                            bool deterministic) {
  if (images.size() != names.size())
    throw Error(cat("predict_images: ", images.size(), " images but ", names.size(), " names"));
  for (RgbImage& image : images) image = cap_long_side(image, s_->cap);
  return predict_capped(std::move(images), names, deterministic);
}

std::vector<json> Predictor::predict_capped(std::vector<RgbImage> images,
                                            const std::vector<std::string>& names,
                                            bool deterministic) {
  torch::NoGradGuard ng;
  if (images.empty()) return {};
  std::vector<VlmPrompt> prompts;
  for (RgbImage& image : images) prompts.push_back({s_->query.prompt, {std::move(image)}});
  torch::Tensor pooled;
  torch::Tensor scores = label_scores(*s_->vlm, *s_->proc, prompts, s_->query.candidates,
                                      deterministic, &pooled);  // [n, C]
  const auto& L = s_->labels.labels;
  const int64_t C = static_cast<int64_t>(L.size());
  torch::Tensor vlm_prob = torch::softmax(scores.to(torch::kFloat32), 1);  // [n, C]
  torch::Tensor vlm_idx = vlm_prob.argmax(1);                              // [n]
  const std::string kind = s_->bundle.value("vlm_input", "onehot");
  torch::Tensor v =
      kind == "scores" ? vlm_prob : torch::nn::functional::one_hot(vlm_idx, C).to(torch::kFloat32);
  // the head and the gate over all rows at once, or (deterministic) row by row: a matrix product's
  // rounding may depend on how many rows it has (MKL's does). Each row also goes through the gate
  // with one input made neutral (the VLM: a uniform vector; the head: zero logits, a uniform
  // distribution), to say how much each input moved this image's decision.
  struct Out {
    torch::Tensor head, weights, fused, no_vlm, no_head;  // [n, C], [n, 2 or experts], [n, C] x 3
  };
  auto head_and_gate = [&](const torch::Tensor& feats, const torch::Tensor& vlm_in) {
    Out o;
    o.head = s_->head->forward(feats.to(torch::kFloat32));
    o.fused = torch::softmax(s_->gate->forward(vlm_in, o.head, &o.weights), 1);
    o.no_vlm = torch::softmax(s_->gate->forward(torch::full_like(vlm_in, 1.0 / C), o.head), 1);
    o.no_head = torch::softmax(s_->gate->forward(vlm_in, torch::zeros_like(o.head)), 1);
    return o;
  };
  Out all;
  if (deterministic) {
    std::vector<Out> rows;
    for (int64_t n = 0; n < pooled.size(0); ++n)
      rows.push_back(head_and_gate(pooled.narrow(0, n, 1), v.narrow(0, n, 1)));
    auto cat_rows = [&](torch::Tensor Out::*field) {
      std::vector<torch::Tensor> ts;
      for (const Out& r : rows)
        if ((r.*field).defined()) ts.push_back(r.*field);
      return ts.empty() ? torch::Tensor() : torch::cat(ts, 0);
    };
    all = {cat_rows(&Out::head), cat_rows(&Out::weights), cat_rows(&Out::fused),
           cat_rows(&Out::no_vlm), cat_rows(&Out::no_head)};
  } else {
    all = head_and_gate(pooled, v);
  }
  const torch::Tensor hl = all.head, w = all.weights, fused = all.fused;
  torch::Tensor hp = torch::softmax(hl, 1);
  std::vector<json> out(prompts.size());
  for (size_t k = 0; k < prompts.size(); ++k) {
    const int64_t n = static_cast<int64_t>(k);
    const int64_t final_idx = fused[n].argmax().item<int64_t>(), vi = vlm_idx[n].item<int64_t>();
    json r = {{"image", names[k]},
              {"emotion", L[final_idx]},
              {"confidence", fused[n][final_idx].item<double>()}};
    r["vlm"] = {{"answer", L[vi]}, {"probabilities", json::object()}};
    for (int64_t i = 0; i < C; ++i) r["vlm"]["probabilities"][L[i]] = vlm_prob[n][i].item<double>();
    auto top = hp[n].topk(std::min<int64_t>(3, C));
    for (int64_t t = 0; t < std::get<0>(top).size(0); ++t)
      r["head_top3"].push_back({{"label", L[std::get<1>(top)[t].item<int64_t>()]},
                                {"probability", std::get<0>(top)[t].item<double>()}});
    r["gate"] = {{"kind", s_->bundle.value("gate_kind", "")}, {"probabilities", json::object()}};
    for (int64_t i = 0; i < C; ++i) r["gate"]["probabilities"][L[i]] = fused[n][i].item<double>();
    // the final probability of this answer with each input made neutral, and what the gate would
    // answer then: how much the VLM and the head each moved this image's decision
    auto without = [&](const torch::Tensor& f) {
      const int64_t alt = f[n].argmax().item<int64_t>();
      return json{{"probability", f[n][final_idx].item<double>()},
                  {"emotion", L[alt]},
                  {"emotion_probability", f[n][alt].item<double>()}};
    };
    const json no_vlm = without(all.no_vlm), no_head = without(all.no_head);
    r["gate"]["influence"] = {
        {"vlm", r["confidence"].get<double>() - no_vlm["probability"].get<double>()},
        {"head", r["confidence"].get<double>() - no_head["probability"].get<double>()},
        {"without_vlm", no_vlm},
        {"without_head", no_head}};
    if (w.defined() && w.size(1) == 2) {
      r["gate"]["weights"] = {{"vlm", w[n][0].item<double>()}, {"head", w[n][1].item<double>()}};
    } else if (w.defined()) {  // moe: the mixture over its experts
      for (int64_t e = 0; e < w.size(1); ++e)
        r["gate"]["experts"].push_back(w[n][e].item<double>());
    }
    out[k] = std::move(r);
  }
  return out;
}

}  // namespace emovlm
