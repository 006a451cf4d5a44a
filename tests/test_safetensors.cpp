// safetensors: round trips, every dtype, metadata, sharded checkpoints, and every kind of bad file.
#include <gtest/gtest.h>

#include <cstring>
#include <fstream>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/safetensors.h"
#include "test_util.h"

using namespace emovlm;
using emovlm::test::TempDir;

namespace {

void write_raw(const std::string& path, const std::string& header, const std::string& data) {
  std::ofstream f(path, std::ios::binary);
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f.put(static_cast<char>(n >> (8 * i)));
  f << header << data;
}

TensorView view(const std::string& name, DType dt, std::vector<int64_t> shape, const void* data) {
  TensorView t;
  t.name = name;
  t.dtype = dt;
  t.shape = std::move(shape);
  t.data = static_cast<const uint8_t*>(data);
  t.nbytes = static_cast<size_t>(t.numel()) * dtype_size(dt);
  return t;
}

// The error message of opening `path`, or "" when it opens.
std::string open_error(const std::string& path) {
  try {
    SafeTensorsFile::open(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(SafeTensors, RoundTripEveryDtypeAndMetadata) {
  TempDir dir;
  const DType all[] = {DType::F64, DType::F32, DType::F16, DType::BF16,    DType::I64,
                       DType::I32, DType::I16, DType::I8,  DType::U8,      DType::BOOL,
                       DType::U16, DType::U32, DType::U64, DType::F8_E4M3, DType::F8_E5M2};
  std::vector<std::vector<uint8_t>> buffers;
  std::vector<TensorView> views;
  for (DType dt : all) {
    std::vector<uint8_t> b(2 * 3 * dtype_size(dt));
    for (size_t i = 0; i < b.size(); ++i) b[i] = static_cast<uint8_t>(i * 7 + static_cast<int>(dt));
    buffers.push_back(b);
  }
  for (size_t i = 0; i < buffers.size(); ++i)
    views.push_back(
        view(std::string("t_") + dtype_name(all[i]), all[i], {2, 3}, buffers[i].data()));
  float scalar = 3.5f;
  views.push_back(view("scalar", DType::F32, {}, &scalar));
  views.push_back(view("empty", DType::F32, {0, 4}, nullptr));
  save_safetensors(dir / "a.safetensors", views, {{"format", "pt"}, {"note", "hello"}});

  auto f = SafeTensorsFile::open(dir / "a.safetensors");
  EXPECT_EQ(f->metadata().at("format"), "pt");
  EXPECT_EQ(f->metadata().at("note"), "hello");
  ASSERT_EQ(f->tensors().size(), views.size());
  for (size_t i = 0; i < buffers.size(); ++i) {
    const TensorView& t = f->get(std::string("t_") + dtype_name(all[i]));
    EXPECT_EQ(t.dtype, all[i]);
    EXPECT_EQ(t.shape, (std::vector<int64_t>{2, 3}));
    ASSERT_EQ(t.nbytes, buffers[i].size());
    EXPECT_EQ(std::memcmp(t.data, buffers[i].data(), t.nbytes), 0) << dtype_name(all[i]);
  }
  const TensorView& s = f->get("scalar");
  EXPECT_TRUE(s.shape.empty());
  float v;
  std::memcpy(&v, s.data, 4);
  EXPECT_EQ(v, 3.5f);
  EXPECT_EQ(f->get("empty").nbytes, 0u);
  // Data section is 8-byte aligned, so F64/I64 tensors can be used in place.
  EXPECT_EQ((8 + f->header_size()) % 8, 0u);
}

TEST(SafeTensors, ReadsReferenceCheckpoint) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model-bf16.safetensors");
  auto f = SafeTensorsFile::open(test::ref_path("qwen2vl_tiny/model.safetensors"));
  const TensorView& w = f->get("visual.merger.mlp.0.weight");
  EXPECT_EQ(w.dtype, DType::F32);
  EXPECT_EQ(w.shape.size(), 2u);
  auto bf = SafeTensorsFile::open(test::ref_path("qwen2vl_tiny/model-bf16.safetensors"));
  EXPECT_EQ(bf->get("visual.merger.mlp.0.weight").dtype, DType::BF16);
  EXPECT_EQ(bf->metadata().at("format"), "pt");
}

TEST(SafeTensors, MissingTensorNamesFileAndTensor) {
  EMOVLM_NEED_FIXTURE("heads/expected.safetensors");
  auto f = SafeTensorsFile::open(test::ref_path("heads/expected.safetensors"));
  try {
    f->get("no.such.tensor");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no.such.tensor"), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("expected.safetensors"), std::string::npos);
  }
}

TEST(SafeTensors, BadFilesGiveClearErrors) {
  TempDir dir;
  struct Case {
    std::string name, header, data, expect;
  };
  std::string ok_data(16, '\0');
  std::vector<Case> cases = {
      {"invalid_json", "{\"a\": {\"dtype\": ", "", "invalid JSON"},
      {"not_object", "[1, 2]", "", "not a JSON object"},
      {"unknown_dtype", R"({"a":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}})", ok_data,
       "unknown dtype 'F12'"},
      {"size_mismatch", R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", ok_data,
       "span 8 bytes"},
      {"outside", R"({"a":{"dtype":"F32","shape":[8],"data_offsets":[0,32]}})", ok_data,
       "outside the data"},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       ok_data, "overlap"},
      {"duplicate",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}})",
       ok_data, "duplicate tensor name 'a'"},
      {"begin_after_end", R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})", ok_data,
       "begin > end"},
      {"negative_shape", R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", ok_data,
       "invalid shape"},
      {"no_offsets", R"({"a":{"dtype":"F32","shape":[2]}})", ok_data, "data_offsets"},
      {"bad_metadata", R"({"__metadata__":{"k":1}})", "", "__metadata__"},
      {"overflow", R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})",
       ok_data, "overflows"},
      {"number_out_of_range", R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[1e999,8]}})",
       ok_data, "invalid JSON"},
  };
  for (const auto& c : cases) {
    std::string path = dir / (c.name + ".safetensors");
    write_raw(path, c.header, c.data);
    std::string err = open_error(path);
    EXPECT_NE(err.find(c.expect), std::string::npos) << c.name << ": " << err;
    EXPECT_NE(err.find(path), std::string::npos) << c.name << " does not name the file: " << err;
  }
}

TEST(SafeTensors, TruncatedAndOversizedHeaders) {
  TempDir dir;
  {
    std::ofstream f(dir / "short.safetensors", std::ios::binary);
    f << "abc";
  }
  EXPECT_NE(open_error(dir / "short.safetensors").find("truncated"), std::string::npos);
  { std::ofstream f(dir / "empty.safetensors", std::ios::binary); }
  EXPECT_NE(open_error(dir / "empty.safetensors").find("truncated"), std::string::npos);
  // header longer than the file
  write_raw(dir / "long.safetensors", "{}", "");
  {
    std::fstream f(dir / "long.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    uint64_t n = 1000;
    f.write(reinterpret_cast<const char*>(&n), 8);
  }
  EXPECT_NE(open_error(dir / "long.safetensors").find("exceeds the file"), std::string::npos);
  // header over 100 MB
  write_raw(dir / "huge.safetensors", "{}", "");
  {
    std::fstream f(dir / "huge.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    uint64_t n = 200ull * 1000 * 1000;
    f.write(reinterpret_cast<const char*>(&n), 8);
  }
  EXPECT_NE(open_error(dir / "huge.safetensors").find("100 MB"), std::string::npos);
  // a valid file cut in the middle of its data
  float values[16] = {};
  save_safetensors(dir / "good.safetensors", {view("v", DType::F32, {16}, values)});
  std::string good = read_file(dir / "good.safetensors");
  write_file_atomic(dir / "cut.safetensors", good.substr(0, good.size() - 10));
  EXPECT_NE(open_error(dir / "cut.safetensors").find("outside the data"), std::string::npos);
  EXPECT_NE(open_error(dir / "missing.safetensors").find("cannot open"), std::string::npos);
}

TEST(SafeTensors, WriterRejectsBadInput) {
  TempDir dir;
  float d[4] = {1, 2, 3, 4};
  TensorView a = view("a", DType::F32, {4}, d);
  TensorView wrong = a;
  wrong.nbytes = 12;
  EXPECT_THROW(save_safetensors(dir / "x.safetensors", {wrong}), Error);
  EXPECT_THROW(save_safetensors(dir / "x.safetensors", {a, a}), Error);
  EXPECT_FALSE(file_exists(dir / "x.safetensors"));
}

TEST(SafeTensors, AtomicWriteLeavesOldFileOnFailure) {
  TempDir dir;
  float d[2] = {1, 2};
  save_safetensors(dir / "m.safetensors", {view("a", DType::F32, {2}, d)});
  TensorView bad = view("b", DType::F32, {2}, d);
  bad.nbytes = 4;
  EXPECT_THROW(save_safetensors(dir / "m.safetensors", {bad}), Error);
  auto f = SafeTensorsFile::open(dir / "m.safetensors");
  EXPECT_TRUE(f->contains("a"));
  // no temporary files left behind
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path())) (void)e, ++n;
  EXPECT_EQ(n, 1);
}

TEST(Checkpoint, ShardedIndex) {
  TempDir dir;
  float a[3] = {1, 2, 3}, b[2] = {4, 5};
  save_safetensors(dir / "model-00001-of-00002.safetensors", {view("layer.a", DType::F32, {3}, a)});
  save_safetensors(dir / "model-00002-of-00002.safetensors", {view("layer.b", DType::F32, {2}, b)});
  write_file_atomic(
      dir / "model.safetensors.index.json",
      R"({"metadata":{"total_size":20},"weight_map":{"layer.a":"model-00001-of-00002.safetensors",)"
      R"("layer.b":"model-00002-of-00002.safetensors"}})");
  Checkpoint ck(dir.path());
  EXPECT_EQ(ck.names(), (std::vector<std::string>{"layer.a", "layer.b"}));
  EXPECT_EQ(ck.files().size(), 2u);
  float v;
  std::memcpy(&v, ck.get("layer.b").data + 4, 4);
  EXPECT_EQ(v, 5.0f);
  EXPECT_EQ(ck.total_bytes(), 20u);
  EXPECT_EQ(ck.metadata().at("total_size"), "20");
  EXPECT_THROW(ck.get("layer.c"), Error);

  // an index naming a shard that does not hold the tensor
  write_file_atomic(dir / "model.safetensors.index.json",
                    R"({"weight_map":{"layer.a":"model-00002-of-00002.safetensors"}})");
  try {
    Checkpoint bad(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("does not hold it"), std::string::npos) << e.what();
  }
  write_file_atomic(dir / "model.safetensors.index.json",
                    R"({"weight_map":{"layer.a":"gone.safetensors"}})");
  EXPECT_THROW(Checkpoint bad(dir.path()), Error);
}

TEST(Checkpoint, SingleFileDirectory) {
  EMOVLM_NEED_FIXTURE("vit_tiny/model.safetensors");
  Checkpoint ck(test::ref_path("vit_tiny"));
  EXPECT_TRUE(ck.contains("classifier.weight"));
  EXPECT_TRUE(ck.contains("vit.embeddings.patch_embeddings.projection.weight"));
  TempDir empty;
  EXPECT_THROW(Checkpoint none(empty.path()), Error);
}
