// The teachers at the paper's shapes (random weights): ViT-B/16 at 384 px, ResNet50 and VGG16 at
// 224 px. Inference and training images/s in float32 and with bf16 autocast (float32 master
// weights, as torch.autocast), and, for the ViT, against the matmul rate measured in the same run.
//   bench_teacher [batch] [reps] [cpu|cuda] [inference batch] [models: vit,resnet50,vgg16]
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "bench_util.h"
#include "emovlm/core/torch_compat.h"
#include "emovlm/models/layers.h"
#include "emovlm/models/resnet.h"
#include "emovlm/models/vgg.h"
#include "emovlm/models/vit.h"
#include "emovlm/train/trainer.h"

using namespace emovlm;

namespace {

struct Subject {
  std::string title;
  std::shared_ptr<ImageClassifierImpl> model;
  int64_t size = 224;
  double flops_fwd = 0;  // per image; 0: not computed
};

Subject make(const std::string& name) {
  Subject s;
  if (name == "vit") {
    VitConfig c;  // ViT-B/16 at 384 px
    c.num_labels = 8;
    auto m = std::make_shared<VitForImageClassificationImpl>(c);
    s.title = "ViT-B/16-384";
    s.size = 384;
    s.flops_fwd = 2.0 * (m->num_parameters() - 768 * 577) * 577 + 4.0 * 12 * 577 * 577 * 768;
    s.model = m;
  } else if (name == "resnet50") {
    s.title = "ResNet50-224";
    s.model = std::make_shared<ResNetImpl>(
        ResNetConfig::from_json({{"architecture", "resnet50"}, {"num_classes", 8}}, name));
  } else if (name == "vgg16" || name == "vgg16_bn") {
    s.title = classifier_display_name(name) + "-224";
    s.model = std::make_shared<VggImpl>(
        VggConfig::from_json({{"architecture", name}, {"num_classes", 8}}, name));
  } else {
    std::fprintf(stderr, "unknown model '%s' (vit, resnet50, vgg16, vgg16_bn)\n", name.c_str());
    std::exit(2);
  }
  return s;
}

void run(Subject& s, int64_t B, int64_t Bi, int reps, torch::Device device) {
  ImageClassifierImpl& m = *s.model;
  m.to(device);
  bench::fast_random_fill(m);
  {
    // BatchNorm's running variance must stay positive
    torch::NoGradGuard ng;
    for (auto& b : m.named_buffers())
      if (b.key().find("running_var") != std::string::npos) b.value().fill_(1.0);
  }
  torch::Tensor x =
      torch::randn({std::max(B, Bi), 3, s.size, s.size}, torch::TensorOptions().device(device));
  torch::Tensor y =
      torch::randint(0, 8, {B}, torch::TensorOptions().dtype(torch::kInt64).device(device));
  std::printf("%s, %s, %.1fM parameters, train batch %lld, inference batch %lld, threads %d\n",
              s.title.c_str(), device.str().c_str(), m.num_parameters() / 1e6,
              static_cast<long long>(B), static_cast<long long>(Bi), torch::get_num_threads());
  torch::optim::Adam opt(m.parameters(), torch::optim::AdamOptions(3e-5).weight_decay(1e-5));
  for (bool autocast : {false, true}) {
    const char* name = autocast ? "bf16 autocast" : "f32";
    m.eval();
    double ti;
    {
      torch::NoGradGuard ng;
      torch::Tensor xi = x.narrow(0, 0, Bi);
      ti = bench::median_seconds(
          [&] {
            compat::AutocastGuard ac(device.type(), torch::kBFloat16, autocast);
            m.logits(xi);
          },
          reps);
    }
    m.train();
    torch::Tensor xt = x.narrow(0, 0, B);
    // a training step as `emovlm teacher train` takes it (multi_tensor: the trainer's _foreach
    // Adam) and with torch::optim::Adam's own step (about ten kernels per parameter tensor)
    auto train_step = [&](bool multi_tensor) {
      opt.zero_grad();
      torch::Tensor logits;
      {
        compat::AutocastGuard ac(device.type(), torch::kBFloat16, autocast);
        logits = m.logits(xt);
      }
      torch::cross_entropy_loss(logits.to(torch::kFloat32), y).backward();
      if (multi_tensor)
        multi_tensor_adam_step(opt, false);
      else
        opt.step();
    };
    const double tt = bench::median_seconds([&] { train_step(true); }, reps);
    const double tt_torch = bench::median_seconds([&] { train_step(false); }, reps);
    if (s.flops_fwd > 0) {
      const double mm =
          bench::matmul_rate(autocast ? torch::kBFloat16 : torch::kFloat32, device, 2048, 3);
      std::printf(
          "%s (matmul 2048^3 %.0f GFLOP/s): inference %.2f images/s (%.0f%% of the rate), training "
          "%.2f images/s "
          "(%.0f%%); training with torch's Adam step %.2f images/s\n",
          name, mm / 1e9, Bi / ti, 100 * s.flops_fwd * Bi / ti / mm, B / tt,
          100 * 3 * s.flops_fwd * B / tt / mm, B / tt_torch);
    } else {
      std::printf(
          "%s: inference %.2f images/s, training %.2f images/s; training with torch's Adam step "
          "%.2f images/s\n",
          name, Bi / ti, B / tt, B / tt_torch);
    }
  }
  {
    // inference with the weights themselves in bf16 (no per-call casts)
    m.to(torch::kBFloat16);
    m.eval();
    torch::NoGradGuard ng;
    torch::Tensor xi = x.narrow(0, 0, Bi).to(torch::kBFloat16);
    const double ti = bench::median_seconds([&] { m.logits(xi); }, reps);
    std::printf("bf16 weights: inference %.2f images/s\n", Bi / ti);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t B = argc > 1 ? std::stoll(argv[1]) : 8;
  const int reps = argc > 2 ? std::stoi(argv[2]) : 3;
  const torch::Device device(argc > 3 ? argv[3] : "cpu");
  const int64_t Bi = argc > 4 ? std::stoll(argv[4]) : B;
  const std::string models = argc > 5 ? argv[5] : "vit";
  compat::set_num_threads(0);
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  std::stringstream list(models);
  for (std::string name; std::getline(list, name, ',');) {
    Subject s = make(name);
    run(s, B, Bi, reps, device);
  }
  return 0;
}
