// The instruction data's file format (JSON lines, one example per line: image, label, kind,
// prompt, answer), the reference's instruction prompts, and the categorical example of an image.
// Image paths are stored relative to the file's folder (core/paths.h) and resolved on reading.
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "emovlm/data/dataset.h"
#include "emovlm/data/labels.h"

namespace emovlm {

// One training example of stage 1.
struct InstructionExample {
  std::string image;   // the image file, as this process names it
  std::string label;   // the true emotion
  std::string kind;    // categorical | observation | reasoning | conversation
  std::string prompt;  // the user's text (the image follows it)
  std::string answer;  // the assistant's answer
};

// The reference's instruction prompts.
constexpr const char* kObservationPrompt =
    "Observe the image and describe key elements of the image. Focus on the elements that convey "
    "emotion.";
constexpr const char* kReasoningPrompt =
    "Observe the image and describe the process of inferring the emotions conveyed in the image.";

// Reads a JSONL file; image paths resolved against its folder. Errors name the file and line; an
// empty file is an error.
std::vector<InstructionExample> read_instructions(const std::string& jsonl);
// One line of the file `jsonl` (without the newline), its image stored relative to the file's
// folder.
std::string instruction_line(const InstructionExample& example, const std::string& jsonl);
// Writes the whole file atomically.
void write_instructions(const std::string& jsonl, const std::vector<InstructionExample>& examples);
// The categorical example of every image of a split (no endpoint needed).
std::vector<InstructionExample> categorical_examples(const std::vector<Sample>& samples,
                                                     const LabelSet& labels);

}  // namespace emovlm
