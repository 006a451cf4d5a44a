// Model configurations read from files refuse values out of range, naming the file and the field,
// before anything is allocated from them (a corrupt config.json must not crash or exhaust memory).
#include <gtest/gtest.h>

#include <string>

#include "emovlm/core/error.h"
#include "emovlm/core/json_util.h"
#include "emovlm/models/lora.h"
#include "emovlm/models/qwen2vl_config.h"
#include "emovlm/models/vit.h"
#include "test_util.h"

using namespace emovlm;

namespace {

// The error `parse` throws for `j` with the value at JSON pointer `field` replaced by `value`.
template <typename Parse>
std::string error_with(json j, const std::string& field, const json& value, Parse parse) {
  j[json::json_pointer(field)] = value;
  try {
    parse(j);
  } catch (const Error& e) {
    return e.what();
  }
  return "(accepted)";
}

void expect_names(const std::string& err, const std::string& file, const std::string& field) {
  EXPECT_NE(err.find(file), std::string::npos) << err;
  EXPECT_NE(err.find(field), std::string::npos) << err;
}

}  // namespace

TEST(Configs, Qwen2VLRefusesOutOfRangeFields) {
  const json base = read_json_file(test::ref_path("qwen2vl_tiny") + "/config.json");
  auto parse = [](const json& j) { Qwen2VLConfig::from_json(j, "tiny/config.json"); };
  ASSERT_NO_THROW(parse(base));
  const std::string vision = "/vision_config";
  struct Case {
    std::string pointer, field;
    json value;
  };
  const Case cases[] = {
      {vision + "/in_chans", "in_chans", -2147483649LL},
      {vision + "/in_chans", "in_chans", 0},
      {vision + "/depth", "depth", int64_t{1} << 40},
      {vision + "/embed_dim", "embed_dim", int64_t{1} << 40},
      {vision + "/mlp_ratio", "mlp_ratio", -4.0},
      {vision + "/patch_size", "patch_size", 0},
      {"/vocab_size", "vocab_size", int64_t{1} << 40},
      {"/num_hidden_layers", "num_hidden_layers", 0},
      {"/intermediate_size", "intermediate_size", -1},
      {"/rms_norm_eps", "rms_norm_eps", 0.0},
      {"/rope_theta", "rope_theta", -1.0},
  };
  for (const auto& c : cases) {
    if (!base.contains(json::json_pointer(c.pointer))) {
      ADD_FAILURE() << "the fixture's config.json lacks " << c.pointer;
      continue;
    }
    expect_names(error_with(base, c.pointer, c.value, parse), "tiny/config.json", c.field);
  }
}

TEST(Configs, VitRefusesOutOfRangeFields) {
  const json base = read_json_file(test::ref_path("vit_tiny") + "/config.json");
  auto parse = [](const json& j) { VitConfig::from_json(j, "vit/config.json"); };
  ASSERT_NO_THROW(parse(base));
  for (const char* field :
       {"num_channels", "hidden_size", "num_hidden_layers", "image_size", "patch_size"}) {
    expect_names(error_with(base, std::string("/") + field, -1, parse), "vit/config.json", field);
    expect_names(error_with(base, std::string("/") + field, int64_t{1} << 40, parse),
                 "vit/config.json", field);
  }
  expect_names(error_with(base, "/layer_norm_eps", 0.0, parse), "vit/config.json",
               "layer_norm_eps");
}

TEST(Configs, LoraRefusesOutOfRangeFields) {
  const json base = {
      {"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"target_modules", {"q_proj"}}};
  auto parse = [](const json& j) { LoraConfig::from_json(j, "adapter/adapter_config.json"); };
  ASSERT_NO_THROW(parse(base));
  expect_names(error_with(base, "/r", 0, parse), "adapter_config.json", "rank");
  expect_names(error_with(base, "/r", int64_t{1} << 40, parse), "adapter_config.json", "rank");
  expect_names(error_with(base, "/lora_alpha", -1.0, parse), "adapter_config.json", "lora_alpha");
  expect_names(error_with(base, "/target_modules", json::array({1, 2}), parse),
               "adapter_config.json", "target_modules");
}

// Integer fields take integral numbers in their type's range only: 19e99 (a double, far beyond
// int64) was converted by the JSON library with undefined behaviour (UBSan, found by fuzz_loaders).
TEST(Configs, IntegerFieldsRefuseNumbersOutOfTheirRange) {
  const json j = json::parse(
      R"({"big": 19e99, "half": 2.5, "two": 2.0, "neg": -3, "huge_int": 18446744073709551615,
                                  "int32_over": 3000000000, "list": [1, 2.0, 1e300], "edge": 9223372036854775808.0})");
  auto refused = [&](auto get, const std::string& key) {
    try {
      get();
      ADD_FAILURE() << key << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'" + key + "'"), std::string::npos) << e.what();
    }
  };
  refused([&] { return json_required<int64_t>(j, "big", "t.json"); }, "big");
  refused([&] { return json_required<int64_t>(j, "half", "t.json"); }, "half");
  refused([&] { return json_required<int64_t>(j, "huge_int", "t.json"); }, "huge_int");
  refused([&] { return json_required<int64_t>(j, "edge", "t.json"); }, "edge");  // 2^63
  refused([&] { return json_required<int>(j, "int32_over", "t.json"); }, "int32_over");
  refused([&] { return json_required<uint64_t>(j, "neg", "t.json"); }, "neg");
  refused([&] { return json_optional<std::vector<int64_t>>(j, "list", {}, "t.json"); }, "list");
  EXPECT_EQ(json_required<int64_t>(j, "two", "t.json"), 2);
  EXPECT_EQ(json_required<int64_t>(j, "neg", "t.json"), -3);
  EXPECT_EQ(json_required<int64_t>(j, "int32_over", "t.json"), 3000000000);
  EXPECT_EQ(json_required<uint64_t>(j, "huge_int", "t.json"), 18446744073709551615ull);
  EXPECT_DOUBLE_EQ(json_required<double>(j, "half", "t.json"), 2.5);
  json cfg = json::parse(R"({"vocab_size": 19e99, "vision_config": {}})");
  refused([&] { return Qwen2VLConfig::from_json(cfg, "config.json"); }, "vocab_size");
}
