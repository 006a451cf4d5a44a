// Stage 1: instruction tuning.
#include "emovlm/train/sft.h"

#include <filesystem>
#include <fstream>
#include <map>
#include <set>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/data/labels.h"
#include "emovlm/data/loader.h"
#include "emovlm/dist/process_group.h"
#include "emovlm/image/resample.h"
#include "emovlm/models/nf4.h"
#include "emovlm/text/chat.h"

namespace emovlm {

namespace fs = std::filesystem;

torch::Tensor sft_labels(const torch::Tensor& input_ids, const Qwen2VLConfig& c, int32_t pad_id,
                         const std::vector<int32_t>& header, bool mask_prompt) {
  torch::Tensor labels = input_ids.clone();
  for (int64_t id : {static_cast<int64_t>(pad_id), c.vision_start_token_id, c.vision_end_token_id,
                     c.image_token_id})
    labels.masked_fill_(input_ids == id, -100);
  if (mask_prompt && !header.empty()) {
    auto ids = input_ids.accessor<int64_t, 2>();
    for (int64_t b = 0; b < input_ids.size(0); ++b) {
      int64_t end = -1;
      for (int64_t t = 0; t + static_cast<int64_t>(header.size()) <= input_ids.size(1); ++t) {
        bool hit = true;
        for (size_t k = 0; k < header.size() && hit; ++k)
          hit = ids[b][t + static_cast<int64_t>(k)] == header[k];
        if (hit) end = t + static_cast<int64_t>(header.size());
      }
      if (end > 0) labels[b].narrow(0, 0, end).fill_(-100);
    }
  }
  return labels;
}

SftTokens build_sft_tokens(const Qwen2VLProcessor& proc, const Qwen2VLConfig& cfg,
                           const InstructionExample& ex, const RgbImage& image, bool mask_prompt) {
  std::vector<ChatMessage> msgs = {ChatMessage::text("system", kEmotionSystemMessage),
                                   ChatMessage::text_then_image("user", ex.prompt),
                                   ChatMessage::text("assistant", ex.answer)};
  SftTokens t;
  t.inputs = proc.build({{render_chat(msgs, false), {image}}});
  t.labels = sft_labels(t.inputs.input_ids, cfg, proc.pad_id(),
                        proc.tokenizer().encode("<|im_start|>assistant\n"), mask_prompt);
  return t;
}

torch::Tensor sft_loss(Qwen2VLImpl& model, const Qwen2VLInputs& in, const torch::Tensor& labels) {
  torch::Tensor logits = model.forward(in).logits;  // [B, T, V]
  const int64_t T = logits.size(1);
  // predict token t + 1 from position t: [B, T-1, V] vs [B, T-1]
  torch::Tensor l = logits.narrow(1, 0, T - 1).reshape({-1, logits.size(2)}).to(torch::kFloat32);
  torch::Tensor y = labels.narrow(1, 1, T - 1).reshape({-1}).to(l.device());
  return torch::nn::functional::cross_entropy(
      l, y, torch::nn::functional::CrossEntropyFuncOptions().ignore_index(-100));
}

json train_sft(const SftOptions& o) {
  if (o.full && o.qlora) throw Error("tune: --qlora trains adapters; it does not go with --full");
  RunOutput run(o.out, (fs::path(o.out) / "train-state").string(), o.resume, o.overwrite);
  std::vector<InstructionExample> ex = read_instructions(o.instructions);
  // Instructions whose image cannot be opened are dropped before training (said on stderr and in
  // the report); images that open but do not decode are skipped when their step comes.
  std::vector<InstructionExample> usable;
  std::vector<std::string> unreadable;
  {
    std::map<std::string, std::string> state;  // image -> "" (readable) or why not
    for (const auto& e : ex) {
      auto it = state.find(e.image);
      if (it == state.end()) {
        const std::vector<std::string> why = unreadable_by_stat({Sample{e.image, 0, {}}});
        it = state.emplace(e.image, why.empty() ? "" : why[0]).first;
        if (!why.empty()) unreadable.push_back(why[0]);
      }
      if (it->second.empty()) usable.push_back(e);
    }
    check_readable("the instructions", o.instructions, state.size(), unreadable);
    if (usable.size() < ex.size())
      std::fprintf(stderr,
                   "tune: %zu of %zu instructions dropped: their image cannot be read (%zu images, "
                   "e.g. %s)\n",
                   ex.size() - usable.size(), ex.size(), unreadable.size(),
                   unreadable.front().c_str());
  }
  const torch::ScalarType dtype = to_torch(o.dtype);
  const torch::Device device = to_torch(o.device);
  // --qlora loads the base where it is mapped (the CPU) and quantizes it layer by layer onto the
  // device: a GPU never holds the whole base in bf16 (7B: 16.6 GB against 5.9 GB in NF4)
  Qwen2VL model(
      Qwen2VLImpl::from_pretrained(o.vlm, dtype, o.qlora ? torch::Device(torch::kCPU) : device));
  model->model->gradient_checkpointing = o.gradient_checkpointing;
  if (o.full) {
    // own the weights (they point into the mapped checkpoint) and train them all
    torch::NoGradGuard ng;
    for (auto& p : model->parameters()) p.set_data(p.detach().clone());
    if (model->config().text.tie_word_embeddings)
      model->lm_head->weight = model->model->embed_tokens->weight;
    for (auto& p : model->parameters()) p.set_requires_grad(true);
  }
  int quantized = 0;  // Linear layers whose base is NF4
  if (!o.full) {
    // the base stays frozen (and mapped, or in NF4 with --qlora); only the adapters train
    if (o.qlora) {
      quantized = quantize_linears_nf4(
          *model, o.double_quant, [](const std::string& n) { return n != "lm_head"; }, device);
      model->move_to(device, dtype);  // the rest: embeddings, norms, biases, lm_head
      std::fprintf(stderr, "tune: %d linear layers of the base in NF4%s\n", quantized,
                   o.double_quant ? " (double quantization)" : "");
    }
    const int n = apply_lora(*model, o.lora, o.seed);
    std::fprintf(stderr, "tune: LoRA r=%lld alpha=%g on %d layers\n",
                 static_cast<long long>(o.lora.r), o.lora.alpha, n);
  }
  Qwen2VLProcessor proc = Qwen2VLProcessor::from_dir(o.vlm);

  // Each step's image is decoded and capped on worker threads a few steps ahead: memory holds a
  // handful of images, whatever the number of instructions. (Tokenizing and preprocessing stay on
  // the training thread: torch operations on worker threads would start thread pools of their own
  // next to the training's.)
  struct Prepared {
    RgbImage image;
    std::string error;
  };
  std::vector<size_t> order;
  std::unique_ptr<OrderedPrefetcher<Prepared>> ahead;
  std::set<std::string> decode_failures;
  TrainConfig tc = train_config((fs::path(o.out) / "train-state").string(), o.epochs, o.seed,
                                o.resume, o.optim, "tune");
  tc.unit = "ex";
  tc.autocast = o.autocast;
  tc.save_every_steps = o.save_every_steps;
  tc.stage_config = {{"stage", "sft"},
                     {"full", o.full},
                     {"qlora", o.qlora},
                     {"mask_prompt", o.mask_prompt},
                     {"dtype", dtype_name(o.dtype)},
                     {"autocast", o.autocast},
                     {"gradient_checkpointing", o.gradient_checkpointing}};
  size_t current = 0;
  std::vector<size_t> mine;
  StageHooks h;
  h.one_example_per_batch = true;
  h.begin_epoch = [&](int64_t epoch, size_t skip) {
    order.resize(usable.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    SplitMix64 rng(mix_seed(o.seed, static_cast<uint64_t>(epoch), 0x5F7));
    shuffle_in_place(order, rng);
    // the batches (one example each) this process computes, from `skip` on
    mine.clear();
    for (size_t b = skip; b < usable.size(); ++b)
      if (owns_batch(b, o.optim.grad_accum)) mine.push_back(b);
    ahead.reset();
    ahead = std::make_unique<OrderedPrefetcher<Prepared>>(
        mine.size(),
        [&](size_t i) {
          const InstructionExample& e = usable[order[mine[i]]];
          Prepared p;
          try {
            p.image = cap_long_side(decode_image_file(e.image), o.cap_long_side);
          } catch (const Error& err) {
            p.error = err.what();
          }
          return p;
        },
        o.workers, 4);
    return usable.size();
  };
  h.loss = [&](int64_t, size_t b) -> std::pair<torch::Tensor, int64_t> {
    current = order[b];
    Prepared p;
    if (!ahead->next(p)) throw Error("tune: the example loader ended early");
    if (!p.error.empty()) {
      decode_failures.insert(p.error);
      return {torch::zeros({}), 0};
    }
    SftTokens t = build_sft_tokens(proc, model->config(), usable[current], p.image, o.mask_prompt);
    return {sft_loss(*model, t.inputs, t.labels), 1};
  };
  h.describe_batch = [&] { return std::vector<std::string>{usable[current].image}; };
  h.describe_empty_epoch = [&] {
    return decode_failures.empty()
               ? std::string("no examples")
               : cat(decode_failures.size(), " images could not be decoded, e.g. ",
                     *decode_failures.begin());
  };
  FitResult r = fit(*model, tc, h);
  if (dist::is_main()) {
    if (o.full)
      model->save_pretrained(o.out, o.vlm);
    else
      save_peft_adapter(*model, o.lora, o.out, o.vlm);
  }
  ahead.reset();
  for (const auto& f : decode_failures) unreadable.push_back(f);
  if (!decode_failures.empty())
    std::fprintf(
        stderr,
        "tune: %zu images could not be decoded; their instructions were skipped (e.g. %s)\n",
        decode_failures.size(), decode_failures.begin()->c_str());
  json report = {{"stage", "sft"},
                 {"examples", usable.size()},
                 {"instructions", ex.size()},
                 {"dropped_instructions", ex.size() - usable.size()},
                 {"skipped_images", unreadable},
                 {"final_train_loss", r.last_train_loss},
                 {"epochs_run", r.epochs_run},
                 {"nf4_layers", quantized}};
  if (dist::is_main())
    write_file_atomic((fs::path(o.out) / "sft_report.json").string(), report.dump(1) + "\n");
  return report;
}

}  // namespace emovlm
