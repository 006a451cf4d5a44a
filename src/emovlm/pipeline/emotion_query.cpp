// The pipeline's emotion query and sampling policy.
#include "emovlm/pipeline/emotion_query.h"

#include "emovlm/core/files.h"
#include "emovlm/data/dataset.h"
#include "emovlm/data/instruction_format.h"
#include "emovlm/text/chat.h"

namespace emovlm {

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

}  // namespace emovlm
