// Stage 0 against a real HTTP server on loopback: answers split by their headings, retries on 429
// and 5xx, failures reported, resume, and a wrong key or an unreachable endpoint stopping at once.
#include <gtest/gtest.h>
#include <httplib.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/data/instruction_format.h"
#include "emovlm/data/instructions.h"
#include "emovlm/image/image.h"
#include "test_util.h"

using namespace emovlm;
namespace fs = std::filesystem;

TEST(Instructions, SplitsAnswersByHeadings) {
  auto [o1, r1] = split_observation_reasoning(
      "1. **Key Elements:** a dog on grass.\n2. **Reasoning:** it looks calm.");
  EXPECT_EQ(o1, "a dog on grass.");
  EXPECT_EQ(r1, "it looks calm.");
  auto [o2, r2] = split_observation_reasoning(
      "## key elements\n- dark sky\n- storm\n\n## REASONING\nThreatening.");
  EXPECT_EQ(o2, "- dark sky\n- storm");
  EXPECT_EQ(r2, "Threatening.");
  auto [o3, r3] = split_observation_reasoning("No headings at all.");
  EXPECT_TRUE(o3.empty() && r3.empty());
}

namespace {

struct FakeEndpoint {
  httplib::Server server;
  std::thread thread;
  int port = 0;
  std::atomic<int> calls{0}, rate_limited{0};
  FakeEndpoint() {
    server.Get("/v1/models", [](const httplib::Request& req, httplib::Response& res) {
      res.status = req.get_header_value("Authorization") == "Bearer good-key" ? 200 : 401;
      res.set_content("{}", "application/json");
    });
    server.Post(
        "/v1/chat/completions", [this](const httplib::Request& req, httplib::Response& res) {
          ++calls;
          if (req.get_header_value("Authorization") != "Bearer good-key") {
            res.status = 401;
            return;
          }
          auto body = nlohmann::json::parse(req.body);
          const std::string text = body["messages"][0]["content"][0]["text"];
          const std::string url = body["messages"][0]["content"][1]["image_url"]["url"];
          if (url.rfind("data:image/png;base64,", 0) != 0) {
            res.status = 400;
            return;
          }
          if (text.find("emotion this image conveys is fear") != std::string::npos) {
            res.status = 500;  // always fails: reported, not fatal
            return;
          }
          if (text.find("is awe") != std::string::npos && rate_limited++ == 0) {
            res.status = 429;  // once: retried
            return;
          }
          nlohmann::json out = {
              {"choices",
               {{{"message",
                  {{"role", "assistant"},
                   {"content",
                    "1. **Key elements:** wide sky.\n2. **Reasoning:** it feels vast."}}}}}}};
          res.set_content(out.dump(), "application/json");
        });
    port = server.bind_to_any_port("127.0.0.1");
    thread = std::thread([this] { server.listen_after_bind(); });
    while (!server.is_running()) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  ~FakeEndpoint() {
    server.stop();
    thread.join();
  }
};

void make_data(const std::string& root) {
  for (const char* c : {"awe", "fear", "joy"}) {
    fs::create_directories(root + "/train/" + c);
    RgbImage img(8, 8);
    write_image_file(root + "/train/" + c + "/1.png", img);
  }
}

}  // namespace

TEST(Instructions, MakeAgainstLoopbackServer) {
  FakeEndpoint ep;
  test::TempDir dir;
  make_data(dir / "data");
  setenv("EMOVLM_TEST_KEY", "good-key", 1);
  InstructOptions o;
  o.data = dir / "data";
  o.labels = "awe,fear,joy";
  o.endpoint = "http://127.0.0.1:" + std::to_string(ep.port) + "/v1";
  o.model = "test-model";
  o.api_key_env = "EMOVLM_TEST_KEY";
  o.out = dir / "inst.jsonl";
  o.backoff_s = 0.01;
  o.max_retries = 2;
  o.concurrency = 2;
  json r = make_instructions(o);
  EXPECT_EQ(r["failed"].size(), 1u);  // fear: HTTP 500 every time
  EXPECT_NE(r["failed"][0]["image"].get<std::string>().find("fear"), std::string::npos);
  EXPECT_EQ(ep.rate_limited.load(), 2);  // awe: one 429, then served
  std::string text = read_file(o.out);
  EXPECT_NE(text.find("\"answer\":\"wide sky.\""), std::string::npos);
  EXPECT_NE(text.find("\"kind\":\"reasoning\""), std::string::npos);
  EXPECT_EQ(text.find("good-key"), std::string::npos);  // the key is never written
  // image paths relative to the file's folder, read back as this process names them
  EXPECT_NE(text.find("\"image\":\"data/train/awe/1.png\""), std::string::npos) << text;
  EXPECT_EQ(read_instructions(o.out)[0].image, dir / "data/train/awe/1.png");
  // resume, the data and the output spelled another way: done images are skipped, only the
  // failed one is asked again
  const int before = ep.calls.load();
  o.data = dir / "data/../data/";
  o.out = dir / "./inst.jsonl";
  try {
    make_instructions(o);  // (the one image it asks about fails again: nothing written is an error)
    ADD_FAILURE() << "a run that got no answer passed";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("none of the 1 requests gave an answer"),
              std::string::npos)
        << e.what();
  }
  EXPECT_EQ(ep.calls.load() - before, 3);  // fear: 1 + 2 retries
  // a wrong key stops at once
  setenv("EMOVLM_TEST_KEY", "bad-key", 1);
  fs::remove(o.out);
  try {
    make_instructions(o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("refused the API key"), std::string::npos) << e.what();
  }
  // an unreachable endpoint stops at once
  setenv("EMOVLM_TEST_KEY", "good-key", 1);
  o.endpoint = "http://127.0.0.1:1/v1";
  EXPECT_THROW(make_instructions(o), Error);
}

TEST(Instructions, ImportReferenceAndLlava) {
  test::TempDir dir;
  write_file_atomic(
      dir / "ref.json",
      R"([{"gpt_response": "1. Key elements: a smiling child.\n2. Reasoning: joy shows.", "img": "a.jpg", "img_path": "/x/a.jpg", "label": "amusement"}])");
  json r = import_instructions("reference", dir / "ref.json", dir / "ref.jsonl");
  EXPECT_EQ(r["imported"].get<int>(), 3);
  EXPECT_NE(read_file(dir / "ref.jsonl").find("a smiling child."), std::string::npos);
  write_file_atomic(
      dir / "llava.json",
      R"([{"image": "b.jpg", "conversations": [{"from": "human", "value": "<image>\nWhat emotion?"}, {"from": "gpt", "value": "{'emotion': 'awe'}"}]}])");
  json l = import_instructions("llava", dir / "llava.json", dir / "llava.jsonl");
  EXPECT_EQ(l["imported"].get<int>(), 1);
  EXPECT_NE(read_file(dir / "llava.jsonl").find("\"label\":\"awe\""), std::string::npos);
  // the source's relative paths are relative to the source's folder, or to --image-root; the
  // output stores them relative to its own folder
  make_dirs(dir / "src");
  write_file_atomic(dir / "src/llava.json", read_file(dir / "llava.json"));
  test::InDir in(dir.path());  // relative paths, as users give them
  import_instructions("llava", "src/llava.json", "runs/a.jsonl");
  EXPECT_EQ(read_instructions("runs/a.jsonl")[0].image, "src/b.jpg");
  EXPECT_NE(read_file("runs/a.jsonl").find("\"image\":\"../src/b.jpg\""), std::string::npos)
      << read_file("runs/a.jsonl");
  import_instructions("llava", "src/llava.json", "runs/b.jsonl", "mikels8", "images");
  EXPECT_EQ(read_instructions("runs/b.jsonl")[0].image, "images/b.jpg");
  // absolute paths outside the output's folder stay absolute
  EXPECT_EQ(read_instructions("ref.jsonl")[0].image, "/x/a.jpg");
}

TEST(Instructions, ImageDataUrlTypeFromTheContent) {
  test::TempDir dir;
  RgbImage img(5, 4);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>(i * 9);
  write_file_atomic(dir / "named.png", encode_jpeg(img));  // a JPEG under a .png name
  EXPECT_EQ(image_data_url(dir / "named.png").rfind("data:image/jpeg;base64,", 0), 0u);
  const std::string formats = std::string(EMOVLM_TEST_DATA_DIR) + "/formats";
  EXPECT_EQ(image_data_url(formats + "/two_frames.gif").rfind("data:image/gif;base64,", 0), 0u);
  // BMP goes as PNG: 13x9 24-bit BMP -> a PNG data URL longer than the header alone
  const std::string bmp = image_data_url(formats + "/pillow_rgb24.bmp");
  EXPECT_EQ(bmp.rfind("data:image/png;base64,iVBORw0KGgo", 0), 0u) << bmp.substr(0, 40);
}
