// The Qwen2-VL chat template (as chat_template.json renders it) and the image-pad expansion.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace emovlm {

struct ChatPart {
  enum class Kind { Text, Image };
  Kind kind = Kind::Text;
  std::string text;  // for Text
};

struct ChatMessage {
  std::string role;  // system, user, assistant
  std::vector<ChatPart> parts;
  bool plain_string = false;  // content given as one string (no parts list)

  static ChatMessage text(std::string role, std::string content);
  // The reference's user turn: the text, then the image.
  static ChatMessage text_then_image(std::string role, std::string content);
};

constexpr const char* kQwenDefaultSystem = "You are a helpful assistant.";
constexpr const char* kImagePad = "<|image_pad|>";
constexpr const char* kVisionStart = "<|vision_start|>";
constexpr const char* kVisionEnd = "<|vision_end|>";

// Renders like the Qwen2-VL template: a default system message when the first message is not
// one, <|im_start|>role\n...<|im_end|>\n per message, one
// <|vision_start|><|image_pad|><|vision_end|> per image ("Picture N: " before it with
// add_vision_id), and "<|im_start|>assistant\n" at the end with add_generation_prompt.
std::string render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                        bool add_vision_id = false);

// Replaces the k-th <|image_pad|> with tokens_per_image[k] copies (the processor's expansion);
// throws when the counts differ.
std::string expand_image_pads(const std::string& text,
                              const std::vector<int64_t>& tokens_per_image);

}  // namespace emovlm
