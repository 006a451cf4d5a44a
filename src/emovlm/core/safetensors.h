// safetensors: a zero-copy mmap reader (single files and sharded checkpoints) and an atomic
// writer. Torch-free; tensor_io.h turns the views into torch tensors.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "emovlm/core/files.h"

namespace emovlm {

// Every dtype the safetensors format defines.
enum class DType {
  BOOL,
  U8,
  I8,
  I16,
  U16,
  F16,
  BF16,
  I32,
  U32,
  F32,
  I64,
  U64,
  F64,
  F8_E4M3,
  F8_E5M2
};

const char* dtype_name(DType t);
size_t dtype_size(DType t);
// Parses "F32", "BF16", ...; returns false for names the format does not define.
bool parse_dtype(const std::string& name, DType* out);

// One tensor inside a mapped file: dtype, shape and a pointer to its bytes.
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // points into the mapping (or the caller's buffer when writing)
  size_t nbytes = 0;

  int64_t numel() const;
};

// Reads a single .safetensors file. The header is validated completely on open: a file that
// opens is a file whose every tensor can be read as declared.
class SafeTensorsFile {
 public:
  // Throws Error naming the path and the defect.
  static std::shared_ptr<SafeTensorsFile> open(const std::string& path);

  const std::string& path() const { return map_->path(); }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<TensorView>& tensors() const { return tensors_; }  // sorted by name
  bool contains(const std::string& name) const { return index_.count(name) > 0; }
  // Throws Error naming the file and the tensor when it is absent.
  const TensorView& get(const std::string& name) const;
  const TensorView* find(const std::string& name) const;
  size_t file_size() const { return map_->size(); }
  size_t header_size() const { return header_size_; }

  static constexpr uint64_t kMaxHeaderBytes = 100ull * 1000 * 1000;

 private:
  SafeTensorsFile() = default;
  std::unique_ptr<MappedFile> map_;
  std::map<std::string, std::string> metadata_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t> index_;
  size_t header_size_ = 0;
};

// A checkpoint: one file, a directory holding model.safetensors, a directory with a sharded
// index (model.safetensors.index.json), or a directory with exactly one .safetensors file.
class Checkpoint {
 public:
  explicit Checkpoint(const std::string& path);

  const std::string& path() const { return path_; }
  std::vector<std::string> names() const;  // sorted
  bool contains(const std::string& name) const { return where_.count(name) > 0; }
  const TensorView* find(const std::string& name) const;
  // Throws Error naming the checkpoint and the tensor when it is absent.
  const TensorView& get(const std::string& name) const;
  // The file holding `name` (keeps the mapping alive for zero-copy tensors).
  std::shared_ptr<SafeTensorsFile> file_of(const std::string& name) const;
  const std::vector<std::shared_ptr<SafeTensorsFile>>& files() const { return files_; }
  // Metadata of the first file, merged with the index's "metadata" when sharded.
  std::map<std::string, std::string> metadata() const;
  uint64_t total_bytes() const;

 private:
  std::string path_;
  std::vector<std::shared_ptr<SafeTensorsFile>> files_;
  std::map<std::string, size_t> where_;  // tensor name -> index into files_
  std::map<std::string, std::string> index_metadata_;
};

// The content identity of a checkpoint directory (or file): the hash of its config files
// (config.json, adapter_config.json) and, per weight file, its name, size, header hash and sampled
// content hashes (reading every byte of a 16 GB checkpoint would cost more than it guards). Not
// the path: a moved or copied checkpoint keeps its identity.
nlohmann::json checkpoint_identity(const std::string& path);

// Writes tensors (views onto the caller's memory) atomically: temporary file, fsync, rename.
// Names must be unique; nbytes must equal numel * dtype size.
void save_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                      const std::map<std::string, std::string>& metadata = {});
// The bytes save_safetensors would write, in memory (for small files sent between processes).
std::string safetensors_bytes(const std::vector<TensorView>& tensors,
                              const std::map<std::string, std::string>& metadata = {});

}  // namespace emovlm
