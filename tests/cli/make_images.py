#!/usr/bin/env python3
"""Writes a small labelled image folder FI-style: OUT/<emotion>/<n>.png, each class its own
colour and stripe pattern with noise, so that the tiny models of the recipe test have something
to learn. PNG written with the standard library only (zlib), seeded, the same on every machine.
Usage: make_images.py OUT N_PER_CLASS [SIZE]
"""
import random
import struct
import sys
import zlib

EMOTIONS = ["amusement", "anger", "awe", "contentment", "disgust", "excitement", "fear", "sadness"]


def png(path, w, h, rows):
    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    def chunk(t, d):
        c = struct.pack(">I", len(d)) + t + d
        return c + struct.pack(">I", zlib.crc32(t + d) & 0xFFFFFFFF)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    size = int(sys.argv[3]) if len(sys.argv) > 3 else 48
    import os
    for c, emotion in enumerate(EMOTIONS):
        os.makedirs(os.path.join(out, emotion), exist_ok=True)
        base = [(37 * c) % 256, (91 * c + 60) % 256, (151 * c + 120) % 256]
        for i in range(n):
            rng = random.Random(1000 * c + i)
            rows = []
            for y in range(size):
                row = []
                for x in range(size):
                    stripe = 60 if ((x + y * (c % 3)) // (2 + c % 4)) % 2 else 0
                    row += [max(0, min(255, v + stripe + rng.randint(-25, 25))) for v in base]
                rows.append(row)
            png(os.path.join(out, emotion, "%03d.png" % i), size, size, rows)


if __name__ == "__main__":
    main()
