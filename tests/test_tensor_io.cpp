// safetensors <-> torch: zero-copy loading, dtypes, atomic saving.
#include <gtest/gtest.h>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/tensor_io.h"
#include "test_util.h"

using namespace emovlm;

TEST(TensorIO, RoundTripDtypes) {
  test::TempDir dir;
  std::map<std::string, torch::Tensor> ts = {
      {"f32", torch::randn({3, 4})},
      {"f64", torch::randn({2}, torch::kFloat64)},
      {"bf16", torch::randn({5, 2}).to(torch::kBFloat16)},
      {"f16", torch::randn({5}).to(torch::kFloat16)},
      {"i64", torch::arange(6, torch::kInt64).reshape({2, 3})},
      {"i32", torch::arange(4, torch::kInt32)},
      {"u8", torch::arange(9, torch::kUInt8)},
      {"b", torch::tensor({true, false, true})},
      {"noncontig", torch::randn({4, 3}).t()},
  };
  save_tensors(dir / "t.safetensors", ts, {{"stage", "test"}});
  auto back = load_tensors(dir / "t.safetensors");
  ASSERT_EQ(back.size(), ts.size());
  for (const auto& [name, t] : ts) {
    ASSERT_TRUE(back.count(name)) << name;
    EXPECT_EQ(back[name].scalar_type(), t.scalar_type()) << name;
    EXPECT_TRUE(torch::equal(back[name], t)) << name;
  }
  Checkpoint ck(dir / "t.safetensors");
  EXPECT_EQ(ck.metadata().at("stage"), "test");
}

TEST(TensorIO, InMemoryBytesAreTheFile) {
  test::TempDir dir;
  const NamedTensors ts = {{"b", torch::randn({3, 5})},
                           {"a", torch::arange(7, torch::kInt64)},
                           {"empty", torch::zeros({0, 4})}};
  const std::map<std::string, std::string> meta = {{"format", "x"}, {"split", "train"}};
  save_tensors(dir / "t.safetensors", ts, meta);
  const std::string bytes = tensors_to_safetensors(ts, meta);
  EXPECT_EQ(bytes, read_file(dir / "t.safetensors"));
  EXPECT_NE(bytes, tensors_to_safetensors(ts, {{"format", "y"}, {"split", "train"}}));
  EXPECT_EQ(tensors_to_safetensors({}, {}), read_file([&] {
              save_tensors(dir / "none.safetensors", NamedTensors{});
              return dir / "none.safetensors";
            }()));
}

TEST(TensorIO, ZeroCopyFromMapping) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");
  Checkpoint ck(test::ref_path("qwen2vl_tiny/model.safetensors"));
  const TensorView& v = ck.get("model.embed_tokens.weight");
  torch::Tensor t = load_tensor(ck, "model.embed_tokens.weight");
  EXPECT_EQ(static_cast<const void*>(t.data_ptr()), static_cast<const void*>(v.data));
  EXPECT_EQ(t.sizes().vec(), v.shape);
  // the tensor keeps the mapping alive after the checkpoint object is gone
  torch::Tensor kept;
  {
    Checkpoint tmp(test::ref_path("qwen2vl_tiny/model.safetensors"));
    kept = load_tensor(tmp, "model.embed_tokens.weight");
  }
  EXPECT_TRUE(torch::equal(kept, t));
}

TEST(TensorIO, Bf16CheckpointMatchesRoundedF32) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model-bf16.safetensors");
  Checkpoint f32(test::ref_path("qwen2vl_tiny/model.safetensors"));
  Checkpoint bf16(test::ref_path("qwen2vl_tiny/model-bf16.safetensors"));
  torch::Tensor a = load_tensor(f32, "model.embed_tokens.weight").to(torch::kBFloat16);
  torch::Tensor b = load_tensor(bf16, "model.embed_tokens.weight");
  EXPECT_EQ(b.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::equal(a, b));
}

TEST(TensorIO, UnsupportedDtypeIsAnError) {
  EXPECT_THROW(to_scalar_type(DType::U16), Error);
  EXPECT_THROW(from_scalar_type(torch::kComplexFloat), Error);
}
