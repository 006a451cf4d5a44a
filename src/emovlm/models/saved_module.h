// Modules saved as one safetensors file with their config as JSON metadata (head.safetensors,
// gate.safetensors): finding the file, reading and validating the config, loading the weights.
#pragma once

#include <torch/torch.h>

#include <string>

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"

namespace emovlm {

struct SavedModule {
  std::string path;         // the file
  nlohmann::json metadata;  // the JSON object under the key
  std::string where;        // "FILE: metadata KEY", for errors

  // `path` is the file, or a folder holding `file_name`; the metadata is read from `key`.
  static SavedModule open(const std::string& path, const std::string& file_name,
                          const std::string& key);

  // The metadata as a Config (from_json + validate), errors naming the file and key.
  template <class Config>
  Config config() const {
    const Config c = Config::from_json(metadata, where);
    try {
      c.validate();
    } catch (const Error& e) {
      throw Error(cat(where, ": ", e.what()));
    }
    return c;
  }

  // Copies the file's tensors into the module's own memory (not the mapped file), every missing,
  // unexpected or mis-shaped tensor reported together; leaves the module in eval mode.
  void load_into(torch::nn::Module& module) const;
};

}  // namespace emovlm
