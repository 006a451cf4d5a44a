// Teacher training, and the teacher over a list of images.
#include "emovlm/train/teacher.h"

#include <algorithm>
#include <filesystem>
#include <set>

#include "emovlm/core/error.h"
#include "emovlm/core/files.h"
#include "emovlm/core/json_util.h"
#include "emovlm/core/progress.h"
#include "emovlm/core/tensor_io.h"
#include "emovlm/data/loader.h"
#include "emovlm/dist/process_group.h"
#include "emovlm/models/image_classifier.h"
#include "emovlm/models/vit.h"

namespace emovlm {

namespace fs = std::filesystem;

namespace {

// The training input transform (see TeacherOptions::preprocess).
VitImageConfig teacher_image_config(const std::string& init, const std::string& arch,
                                    const std::string& preprocess, int image_size) {
  VitImageConfig img;
  if (preprocess == "checkpoint" && arch != "vit") {
    img = classifier_image_config(init);
  } else if (preprocess == "checkpoint" || preprocess == "reference") {
    // Resize(S) + CenterCrop(S), mean = std = 0.5 (VitImageConfig's defaults), bilinear
    img.image_size = arch == "vit" ? static_cast<int>(VitConfig::from_dir(init).image_size) : 384;
  } else {
    throw Error(cat("--preprocess must be checkpoint or reference, not '", preprocess, "'"));
  }
  if (image_size > 0) img.image_size = image_size;
  img.validate();
  return img;
}

// The batch's pixels [B, 3, size, size] on `device` (a copy there; a view of the batch on the CPU).
torch::Tensor batch_tensor(const ImageBatch& b, int size, torch::Device device) {
  return torch::from_blob(const_cast<float*>(b.pixels.data()), {b.size(), 3, size, size},
                          torch::kFloat32)
      .to(device);
}

// The failures of several epochs, each image once.
std::vector<std::string> unique_failures(const std::vector<std::string>& failures) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& f : failures)
    if (seen.insert(f).second) out.push_back(f);
  return out;
}

}  // namespace

std::vector<int> predict_all(ImageClassifierImpl& m, const std::vector<Sample>& samples,
                             const VitImageConfig& img, int64_t batch, int workers,
                             std::vector<int>* truth, std::vector<std::string>* failures,
                             const std::string& label) {
  LoaderOptions lo;
  lo.batch_size = batch;
  lo.workers = workers;
  ImageBatchLoader loader(samples, img, lo);
  loader.start_epoch(0);
  std::vector<int> pred;
  ImageBatch b;
  torch::NoGradGuard ng;
  const torch::Device device = m.parameters().front().device();
  Progress bar(label, static_cast<int64_t>(samples.size()), "img");
  while (loader.next(b)) {
    if (b.size() > 0) {
      torch::Tensor logits = m.logits(batch_tensor(b, img.image_size, device));
      torch::Tensor am = logits.argmax(-1).to(torch::kCPU);
      for (int64_t i = 0; i < b.size(); ++i) {
        pred.push_back(static_cast<int>(am[i].item<int64_t>()));
        if (truth) truth->push_back(static_cast<int>(b.labels[i]));
      }
    }
    bar.advance(b.size() + static_cast<int64_t>(b.failed.size()));
  }
  if (failures) *failures = loader.failures();
  return pred;
}

json train_teacher(const TeacherOptions& o) {
  const auto& archs = classifier_archs();
  if (!o.arch.empty() && std::find(archs.begin(), archs.end(), o.arch) == archs.end()) {
    std::string names;
    for (const auto& a : archs) names += (names.empty() ? "" : ", ") + a;
    throw Error(cat("--arch must be one of ", names, ", not '", o.arch, "'"));
  }
  const std::string arch = classifier_arch(o.init);
  if (!o.arch.empty() && o.arch != arch)
    throw Error(
        cat(o.init, " holds a ", arch, " checkpoint, not the --arch ", o.arch, " asked for"));
  VitImageConfig img = teacher_image_config(o.init, arch, o.preprocess, o.image_size);
  RunOutput run(o.out, o.out, o.resume, o.overwrite);
  Dataset d = load_dataset(o.data, o.dataset);
  check_readable("the train split", o.data, d.train.size(), unreadable_by_stat(d.train));
  const LabelSet& labels = d.labels;
  std::shared_ptr<ImageClassifierImpl> model = load_image_classifier(o.init, labels.size(), o.seed);
  const torch::Device device = to_torch(o.device);
  model->to(device);
  std::fprintf(
      stderr,
      "teacher: %s, %lld parameters, %zu train / %zu val images, %d classes, %d px (%s), %s%s\n",
      classifier_display_name(arch).c_str(), static_cast<long long>(model->num_parameters()),
      d.train.size(), d.val.size(), labels.size(), img.image_size, o.preprocess.c_str(),
      device.str().c_str(), o.autocast == "bf16" ? " (bf16 autocast)" : "");

  LoaderOptions lo;
  lo.batch_size = o.batch_size;
  lo.workers = o.workers;
  lo.shuffle = true;
  lo.augment = true;
  lo.seed = o.seed;
  lo.shard = dist::rank();  // data parallel: each process reads its share of every batch
  lo.shards = dist::world_size();
  ImageBatchLoader train(d.train, img, lo);
  ImageBatch current;

  TrainConfig tc = train_config(o.out, o.epochs, o.seed, o.resume, o.optim, "teacher");
  tc.classes = labels.labels;
  tc.autocast = o.autocast;
  tc.save_every_steps = o.save_every_steps;
  tc.stage_config = {{"stage", "teacher"},
                     {"init", o.init},
                     {"arch", arch},
                     {"data", o.data},
                     {"batch_size", o.batch_size},
                     {"image_size", img.image_size},
                     {"image", img.to_timm()},
                     {"epochs", o.epochs},
                     {"seed", o.seed}};
  StageHooks hooks;
  hooks.begin_epoch = [&](int64_t epoch, size_t skip) {
    train.start_epoch(epoch, skip);
    return train.batches_per_epoch();
  };
  hooks.loss = [&](int64_t, size_t) -> std::pair<torch::Tensor, int64_t> {
    if (!train.next(current)) throw Error("teacher: the data loader ended early");
    if (current.size() == 0) return {torch::zeros({}), 0};
    torch::Tensor y = torch::tensor(current.labels, torch::kInt64).to(device);
    torch::Tensor logits = model->logits(batch_tensor(current, img.image_size, device));
    return {torch::cross_entropy_loss(logits.to(torch::kFloat32), y), current.size()};
  };
  hooks.describe_batch = [&] {
    std::vector<std::string> paths;
    for (size_t i : current.indices) paths.push_back(d.train[i].path);
    return paths;
  };
  hooks.describe_empty_epoch = [&] {
    const auto& f = train.failures();
    return f.empty() ? std::string("no images")
                     : cat(f.size(), " unreadable images, e.g. ", f.front());
  };
  hooks.validate = [&](int64_t) {
    if (d.val.empty()) return std::numeric_limits<double>::quiet_NaN();
    // each process predicts its share of the validation images; the right answers and the images
    // read are summed over the processes, so every process gets the whole set's accuracy
    const auto [begin, end] = dist::shard_range(static_cast<int64_t>(d.val.size()));
    const std::vector<Sample> mine(d.val.begin() + begin, d.val.begin() + end);
    std::vector<int> truth, pred;  // (none: more processes than validation images)
    if (!mine.empty())
      pred = predict_all(*model, mine, img, std::max<int64_t>(o.batch_size, 16), o.workers, &truth,
                         nullptr, "teacher val");
    double right = 0;
    for (size_t i = 0; i < pred.size(); ++i) right += pred[i] == truth[i];
    std::vector<torch::Tensor> counts = {
        torch::tensor({right, static_cast<double>(truth.size())}, torch::kFloat64)};
    if (dist::active()) dist::all_reduce_sum(counts);
    const double n = counts[0][1].item<double>();
    return n > 0 ? counts[0][0].item<double>() / n : 0.0;  // as classification_report's accuracy
  };
  FitResult r = fit(*model, tc, hooks);
  check_readable("the train split", o.data, d.train.size(), unique_failures(train.failures()));
  if (dist::is_main()) {
    model->save_pretrained(o.out);  // (save_tensors copies to the CPU)
    write_classifier_image_config(o.out, img);
    write_classes(o.out, labels);
  }
  json report = {{"stage", "teacher"},
                 {"arch", arch},
                 {"parameters", model->num_parameters()},
                 {"image", img.to_timm()},
                 {"epochs_run", r.epochs_run},
                 {"best_epoch", r.best_epoch + 1},
                 {"best_val_accuracy", std::isnan(r.best_val) ? json(nullptr) : json(r.best_val)},
                 {"train_failures", unique_failures(train.failures())},
                 {"dataset", d.summary()}};
  if (dist::is_main())
    write_file_atomic((fs::path(o.out) / "report.json").string(), report.dump(1) + "\n");
  return report;
}

}  // namespace emovlm
