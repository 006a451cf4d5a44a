// Qwen2-VL chat template rendering.
#include "emovlm/text/chat.h"

#include "emovlm/core/error.h"

namespace emovlm {

ChatMessage ChatMessage::text(std::string role, std::string content) {
  ChatMessage m;
  m.role = std::move(role);
  m.plain_string = true;
  m.parts.push_back({ChatPart::Kind::Text, std::move(content)});
  return m;
}

ChatMessage ChatMessage::text_then_image(std::string role, std::string content) {
  ChatMessage m;
  m.role = std::move(role);
  m.parts.push_back({ChatPart::Kind::Text, std::move(content)});
  m.parts.push_back({ChatPart::Kind::Image, ""});
  return m;
}

std::string render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                        bool add_vision_id) {
  std::string out;
  int images = 0;
  for (size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (i == 0 && m.role != "system")
      out += std::string("<|im_start|>system\n") + kQwenDefaultSystem + "<|im_end|>\n";
    out += "<|im_start|>" + m.role + "\n";
    for (const ChatPart& p : m.parts) {
      if (p.kind == ChatPart::Kind::Image) {
        ++images;
        if (add_vision_id) out += "Picture " + std::to_string(images) + ": ";
        out += std::string(kVisionStart) + kImagePad + kVisionEnd;
      } else {
        out += p.text;
      }
    }
    out += "<|im_end|>\n";
  }
  if (add_generation_prompt) out += "<|im_start|>assistant\n";
  return out;
}

std::string expand_image_pads(const std::string& text,
                              const std::vector<int64_t>& tokens_per_image) {
  const std::string pad = kImagePad;
  std::string out;
  size_t pos = 0, k = 0;
  while (true) {
    size_t hit = text.find(pad, pos);
    if (hit == std::string::npos) break;
    if (k >= tokens_per_image.size())
      throw Error(cat("the prompt has more ", pad, " placeholders than the ",
                      tokens_per_image.size(), " image(s) given"));
    out.append(text, pos, hit - pos);
    for (int64_t n = 0; n < tokens_per_image[k]; ++n) out += pad;
    ++k;
    pos = hit + pad.size();
  }
  if (k != tokens_per_image.size())
    throw Error(cat("the prompt has ", k, " ", pad, " placeholder(s) but ", tokens_per_image.size(),
                    " image(s) were given"));
  out.append(text, pos, std::string::npos);
  return out;
}

}  // namespace emovlm
