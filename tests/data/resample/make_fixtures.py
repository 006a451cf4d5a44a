#!/usr/bin/python3
"""Writes tests/data/resample/large.json, the large-image fixture of tests/test_resample.cpp.

Images over the 1024-px cap go through every resampling path of the project: the cap itself
(LANCZOS to 1024 on the long side), the Qwen2-VL processor's BICUBIC resize to the smart_resize
size (of the capped image, and of the whole image when the cap is raised), and the teacher's
torchvision Resize(384) + CenterCrop(384) and the HF ViT processor's direct BILINEAR resize to
384x384. Pillow (Debian's python3-pil 9.4) and torchvision (python3-torchvision 0.14) do each.

The inputs are synthetic, made by an integer formula that tests/test_resample.cpp repeats
(gradients, tiles with sharp edges, hashed noise), so no input is stored; of each output the
fixture keeps its size, the FNV-1a 64 hash of its RGB bytes (rows top to bottom, R G B per
pixel) and 64 sampled pixels (to say where a mismatch is). Run with
/usr/bin/python3 tests/data/resample/make_fixtures.py
"""
import json
import math
import os
import random

import numpy as np
import PIL
from PIL import Image
import torchvision
import torchvision.transforms as T

HERE = os.path.dirname(os.path.abspath(__file__))
M32 = 0xFFFFFFFF


def synthetic(w, h):
    """v = (200 x / w + 55 y / h + 64 [tile parity] + hashed noise in [0, 64)) mod 256."""
    x = np.arange(w, dtype=np.uint64)[None, :, None]
    y = np.arange(h, dtype=np.uint64)[:, None, None]
    c = np.arange(3, dtype=np.uint64)[None, None, :]
    n = ((x * 73856093) & M32) ^ ((y * 19349663) & M32) ^ ((c * 83492791) & M32)
    n ^= n >> 13
    n = (n * 0x5BD1E995) & M32
    n ^= n >> 15
    grad = (x * 200) // w + (y * 55) // h
    tile = ((x // 97 + y // 61) % 2) * 64
    v = (grad + tile + (n & 63)) % 256
    return Image.fromarray(v.astype(np.uint8), "RGB")


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def round_half_even(v):
    return int(round(v))


def smart_resize(height, width, factor=28, min_pixels=3136, max_pixels=12845056):
    """The Qwen2-VL processor's target size."""
    h = max(factor, round_half_even(height / factor) * factor)
    w = max(factor, round_half_even(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h = math.floor(height / beta / factor) * factor
        w = math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def cap(im, side=1024):
    w, h = im.size
    if max(w, h) <= side:
        return im
    s = side / max(w, h)
    size = (side, max(1, round(h * s))) if w >= h else (max(1, round(w * s)), side)
    return im.resize(size, Image.LANCZOS)


def record(name, im, rng):
    arr = np.asarray(im)
    h, w = arr.shape[:2]
    samples = []
    for _ in range(64):
        x, y = rng.randrange(w), rng.randrange(h)
        samples.append([x, y] + [int(v) for v in arr[y, x]])
    print(name, w, h, flush=True)
    return {"path": name, "size": [w, h], "fnv1a64": "%016x" % fnv1a64(arr.tobytes()), "samples": samples}


def main():
    rng = random.Random(20261130)
    cases = []
    for w, h in [(3000, 2000), (4000, 300), (1537, 2049)]:
        im = synthetic(w, h)
        outs = []
        capped = cap(im)
        outs.append(record("cap_lanczos", capped, rng))
        ch, cw = smart_resize(capped.height, capped.width)
        outs.append(record("cap_lanczos+qwen2vl_bicubic", capped.resize((cw, ch), Image.BICUBIC), rng))
        fh, fw = smart_resize(h, w)
        outs.append(record("qwen2vl_bicubic", im.resize((fw, fh), Image.BICUBIC), rng))
        outs.append(record("vit_resize_centercrop_bilinear", T.CenterCrop(384)(T.Resize(384)(im)), rng))
        outs.append(record("vit_direct_bilinear", im.resize((384, 384), Image.BILINEAR), rng))
        cases.append({"input": [w, h], "outputs": outs})
    made_by = "make_fixtures.py, Pillow %s, torchvision %s" % (PIL.__version__, torchvision.__version__)
    with open(os.path.join(HERE, "large.json"), "w") as f:
        # one output per line
        f.write('{"made_by": %s,\n "input_formula": %s,\n "cases": [\n' % (json.dumps(made_by), json.dumps(synthetic.__doc__)))
        for i, c in enumerate(cases):
            f.write('  {"input": %s, "outputs": [\n' % json.dumps(c["input"]))
            f.write(",\n".join("   " + json.dumps(o) for o in c["outputs"]))
            f.write("]}%s\n" % ("," if i + 1 < len(cases) else ""))
        f.write("]}\n")


main()
