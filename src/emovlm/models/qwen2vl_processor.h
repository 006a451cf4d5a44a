// The Qwen2-VL processor: chat text with image placeholders and its images -> token ids (each
// <|image_pad|> expanded to the image's visual tokens), pixel values and grids; several prompts
// left-padded into one batch.
#pragma once

#include <torch/torch.h>

#include <string>
#include <vector>

#include "emovlm/image/preprocess.h"
#include "emovlm/models/qwen2vl.h"
#include "emovlm/text/tokenizer.h"

namespace emovlm {

// One prompt: rendered chat text with one <|image_pad|> per image (not yet expanded), and its
// images.
struct VlmPrompt {
  std::string text;
  std::vector<RgbImage> images;
};

// One prompt tokenized (its image pads expanded) with its images preprocessed: everything of a
// batch that does not depend on the other prompts, so worker threads can make it.
struct PreparedPrompt {
  std::vector<int32_t> ids;
  std::vector<torch::Tensor> pixels;  // per image [patches, patch_dim] float32
  std::vector<GridTHW> grids;
};

class Qwen2VLProcessor {
 public:
  Qwen2VLProcessor(Tokenizer tokenizer, Qwen2VLImageConfig image_config);
  static Qwen2VLProcessor from_dir(const std::string& dir);

  // Tokenizes and preprocesses; several prompts are left-padded with the pad token.
  // build = collate(prepare(each prompt)); prepare is safe to call from several threads.
  // `device`: where the pixel values go (the model's device): each image's are copied there and
  // joined there, instead of first into one host tensor (16 images of 448x448: 77 MB more to
  // write on the host, fresh pages each time). Token ids and masks stay on the host.
  Qwen2VLInputs build(const std::vector<VlmPrompt>& prompts,
                      torch::Device device = torch::kCPU) const;
  PreparedPrompt prepare(const VlmPrompt& prompt) const;
  Qwen2VLInputs collate(const std::vector<PreparedPrompt>& prompts,
                        torch::Device device = torch::kCPU) const;
  const Tokenizer& tokenizer() const { return tokenizer_; }
  const Qwen2VLImageConfig& image_config() const { return image_config_; }
  int32_t pad_id() const { return pad_id_; }

 private:
  Tokenizer tokenizer_;
  Qwen2VLImageConfig image_config_;
  int32_t pad_id_;
};

}  // namespace emovlm
