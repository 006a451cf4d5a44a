// safetensors reader (mmap, validated header) and atomic writer.
#include "emovlm/core/safetensors.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <set>

#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {
struct DTypeInfo {
  DType type;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},           {DType::I8, "I8", 1},
    {DType::I16, "I16", 2},   {DType::U16, "U16", 2},         {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I32, "I32", 4},         {DType::U32, "U32", 4},
    {DType::F32, "F32", 4},   {DType::I64, "I64", 8},         {DType::U64, "U64", 8},
    {DType::F64, "F64", 8},   {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
};
}  // namespace

const char* dtype_name(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d.name;
  return "?";
}

size_t dtype_size(DType t) {
  for (const auto& d : kDTypes)
    if (d.type == t) return d.size;
  return 0;
}

bool parse_dtype(const std::string& name, DType* out) {
  for (const auto& d : kDTypes) {
    if (name == d.name) {
      *out = d.type;
      return true;
    }
  }
  return false;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ------------------------------------------------------------------------------------ reading

std::shared_ptr<SafeTensorsFile> SafeTensorsFile::open(const std::string& path) {
  std::shared_ptr<SafeTensorsFile> f(new SafeTensorsFile());
  f->map_ = std::make_unique<MappedFile>(path);
  const uint8_t* base = f->map_->data();
  const size_t size = f->map_->size();
  auto fail = [&](const std::string& what) -> Error {
    return Error(cat(path, ": not a valid safetensors file: ", what));
  };

  if (size < 8)
    throw fail(cat("truncated (", size, " bytes, the 8-byte header length is missing)"));
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | base[i];  // little-endian u64
  if (header_len > kMaxHeaderBytes)
    throw fail(cat("header length ", header_len, " bytes exceeds the 100 MB limit"));
  if (header_len > size - 8)
    throw fail(cat("header length ", header_len, " bytes exceeds the file (", size,
                   " bytes): truncated or not safetensors"));
  f->header_size_ = static_cast<size_t>(header_len);
  const uint8_t* data_start = base + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;

  // Parse with a callback that rejects duplicate tensor names (JSON itself would keep one).
  std::set<std::string> seen;
  std::string duplicate;
  json::parser_callback_t cb = [&](int depth, json::parse_event_t event, json& parsed) {
    if (event == json::parse_event_t::key && depth == 1) {
      std::string key = parsed.get<std::string>();
      if (!seen.insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json header;
  try {
    header = json::parse(base + 8, base + 8 + header_len, cb);
  } catch (const json::exception& e) {  // syntax, and numbers out of range such as 1e999
    throw fail(cat("invalid JSON header: ", e.what()));
  }
  if (!duplicate.empty()) throw fail(cat("duplicate tensor name '", duplicate, "'"));
  if (!header.is_object()) throw fail("the header is not a JSON object");

  struct Range {
    uint64_t begin, end;
    std::string name;
  };
  std::vector<Range> ranges;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) throw fail("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string())
          throw fail(cat("__metadata__ value for '", m.key(), "' is not a string"));
        f->metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    if (!v.is_object()) throw fail(cat("entry '", name, "' is not an object"));
    TensorView t;
    t.name = name;
    auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) throw fail(cat("tensor '", name, "' has no dtype"));
    if (!parse_dtype(dt->get<std::string>(), &t.dtype))
      throw fail(cat("tensor '", name, "' has unknown dtype '", dt->get<std::string>(), "'"));
    auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) throw fail(cat("tensor '", name, "' has no shape"));
    uint64_t numel = 1;
    for (const auto& d : *sh) {
      if (!d.is_number_unsigned()) throw fail(cat("tensor '", name, "' has an invalid shape"));
      uint64_t dim = d.get<uint64_t>();
      if (dim > (1ull << 62) || __builtin_mul_overflow(numel, dim, &numel))
        throw fail(cat("tensor '", name, "' has a shape whose size overflows"));
      t.shape.push_back(static_cast<int64_t>(dim));
    }
    auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      throw fail(cat("tensor '", name, "' has no valid data_offsets"));
    uint64_t begin = (*off)[0].get<uint64_t>(), end = (*off)[1].get<uint64_t>();
    if (begin > end)
      throw fail(
          cat("tensor '", name, "' has data_offsets [", begin, ", ", end, "] with begin > end"));
    if (end > data_size)
      throw fail(cat("tensor '", name, "' has data_offsets [", begin, ", ", end,
                     "] outside the data section (", data_size, " bytes)"));
    uint64_t expected = 0;
    if (__builtin_mul_overflow(numel, static_cast<uint64_t>(dtype_size(t.dtype)), &expected) ||
        expected != end - begin)
      throw fail(cat("tensor '", name, "' has shape ", shape_str(t.shape), " and dtype ",
                     dtype_name(t.dtype), " (", expected, " bytes) but data_offsets span ",
                     end - begin, " bytes"));
    t.data = data_start + begin;
    t.nbytes = static_cast<size_t>(end - begin);
    ranges.push_back({begin, end, name});
    f->tensors_.push_back(std::move(t));
  }

  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
  });
  for (size_t i = 1; i < ranges.size(); ++i) {
    if (ranges[i].begin < ranges[i - 1].end)
      throw fail(cat("tensors '", ranges[i - 1].name, "' and '", ranges[i].name, "' overlap"));
  }

  std::sort(f->tensors_.begin(), f->tensors_.end(),
            [](const TensorView& a, const TensorView& b) { return a.name < b.name; });
  for (size_t i = 0; i < f->tensors_.size(); ++i) f->index_[f->tensors_[i].name] = i;
  return f;
}

const TensorView* SafeTensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorView& SafeTensorsFile::get(const std::string& name) const {
  const TensorView* t = find(name);
  if (!t) throw Error(cat(path(), ": no tensor named '", name, "'"));
  return *t;
}

// ---------------------------------------------------------------------------------- checkpoint

Checkpoint::Checkpoint(const std::string& path) : path_(path) {
  if (!fs::exists(path)) throw Error(cat(path, ": no such file or directory"));
  if (!fs::is_directory(path)) {
    files_.push_back(SafeTensorsFile::open(path));
  } else {
    fs::path dir(path);
    fs::path index = dir / "model.safetensors.index.json";
    if (fs::exists(index)) {
      json j = read_json_file(index.string());
      auto wm = j.find("weight_map");
      if (wm == j.end() || !wm->is_object())
        throw Error(cat(index.string(), ": missing 'weight_map' object"));
      if (j.contains("metadata") && j["metadata"].is_object()) {
        for (auto it = j["metadata"].begin(); it != j["metadata"].end(); ++it)
          index_metadata_[it.key()] =
              it.value().is_string() ? it.value().get<std::string>() : it.value().dump();
      }
      std::map<std::string, size_t> file_index;
      for (auto it = wm->begin(); it != wm->end(); ++it) {
        if (!it.value().is_string())
          throw Error(
              cat(index.string(), ": weight_map entry '", it.key(), "' is not a file name"));
        std::string shard = it.value().get<std::string>();
        auto fi = file_index.find(shard);
        if (fi == file_index.end()) {
          fs::path sp = dir / shard;
          if (!fs::exists(sp))
            throw Error(
                cat(index.string(), ": shard '", shard, "' (for '", it.key(), "') does not exist"));
          files_.push_back(SafeTensorsFile::open(sp.string()));
          fi = file_index.emplace(shard, files_.size() - 1).first;
        }
        if (!files_[fi->second]->contains(it.key()))
          throw Error(cat(index.string(), ": tensor '", it.key(), "' is mapped to '", shard,
                          "' which does not hold it"));
        where_[it.key()] = fi->second;
      }
      return;
    }
    fs::path single = dir / "model.safetensors";
    if (fs::exists(single)) {
      files_.push_back(SafeTensorsFile::open(single.string()));
    } else {
      std::vector<std::string> found;
      for (const auto& e : fs::directory_iterator(dir))
        if (e.path().extension() == ".safetensors") found.push_back(e.path().string());
      if (found.empty())
        throw Error(
            cat(path, ": no model.safetensors, index or .safetensors file in this directory"));
      if (found.size() > 1)
        throw Error(
            cat(path,
                ": several .safetensors files and no model.safetensors.index.json; name the file"));
      files_.push_back(SafeTensorsFile::open(found[0]));
    }
  }
  for (const auto& t : files_[0]->tensors()) where_[t.name] = 0;
}

std::vector<std::string> Checkpoint::names() const {
  std::vector<std::string> out;
  for (const auto& kv : where_) out.push_back(kv.first);
  return out;
}

const TensorView* Checkpoint::find(const std::string& name) const {
  auto it = where_.find(name);
  return it == where_.end() ? nullptr : files_[it->second]->find(name);
}

const TensorView& Checkpoint::get(const std::string& name) const {
  const TensorView* t = find(name);
  if (!t) throw Error(cat(path_, ": no tensor named '", name, "'"));
  return *t;
}

std::shared_ptr<SafeTensorsFile> Checkpoint::file_of(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) throw Error(cat(path_, ": no tensor named '", name, "'"));
  return files_[it->second];
}

std::map<std::string, std::string> Checkpoint::metadata() const {
  std::map<std::string, std::string> m =
      files_.empty() ? std::map<std::string, std::string>{} : files_[0]->metadata();
  for (const auto& kv : index_metadata_) m[kv.first] = kv.second;
  return m;
}

uint64_t Checkpoint::total_bytes() const {
  uint64_t n = 0;
  for (const auto& kv : where_) n += get(kv.first).nbytes;
  return n;
}

// ------------------------------------------------------------------------------------ writing

namespace {

// The tensors in file order (by name) and the file's first bytes: the header's length (8 bytes,
// little-endian) and the JSON header, padded so that the data section starts 8-byte aligned.
std::pair<std::vector<const TensorView*>, std::string> safetensors_layout(
    const std::string& what, const std::vector<TensorView>& tensors,
    const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorView*> order;
  for (const auto& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(),
            [](const TensorView* a, const TensorView* b) { return a->name < b->name; });

  json header = json::object();
  if (!metadata.empty()) {
    json m = json::object();
    for (const auto& kv : metadata) m[kv.first] = kv.second;
    header["__metadata__"] = m;
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const TensorView& t = *order[i];
    if (t.name.empty() || t.name == "__metadata__")
      throw Error(cat(what, ": invalid tensor name '", t.name, "'"));
    if (i > 0 && order[i - 1]->name == t.name)
      throw Error(cat(what, ": duplicate tensor name '", t.name, "'"));
    for (int64_t d : t.shape)
      if (d < 0)
        throw Error(
            cat(what, ": tensor '", t.name, "' has a negative dimension ", shape_str(t.shape)));
    size_t expected = static_cast<size_t>(t.numel()) * dtype_size(t.dtype);
    if (expected != t.nbytes)
      throw Error(cat(what, ": tensor '", t.name, "' has shape ", shape_str(t.shape), " and dtype ",
                      dtype_name(t.dtype), " (", expected, " bytes) but ", t.nbytes,
                      " bytes of data"));
    header[t.name] = {{"dtype", dtype_name(t.dtype)},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');  // align the data section to 8 bytes
  std::string head(8, '\0');
  const uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) head[i] = static_cast<char>(static_cast<uint8_t>(n >> (8 * i)));
  return {std::move(order), head + h};
}

}  // namespace

void save_safetensors(const std::string& path, const std::vector<TensorView>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  const auto [order, head] = safetensors_layout(path, tensors, metadata);
  AtomicFile out(path);
  out.write(head);
  for (const TensorView* t : order)
    if (t->nbytes) out.write(t->data, t->nbytes);
  out.commit();
}

std::string safetensors_bytes(const std::vector<TensorView>& tensors,
                              const std::map<std::string, std::string>& metadata) {
  auto [order, bytes] = safetensors_layout("safetensors_bytes", tensors, metadata);
  for (const TensorView* t : order) bytes.append(reinterpret_cast<const char*>(t->data), t->nbytes);
  return bytes;
}

json checkpoint_identity(const std::string& path) {
  json id = json::object();
  std::vector<std::string> files;
  if (fs::is_directory(path)) {
    for (const char* c : {"config.json", "adapter_config.json"}) {
      const std::string f = (fs::path(path) / c).string();
      if (file_exists(f)) id[c] = hex64(hash_file(f));
    }
    for (const auto& e : fs::directory_iterator(path))
      if (e.path().extension() == ".safetensors") files.push_back(e.path().string());
    std::sort(files.begin(), files.end());
  } else {
    files.push_back(path);
  }
  if (files.empty()) throw Error(cat(path, ": no .safetensors files (not a checkpoint)"));
  for (const auto& f : files) {
    MappedFile m(f);
    uint64_t h = fnv1a64(m.data(), std::min<size_t>(m.size(), 1 << 20));
    for (size_t off = 256u << 20; off < m.size(); off += 256u << 20)
      h = fnv1a64(m.data() + off, std::min<size_t>(m.size() - off, 1 << 16), h);
    h = fnv1a64(m.data() + (m.size() > (1 << 16) ? m.size() - (1 << 16) : 0),
                std::min<size_t>(m.size(), 1 << 16), h);
    id["files"].push_back(
        {{"name", fs::path(f).filename().string()}, {"bytes", m.size()}, {"hash", hex64(h)}});
  }
  return id;
}

}  // namespace emovlm
