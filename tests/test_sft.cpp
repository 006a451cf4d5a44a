// Stage 1: the SFT example (ids, label masking) and loss against the reference; a tiny model
// tuned until it answers the categorical prompt correctly.
#include <gtest/gtest.h>

#include <filesystem>

#include "emovlm/core/tensor_io.h"
#include "emovlm/data/labels.h"
#include "emovlm/models/layers.h"
#include "emovlm/models/lora.h"
#include "emovlm/models/nf4.h"
#include "emovlm/pipeline/emotion_query.h"
#include "emovlm/text/chat.h"
#include "emovlm/train/sft.h"
#include "test_util.h"

using namespace emovlm;

namespace {
std::string qdir() {
  return test::ref_path("qwen2vl_tiny");
}
}  // namespace

TEST(Sft, LabelsAndLossMatchReference) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/cases.json");
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/expected.safetensors");
  json sft = read_json_file(qdir() + "/cases.json")["sft"];
  auto expected = load_tensors(qdir() + "/expected.safetensors");
  Qwen2VLProcessor proc = Qwen2VLProcessor::from_dir(qdir());
  Qwen2VL model(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32));
  // the fixture's text has its image pads expanded already: tokenize it as is
  std::vector<int32_t> ids = proc.tokenizer().encode(sft["text"].get<std::string>());
  std::vector<int64_t> want_ids = sft["input_ids"].get<std::vector<int64_t>>();
  ASSERT_EQ(std::vector<int64_t>(ids.begin(), ids.end()), want_ids);
  torch::Tensor input_ids = torch::tensor(want_ids, torch::kInt64).view({1, -1});
  torch::Tensor labels = sft_labels(input_ids, model->config(), proc.pad_id(), {}, false);
  EXPECT_EQ(
      std::vector<int64_t>(labels.data_ptr<int64_t>(), labels.data_ptr<int64_t>() + labels.numel()),
      sft["labels"].get<std::vector<int64_t>>());
  const std::string img = sft["image"];
  json cases = read_json_file(qdir() + "/cases.json");
  std::vector<int64_t> grid;
  std::string which = "pil";  // the reference processor's outputs
  for (const auto& im : cases["images"])
    if (im["name"] == img) {
      which = im.value("reference_processor", which);
      grid = im["grid_thw." + which].get<std::vector<int64_t>>();
    }
  ASSERT_EQ(grid.size(), 3u) << "cases.json has no image " << img;
  Qwen2VLInputs in{input_ids,
                   torch::ones_like(input_ids),
                   expected.at(img + ".pixel_values." + which),
                   {{grid[0], grid[1], grid[2]}}};
  torch::Tensor loss = sft_loss(*model, in, labels);
  const double want = sft["loss"].get<double>();
  EXPECT_NEAR(loss.item<double>(), want, 1e-4 * std::abs(want));
  // the same example built from its parts (prompt, answer, image) gives the same ids and labels
  torch::Tensor rgb = expected.at(img + ".rgb");
  RgbImage image(static_cast<int>(rgb.size(1)), static_cast<int>(rgb.size(0)));
  std::memcpy(image.pixels.data(), rgb.data_ptr(), image.pixels.size());
  InstructionExample ex{"", "contentment", "categorical",
                        categorical_prompt(LabelSet::from_spec("mikels8")),
                        categorical_answer("contentment")};
  SftTokens t = build_sft_tokens(proc, model->config(), ex, image, false);
  EXPECT_TRUE(torch::equal(t.inputs.input_ids, input_ids));
  EXPECT_TRUE(torch::equal(t.labels, labels));
  // --mask-prompt keeps the answer only
  SftTokens m = build_sft_tokens(proc, model->config(), ex, image, true);
  const int64_t kept = (m.labels != -100).sum().item<int64_t>();
  EXPECT_EQ(
      kept,
      static_cast<int64_t>(
          proc.tokenizer().encode(categorical_answer("contentment") + "<|im_end|>\n").size()));
}

// A tiny Qwen2-VL-shaped model tuned on the categorical instruction of a few images answers them
// correctly: the loss falls and the greedy answers parse to the right labels.
TEST(Sft, TinyModelLearnsToAnswer) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");
  test::TempDir dir;
  LabelSet labels = LabelSet::from_spec("mikels8");
  std::vector<Sample> samples;
  for (int c = 0; c < 4; ++c) {
    RgbImage img(56, 56);
    for (size_t i = 0; i < img.pixels.size(); i += 3)
      img.pixels[i] = static_cast<uint8_t>(60 * c),
      img.pixels[i + 1] = static_cast<uint8_t>(255 - 60 * c),
      img.pixels[i + 2] = static_cast<uint8_t>((i / 3) % 56 * 4);
    std::string p = dir / (std::to_string(c) + ".png");
    write_image_file(p, img);
    samples.push_back({p, c * 2, {}});
  }
  write_instructions(dir / "inst.jsonl", categorical_examples(samples, labels));
  SftOptions o;
  o.vlm = qdir();
  o.instructions = dir / "inst.jsonl";
  o.out = dir / "tuned";
  o.epochs = 60;
  o.mask_prompt = true;  // the answer tokens carry the whole loss
  o.optim.lr = 1e-3;
  o.optim.max_grad_norm = 1.0;
  json r = train_sft(o);
  auto lines = read_file(dir / "tuned/train-state/metrics.jsonl");
  double first = json::parse(lines.substr(0, lines.find('\n')))["train_loss"];
  EXPECT_LT(r["final_train_loss"].get<double>(), 0.5 * first);
  Qwen2VL tuned(Qwen2VLImpl::from_pretrained(dir / "tuned", torch::kFloat32));
  Qwen2VLProcessor proc = Qwen2VLProcessor::from_dir(dir / "tuned");
  const std::string prompt = categorical_query(proc.tokenizer(), labels).prompt;
  for (const auto& s : samples) {
    GenerationConfig g;
    g.max_new_tokens = 16;
    GenerationResult gen = generate(*tuned, proc.build({{prompt, {decode_image_file(s.path)}}}), g);
    std::vector<int32_t> ids(gen.tokens[0].begin(), gen.tokens[0].end());
    std::string answer = proc.tokenizer().decode(ids, true);
    EXPECT_EQ(parse_categorical_answer(answer, labels).index, s.label) << answer;
  }
}

// LoRA tuning: only the adapters train, the loss falls, and the adapter is written in PEFT's
// format (loadable again, and merged by `lora merge`'s path).
TEST(Sft, LoraTuningWritesPeftAdapter) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");
  test::TempDir dir;
  LabelSet labels = LabelSet::from_spec("mikels8");
  std::vector<Sample> samples;
  for (int c = 0; c < 2; ++c) {
    RgbImage img(56, 56);
    for (size_t i = 0; i < img.pixels.size(); ++i)
      img.pixels[i] = static_cast<uint8_t>(c ? 220 : 30);
    std::string p = dir / (std::to_string(c) + ".png");
    write_image_file(p, img);
    samples.push_back({p, c * 5, {}});
  }
  write_instructions(dir / "inst.jsonl", categorical_examples(samples, labels));
  SftOptions o;
  o.vlm = qdir();
  o.instructions = dir / "inst.jsonl";
  o.out = dir / "adapter";
  o.full = false;
  o.lora.r = 4;
  o.epochs = 8;
  o.optim.lr = 5e-3;
  json r = train_sft(o);
  auto lines = read_file(dir / "adapter/train-state/metrics.jsonl");
  double first = json::parse(lines.substr(0, lines.find('\n')))["train_loss"];
  EXPECT_LT(r["final_train_loss"].get<double>(), first);
  json cfg = read_json_file(dir / "adapter/adapter_config.json");
  EXPECT_EQ(cfg["peft_type"], "LORA");
  EXPECT_EQ(cfg["r"].get<int>(), 4);
  Qwen2VL base(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32));
  load_peft_adapter(*base, dir / "adapter");
  int adapted = 0;
  for (const auto& p : base->named_parameters())
    adapted += p.key().find("lora_B") != std::string::npos;
  EXPECT_EQ(adapted,
            4 * base->config().text.num_hidden_layers);  // q, k, v, o of every decoder layer
  Qwen2VL merged(
      Qwen2VLImpl::from_pretrained(qdir(), dir / "adapter", torch::kFloat32, torch::kCPU));
  EXPECT_EQ(merged->named_parameters().size(),
            Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32)->named_parameters().size());
}

// QLoRA: every Linear of the base but lm_head is NF4 (double-quantized), so the first step's loss
// is the loss of the NF4 base (the fresh adapters add nothing: B = 0), not the dense base's.
TEST(Sft, QloraTuningTrainsOnA4BitBase) {
  EMOVLM_NEED_FIXTURE("qwen2vl_tiny/model.safetensors");
  test::TempDir dir;
  RgbImage img(56, 56);
  for (size_t i = 0; i < img.pixels.size(); ++i) img.pixels[i] = static_cast<uint8_t>(i * 7 % 251);
  write_image_file(dir / "a.png", img);
  LabelSet labels = LabelSet::from_spec("mikels8");
  const std::vector<InstructionExample> examples =
      categorical_examples({{dir / "a.png", 3, {}}}, labels);
  write_instructions(dir / "inst.jsonl", examples);
  SftOptions o;
  o.vlm = qdir();
  o.instructions = dir / "inst.jsonl";
  o.out = dir / "adapter";
  o.full = false;
  o.qlora = true;
  o.epochs = 6;
  o.optim.lr = 5e-3;
  json r = train_sft(o);
  auto lines = read_file(dir / "adapter/train-state/metrics.jsonl");
  double first = json::parse(lines.substr(0, lines.find('\n')))["train_loss"];
  EXPECT_LT(r["final_train_loss"].get<double>(), first);
  EXPECT_TRUE(file_exists(dir / "adapter/adapter_model.safetensors"));
  // which layers were quantized: every Linear but lm_head
  Qwen2VL dense(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32));
  int linears = 0;
  for (const auto& item : dense->named_modules())
    if (dynamic_cast<LinearImpl*>(item.value().get()) && item.key() != "lm_head") ++linears;
  EXPECT_EQ(r["nf4_layers"].get<int>(), linears);
  // the loss of the first (and only) example before any step: the NF4 base's
  Qwen2VLProcessor proc = Qwen2VLProcessor::from_dir(qdir());
  SftTokens t =
      build_sft_tokens(proc, dense->config(), examples[0], decode_image_file(dir / "a.png"), false);
  double dense_loss, nf4_loss;
  {
    torch::NoGradGuard ng;
    dense_loss = sft_loss(*dense, t.inputs, t.labels).item<double>();
    Qwen2VL q(Qwen2VLImpl::from_pretrained(qdir(), torch::kFloat32));
    quantize_linears_nf4(*q, /*double_quant=*/true,
                         [](const std::string& n) { return n != "lm_head"; });
    nf4_loss = sft_loss(*q, t.inputs, t.labels).item<double>();
  }
  EXPECT_GT(std::abs(nf4_loss - dense_loss), 1e-3 * dense_loss);  // quantization shows in the loss
  EXPECT_NEAR(first, nf4_loss, 1e-5 * nf4_loss);
}
