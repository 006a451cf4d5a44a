#!/usr/bin/env python3
"""Seeds for tests/fuzz/fuzz_loaders.cpp: the first byte picks the loader (0 safetensors,
1 tokenizer.json, 2 Qwen2-VL config.json, 3 an image, 4 a dataset manifest, 5 an instruction
file, 6 a feature cache's manifest.json), the rest is a small
valid file of that kind: made from the tiny reference model in tests/data/reference/qwen2vl_tiny,
the small format fixtures in tests/data/formats, or written here. Run from the repository root:
    python3 tests/fuzz/make_loader_corpus.py
"""
import json
import os
import struct

REF = "tests/data/reference/qwen2vl_tiny"
FORMATS = "tests/data/formats"
OUT = "tests/fuzz/corpus/loaders"


def safetensors(tensors, metadata=None):
    header, data = {}, b""
    for name, (dtype, shape, raw) in tensors.items():
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


def safetensors_raw(header):
    """A safetensors file around a header given as bytes (padded to 8), with 8 bytes of data."""
    header += b" " * (-len(header) % 8)
    return struct.pack("<Q", len(header)) + header + b"\0" * 8


def small_tokenizer():
    """The tiny model's tokenizer.json cut to its byte-level alphabet, 40 merges and the added tokens."""
    with open(os.path.join(REF, "tokenizer.json"), encoding="utf-8") as f:
        t = json.load(f)
    merges = t["model"]["merges"][:40]
    pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
    vocab = t["model"]["vocab"]
    keep = {tok for tok, i in vocab.items() if len(tok) == 1}
    keep |= {a + b for a, b in pairs} | {a for a, _ in pairs} | {b for _, b in pairs}
    kept = sorted((i, tok) for tok, i in vocab.items() if tok in keep)
    t["model"]["vocab"] = {tok: n for n, (_, tok) in enumerate(kept)}  # ids 0..n-1, added tokens after
    for n, added in enumerate(t["added_tokens"]):
        added["id"] = len(kept) + n
    t["model"]["merges"] = merges
    return json.dumps(t, ensure_ascii=False, separators=(",", ":")).encode()


def manifest():
    """A JSONL manifest of three splits and two labels (the images need not exist to be listed)."""
    rows = [{"path": f"images/{split}-{label}.jpg", "label": label, "split": split}
            for split in ("train", "val", "test") for label in ("amusement", "sadness")]
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def instructions():
    """A stage-1 instruction file: one example of each kind, an image path relative to the file."""
    prompt = "What emotion does this image convey?"
    rows = [{"image": "images/a.jpg", "label": "awe", "kind": "categorical", "prompt": prompt,
             "answer": "{'emotion': 'awe'}"},
            {"image": "images/b.png", "label": "fear", "kind": "observation",
             "prompt": "Observe the image and describe key elements of the image.", "answer": "A dark \u2728 corridor."},
            {"image": "images/c.gif", "label": "sadness", "kind": "reasoning",
             "prompt": "Observe the image and describe the process.", "answer": "Grey tones; a lone figure."}]
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()


def cache_manifest(**changes):
    """A feature cache's manifest.json as extract writes it: three images, two shards (the second
    generated answers), one unreadable image."""
    m = {"format": "emovlm-feature-cache", "version": 2, "complete": True, "shard_size": 2,
         "inputs": {"labels": ["awe", "fear"], "split": "train", "vlm": {"files": []}, "teacher": {"files": []},
                    "adapter": None, "vlm_mode": "score"},
         "entries": [{"path": "../data/train/awe/a.jpg", "label": 0, "bytes": 4004, "hash": "3434272afa6e5990"},
                     {"path": "../data/train/fear/b.jpg", "label": 1, "bytes": 3785, "hash": "1e043dc5be7ae2dd"},
                     {"path": "/abs/fear/c.jpg", "label": 1, "bytes": -1, "hash": ""}],
         "shards": [{"file": "shard-00000.safetensors", "first": 0, "count": 2, "cached": 2, "failures": []},
                    {"file": "shard-00001.safetensors", "first": 2, "count": 1, "cached": 0, "answers": [],
                     "failures": [{"path": "/abs/fear/c.jpg", "error": "unreadable"}]}],
         "parameters": {"vlm": 100, "teacher": 10, "teacher_arch": "vit"}}
    m.update(changes)
    return json.dumps(m).encode()


def main():
    os.makedirs(OUT, exist_ok=True)
    seeds = {
        "safetensors_two": b"\0" + safetensors({"a": ("F32", [2, 2], struct.pack("<4f", 1, 2, 3, 4)),
                                                 "b": ("BF16", [3], b"\x80\x3f" * 3)}, {"format": "pt"}),
        "safetensors_empty": b"\0" + safetensors({}),
        "tokenizer_small": b"\1" + small_tokenizer(),
        "config_tiny": b"\2" + open(os.path.join(REF, "config.json"), "rb").read(),
        "manifest_small": b"\4" + manifest(),
        "instructions_small": b"\5" + instructions(),
        "cache_manifest_small": b"\6" + cache_manifest(),
        # numbers beyond int64 where the reader wants integers, and a shard file outside the folder
        "cache_manifest_number_overflow": b"\6" + cache_manifest(version=19e99),
        "cache_manifest_shard_outside": b"\6" + cache_manifest(shards=[{"file": "../x.safetensors", "cached": 1}]),
        # regressions: numbers out of the JSON library's range once escaped as its own exception
        "config_number_overflow": b"\2" + b'{"vocab_size": 1e999, "vision_config": {}}',
        # a double beyond int64 read as an integer (UBSan: undefined conversion in the JSON library)
        "config_integer_overflow": b"\2" + b'{"vocab_size": 19e99, "vision_config": {}}',
        "tokenizer_number_overflow": b"\1" + b'{"model": {"type": "BPE", "vocab": {"a": 1e999}, "merges": []}}',
        "manifest_number_overflow": b"\4" + b'{"path": "a.jpg", "label": "awe", "split": "train", "x": 1e999}\n',
        "instructions_number_overflow": b"\5" + b'{"image": "a.jpg", "label": "awe", "kind": "categorical", "prompt": "p", "answer": 1e999}\n',
        "safetensors_number_overflow": b"\0" + safetensors_raw(b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,1e999]}}'),
    }
    for name in ("two_frames.gif", "interlaced_short_palette.gif", "p8_short_palette.bmp", "bgrx32.bmp",
                 "lossy.webp", "lossless_alpha.webp", "two_frames.gif.expected.png"):
        with open(os.path.join(FORMATS, name), "rb") as f:
            seeds["image_" + name.replace(".", "_")] = b"\3" + f.read()
    with open("tests/data/reference/images/img_c.jpg", "rb") as f:  # a 5 KB baseline JPEG
        seeds["image_img_c_jpg"] = b"\3" + f.read()
    for name, data in seeds.items():
        with open(os.path.join(OUT, name), "wb") as f:
            f.write(data)
        print(f"{OUT}/{name}: {len(data)} bytes")


if __name__ == "__main__":
    main()
