// Qwen2-VL at the published 2B / 7B shapes with random weights (no download is possible here):
// vision tower on a 448x448 image, prefill of the categorical prompt, decode tokens/s, peak
// memory; as a ratio of the matmul rate the same run measures.
//   bench_qwen2vl [2b|7b] [bf16|f32] [cpu|cuda] [reps] [batch]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "bench_util.h"
#include "emovlm/core/cuda.h"
#include "emovlm/core/memory.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/data/labels.h"
#include "emovlm/models/qwen2vl.h"
#include "emovlm/models/qwen2vl_fixed_decoder.h"
#include "emovlm/models/qwen2vl_generation.h"
#include "emovlm/models/qwen2vl_label_scores.h"
#include "emovlm/models/qwen2vl_processor.h"
#include "emovlm/pipeline/emotion_query.h"
#include "emovlm/text/chat.h"

using namespace emovlm;

namespace {

double vision_flops(const Qwen2VLVisionConfig& c, int64_t n) {
  const double E = c.embed_dim, M = c.mlp_dim();
  double per_block = 2 * n * (E * 3 * E + E * E + 2 * E * M) + 2 * 2 * double(n) * n * E;
  double merger = 2 * (n / 4.0) * (4 * E * 4 * E + 4 * E * c.hidden_size);
  return 2 * n * E * c.patch_dim() + c.depth * per_block + merger;
}

double lm_flops(const Qwen2VLTextConfig& c, int64_t tokens, int64_t context) {
  const double D = c.hidden_size, I = c.intermediate_size,
               kv = c.num_key_value_heads * c.head_dim();
  double per_layer =
      2 * tokens * (D * D * 2 + 2 * D * kv + 3 * D * I) + 2 * 2 * double(tokens) * context * D;
  return c.num_hidden_layers * per_layer + 2 * tokens * D * c.vocab_size;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string shape = argc > 1 ? argv[1] : "2b";
  const std::string dts = argc > 2 ? argv[2] : "bf16";
  const std::string dev = argc > 3 ? argv[3] : "cpu";
  const int reps = argc > 4 ? std::stoi(argv[4]) : 3;
  const int64_t batch = argc > 5 ? std::stoll(argv[5]) : 1;
  const torch::ScalarType dtype = dts == "f32" ? torch::kFloat32 : torch::kBFloat16;
  const torch::Device device(dev);
  torch::NoGradGuard ng;
  compat::set_num_threads(0);

  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  // the extract section tokenizes with the real Qwen2-VL tokenizer, whose special-token ids are the
  // config's
  Qwen2VLConfig cfg = shape == "7b" ? Qwen2VLConfig::qwen2vl_7b() : Qwen2VLConfig::qwen2vl_2b();
  std::printf("shape %s dtype %s device %s threads %d batch %lld\n", shape.c_str(), dts.c_str(),
              dev.c_str(), torch::get_num_threads(), static_cast<long long>(batch));
  // The machine is shared: the matmul rate is measured right before each section it divides.
  auto matmul_now = [&] {
    double r = bench::matmul_rate(dtype, device);
    std::printf("matmul 2048^3 %s: %.1f GFLOP/s\n", dts.c_str(), r / 1e9);
    return r;
  };

  // choosing the next token on the host with the published Instruct settings (repetition penalty
  // 1.05, temperature 0.01, top_k 1, top_p 0.001) over the whole vocabulary, a prompt of 328 tokens
  // seen
  {
    GenerationConfig g;
    g.do_sample = true, g.temperature = 0.01, g.top_k = 1, g.top_p = 0.001,
    g.repetition_penalty = 1.05;
    torch::Tensor logits =
        torch::randn({cfg.text.vocab_size}, torch::TensorOptions().device(device)).to(dtype);
    std::vector<int64_t> seen(328);
    for (size_t i = 0; i < seen.size(); ++i)
      seen[i] = static_cast<int64_t>(i * 389 % cfg.text.vocab_size);
    at::Generator gen = at::detail::createCPUGenerator(0);
    const double t = bench::median_seconds([&] { next_token(logits, seen, g, gen); }, 9);
    std::printf("next token (Instruct sampling settings, %lld-token vocabulary): %.2f ms\n",
                static_cast<long long>(cfg.text.vocab_size), 1e3 * t);
  }

  Qwen2VL model(cfg);
  for (auto& p : model->parameters()) p.set_requires_grad(false);
  model->to(device, dtype);
  bench::fast_random_fill(*model);
  model->eval();
  std::printf("model ready: %.2f GiB peak RSS\n", peak_resident_gib());
  if (device.is_cuda())
    std::printf("GPU memory allocated with the weights: %.2f GiB\n", cuda_peak_allocated_gib());

  // one 448x448 image: grid (1, 32, 32) = 1024 patches -> 256 visual tokens
  const std::vector<GridTHW> grid(batch, GridTHW{1, 32, 32});
  torch::Tensor px =
      torch::randn({1024 * batch, cfg.vision.patch_dim()}, torch::TensorOptions().device(device))
          .to(dtype);
  double mm = matmul_now();
  double tv = bench::median_seconds([&] { model->visual->forward(px, grid); }, reps);
  double fv = vision_flops(cfg.vision, 1024) * batch;
  std::printf(
      "vision 448x448 x%lld: %.3f s median, %.2f images/s, %.1f GFLOP/s = %.0f%% of the matmul "
      "rate\n",
      static_cast<long long>(batch), tv, batch / tv, fv / tv / 1e9, 100 * fv / tv / mm);

  // the categorical prompt as the reference's benchmark lays it out: 40 text tokens, the image
  // (vision start, 256 image tokens, vision end), 70 text tokens (ids drawn in the vocabulary)
  const int64_t T = 40 + 1 + 256 + 1 + 70;
  torch::Tensor ids = torch::randint(0, 151000, {batch, T}, torch::kInt64);
  ids.narrow(1, 40, 1).fill_(cfg.vision_start_token_id);
  ids.narrow(1, 41, 256).fill_(cfg.image_token_id);
  ids.narrow(1, 297, 1).fill_(cfg.vision_end_token_id);
  Qwen2VLInputs in{ids, torch::ones({batch, T}, torch::kInt64), px, grid};
  mm = matmul_now();
  double tp = bench::median_seconds([&] { model->forward(in, nullptr, true); }, reps);
  double fp = (lm_flops(cfg.text, T, T / 2) + vision_flops(cfg.vision, 1024)) * batch;
  std::printf(
      "prefill (vision + %lld tokens) x%lld: %.3f s median, %.2f images/s, %.1f GFLOP/s = %.0f%% "
      "of the matmul rate\n",
      static_cast<long long>(T), static_cast<long long>(batch), tp, batch / tp, fp / tp / 1e9,
      100 * fp / tp / mm);

  // the extract pass: vision, prefill of the categorical prompt and the label scores of the 8
  // Mikels answers (the preparation of image and prompt timed apart) (the real Qwen2-VL tokenizer;
  // the tiny fixture's processor settings, which are the published ones), B images of 448x448 per
  // call (B = 1: the deterministic mode)
  {
    Qwen2VLProcessor proc(Tokenizer::from_file(EMOVLM_BENCH_QWEN2VL_TOKENIZER),
                          Qwen2VLImageConfig::from_dir(EMOVLM_BENCH_FIXTURE_DIR));
    LabelSet labels = LabelSet::from_spec("mikels8");
    const CategoricalQuery query = categorical_query(proc.tokenizer(), labels);
    const std::vector<std::vector<int32_t>>& cands = query.candidates;
    RgbImage img(448, 448);
    for (size_t i = 0; i < img.pixels.size(); ++i)
      img.pixels[i] = static_cast<uint8_t>((i * 2654435761u) >> 24);
    // `emovlm extract` prepares each image and its prompt tokens on worker threads, off the
    // model's path: timed apart, the extract line times what the model's thread does
    const VlmPrompt prompt{query.prompt, {img}};
    std::vector<PreparedPrompt> prepared;
    const double tprep =
        bench::median_seconds([&] { prepared.assign(1, proc.prepare(prompt)); }, reps);
    prepared.assign(batch, prepared[0]);
    mm = matmul_now();
    double te = bench::median_seconds(
        [&] {
          torch::Tensor pooled;
          label_scores(*model, proc.collate(prepared, device), cands, &pooled);
        },
        reps);
    std::printf("extract (vision + prefill + 8 label scores) x%lld: %.3f s median, %.2f images/s\n",
                static_cast<long long>(batch), te, batch / te);
    std::vector<double> tpf, tsc;
    for (int r = 0; r < reps; ++r) {
      Prefill pf;
      tpf.push_back(
          bench::seconds_of([&] { pf = prefill(*model, proc.collate(prepared, device)); }));
      tsc.push_back(bench::seconds_of([&] { label_scores(*model, std::move(pf), cands); }));
    }
    std::sort(tpf.begin(), tpf.end());
    std::sort(tsc.begin(), tsc.end());
    std::printf(
        "  of which the prefill with its KV cache %.3f s, the label scores after it %.3f s "
        "(medians)\n",
        tpf[tpf.size() / 2], tsc[tsc.size() / 2]);
    {  // the batch's pixel values to the model's device: joined on the host first, or on the device
      auto to_device = [&](bool join_on_host) {
        std::vector<torch::Tensor> parts;
        for (const PreparedPrompt& p : prepared)
          parts.push_back(join_on_host ? p.pixels[0] : p.pixels[0].to(device));
        torch::Tensor px = torch::cat(parts, 0).to(device);
        if (device.is_cuda()) torch::cuda::synchronize();
      };
      const double th = bench::median_seconds([&] { to_device(true); }, reps);
      const double td = bench::median_seconds([&] { to_device(false); }, reps);
      std::printf(
          "  pixel values of the batch to the device: joined on the host %.1f ms, image by image "
          "%.1f ms\n",
          1e3 * th, 1e3 * td);
    }
    std::printf(
        "  preparing one image and prompt (worker threads in extract: decode excluded): %.3f s; "
        "%zu prompt tokens "
        "(the real Qwen2-VL tokenizer)\n",
        tprep, prepared[0].ids.size());
  }

  // decode: 32 (2B) or 8 (7B) tokens after the prompt, with the growing KV cache (decode()) and
  // with fixed shapes (FixedDecoder: one CUDA graph per token where the build has graphs, else
  // the same steps eagerly); the host operators one step dispatches, counted on its own
  const int steps = shape == "7b" ? 8 : 32;
  auto decode_runs = [&](bool fixed_shapes, bool graph, const char* name) {
    for (int rep = 0; rep < std::max(1, reps - 1); ++rep) {
      torch::NoGradGuard ng;
      Prefill pf = prefill(*model, in);
      torch::Tensor km = pf.key_mask;
      torch::Tensor next = pf.last_logits.argmax(-1, true).to(torch::kCPU);
      std::unique_ptr<FixedDecoder> fixed;
      if (fixed_shapes)
        fixed =
            std::make_unique<FixedDecoder>(*model, pf.cache, km, pf.rope_deltas, steps + 2, graph);
      auto one_step = [&] {
        if (fixed) {
          next = fixed->step(next).argmax(-1, true).to(torch::kCPU);
        } else {
          km = torch::cat({km, torch::ones({batch, 1}, torch::kInt64)}, 1);
          next = model->decode(next, pf.rope_deltas, km, pf.cache).argmax(-1, true).to(torch::kCPU);
        }
      };
      one_step();  // the fixed decoder's warm-up step; a graph records at the next one
      if (rep == 0) {
        bench::OpCount ops = bench::count_ops(one_step);
        std::printf("  decode, %s: %lld operators per token (%lld leaves, %lld called here)\n",
                    name, static_cast<long long>(ops.all), static_cast<long long>(ops.leaf),
                    static_cast<long long>(ops.top));
        if (std::getenv("EMOVLM_BENCH_OPS"))  // which operators: EMOVLM_BENCH_OPS=1
          for (const auto& [op, n] : ops.top_names)
            std::printf("    %6lld %s\n", static_cast<long long>(n), op.c_str());
      } else {
        one_step();
      }
      auto t0 = std::chrono::steady_clock::now();
      for (int s = 0; s < steps; ++s) one_step();
      if (torch::cuda::is_available()) torch::cuda::synchronize();
      double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      std::printf("  decode run, %s: %.2f ms/token\n", name, 1e3 * dt / steps);
    }
  };
  for (bool fixed_shapes : {false, true}) {
    const bool graph = fixed_shapes && CudaGraph::available() && device.is_cuda();
    const char* name = !fixed_shapes ? "growing cache"
                       : graph       ? "fixed shapes, CUDA graph"
                                     : "fixed shapes, eager";
    try {  // a graph that fails to record is reported; the rest of the benchmark still runs
      decode_runs(fixed_shapes, graph, name);
    } catch (const std::exception& e) {
      std::printf("  decode, %s: failed: %s\n", name, e.what());
    }
  }
  std::printf("peak RSS %.2f GiB\n", peak_resident_gib());
  if (device.is_cuda())  // the caching allocator's peak over the whole run (decoding included)
    std::printf("GPU memory allocated: peak %.2f GiB\n", cuda_peak_allocated_gib());
  return 0;
}
