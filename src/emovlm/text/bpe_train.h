// Training a small byte-level BPE tokenizer (Qwen2 pre-tokenization, NFC) and writing it as a
// tokenizer.json with the Qwen2-VL special tokens, so that Tokenizer::from_file reads it.
#pragma once

#include <string>
#include <vector>

namespace emovlm {

// The Qwen2-VL special tokens, in id order after the learnt vocabulary.
const std::vector<std::string>& qwen2vl_special_tokens();

// Learns merges until the vocabulary (bytes + merges) reaches vocab_size or no pair occurs twice;
// ties go to the lexicographically smallest pair (deterministic). Writes tokenizer.json.
void train_bpe_tokenizer(const std::vector<std::string>& texts, int vocab_size,
                         const std::string& out_path);

}  // namespace emovlm
