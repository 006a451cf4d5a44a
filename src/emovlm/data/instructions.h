// Stage 0: emotion instruction data. For every training image, one call to an OpenAI-compatible
// chat-completions endpoint (the image as a base64 data URL and a prompt naming the true emotion)
// whose answer is split into an observation and a reasoning answer; categorical examples come from
// the labels. Resumable, concurrent, with retries; and importers for the reference's annotation
// JSON and LLaVA-style conversation JSON.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json_fwd.hpp>

namespace emovlm {

// Splits an answer into (key elements, reasoning) by its headings, tolerant of markdown bold,
// numbering and case ("1. **Key Elements:** ...", "## Reasoning", "2) reasoning -"). Empty
// strings when a part is missing.
std::pair<std::string, std::string> split_observation_reasoning(const std::string& answer);

// The request prompt for an image of `emotion` (asks for the two parts without naming it).
std::string instruction_request_prompt(const std::string& emotion);

// The image file as a data URL for a chat endpoint: its bytes with the MIME type of its content
// (JPEG, PNG, GIF, WebP; not its name's), or re-encoded as PNG for formats endpoints do not take
// (BMP).
std::string image_data_url(const std::string& path);

struct InstructOptions {
  std::string data, labels = "mikels8", split = "train";
  std::string endpoint;  // base URL (…/v1) or the full …/chat/completions URL
  std::string model;
  std::string api_key_env =
      "OPENAI_API_KEY";  // the key is read from this variable, never from flags
  std::string out;       // JSONL, appended (resumes: images already there are skipped)
  int concurrency = 4;
  int max_retries = 5;
  double timeout_s = 120;
  double backoff_s = 1.0;
  int max_tokens = 512;
  bool categorical = true;  // also write the categorical example of each image
};

// Returns a report: done, skipped (already in the file), failed (with reasons).
nlohmann::json make_instructions(const InstructOptions& options);

// Imports the reference's annotation JSON (entries with gpt_response, img, img_path, label) or a
// LLaVA-style conversation JSON into the instruction JSONL format. The source's relative image
// paths are relative to image_root (default: the source file's folder).
nlohmann::json import_instructions(const std::string& format, const std::string& src,
                                   const std::string& out, const std::string& labels = "mikels8",
                                   const std::string& image_root = "");

}  // namespace emovlm
