// Device and dtype names: parsed once at the edge, canonical names back, torch's types.
#include <gtest/gtest.h>

#include "emovlm/core/device.h"
#include "emovlm/core/error.h"
#include "emovlm/core/tensor_io.h"
#include "test_util.h"

using namespace emovlm;

TEST(Device, DtypeNamesParseToCanonicalNames) {
  const std::pair<const char*, const char*> names[] = {{"f32", "f32"},   {"float32", "f32"},
                                                       {"bf16", "bf16"}, {"bfloat16", "bf16"},
                                                       {"f16", "f16"},   {"float16", "f16"}};
  for (const auto& [given, canonical] : names)
    EXPECT_STREQ(dtype_name(parse_compute_dtype(given)), canonical) << given;
  EXPECT_EQ(to_torch(ComputeDtype::bf16), torch::kBFloat16);
  EXPECT_EQ(to_torch(ComputeDtype::f16), torch::kFloat16);
  EXPECT_EQ(to_torch(ComputeDtype::f32), torch::kFloat32);
  test::expect_error_naming([] { parse_compute_dtype("fp8", "--compute-dtype"); },
                            {"--compute-dtype", "fp8"});
  test::expect_error_naming([] { parse_compute_dtype("", "bundle.json: dtype"); },
                            {"bundle.json: dtype"});
}

TEST(Device, DeviceNames) {
  EXPECT_EQ(parse_compute_device("cpu"), ComputeDevice::cpu());
  EXPECT_EQ(parse_compute_device("cpu").name(), "cpu");
  EXPECT_EQ(to_torch(ComputeDevice::cpu()), torch::Device(torch::kCPU));
  // auto stays auto until used: then CUDA when there is a device, else the CPU
  EXPECT_EQ(parse_compute_device("auto"), ComputeDevice());
  EXPECT_EQ(ComputeDevice().name(), "auto");
  const bool cuda = torch::cuda::is_available();
  EXPECT_EQ(ComputeDevice().resolved(), cuda ? ComputeDevice::cuda() : ComputeDevice::cpu());
  EXPECT_EQ(to_torch(ComputeDevice()).is_cuda(), cuda);
  EXPECT_EQ(ComputeDevice::cpu().resolved(), ComputeDevice::cpu());
  for (const char* bad : {"gpu", "cudaX", "cuda:", "cuda:-1", "cuda:1x", "CPU", ""})
    test::expect_error_naming([&] { parse_compute_device(bad, "--device"); },
                              {"--device", cat("'", bad, "'")});
  if (cuda) {
    EXPECT_EQ(parse_compute_device("cuda").name(), "cuda");
    EXPECT_EQ(to_torch(parse_compute_device("cuda:0")), torch::Device(torch::kCUDA, 0));
    test::expect_error_naming([] { parse_compute_device("cuda:99"); }, {"--device", "cuda:99"});
  } else {
    test::expect_error_naming([] { parse_compute_device("cuda:0"); },
                              {"--device", "no CUDA device"});
  }
  EXPECT_EQ(ComputeDevice::cuda(1).name(), "cuda:1");
  EXPECT_EQ(to_torch(ComputeDevice::cuda(1)), torch::Device(torch::kCUDA, 1));
  EXPECT_EQ(ComputeDevice::cuda().name(), "cuda");
}
