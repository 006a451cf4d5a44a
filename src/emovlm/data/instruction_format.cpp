// The instruction JSONL format.
#include "emovlm/data/instruction_format.h"

#include <fstream>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/paths.h"

namespace emovlm {

std::vector<InstructionExample> read_instructions(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error(cat(path, ": cannot open"));
  std::vector<InstructionExample> out;
  std::string line;
  size_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    const std::string where = cat(path, ":", n);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception& e) {
      throw Error(cat(where, ": invalid JSON: ", e.what()));
    }
    if (!j.is_object()) throw Error(cat(where, ": not a JSON object"));
    InstructionExample e{json_required<std::string>(j, "image", where),
                         json_optional<std::string>(j, "label", "", where),
                         json_optional<std::string>(j, "kind", "", where),
                         json_required<std::string>(j, "prompt", where),
                         json_required<std::string>(j, "answer", where)};
    e.image = resolve_stored_path(e.image, path);
    out.push_back(std::move(e));
  }
  if (out.empty()) throw Error(cat(path, ": no instructions"));
  return out;
}

std::string instruction_line(const InstructionExample& e, const std::string& jsonl) {
  return json({{"image", store_path(e.image, jsonl)},
               {"label", e.label},
               {"kind", e.kind},
               {"prompt", e.prompt},
               {"answer", e.answer}})
      .dump();
}

void write_instructions(const std::string& path, const std::vector<InstructionExample>& ex) {
  std::string s;
  for (const auto& e : ex) s += instruction_line(e, path) + "\n";
  write_file_atomic(path, s);
}

std::vector<InstructionExample> categorical_examples(const std::vector<Sample>& samples,
                                                     const LabelSet& labels) {
  std::vector<InstructionExample> out;
  const std::string prompt = categorical_prompt(labels);
  for (const auto& s : samples)
    out.push_back({s.path, labels.labels[s.label], "categorical", prompt,
                   categorical_answer(labels.labels[s.label])});
  return out;
}

}  // namespace emovlm
