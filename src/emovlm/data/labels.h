// Label sets (Mikels' 8, Ekman's 6, binary polarity, or any list) and the categorical prompt.
#pragma once

#include <string>
#include <vector>

namespace emovlm {

struct LabelSet {
  std::string name;                 // "mikels8", "ekman6", "binary" or "custom"
  std::vector<std::string> labels;  // sorted names: the class indices everywhere

  // "mikels8", "ekman6", "binary", or a comma-separated list ("calm,tense"), sorted.
  static LabelSet from_spec(const std::string& spec);
  int size() const { return static_cast<int>(labels.size()); }
  // -1 when absent; case-insensitive, surrounding spaces ignored.
  int index_of(const std::string& label) const;
  // Throws naming the label and the set.
  int require_index(const std::string& label) const;
};

// The reference's system message and categorical instruction for a label set:
// "Observe the image and select the emotion category that best matches this image from the
// following 8 categories: amusement, anger, ..., and sadness. Answer in dictionary form as
// follows: {'emotion':'amusement'}"
constexpr const char* kEmotionSystemMessage =
    "You are an AI visual assistant, and you are seeing a single image.";
std::string categorical_prompt(const LabelSet& labels);
// "{'emotion': '<label>'}": the answer format the model is tuned to give.
std::string categorical_answer(const std::string& label);

// The reference's answer parsing: the first {'emotion': '<x>'} (single or double quotes, any
// spaces) anywhere in the text, mapped to the label set. -1 when the text has no such answer or
// names a label outside the set: such answers are unparsable, never a class.
struct ParsedAnswer {
  int index = -1;
  std::string raw;  // the label text found, "" when none
};
ParsedAnswer parse_categorical_answer(const std::string& text, const LabelSet& labels);

// The classes a model folder (a teacher, a head, a gate) was trained on, in the order of its
// outputs (classes.json).
std::vector<std::string> read_classes(const std::string& dir);
void write_classes(const std::string& dir, const LabelSet& labels);

}  // namespace emovlm
