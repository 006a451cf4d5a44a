// Decode + preprocess throughput on one core: what a data-loader worker can feed per second.
#include <benchmark/benchmark.h>

#include "emovlm/image/image.h"
#include "emovlm/image/preprocess.h"

using namespace emovlm;

namespace {

RgbImage photo_like(int w, int h) {
  RgbImage img(w, h);
  for (int y = 0; y < h; ++y)
    for (int x = 0; x < w; ++x)
      for (int c = 0; c < 3; ++c)
        img.row(y)[3 * x + c] = static_cast<uint8_t>((x * (c + 1) + y * 3 + ((x ^ y) & 15)) & 255);
  return img;
}

const std::string& jpeg_1024x768() {
  static const std::string bytes = encode_jpeg(photo_like(1024, 768), 90);
  return bytes;
}

void BM_DecodeJpeg1024x768(benchmark::State& state) {
  const std::string& b = jpeg_1024x768();
  for (auto _ : state) {
    RgbImage img =
        decode_image_memory(reinterpret_cast<const uint8_t*>(b.data()), b.size(), "bench.jpg");
    benchmark::DoNotOptimize(img.pixels.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Qwen2VLPreprocess1024x768(benchmark::State& state) {
  RgbImage img = photo_like(1024, 768);
  Qwen2VLImageConfig cfg;
  for (auto _ : state) {
    Qwen2VLPixels px = preprocess_qwen2vl(img, cfg);
    benchmark::DoNotOptimize(px.pixel_values.data.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Qwen2VLPreprocess448(benchmark::State& state) {
  RgbImage img = photo_like(640, 480);
  Qwen2VLImageConfig cfg;
  cfg.max_pixels = 448 * 448;
  for (auto _ : state) {
    Qwen2VLPixels px = preprocess_qwen2vl(img, cfg);
    benchmark::DoNotOptimize(px.pixel_values.data.data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_VitPreprocess384(benchmark::State& state) {
  RgbImage img = photo_like(1024, 768);
  VitImageConfig cfg;
  for (auto _ : state) {
    FloatArray a = preprocess_vit(img, cfg);
    benchmark::DoNotOptimize(a.data.data());
  }
  state.SetItemsProcessed(state.iterations());
}

}  // namespace

BENCHMARK(BM_DecodeJpeg1024x768)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Qwen2VLPreprocess1024x768)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Qwen2VLPreprocess448)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_VitPreprocess384)->Unit(benchmark::kMillisecond);
BENCHMARK_MAIN();
