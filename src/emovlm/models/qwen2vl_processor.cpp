// The Qwen2-VL processor.
#include "emovlm/models/qwen2vl_processor.h"

#include <algorithm>

#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/text/chat.h"

namespace emovlm {

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

}  // namespace emovlm
