#!/usr/bin/python3
"""Writes the ResNet / VGG golden fixtures of tests/test_resnet.cpp and tests/test_vgg.cpp.

The models are torchvision's own classes (Debian's python3-torchvision 0.14 on python3-torch 1.13):
  resnet_tiny/   torchvision ResNet with its Bottleneck block (expansion 1, width_per_group 8,
                 blocks [1, 2, 1, 1]): every part of ResNet-50 (7x7 stem, max pool, 1x1-3x3-1x1
                 bottlenecks with the stride on the 3x3, projection shortcuts, BatchNorm, global
                 average pool, fc) at 1.3 MB instead of 100 MB
  vgg_tiny/      torchvision VGG (features from its make_layers, its adaptive 7x7 average pool and
  vgg_bn_tiny/   its Linear-ReLU-Dropout classifier) on the widths [8, M, 16, 16, M, 32, M] and a
                 64-wide classifier, without and with BatchNorm
  resnet50_full/ the full-size torchvision resnet50 on one 224x224 image; its weights come from a
                 counter-based hash that tests/test_resnet.cpp computes too (see full_size_value),
                 so the fixture holds the logits (its input is preprocess/'s img_b.tv_in1k), not
                 100 MB of weights
  published.json the tensor names and shapes of the published resnet50.tv_in1k, vgg16.tv_in1k and
                 vgg16_bn.tv_in1k checkpoints (torchvision's state dicts under timm's names) and the
                 parameter counts
  preprocess/    timm's evaluation transform (Resize of the shorter side, or of both sides for
                 crop_mode "squash", to floor(size / crop_pct) with the named interpolation, then
                 CenterCrop, ToTensor, Normalize), built from torchvision transforms on Pillow images
Each model directory is laid out as timm's Hugging Face checkpoints (resnet50.tv_in1k, vgg16.tv_in1k,
vgg16_bn.tv_in1k): model.safetensors under timm's key names and timm's config.json; `model_args`
holds the reduced sizes. Random weights are drawn with fixed seeds; every expected value is computed
in float64 from the stored float32 weights and inputs and saved as float32. The float32 forward of
torchvision itself is compared with that float64 reference too, and its error is written into
cases.json (`torch_float32_rel_err`): the scale of the float32 rounding the C++ side must also meet.

Run: /usr/bin/python3 tests/data/cnn/make_fixtures.py   (no network; about 20 s)
"""
import copy
import json
import math
import os
import struct

import numpy as np
import torch
import torch.nn as nn
import torchvision
from PIL import Image
from torchvision import transforms as T
from torchvision.models.resnet import Bottleneck, ResNet
from torchvision.models.vgg import VGG, make_layers

HERE = os.path.dirname(os.path.abspath(__file__))
IMAGES = os.path.join(HERE, "..", "reference", "images")
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]

# ------------------------------------------------------------------------------------- files

DTYPES = {torch.float32: "F32", torch.int64: "I64", torch.uint8: "U8"}


def write_safetensors(path, tensors, metadata=None):
    """The safetensors layout: u64 header length, JSON header (names, dtypes, shapes, offsets),
    then the raw little-endian bytes in header order."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        data = t.numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")


def timm_config(architecture, num_classes, num_features, size, classifier, model_args=None,
                interpolation="bilinear", crop_pct=0.875):
    """config.json as timm writes it for the Hub."""
    cfg = {
        "architecture": architecture,
        "num_classes": num_classes,
        "num_features": num_features,
        "pretrained_cfg": {
            "tag": "tv_in1k", "custom_load": False, "input_size": [3, size, size], "fixed_input_size": False,
            "interpolation": interpolation, "crop_pct": crop_pct, "crop_mode": "center",
            "mean": IMAGENET_MEAN, "std": IMAGENET_STD, "num_classes": num_classes,
            "pool_size": [1, 1] if architecture.startswith("vgg") else [7, 7],
            "first_conv": "features.0" if architecture.startswith("vgg") else "conv1",
            "classifier": classifier, "license": "bsd-3-clause", "origin_url": "https://github.com/pytorch/vision",
        },
    }
    if model_args:
        cfg["model_args"] = model_args
    return cfg


def rel_err(a, b):
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


# ----------------------------------------------------------------------------- random weights

def randomize(model, gen):
    """He-normal convolutions, N(0, 1/fan_in) linears, N(0, 0.1) biases, and BatchNorm with
    non-trivial affine parameters and running statistics (so that eval mode tests them)."""
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(2.0 / fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.Linear):
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * math.sqrt(1.0 / m.in_features))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(0.5 + torch.rand(m.weight.shape, generator=gen))
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=gen))
                m.num_batches_tracked.fill_(3)


# --------------------------------------------------------------------------- the golden cases

def golden(model, inputs, labels, grad_names, bn_names):
    """Eval logits for each input, then one train-mode step on inputs[0]: the loss, the gradients of
    grad_names and the running statistics of bn_names after the forward. All in float64."""
    out, info = {}, {"inputs": [], "torch_float32_rel_err": 0.0}
    m64 = copy.deepcopy(model).double().eval()
    m32 = copy.deepcopy(model).eval()
    with torch.no_grad():
        for k, x in enumerate(inputs):
            name = f"input{k}"
            out[name] = x
            out[name + ".logits"] = m64(x.double()).float()
            info["inputs"].append(name)
            info["torch_float32_rel_err"] = max(info["torch_float32_rel_err"], rel_err(m32(x), out[name + ".logits"]))
    m64.train()
    logits = m64(inputs[0].double())
    y = torch.tensor(labels, dtype=torch.int64)
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    params = dict(m64.named_parameters())
    buffers = dict(m64.named_buffers())
    for n in grad_names:
        out["train.grad." + n] = params[n].grad.float()
    for n in bn_names:
        for b in ("running_mean", "running_var"):
            out[f"train.{n}.{b}"] = buffers[f"{n}.{b}"].float()
        info.setdefault("num_batches_tracked", {})[n] = int(buffers[f"{n}.num_batches_tracked"])
    # the same step in float32 (torchvision's own rounding of the loss and the gradients)
    m32.train()
    l32 = nn.functional.cross_entropy(m32(inputs[0]), y)
    l32.backward()
    p32 = dict(m32.named_parameters())
    info["torch_float32_grad_rel_err"] = max(rel_err(p32[n].grad, out["train.grad." + n]) for n in grad_names)
    info.update({"train_input": "input0", "train_labels": labels, "train_loss": float(loss),
                 "grad_names": grad_names, "bn_names": bn_names})
    return out, info


# ------------------------------------------------------------------------------------- ResNet

class NarrowBottleneck(Bottleneck):
    """torchvision's Bottleneck with output channels = planes (expansion 1 instead of 4)."""
    expansion = 1


def make_resnet_tiny():
    gen = torch.Generator().manual_seed(20261130)
    model = ResNet(NarrowBottleneck, [1, 2, 1, 1], num_classes=5, width_per_group=8)
    randomize(model, gen)
    d = os.path.join(HERE, "resnet_tiny")
    write_safetensors(os.path.join(d, "model.safetensors"), model.state_dict(), {"format": "pt"})
    write_json(os.path.join(d, "config.json"),
               timm_config("resnet50", 5, 512, 64, "fc", {"layers": [1, 2, 1, 1], "base_width": 8, "expansion": 1}))
    inputs = [torch.randn(3, 3, 64, 64, generator=gen), torch.randn(1, 3, 40, 56, generator=gen)]
    out, info = golden(model, inputs, [0, 3, 4],
                       ["conv1.weight", "bn1.weight", "layer1.0.conv2.weight", "layer2.0.downsample.0.weight",
                        "layer2.1.bn3.bias", "layer4.0.conv3.weight", "fc.weight", "fc.bias"],
                       ["bn1", "layer1.0.bn2", "layer2.0.downsample.1", "layer4.0.bn3"])
    write_safetensors(os.path.join(d, "expected.safetensors"), out)
    write_json(os.path.join(d, "cases.json"), info)
    return info


# ---------------------------------------------------------------------------------------- VGG

def make_vgg_tiny(name, batch_norm):
    gen = torch.Generator().manual_seed(20261131 + batch_norm)
    cfg = [8, "M", 16, 16, "M", 32, "M"]
    hidden, classes = 64, 5
    model = VGG(make_layers(cfg, batch_norm=batch_norm), num_classes=classes, init_weights=False, dropout=0.0)
    # torchvision fixes the classifier at 512 * 7 * 7 -> 4096 -> 4096: the same layers, narrower
    model.classifier = nn.Sequential(
        nn.Linear(32 * 7 * 7, hidden), nn.ReLU(True), nn.Dropout(0.0),
        nn.Linear(hidden, hidden), nn.ReLU(True), nn.Dropout(0.0),
        nn.Linear(hidden, classes))
    randomize(model, gen)
    # timm's names and shapes: classifier.0 -> pre_logits.fc1 as a 7x7 convolution over the pooled
    # map, classifier.3 -> pre_logits.fc2 as a 1x1 convolution, classifier.6 -> head.fc
    sd = {}
    for k, v in model.state_dict().items():
        if k.startswith("classifier.0."):
            k, v = "pre_logits.fc1." + k.split(".")[-1], (v.reshape(hidden, 32, 7, 7) if v.dim() == 2 else v)
        elif k.startswith("classifier.3."):
            k, v = "pre_logits.fc2." + k.split(".")[-1], (v.reshape(hidden, hidden, 1, 1) if v.dim() == 2 else v)
        elif k.startswith("classifier.6."):
            k = "head.fc." + k.split(".")[-1]
        sd[k] = v
    d = os.path.join(HERE, name)
    write_safetensors(os.path.join(d, "model.safetensors"), sd, {"format": "pt"})
    write_json(os.path.join(d, "config.json"),
               timm_config("vgg16_bn" if batch_norm else "vgg16", classes, hidden, 32, "head.fc",
                           {"cfg": cfg, "num_features": hidden, "drop_rate": 0.0}))
    # 32x32: a 4x4 map pooled up to 7x7; 64x48: 8x6 pooled to 7x7 (overlapping windows)
    inputs = [torch.randn(3, 3, 32, 32, generator=gen), torch.randn(2, 3, 64, 48, generator=gen)]
    convs = [i for i, m in enumerate(model.features) if isinstance(m, nn.Conv2d)]
    grads = [f"features.{convs[0]}.weight", f"features.{convs[-1]}.weight",
             "classifier.0.weight", "classifier.3.bias", "classifier.6.weight"]
    bns = [f"features.{i}" for i, m in enumerate(model.features) if isinstance(m, nn.BatchNorm2d)][::2]
    if batch_norm:  # (a convolution's bias right before BatchNorm has no gradient in train mode)
        grads += [f"features.{convs[1] + 1}.weight", f"features.{convs[-1] + 1}.bias"]
    else:
        grads.append(f"features.{convs[-1]}.bias")
    out, info = golden(model, inputs, [1, 4, 2], grads, bns)
    # the gradients under timm's names (and shapes) too
    renames = {"classifier.0.": "pre_logits.fc1.", "classifier.3.": "pre_logits.fc2.", "classifier.6.": "head.fc."}
    info["grad_names"] = []
    for n in grads:
        t = n
        for a, b in renames.items():
            t = t.replace(a, b)
        info["grad_names"].append(t)
        g = out.pop("train.grad." + n)
        out["train.grad." + t] = g.reshape(sd[t].shape)
    write_safetensors(os.path.join(d, "expected.safetensors"), out)
    write_json(os.path.join(d, "cases.json"), info)
    return info


# -------------------------------------------------------------------------- preprocessing

def timm_eval_transform(size, crop_pct, crop_mode, interpolation, mean, std):
    """timm's transforms_imagenet_eval for crop_mode center and squash, from torchvision parts."""
    scale = math.floor(size / crop_pct)
    mode = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC}[interpolation]
    resize = T.Resize((scale, scale) if crop_mode == "squash" else scale, interpolation=mode)
    return T.Compose([resize, T.CenterCrop(size), T.ToTensor(), T.Normalize(torch.tensor(mean), torch.tensor(std))])


PREPROCESS_CASES = [
    # name, image, input size, crop_pct, crop_mode, interpolation, mean, std
    ("img_b.tv_in1k", "img_b.png", 224, 0.875, "center", "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    ("img_a.bicubic_095", "img_a.png", 48, 0.95, "center", "bicubic", IMAGENET_MEAN, IMAGENET_STD),
    ("img_d.squash_09", "img_d.png", 32, 0.9, "squash", "bilinear", IMAGENET_MEAN, IMAGENET_STD),
    # the reference teacher's transform: Resize(S) + CenterCrop(S), mean = std = 0.5 (crop_pct 1)
    ("img_b.reference", "img_b.png", 64, 1.0, "center", "bilinear", [0.5] * 3, [0.5] * 3),
]


def make_preprocess():
    out, cases = {}, []
    for name, file, size, pct, mode, interp, mean, std in PREPROCESS_CASES:
        img = Image.open(os.path.join(IMAGES, file)).convert("RGB")
        out[name] = timm_eval_transform(size, pct, mode, interp, mean, std)(img)
        cases.append({"name": name, "image": file, "pretrained_cfg": {
            "input_size": [3, size, size], "interpolation": interp, "crop_pct": pct, "crop_mode": mode,
            "mean": mean, "std": std}})
    write_safetensors(os.path.join(HERE, "preprocess", "expected.safetensors"), out)
    write_json(os.path.join(HERE, "preprocess", "cases.json"), {"cases": cases})
    return out


# ------------------------------------------------------------------ full-size ResNet-50

MASK = 0xFFFFFFFF


def fnv1a32(s):
    h = 0x811C9DC5
    for b in s.encode():
        h = ((h ^ b) * 0x01000193) & MASK
    return h


def hash32(x):
    """A 32-bit integer mixer on int64 tensors holding values below 2^32 (products stay below 2^59)."""
    x = (((x >> 16) ^ x) * 0x45D9F3B) & MASK
    x = (((x >> 16) ^ x) * 0x45D9F3B) & MASK
    return (x >> 16) ^ x


def full_size_value(name, shape):
    """The weight `name` of the full-size fixture: u = hash32((i + fnv1a32(name)) mod 2^32) / 2^32 for
    element i, then convolutions U with std sqrt(2 / fan_in), linears std sqrt(1 / fan_in), BatchNorm
    weights 0.75 + 0.5u (the last of each bottleneck, bn3, 0.1 + 0.3u), biases and running means
    0.2 (u - 0.5), running variances 0.75 + 0.5u; computed in float64, stored as float32."""
    n = int(np.prod(shape)) if len(shape) else 1
    idx = torch.arange(n, dtype=torch.int64)
    u = hash32((idx + fnv1a32(name)) & MASK).double() / 4294967296.0
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if len(shape) == 4:
        v = (u - 0.5) * math.sqrt(12.0 * 2.0 / (shape[1] * shape[2] * shape[3]))
    elif len(shape) == 2:
        v = (u - 0.5) * math.sqrt(12.0 / shape[1])
    elif name.endswith("running_var"):
        v = 0.75 + 0.5 * u
    elif name.endswith("bn3.weight"):
        v = 0.1 + 0.3 * u
    elif name.endswith("weight"):
        v = 0.75 + 0.5 * u
    else:  # biases and running means
        v = 0.2 * (u - 0.5)
    return v.float().reshape(shape)


def make_resnet50_full(pixels):
    model = torchvision.models.resnet50()
    sd = model.state_dict()
    with torch.no_grad():
        for k in sd:
            sd[k].copy_(full_size_value(k, list(sd[k].shape)))
    model.eval()
    x = pixels["img_b.tv_in1k"].unsqueeze(0)
    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        logits = m64(x.double()).float()
        f32 = rel_err(model(x), logits)
    d = os.path.join(HERE, "resnet50_full")
    write_safetensors(os.path.join(d, "expected.safetensors"), {"logits": logits})
    cfg = timm_config("resnet50", 1000, 2048, 224, "fc")
    write_json(os.path.join(d, "config.json"), cfg)
    info = {"weights": "full_size_value() of make_fixtures.py: a hash of the name and the element index",
            "pixel_values": "preprocess/img_b.tv_in1k", "parameters": sum(p.numel() for p in model.parameters()),
            "torch_float32_rel_err": f32, "tensors": len(sd)}
    write_json(os.path.join(d, "cases.json"), info)
    return info


# ------------------------------------------------------------- published checkpoint layouts

def timm_names(sd):
    """torchvision state-dict names and shapes -> timm's (the VGG classifier as pre_logits + head)."""
    out = {}
    for k, v in sd.items():
        shape = list(v.shape)
        if k.startswith("classifier.0."):
            k = "pre_logits.fc1." + k.split(".")[-1]
            shape = [shape[0], 512, 7, 7] if len(shape) == 2 else shape
        elif k.startswith("classifier.3."):
            k = "pre_logits.fc2." + k.split(".")[-1]
            shape = [shape[0], shape[1], 1, 1] if len(shape) == 2 else shape
        elif k.startswith("classifier.6."):
            k = "head.fc." + k.split(".")[-1]
        out[k] = shape
    return out


def make_published():
    out = {}
    for name, ctor in [("resnet50", torchvision.models.resnet50), ("vgg16", torchvision.models.vgg16),
                       ("vgg16_bn", torchvision.models.vgg16_bn)]:
        model = ctor()
        out[name] = {"parameters": sum(p.numel() for p in model.parameters()), "tensors": timm_names(model.state_dict())}
        del model
    write_json(os.path.join(HERE, "published.json"), out)
    return {k: v["parameters"] for k, v in out.items()}


if __name__ == "__main__":
    torch.set_num_threads(2)
    print("torch", torch.__version__, "torchvision", torchvision.__version__)
    print("resnet_tiny", make_resnet_tiny())
    print("vgg_tiny", make_vgg_tiny("vgg_tiny", False))
    print("vgg_bn_tiny", make_vgg_tiny("vgg_bn_tiny", True))
    px = make_preprocess()
    print("resnet50_full", make_resnet50_full(px))
    print("published", make_published())
