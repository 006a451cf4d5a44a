// The question the pipeline asks the VLM about an image, and how its answers are drawn: the
// categorical chat with the label set's candidates, the per-image sampling seed and the
// reference's sampling settings.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "emovlm/data/labels.h"
#include "emovlm/image/image.h"
#include "emovlm/models/qwen2vl_generation.h"
#include "emovlm/text/tokenizer.h"

namespace emovlm {

// The pipeline's question to the VLM about one image: the rendered categorical chat (the emotion
// system message, the image, the label list, the generation prompt), and each label's answer
// tokens ("{'emotion': '<label>'}<|im_end|>") as label_scores' candidates.
struct CategoricalQuery {
  std::string prompt;
  std::vector<std::vector<int32_t>> candidates;
};
CategoricalQuery categorical_query(const Tokenizer& tokenizer, const LabelSet& labels);

// The seed every command that samples (classify --mode generate, extract --vlm-mode generate,
// chat) draws a prompt's answer from: `seed` mixed with the content of the prompt's images (their
// sizes and pixels, as the model receives them), so an image gets the same answer whatever the
// command, the batch or the order it comes in. A prompt without images: `seed` itself.
uint64_t prompt_seed(uint64_t seed, const std::vector<RgbImage>& images);

// The reference's generate-and-parse sampling: do_sample at `temperature`, top_p 1, `seed`,
// merged with the checkpoint's generation_config.json (whose top_k=1 makes the published Instruct
// checkpoints greedy).
GenerationConfig reference_sampling(const std::string& vlm_dir, double temperature,
                                    int max_new_tokens, uint64_t seed, bool cuda_graph);

}  // namespace emovlm
