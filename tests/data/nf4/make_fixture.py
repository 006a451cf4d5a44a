#!/usr/bin/python3
"""Writes tests/data/nf4/double_quant.safetensors, the NF4 fixture of tests/test_nf4.cpp.

bitsandbytes is not packaged for Debian, so the expected values come from this script's own
implementation of bitsandbytes' published algorithm (its functional.py and CUDA kernels), run
with Debian's python3-torch 1.13 and numpy: /usr/bin/python3 tests/data/nf4/make_fixture.py

What bitsandbytes does for quantize_4bit(W, blocksize=64, quant_type="nf4",
compress_statistics=True), i.e. BitsAndBytesConfig(bnb_4bit_quant_type="nf4",
bnb_4bit_use_double_quant=True):
- absmax: max |w| of each block of 64 values (float32);
- each value is multiplied by the float32 reciprocal of its block's absmax and coded by the
  NF4 decision tree (x > threshold, with the kernel's threshold constants);
  two codes per byte, the first in the high nibble;
- double quantization: offset = mean(absmax) (float32); absmax - offset is quantized blockwise
  (blocks of 256) with the signed dynamic 8-bit map: absmax2 = max |.| of each block, each value
  times 1 / absmax2 coded by the kernel's binary search over the sorted 256-entry map;
- dequantization: absmax = map[q] * absmax2 + offset, w = level[code] * absmax (float32).
"""
import json
import os
import struct
from fractions import Fraction

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
f32 = np.float32

NF4_LEVELS = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
              -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
              0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
              0.7229568362236023, 1.0]


def c_float(text):
    """The float32 a C compiler makes of the literal `text`f: the decimal rounded once, to the
    nearest float32 (ties to even). Going through a double first (np.float32(float(text))) rounds
    twice and gives the other neighbour for four of the thresholds below, which lie within a
    double's precision of a float32 midpoint."""
    q = Fraction(text)
    a = f32(float(q))
    cands = [np.nextafter(a, f32(-2)), a, np.nextafter(a, f32(2))]
    return min(cands, key=lambda v: (abs(Fraction(float(v)) - q), int(np.array(v, dtype=f32).view(np.uint32)) & 1))


# the kernel's decision thresholds (dQuantizeNF4's float literals): about the midpoints of
# neighbouring levels, written with 16 digits
NF4_THRESHOLDS = [c_float(t) for t in (
    "-0.8480964004993439", "-0.6106329262256622", "-0.4599952697753906", "-0.33967943489551544",
    "-0.23460740596055984", "-0.13791173323988914", "-0.045525018125772476", "0.03979014977812767",
    "0.1202552504837513", "0.2035212516784668", "0.2920137718319893", "0.3893125355243683",
    "0.5016634166240692", "0.6427869200706482", "0.8614784181118011")]


def dynamic_map():
    """The signed dynamic map (max_exponent_bits 7, 8 bits): for exponent i = 0..6, 2^i
    fractions (means of a float32 linspace(0.1, 1, 2^i + 1)) scaled by 10^(i - 6), both signs,
    then 0 and 1; sorted, float32."""
    data = []
    for i in range(7):
        bounds = torch.linspace(0.1, 1, 2 ** i + 1)
        means = (bounds[:-1] + bounds[1:]) / 2.0
        data += ((10 ** (-6 + i)) * means).tolist()
        data += (-(10 ** (-6 + i)) * means).tolist()
    data += [0.0, 1.0]
    assert len(data) == 256
    return np.array(sorted(data), dtype=f32)


def nf4_code(x):
    """The decision tree of the kernel: the count of thresholds below x (NaN: code 0)."""
    return sum(1 for t in NF4_THRESHOLDS if x > t)


def dynamic_code(code, x):
    """The kernel's binary search over the sorted map (pivot 127, steps 64 .. 1), then the
    nearer of the bracketing entries by a float32 midpoint."""
    pivot, upper_pivot, lower_pivot = 127, 255, 0
    lower, upper = f32(-1.0), f32(1.0)
    val = code[pivot]
    i = 64
    while i > 0:
        if x > val:
            lower_pivot, lower = pivot, val
            pivot += i
        else:
            upper_pivot, upper = pivot, val
            pivot -= i
        val = code[pivot]
        i >>= 1
    if upper_pivot == 255:
        upper = code[upper_pivot]
    if lower_pivot == 0:
        lower = code[lower_pivot]
    if x > val:
        return upper_pivot if x > f32((upper + val) * f32(0.5)) else pivot
    return lower_pivot if x < f32((lower + val) * f32(0.5)) else pivot


def quantize(w, block=64, dq_block=256):
    n = w.size
    nb = (n + block - 1) // block
    absmax = np.array([np.abs(w[b * block:(b + 1) * block]).max() for b in range(nb)], dtype=f32)
    codes = np.zeros(n, dtype=np.uint8)
    with np.errstate(divide="ignore", invalid="ignore"):
        for b in range(nb):
            inv = f32(1.0) / absmax[b]
            for i in range(b * block, min(n, (b + 1) * block)):
                codes[i] = nf4_code(f32(w[i] * inv))
    if n % 2:
        codes = np.append(codes, np.uint8(0))
    packed = (codes[0::2] << 4) | codes[1::2]
    # double quantization of the absmax values
    offset = f32(np.mean(absmax, dtype=f32))
    centred = (absmax - offset).astype(f32)
    nd = (nb + dq_block - 1) // dq_block
    absmax2 = np.array([np.abs(centred[d * dq_block:(d + 1) * dq_block]).max() for d in range(nd)], dtype=f32)
    dmap = dynamic_map()
    qabsmax = np.zeros(nb, dtype=np.uint8)
    for d in range(nd):
        inv = f32(1.0) / absmax2[d]
        for b in range(d * dq_block, min(nb, (d + 1) * dq_block)):
            qabsmax[b] = dynamic_code(dmap, f32(centred[b] * inv))
    absmax_dq = np.array([f32(dmap[qabsmax[b]] * absmax2[b // dq_block]) + offset for b in range(nb)], dtype=f32)
    levels = np.array(NF4_LEVELS, dtype=f32)
    deq = np.array([f32(levels[codes[i]] * absmax_dq[i // block]) for i in range(n)], dtype=f32)
    return packed.astype(np.uint8), qabsmax, absmax2, offset, absmax_dq, deq, dmap


def weights():
    """A [130, 131] weight (17030 values: 267 blocks of 64, the last partial, and two blocks of 256
    absmax values, the last partial) whose rows have scales over three decades, in float32.
    Block 0 holds the NF4 thresholds themselves (its absmax is 1) and block 1 is all zeros."""
    g = torch.Generator().manual_seed(20261130)
    w = torch.randn(130, 131, generator=g) * torch.logspace(-3, 0, 130).unsqueeze(1)
    flat = w.reshape(-1)
    edge = torch.tensor([1.0] + NF4_THRESHOLDS + [-t for t in NF4_THRESHOLDS] + [0.5] * 33)
    flat[:64] = edge[:64]
    flat[64:128] = 0.0
    return w


def save_safetensors(path, tensors, meta):
    header, blobs, off = {"__metadata__": meta}, [], 0
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    w = weights()
    wf = w.numpy().reshape(-1)
    packed, qabsmax, absmax2, offset, absmax_dq, deq, dmap = quantize(wf)
    save_safetensors(os.path.join(HERE, "double_quant.safetensors"), {
        "weight": ("F32", w.shape, w.contiguous().numpy().tobytes()),
        "codes": ("U8", packed.shape, packed.tobytes()),
        "absmax_q": ("U8", qabsmax.shape, qabsmax.tobytes()),
        "absmax2": ("F32", absmax2.shape, absmax2.tobytes()),
        "offset": ("F32", (1,), np.array([offset], dtype=f32).tobytes()),
        "absmax": ("F32", absmax_dq.shape, absmax_dq.tobytes()),
        "dequantized": ("F32", w.shape, deq.tobytes()),
        "dynamic_map": ("F32", dmap.shape, dmap.tobytes()),
    }, {"made_by": "make_fixture.py (bitsandbytes' NF4 with double quantization, reimplemented)",
        "torch": torch.__version__})


main()
