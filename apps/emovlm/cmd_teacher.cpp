// `emovlm teacher train` (fine-tune an ImageNet ViT, ResNet or VGG on an emotion dataset) and
// `emovlm teacher eval` (its accuracy on a split).
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "commands.h"
#include "emovlm/models/image_classifier.h"
#include "emovlm/pipeline/evaluate.h"
#include "emovlm/train/teacher.h"

namespace emovlm::cli {

namespace {

using json = nlohmann::json;

struct TeacherEvalArgs {
  std::string dir, data, split = "test";
  DatasetOptions dataset;
  int64_t batch = 32;
  int workers = 2;
  ComputeDevice device;  // auto
  bool as_json = false;
};

void run_teacher_eval(const TeacherEvalArgs& a) {
  json r = evaluate_teacher(a.dir, a.data, a.split, a.dataset, a.batch, a.workers, a.device);
  if (a.as_json) {
    std::cout << r.dump(1) << std::endl;
    return;
  }
  // a row of Table 1, in evaluate's layout, under what it was measured on
  const json& teacher = r["models"]["teacher"];
  std::printf("%s split of %s, %lld images\n\n", r["split"].get<std::string>().c_str(),
              r["data"].get<std::string>().c_str(),
              static_cast<long long>(r["images"].get<int64_t>()));
  std::cout << models_table_markdown({{teacher["display_name"].get<std::string>(), teacher}});
  if (r["unreadable"].get<int64_t>() > 0)
    std::printf("%lld unreadable images skipped\n",
                static_cast<long long>(r["unreadable"].get<int64_t>()));
}

}  // namespace

void add_teacher_command(CLI::App& app) {
  CLI::App* teacher =
      app.add_subcommand("teacher", "Train or evaluate the teacher (ViT, ResNet or VGG)");
  teacher->require_subcommand(1);

  auto t = std::make_shared<TeacherOptions>();
  CLI::App* tt = teacher->add_subcommand(
      "train", "Fine-tune an ImageNet checkpoint (ViT, ResNet, VGG) on an emotion dataset");
  add_data_flag(tt, t->data, "ROOT/{train,val,test}/<emotion>/ or a manifest");
  add_dataset_flags(tt, t->dataset);
  tt->add_option("--init", t->init,
                 "a local checkpoint folder to start from (nothing is downloaded): a Hugging Face "
                 "ViT (such as a copy of google/vit-base-patch16-384) or timm's resnet50.tv_in1k, "
                 "vgg16.tv_in1k, vgg16_bn.tv_in1k")
      ->required()
      ->group(kModelsGroup);
  tt->add_option("--arch", t->arch,
                 "vit, resnet50, vgg16 or vgg16_bn (also resnet101/152, vgg11/13/19[_bn]); "
                 "default: what --init holds (checked when given)")
      ->group(kModelsGroup);
  tt->add_option("--preprocess", t->preprocess,
                 "reference (the reference script's: Resize + CenterCrop 384, mean = std = 0.5) or "
                 "checkpoint (timm's pretrained_cfg for ResNet/VGG)")
      ->capture_default_str()
      ->check(CLI::IsMember({"reference", "checkpoint"}));
  tt->add_option("--image-size", t->image_size, "input size (0: the transform's)")
      ->capture_default_str()
      ->check(CLI::NonNegativeNumber);
  add_out_flag(tt, t->out, "the teacher's folder (its checkpoint, classes.json, metrics, report)");
  add_epochs_flag(tt, t->epochs);
  add_batch_size_flag(tt, t->batch_size);
  add_seed_flag(tt, t->seed,
                "the new classification layer's initialisation and the order of the batches");
  add_run_flags(tt, t->resume, t->overwrite, t->save_every_steps);
  add_optim_flags(tt, t->optim);
  add_device_flag(tt, t->device);
  add_autocast_flag(tt, t->autocast);
  add_workers_flag(tt, t->workers);
  tt->callback([t] { std::cout << train_teacher(*t).dump(1) << std::endl; });

  auto te = std::make_shared<TeacherEvalArgs>();
  CLI::App* tev = teacher->add_subcommand("eval", "Accuracy of a trained teacher on a split");
  add_teacher_flag(tev, te->dir);
  add_data_flag(tev, te->data, "ROOT/{train,val,test}/<emotion>/ or a manifest");
  add_split_flag(tev, te->split);
  add_dataset_flags(tev, te->dataset);
  add_batch_flag(tev, te->batch, "images per forward", "--batch-size");
  add_device_flag(tev, te->device);
  add_workers_flag(tev, te->workers);
  add_json_flag(tev, te->as_json, "print the whole report (per class, confusion) as JSON");
  tev->callback([te] { run_teacher_eval(*te); });
}

}  // namespace emovlm::cli
