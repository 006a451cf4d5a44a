// Chat template, categorical prompt, label sets and answer parsing against the fixtures.
#include <gtest/gtest.h>

#include "emovlm/core/error.h"
#include "emovlm/data/labels.h"
#include "emovlm/text/chat.h"
#include "test_util.h"

using namespace emovlm;

namespace {

// Reads the fixture's rendered text back into messages (system?, user text, image?).
std::vector<ChatMessage> messages_of(const std::string& text) {
  std::vector<ChatMessage> out;
  size_t pos = 0;
  const std::string start = "<|im_start|>", end = "<|im_end|>\n";
  while (true) {
    size_t s = text.find(start, pos);
    if (s == std::string::npos) break;
    size_t nl = text.find('\n', s);
    std::string role = text.substr(s + start.size(), nl - s - start.size());
    size_t e = text.find(end, nl);
    if (e == std::string::npos) break;  // the generation prompt
    std::string body = text.substr(nl + 1, e - nl - 1);
    const std::string vis = std::string(kVisionStart) + kImagePad + kVisionEnd;
    size_t v = body.find(vis);
    if (v != std::string::npos && v + vis.size() == body.size())
      out.push_back(ChatMessage::text_then_image(role, body.substr(0, v)));
    else
      out.push_back(ChatMessage::text(role, body));
    pos = e + end.size();
  }
  return out;
}

}  // namespace

TEST(Chat, RendersEveryFixturePrompt) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  json cases = read_json_file(test::ref_path("qwen2vl_tiny/cases.json"));
  const LabelSet mikels = LabelSet::from_spec("mikels8");
  for (const auto& p : cases["prompts"]) {
    const std::string text = p["text"];
    std::vector<ChatMessage> msgs = messages_of(text);
    // drop a default system message: the template adds it by itself
    if (!msgs.empty() && msgs[0].role == "system" && msgs[0].parts[0].text == kQwenDefaultSystem)
      msgs.erase(msgs.begin());
    EXPECT_EQ(render_chat(msgs, true), text) << p["name"];
    if (!p["image"].is_null()) {
      // the categorical prompt the pipeline builds is the fixture's
      std::vector<ChatMessage> built = {
          ChatMessage::text("system", kEmotionSystemMessage),
          ChatMessage::text_then_image("user", categorical_prompt(mikels))};
      EXPECT_EQ(render_chat(built, true), text) << p["name"];
    }
  }
}

TEST(Chat, ExpandImagePads) {
  std::string t = std::string("a") + kImagePad + "b" + kImagePad;
  EXPECT_EQ(expand_image_pads(t, {2, 1}),
            std::string("a") + kImagePad + kImagePad + "b" + kImagePad);
  EXPECT_THROW(expand_image_pads(t, {2}), Error);
  EXPECT_THROW(expand_image_pads(t, {1, 1, 1}), Error);
  std::string two = render_chat(
      {ChatMessage::text_then_image("user", "x"), ChatMessage::text_then_image("user", "y")}, false,
      /*add_vision_id=*/true);
  EXPECT_NE(two.find("xPicture 1: <|vision_start|>"), std::string::npos) << two;
  EXPECT_NE(two.find("yPicture 2: <|vision_start|>"), std::string::npos) << two;
}

TEST(Labels, BuiltInSetsAreSorted) {
  for (const char* name : {"mikels8", "ekman6", "binary"}) {
    LabelSet s = LabelSet::from_spec(name);
    EXPECT_TRUE(std::is_sorted(s.labels.begin(), s.labels.end())) << name;
  }
  EXPECT_EQ(LabelSet::from_spec("mikels8").size(), 8);
  EXPECT_EQ(LabelSet::from_spec("ekman6").labels[3], "joy");
  LabelSet c = LabelSet::from_spec("tense, calm");
  EXPECT_EQ(c.labels, (std::vector<std::string>{"calm", "tense"}));
  EXPECT_THROW(LabelSet::from_spec("only"), Error);
  EXPECT_THROW(LabelSet::from_spec("a,a"), Error);
  EXPECT_THROW(LabelSet::from_spec("mikels8").require_index("joy"), Error);
  EXPECT_NE(categorical_prompt(LabelSet::from_spec("binary"))
                .find("2 categories: negative and positive. Answer"),
            std::string::npos);
}

TEST(Labels, ParseAnswers) {
  LabelSet s = LabelSet::from_spec("mikels8");
  EXPECT_EQ(parse_categorical_answer("{'emotion': 'awe'}", s).index, 2);
  EXPECT_EQ(parse_categorical_answer("Sure! {\"emotion\":\"Fear\"} is my answer", s).index, 6);
  EXPECT_EQ(parse_categorical_answer("{ 'emotion' :  'sadness' }", s).index, 7);
  ParsedAnswer joy = parse_categorical_answer("{'emotion': 'joy'}", s);
  EXPECT_EQ(joy.index, -1);  // outside the set: unparsable, not a class
  EXPECT_EQ(joy.raw, "joy");
  EXPECT_EQ(parse_categorical_answer("I think it is awe.", s).index, -1);
  // binary: an unparsable answer is not 'negative' (the reference's label-binarizer defect)
  EXPECT_EQ(parse_categorical_answer("none", LabelSet::from_spec("binary")).index, -1);
}
