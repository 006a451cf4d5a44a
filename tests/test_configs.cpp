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
  for (const char* field : {"num_channels", "hidden_size", "num_hidden_layers", "image_size", "patch_size"}) {
    expect_names(error_with(base, std::string("/") + field, -1, parse), "vit/config.json", field);
    expect_names(error_with(base, std::string("/") + field, int64_t{1} << 40, parse), "vit/config.json", field);
  }
  expect_names(error_with(base, "/layer_norm_eps", 0.0, parse), "vit/config.json", "layer_norm_eps");
}

TEST(Configs, LoraRefusesOutOfRangeFields) {
  const json base = {{"peft_type", "LORA"}, {"r", 4}, {"lora_alpha", 8}, {"target_modules", {"q_proj"}}};
  auto parse = [](const json& j) { LoraConfig::from_json(j, "adapter/adapter_config.json"); };
  ASSERT_NO_THROW(parse(base));
  expect_names(error_with(base, "/r", 0, parse), "adapter_config.json", "rank");
  expect_names(error_with(base, "/r", int64_t{1} << 40, parse), "adapter_config.json", "rank");
  expect_names(error_with(base, "/lora_alpha", -1.0, parse), "adapter_config.json", "lora_alpha");
  expect_names(error_with(base, "/target_modules", json::array({1, 2}), parse), "adapter_config.json", "target_modules");
}
