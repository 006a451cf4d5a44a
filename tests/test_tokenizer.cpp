// Tokenizer: the reference tokenizer's ids and decodings for every fixture string.
#include <gtest/gtest.h>

#include <fstream>

#include "emovlm/core/error.h"
#include "emovlm/text/tokenizer.h"
#include "test_util.h"

using namespace emovlm;

TEST(Tokenizer, MatchesReferenceCases) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/tokenizer_cases.json");
  const std::string dir = test::ref_path("qwen2vl_tiny");
  Tokenizer tok = Tokenizer::from_dir(dir);
  json cases = read_json_file(dir + "/tokenizer_cases.json");
  ASSERT_FALSE(cases["cases"].empty());
  for (const auto& c : cases["cases"]) {
    const std::string text = c["text"];
    std::vector<int32_t> ids = tok.encode(text);
    EXPECT_EQ(ids, c["ids"].get<std::vector<int32_t>>()) << "encode: " << text;
    EXPECT_EQ(tok.decode(c["ids"].get<std::vector<int32_t>>()), c["decoded"].get<std::string>()) << "decode: " << text;
  }
  for (auto it = cases["special_ids"].begin(); it != cases["special_ids"].end(); ++it) {
    EXPECT_EQ(tok.token_to_id(it.key()), it.value().get<int32_t>()) << it.key();
    EXPECT_TRUE(tok.is_special(it.value().get<int32_t>()));
  }
  EXPECT_EQ(tok.vocab_size(), cases["vocab_size"].get<int32_t>());
}

TEST(Tokenizer, PromptIdsMatchReference) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  const std::string dir = test::ref_path("qwen2vl_tiny");
  Tokenizer tok = Tokenizer::from_dir(dir);
  json cases = read_json_file(dir + "/cases.json");
  for (const auto& p : cases["prompts"]) {
    // The fixture's input_ids are the text with each <|image_pad|> expanded; encode the expansion.
    std::vector<int32_t> want = p["input_ids"].get<std::vector<int32_t>>();
    std::vector<int32_t> got_collapsed = tok.encode(p["text"].get<std::string>());
    const int32_t pad = tok.require_id("<|image_pad|>");
    std::vector<int32_t> want_collapsed;
    for (size_t i = 0; i < want.size(); ++i)
      if (!(want[i] == pad && i > 0 && want[i - 1] == pad)) want_collapsed.push_back(want[i]);
    EXPECT_EQ(got_collapsed, want_collapsed) << p["name"];
  }
}

TEST(Tokenizer, SplitPattern) {
  using V = std::vector<std::string>;
  EXPECT_EQ(Tokenizer::pretokenize("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(Tokenizer::pretokenize("don't I'LL"), (V{"don", "'t", " I", "'LL"}));
  EXPECT_EQ(Tokenizer::pretokenize("a  b"), (V{"a", " ", " b"}));
  EXPECT_EQ(Tokenizer::pretokenize("x 12"), (V{"x", " ", "1", "2"}));
  EXPECT_EQ(Tokenizer::pretokenize("end.\n\n  next"), (V{"end", ".\n\n", " ", " next"}));
  EXPECT_EQ(Tokenizer::pretokenize("a \n b"), (V{"a", " \n", " b"}));
  EXPECT_EQ(Tokenizer::pretokenize("tail   "), (V{"tail", "   "}));
  EXPECT_EQ(Tokenizer::pretokenize(""), V{});
}

TEST(Tokenizer, RoundTripsArbitraryBytes) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/tokenizer.json");
  Tokenizer tok = Tokenizer::from_dir(test::ref_path("qwen2vl_tiny"));
  const std::string text = "Mixed: \xC3\xA9t\xC3\xA9 \xE2\x82\xAC 42 <|im_end|> tabs\t\t and \xF0\x9F\x98\x80";
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
  EXPECT_EQ(tok.decode(tok.encode(text), /*skip_special_tokens=*/true).find("<|im_end|>"), std::string::npos);
  // a lone continuation byte still encodes (byte level) and decodes to U+FFFD
  EXPECT_EQ(tok.decode(tok.encode("a\x80" "b")), "a\xEF\xBF\xBD" "b");
  EXPECT_THROW(tok.decode({100000}), Error);
  EXPECT_THROW(tok.require_id("<|nope|>"), Error);
}

TEST(Tokenizer, BadFileNamesIt) {
  test::TempDir dir;
  std::string p = dir / "tokenizer.json";
  std::ofstream(p) << R"({"model": {"type": "Unigram", "vocab": []}})";
  try {
    Tokenizer::from_file(p);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos);
    EXPECT_NE(std::string(e.what()).find("Unigram"), std::string::npos);
  }
}
