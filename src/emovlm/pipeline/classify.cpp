// The VLM alone as an emotion classifier (see classify.h).
#include "emovlm/pipeline/classify.h"

#include <algorithm>

#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/data/loader.h"
#include "emovlm/image/resample.h"
#include "emovlm/models/qwen2vl_generation.h"
#include "emovlm/models/qwen2vl_label_scores.h"
#include "emovlm/models/qwen2vl_processor.h"
#include "emovlm/pipeline/emotion_query.h"
#include "emovlm/pipeline/extract.h"
#include "emovlm/text/chat.h"

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
  s_->model = Qwen2VL(
      Qwen2VLImpl::from_pretrained(o.vlm, o.adapter, to_torch(o.dtype), to_torch(o.device)));
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

}  // namespace emovlm
