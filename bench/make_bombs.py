#!/usr/bin/env python3
"""Decompression bombs for bench/serve.sh (standard library only): a 35-byte GIF whose screen is
9000x9000, and PNGs of one colour (a few hundred KB that decode to W x H x 3 bytes)."""
import struct
import sys
import zlib


def gif_bomb(path):
    g = b"GIF89a" + struct.pack("<HH", 9000, 9000) + b"\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    g += b"," + struct.pack("<HHHH", 0, 0, 1, 1) + b"\x00" + b"\x02\x02\x44\x01\x00" + b";"
    assert len(g) == 35
    open(path, "wb").write(g)


def png_bomb(path, w, h):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\x00" + b"\x80\x40\x20" * w  # filter byte 0, one colour
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    png += chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    open(path, "wb").write(png)


if __name__ == "__main__":
    out = sys.argv[1]
    gif_bomb(f"{out}/bomb9000.gif")
    png_bomb(f"{out}/bomb9000.png", 9000, 9000)
    png_bomb(f"{out}/big6000.png", 6000, 6000)
