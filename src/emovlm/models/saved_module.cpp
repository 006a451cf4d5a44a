// Modules saved with their config as metadata.
#include "emovlm/models/saved_module.h"

#include <filesystem>

#include "emovlm/models/weights.h"

namespace emovlm {

SavedModule SavedModule::open(const std::string& path, const std::string& file_name,
                              const std::string& key) {
  SavedModule m;
  m.path = std::filesystem::is_directory(path) ? (std::filesystem::path(path) / file_name).string()
                                               : path;
  m.metadata = json_metadata(m.path, key);
  m.where = m.path + ": metadata " + key;
  return m;
}

void SavedModule::load_into(torch::nn::Module& module) const {
  LoadOptions opt;
  opt.copy_into = true;
  load_weights(module, Checkpoint(path), opt);
  module.eval();
}

}  // namespace emovlm
