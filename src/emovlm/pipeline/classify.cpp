// The VLM alone as an emotion classifier (see classify.h).
#include "emovlm/pipeline/classify.h"

#include <algorithm>

#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/data/loader.h"
#include "emovlm/data/metrics.h"
#include "emovlm/image/resample.h"
#include "emovlm/models/qwen2vl_generate.h"
#include "emovlm/pipeline/extract.h"
#include "emovlm/pipeline/split_eval.h"
#include "emovlm/text/chat.h"
#include "emovlm/train/sft.h"

namespace emovlm {

using json = nlohmann::json;

void ClassifyOptions::validate() const {
  if (vlm.empty()) throw Error("classify: no VLM checkpoint directory given");
  if (mode != "score" && mode != "generate")
    throw Error(cat("classify: --mode must be score or generate, not '", mode, "'"));
  if (batch < 1) throw Error(cat("classify: --batch must be 1 or more, not ", batch));
  if (batch > 1 && mode != "score")
    throw Error(
        "classify: --batch is for --mode score: generate mode samples each image alone, as the "
        "reference does");
  if (cap_long_side < 28)
    throw Error(cat("classify: cap_long_side ", cap_long_side, " is under one 28-pixel patch"));
}

struct VlmClassifier::State {
  ClassifyOptions o;
  LabelSet labels;
  Qwen2VL model{nullptr};
  std::unique_ptr<Qwen2VLProcessor> proc;
  CategoricalQuery query;
  GenerationConfig gen;
};

VlmClassifier::VlmClassifier(const ClassifyOptions& o) : s_(std::make_unique<State>()) {
  o.validate();
  s_->o = o;
  s_->labels = LabelSet::from_spec(o.labels);
  s_->model = load_vlm(o.vlm, o.adapter, parse_dtype(o.dtype), parse_device(o.device));
  s_->proc = std::make_unique<Qwen2VLProcessor>(Qwen2VLProcessor::from_dir(o.vlm));
  s_->query = categorical_query(s_->proc->tokenizer(), s_->labels);
  if (o.mode == "generate")
    s_->gen = reference_sampling(o.vlm, o.temperature, o.max_new_tokens, o.seed, o.cuda_graph);
}

VlmClassifier::~VlmClassifier() = default;

const LabelSet& VlmClassifier::labels() const {
  return s_->labels;
}
const ClassifyOptions& VlmClassifier::options() const {
  return s_->o;
}

void VlmClassifier::classify(const std::vector<std::string>& paths,
                             const std::function<void(const json&)>& on_result) {
  torch::NoGradGuard ng;
  const ClassifyOptions& o = s_->o;
  const std::vector<std::string>& L = s_->labels.labels;
  Qwen2VLImpl& model = *s_->model;
  // score mode: the label scores of `batch` images per forward (1: each alone, deterministic);
  // generate mode: each image alone
  const size_t group = o.mode == "score" ? static_cast<size_t>(o.batch) : 1;
  for_each_image_group(
      paths, o.cap_long_side, group,
      [&](std::vector<RgbImage>& images, const std::vector<size_t>& indices) {
        std::vector<VlmPrompt> prompts;
        for (RgbImage& image : images) prompts.push_back({s_->query.prompt, {std::move(image)}});
        if (o.mode == "generate") {
          GenerationConfig g = s_->gen;
          g.seed = prompt_seed(o.seed, prompts[0].images);
          GenerationResult gr = generate(model, s_->proc->build(prompts, model.device()), g);
          std::vector<int32_t> ids(gr.tokens[0].begin(), gr.tokens[0].end());
          const std::string answer = s_->proc->tokenizer().decode(ids, true);
          const ParsedAnswer pa = parse_categorical_answer(answer, s_->labels);
          json r = {{"image", paths[indices[0]]},
                    {"answer", answer},
                    {"label", pa.index >= 0 ? json(L[pa.index]) : json(nullptr)}};
          if (pa.index < 0) r["unparsable"] = true;
          on_result(r);
          return;
        }
        torch::Tensor scores =
            label_scores(model, *s_->proc, prompts, s_->query.candidates, o.batch == 1);  // [n, C]
        for (size_t k = 0; k < indices.size(); ++k) {
          torch::Tensor sc = scores[static_cast<int64_t>(k)], prob = torch::softmax(sc, 0);
          json r = {{"image", paths[indices[k]]}, {"label", L[prob.argmax().item<int64_t>()]}};
          for (size_t i = 0; i < L.size(); ++i) {
            r["probabilities"][L[i]] = prob[static_cast<int64_t>(i)].item<double>();
            r["sum_logprob"][L[i]] = sc[static_cast<int64_t>(i)].item<double>();
          }
          on_result(r);
        }
      },
      [&](size_t i, const std::string& error) {
        on_result(json{{"image", paths[i]}, {"error", error}});
      });
}

json evaluate_vlm(VlmClassifier& classifier, const std::string& data, const std::string& split,
                  const DatasetOptions& dataset, const std::function<void(const json&)>& on_result,
                  const std::string& journal) {
  const ClassifyOptions& o = classifier.options();
  // what the results depend on (a journal written with other settings is not reused); not the
  // data's path: the journal's results are keyed by image, and the split says which images are
  // needed
  json settings = {{"vlm", checkpoint_identity(o.vlm)},
                   {"adapter", o.adapter.empty() ? json(nullptr) : checkpoint_identity(o.adapter)},
                   {"dtype", o.dtype},
                   {"labels", o.labels},
                   {"mode", o.mode},
                   {"cap_long_side", o.cap_long_side},
                   {"batch", o.batch}};
  if (o.mode == "generate")
    settings.update({{"temperature", o.temperature},
                     {"seed", o.seed},
                     {"seeding", "per image"},
                     {"max_new_tokens", o.max_new_tokens}});
  const SplitRun r = run_split(
      data, split, dataset, o.labels, settings,
      [&](const std::vector<std::string>& paths, const std::function<void(const json&)>& emit) {
        classifier.classify(paths, emit);
      },
      on_result, journal);
  const auto label_of = [](const json& row) { return row["label"]; };
  const SplitPredictions p = split_predictions(r, label_of);
  const std::vector<std::string>& L = r.labels.labels;
  json predictions = json::array();
  for (size_t i = 0; i < r.rows.size(); ++i)
    if (!r.rows[i].contains("error"))
      predictions.push_back({{"image", r.samples[i].path},
                             {"truth", r.rows[i]["truth"]},
                             {"label", r.rows[i]["label"]}});
  json unreadable = split_unreadable(r);
  json report = {{"vlm", o.vlm},
                 {"adapter", o.adapter},
                 {"mode", o.mode},
                 {"labels", L},
                 {"data", data},
                 {"split", split},
                 {"images", r.samples.size()},
                 {"unreadable", unreadable.size()},
                 {"resumed", r.resumed}};
  if (o.mode == "generate") report["sampling"] = {{"temperature", o.temperature}, {"seed", o.seed}};
  report["metrics"] = classification_report(p.pred, p.truth, static_cast<int>(L.size())).to_json(L);
  report["unreadable_images"] = std::move(unreadable);
  report["predictions"] = std::move(predictions);
  return report;
}

}  // namespace emovlm
