// Tokenizer: the reference tokenizer's ids and decodings for the tiny fixture's strings and, with
// the real Qwen2-VL vocabulary, for a corpus of every kind of text, invalid UTF-8 and every code
// point.
#include <gtest/gtest.h>

#include <fstream>

#include "emovlm/core/error.h"
#include "emovlm/data/labels.h"
#include "emovlm/text/chat.h"
#include "emovlm/text/tokenizer.h"
#include "emovlm/text/unicode_tables.h"
#include "test_util.h"

using namespace emovlm;

namespace {

// tests/data/tokenizer/qwen2vl_tokenizer.tar.xz, unpacked by CMake into the build tree.
std::string real_path(const std::string& name) {
  return std::string(EMOVLM_QWEN2VL_TOKENIZER_DIR) + "/" + name;
}

std::string from_hex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2)
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  return out;
}

void append_utf8(uint32_t cp, std::string& out) {
  if (cp < 0x80) {
    out.push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// The sweep's text for the block of code points from `first` (as make_fixtures.js builds it).
std::string sweep_text(uint32_t first, uint32_t block) {
  std::string s;
  for (uint32_t c = first; c < first + block; ++c) {
    if (c >= 0xD800 && c < 0xE000) continue;
    std::string x;
    append_utf8(c, x);
    s += "a" + x + x + "1" + x + " " + x + "'" + x + "b\n";
  }
  return s;
}

std::string fnv1a64(const std::vector<int32_t>& ids) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (int32_t id : ids) h = (h ^ static_cast<uint64_t>(id)) * 0x100000001b3ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

class RealVocabulary : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tok_ = new Tokenizer(Tokenizer::from_file(real_path("tokenizer.json")));
    cases_ = new json(read_json_file(real_path("reference_cases.json")));
  }
  static void TearDownTestSuite() {
    delete tok_;
    delete cases_;
  }
  static Tokenizer* tok_;
  static json* cases_;
};
Tokenizer* RealVocabulary::tok_ = nullptr;
json* RealVocabulary::cases_ = nullptr;

}  // namespace

// ------------------------------------------------------------------- the tiny fixture's tokenizer

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
    EXPECT_EQ(tok.decode(c["ids"].get<std::vector<int32_t>>()), c["decoded"].get<std::string>())
        << "decode: " << text;
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
  EXPECT_EQ(Tokenizer::pretokenize(std::string("a\0b", 3)),
            (V{"a", std::string("\0b", 2)}));  // NUL is punctuation, not the end
  EXPECT_EQ(Tokenizer::pretokenize("x'\xC5\xBFt"),
            (V{"x", "'\xC5\xBF", "t"}));  // 'ſ matches (?i:'s)
  EXPECT_EQ(Tokenizer::pretokenize(""), V{});
}

TEST(Tokenizer, RoundTripsArbitraryBytes) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/tokenizer.json");
  Tokenizer tok = Tokenizer::from_dir(test::ref_path("qwen2vl_tiny"));
  const std::string text =
      "Mixed: \xC3\xA9t\xC3\xA9 \xE2\x82\xAC 42 <|im_end|> tabs\t\t and \xF0\x9F\x98\x80";
  EXPECT_EQ(tok.decode(tok.encode(text)), text);
  EXPECT_EQ(tok.decode(tok.encode(text), /*skip_special_tokens=*/true).find("<|im_end|>"),
            std::string::npos);
  // invalid input is encoded as its lossy decoding: each maximal invalid subsequence one U+FFFD
  EXPECT_EQ(tok.decode(tok.encode("a\x80"
                                  "b")),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(tok.decode(tok.encode("a\xE2\x82"
                                  "b\xF0\x80")),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD\xEF\xBF\xBD");
  // ids without a token are skipped (as the reference does)
  EXPECT_EQ(tok.decode({100000, tok.encode("a")[0], -1}), "a");
  EXPECT_THROW(tok.require_id("<|nope|>"), Error);
}

TEST(Tokenizer, ValidUtf8ReplacesMaximalSubparts) {
  const std::string r = "\xEF\xBF\xBD";
  EXPECT_EQ(Tokenizer::to_valid_utf8("ok \xC3\xA9"), "ok \xC3\xA9");
  EXPECT_EQ(Tokenizer::to_valid_utf8("\xE2\x82"
                                     "A"),
            r + "A");  // truncated: one
  EXPECT_EQ(Tokenizer::to_valid_utf8("\xF0\x80"
                                     "A"),
            r + r + "A");                                          // F0 80 can't start one: two
  EXPECT_EQ(Tokenizer::to_valid_utf8("\xED\xA0\x80"), r + r + r);  // a surrogate: three
  EXPECT_EQ(Tokenizer::to_valid_utf8("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(Tokenizer::to_valid_utf8("\xF0\x9F\x98"), r);                  // a cut emoji
}

TEST(Tokenizer, NfcKeepsNulAndUsesTheReferenceTables) {
  EXPECT_EQ(Tokenizer::nfc(std::string("e\xCC\x81\0e\xCC\x81", 7)),
            std::string("\xC3\xA9\0\xC3\xA9", 5));
  // U+1DF6 is a combining mark only in Unicode newer than the reference's tables: it blocks here
  EXPECT_EQ(Tokenizer::nfc("e\xE1\xB7\xB6\xCC\x81"), "e\xE1\xB7\xB6\xCC\x81");
  // U+0323 (below) sorts before U+0301 (above); e + U+0323 composes first
  EXPECT_EQ(Tokenizer::nfc("e\xCC\x81\xCC\xA3"), "\xE1\xBA\xB9\xCC\x81");
  EXPECT_EQ(Tokenizer::nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8"), "\xEA\xB0\x81");  // jamo -> 각
}

TEST(Tokenizer, AsciiIsLeftAloneByNfc) {
  // the normalizer copies ASCII without looking it up
  for (uint32_t c = 0; c < 0x80; ++c) EXPECT_TRUE(unicode::nfc_quick_yes(c)) << c;
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

TEST(Tokenizer, RefusesWhatItDoesNotImplement) {
  test::TempDir dir;
  json j = read_json_file(test::ref_path("qwen2vl_tiny/tokenizer.json"));
  auto refused = [&](json bad, const std::string& field) {
    const std::string p = dir / "tokenizer.json";
    std::ofstream(p) << bad.dump();
    try {
      Tokenizer::from_file(p);
      ADD_FAILURE() << field << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  json a = j;
  a["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+";
  refused(a, "pre_tokenizer");
  json b = j;
  b["added_tokens"][0]["lstrip"] = true;
  refused(b, "lstrip");
  json c = j;
  c["normalizer"] = {{"type", "NFKC"}};
  refused(c, "NFKC");
  json d = j;
  d["model"]["dropout"] = 0.1;
  refused(d, "dropout");
}

// ---------------------------------------------------------------- the real Qwen2-VL vocabulary

TEST_F(RealVocabulary, MatchesReferenceOnCorpus) {
  const json& cases = (*cases_)["cases"];
  ASSERT_GT(cases.size(), 100u);
  EXPECT_EQ(tok_->vocab_size(), (*cases_)["vocab_size"].get<int32_t>());
  std::vector<std::string> texts;
  for (const auto& c : cases) {
    texts.push_back(c["text"].get<std::string>());
    EXPECT_EQ(tok_->encode(texts.back()), c["ids"].get<std::vector<int32_t>>())
        << c["name"] << ": " << texts.back();
  }
  // the batch on two threads gives the same
  const auto batch = tok_->encode_batch(texts, 2);
  ASSERT_EQ(batch.size(), cases.size());
  for (size_t i = 0; i < batch.size(); ++i)
    EXPECT_EQ(batch[i], cases[i]["ids"].get<std::vector<int32_t>>()) << i;
}

TEST_F(RealVocabulary, ChatPromptsAreTheProjectsRendering) {
  // the corpus's categorical prompts and answers are what the project renders and encodes
  std::map<std::string, std::vector<std::string>> texts;
  for (const auto& c : (*cases_)["cases"]) texts[c["name"].get<std::string>()].push_back(c["text"]);
  for (const char* spec : {"mikels8", "ekman6", "binary",
                           "bewunderung,freude,trauer,\xC3\xBC"
                           "berraschung"}) {
    const LabelSet labels = LabelSet::from_spec(spec);
    const std::string name = labels.name == "custom" ? "custom" : labels.name;
    const std::string prompt =
        render_chat({ChatMessage::text("system", kEmotionSystemMessage),
                     ChatMessage::text_then_image("user", categorical_prompt(labels))},
                    true);
    ASSERT_EQ(texts["chat_categorical_" + name].size(), 1u) << name;
    EXPECT_EQ(texts["chat_categorical_" + name][0], prompt)
        << "regenerate the fixtures (make_fixtures.js) for " << name;
    EXPECT_EQ(texts["chat_categorical_" + name + "_expanded"][0], expand_image_pads(prompt, {256}));
    std::vector<std::string> answers;
    for (const auto& l : labels.labels) answers.push_back(categorical_answer(l) + "<|im_end|>");
    EXPECT_EQ(texts["chat_answer_" + name], answers) << name;
  }
}

TEST_F(RealVocabulary, InvalidUtf8IsEncodedAsItsLossyDecoding) {
  // the reference's ids for the text a JavaScript caller's decoding of the bytes gives
  const json& cases = (*cases_)["invalid_utf8"];
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    const std::string bytes = from_hex(c["hex"]);
    EXPECT_EQ(Tokenizer::to_valid_utf8(bytes), c["text"].get<std::string>()) << c["hex"];
    EXPECT_EQ(tok_->encode(bytes), c["ids"].get<std::vector<int32_t>>()) << c["hex"];
  }
}

TEST_F(RealVocabulary, DecodesAsReference) {
  const json& cases = (*cases_)["decode"];
  ASSERT_FALSE(cases.empty());
  for (const auto& c : cases) {
    const auto ids = c["ids"].get<std::vector<int32_t>>();
    EXPECT_EQ(tok_->decode(ids, c["skip_special_tokens"].get<bool>()), c["text"].get<std::string>())
        << json(ids).dump() << " skip " << c["skip_special_tokens"];
  }
}

TEST_F(RealVocabulary, EveryCodePoint) {
  const json& sweep = (*cases_)["sweep"];
  const uint32_t block = sweep["block"].get<uint32_t>();
  std::vector<std::string> texts;
  for (const auto& b : sweep["blocks"]) texts.push_back(sweep_text(b[0].get<uint32_t>(), block));
  ASSERT_EQ(texts.size(), (0x110000u - 0x800u) / block);
  const auto ids = tok_->encode_batch(texts);
  size_t bad = 0;
  for (size_t i = 0; i < texts.size() && bad <= 20; ++i) {
    const json& b = sweep["blocks"][i];
    // the pieces of the split pattern (their byte lengths), then the ids
    std::vector<int32_t> sizes;
    for (const auto& piece : Tokenizer::pretokenize(Tokenizer::nfc(texts[i])))
      sizes.push_back(static_cast<int32_t>(piece.size()));
    if (sizes.size() != b[3].get<size_t>() || fnv1a64(sizes) != b[4].get<std::string>())
      ++bad, ADD_FAILURE() << "code points from U+" << std::hex << b[0].get<uint32_t>() << std::dec
                           << ": " << sizes.size() << " pieces, the reference " << b[3];
    if (ids[i].size() != b[1].get<size_t>() || fnv1a64(ids[i]) != b[2].get<std::string>())
      ++bad, ADD_FAILURE() << "code points from U+" << std::hex << b[0].get<uint32_t>() << std::dec
                           << ": " << ids[i].size() << " ids, the reference " << b[1];
  }
}
