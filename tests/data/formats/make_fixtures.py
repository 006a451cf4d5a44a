#!/usr/bin/python3
"""Writes the GIF and BMP decoding fixtures of tests/test_image_decode.cpp.

Each case is a file in the format (some saved by Pillow, some assembled byte by byte below to
reach the layouts Pillow does not write) and NAME.expected.png: what Pillow's
Image.open(NAME).convert("RGB") gives for it. Run with Debian's python3-pil (9.4.0 wrote the
committed files): /usr/bin/python3 tests/data/formats/make_fixtures.py
"""
import os
import random
import struct

from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
rng = random.Random(20261126)


def out(name):
    return os.path.join(HERE, name)


def expect(name):
    Image.open(out(name)).convert("RGB").save(out(name + ".expected.png"))


def noise_rgb(w, h, levels=None):
    im = Image.new("RGB", (w, h))
    im.putdata([tuple(rng.randrange(256) for _ in range(3)) for _ in range(w * h)])
    return im


def indexed(w, h, colors):
    im = Image.new("P", (w, h))
    pal = [rng.randrange(256) for _ in range(3 * 256)]
    im.putpalette(pal)
    # smooth regions with noise, so that LZW finds long runs and fills its table
    im.putdata([((x // 5 + y // 3) * 7 + (rng.randrange(3) if rng.random() < 0.2 else 0)) % colors
                for y in range(h) for x in range(w)])
    return im


# ------------------------------------------------------------------------------------- GIF


def lzw_encode(indices, min_code_size):
    """GIF LZW: variable-width codes, LSB first, a clear code first, the end code last."""
    clear, end = 1 << min_code_size, (1 << min_code_size) + 1
    table = {bytes([i]): i for i in range(clear)}
    next_code, width = end + 1, min_code_size + 1
    codes = [(clear, width)]
    w = b""
    for i in indices:
        wc = w + bytes([i])
        if wc in table:
            w = wc
            continue
        codes.append((table[w], width))
        if next_code < 4096:
            table[wc] = next_code
            next_code += 1
            if next_code > (1 << width) and width < 12:
                width += 1
        w = bytes([i])
    if w:
        codes.append((table[w], width))
    codes.append((end, width))
    acc, nbits, data = 0, 0, bytearray()
    for c, wd in codes:
        acc |= c << nbits
        nbits += wd
        while nbits >= 8:
            data.append(acc & 255)
            acc >>= 8
            nbits -= 8
    if nbits:
        data.append(acc & 255)
    return bytes(data)


def sub_blocks(data):
    b = bytearray()
    for i in range(0, len(data), 255):
        chunk = data[i:i + 255]
        b.append(len(chunk))
        b += chunk
    b.append(0)
    return bytes(b)


def gif(screen, global_pal, bg, frames):
    """frames: dicts with x, y, w, h, indices, min_code, [local_pal], [transparency], [interlace]."""
    b = bytearray(b"GIF89a")
    flags = 0
    if global_pal is not None:
        bits = max(1, (len(global_pal) // 3 - 1).bit_length())
        flags = 0x80 | (bits - 1)
    b += struct.pack("<HHBBB", screen[0], screen[1], flags, bg, 0)
    if global_pal is not None:
        b += bytes(global_pal) + bytes(3 * (1 << bits) - len(global_pal))
    for f in frames:
        if "transparency" in f:
            b += bytes([0x21, 0xF9, 4, 0x01]) + struct.pack("<H", 0) + bytes([f["transparency"], 0])
        b += bytes([0x21, 0xFE]) + sub_blocks(b"a comment block")
        lflags = 0x40 if f.get("interlace") else 0
        lp = f.get("local_pal")
        if lp is not None:
            lbits = max(1, (len(lp) // 3 - 1).bit_length())
            lflags |= 0x80 | (lbits - 1)
        b += b"," + struct.pack("<HHHHB", f["x"], f["y"], f["w"], f["h"], lflags)
        if lp is not None:
            b += bytes(lp) + bytes(3 * (1 << lbits) - len(lp))
        rows = [f["indices"][r * f["w"]:(r + 1) * f["w"]] for r in range(f["h"])]
        if f.get("interlace"):
            order = [r for start, step in ((0, 8), (4, 8), (2, 4), (1, 2)) for r in range(start, f["h"], step)]
            rows = [rows[r] for r in order]
        flat = [i for row in rows for i in row]
        b += bytes([f["min_code"]]) + sub_blocks(lzw_encode(flat, f["min_code"]))
    b += b";"
    return bytes(b)


def pal(n):
    return [rng.randrange(256) for _ in range(3 * n)]


def write(name, data):
    with open(out(name), "wb") as f:
        f.write(data)
    expect(name)


def gifs():
    im = indexed(61, 37, 200)
    im.save(out("pillow_plain.gif"), interlace=False)
    expect("pillow_plain.gif")
    im.save(out("pillow_interlaced.gif"))  # Pillow interlaces by default from 16 px
    expect("pillow_interlaced.gif")
    Image.new("L", (40, 30)).save(out("pillow_gray.gif"))  # identity palette: Pillow reads mode L
    g = Image.new("L", (40, 30))
    g.putdata([(x * 6 + y * 3) % 256 for y in range(30) for x in range(40)])
    g.save(out("pillow_gray.gif"))
    expect("pillow_gray.gif")
    # a large image, so that the LZW table fills (4096 codes) and the encoder keeps 12-bit codes
    big = indexed(160, 100, 256)
    big.putdata([rng.randrange(256) if rng.random() < 0.5 else (x // 9) % 256 for y in range(100) for x in range(160)])
    big.save(out("pillow_full_table.gif"), interlace=False)
    expect("pillow_full_table.gif")

    # a frame smaller than the screen, offset, with a local palette and a transparent index: the
    # rest of the canvas is the transparent index's colour (Pillow fills frame 0's canvas with it)
    w, h = 11, 7
    idx = [rng.randrange(8) for _ in range(w * h)]
    write("offset_local_transparent.gif",
          gif((23, 16), pal(4), 1, [dict(x=5, y=6, w=w, h=h, indices=idx, min_code=3, local_pal=pal(8),
                                         transparency=6)]))
    # no transparency: the rest of the canvas is index 0 (not the background index)
    write("offset_global.gif",
          gif((20, 20), pal(16), 3, [dict(x=2, y=9, w=w, h=h, indices=[i + 8 for i in idx], min_code=4)]))
    # interlaced odd height, indices past the 4-colour palette (Pillow: a grey ramp there)
    w, h = 9, 13
    write("interlaced_short_palette.gif",
          gif((w, h), pal(4), 0, [dict(x=0, y=0, w=w, h=h, indices=[rng.randrange(8) for _ in range(w * h)],
                                       min_code=3, interlace=True)]))
    # no palette at all: indices are grey levels (Pillow mode L)
    write("no_palette.gif",
          gif((8, 6), None, 0, [dict(x=0, y=0, w=8, h=6, indices=[rng.randrange(4) * 60 for _ in range(48)],
                                     min_code=8)]))
    # a table that fills up (4096 codes) with no clear code after it: 12-bit codes to the end
    idx = [rng.randrange(256) for _ in range(120 * 80)]
    write("own_full_table_no_clear.gif", gif((120, 80), pal(256), 0, [dict(x=0, y=0, w=120, h=80, indices=idx,
                                                                          min_code=8)]))
    assert list(Image.open(out("own_full_table_no_clear.gif")).getdata()) == idx  # the encoder above is right
    # two frames: only the first is read
    f0 = dict(x=0, y=0, w=6, h=5, indices=[rng.randrange(4) for _ in range(30)], min_code=2)
    f1 = dict(x=0, y=0, w=6, h=5, indices=[3] * 30, min_code=2)
    write("two_frames.gif", gif((6, 5), pal(4), 0, [f0, f1]))
    # a frame reaching past the logical screen: the image grows to hold it
    write("frame_past_screen.gif",
          gif((5, 5), pal(4), 0, [dict(x=3, y=2, w=6, h=4, indices=[rng.randrange(4) for _ in range(24)],
                                       min_code=2)]))


# ------------------------------------------------------------------------------------- BMP


def bmp(width, height, bits, pixel_rows, palette=None, compression=0, masks=None, header=40, top_down=False,
        raw=None):
    """pixel_rows: bytes per row, top row first (padded here); raw: pixel data as is (RLE)."""
    if raw is None:
        stride = (width * bits + 31) // 32 * 4
        rows = [bytes(r) + bytes(stride - len(r)) for r in pixel_rows]
        if not top_down:
            rows.reverse()
        data = b"".join(rows)
    else:
        data = raw
    h = -height if top_down else height
    if header == 12:
        dib = struct.pack("<IHHHH", 12, width, height, 1, bits)
        pal_bytes = b"".join(bytes([b, g, r]) for r, g, b in palette or [])
    else:
        dib = struct.pack("<IiiHHIIiiII", header, width, h, 1, bits, compression, len(data), 2835, 2835,
                          len(palette or []), 0)
        if header >= 52 or (compression == 3 and masks):
            m = tuple(masks or ()) + (0,) * (4 - len(masks or ()))
            extra = struct.pack("<IIII", *m)
            if header == 40:
                dib += extra[:12]
            else:
                dib += extra + bytes(header - 56)
        pal_bytes = b"".join(bytes([b, g, r, 0]) for r, g, b in palette or [])
    off = 14 + len(dib) + len(pal_bytes)
    return b"BM" + struct.pack("<IHHI", off + len(data), 0, 0, off) + dib + pal_bytes + data


def colors(n):
    return [tuple(rng.randrange(256) for _ in range(3)) for _ in range(n)]


def pack_bits(values, bits):
    out, acc, n = bytearray(), 0, 0
    for v in values:
        acc = (acc << bits) | v
        n += bits
        if n == 8:
            out.append(acc)
            acc, n = 0, 0
    if n:
        out.append(acc << (8 - n))
    return bytes(out)


def bmps():
    noise_rgb(13, 9).save(out("pillow_rgb24.bmp"))
    expect("pillow_rgb24.bmp")
    indexed(21, 10, 256).save(out("pillow_p8.bmp"))
    expect("pillow_p8.bmp")
    Image.new("1", (19, 7), 1).save(out("pillow_1bit.bmp"))
    expect("pillow_1bit.bmp")
    im = Image.new("RGBA", (7, 5))
    im.putdata([tuple(rng.randrange(256) for _ in range(4)) for _ in range(35)])
    im.save(out("pillow_rgba32.bmp"))
    expect("pillow_rgba32.bmp")

    w, h = 11, 6
    rows = [bytes(rng.randrange(256) for _ in range(3 * w)) for _ in range(h)]
    write("top_down24.bmp", bmp(w, h, 24, rows, top_down=True))
    write("bgrx32.bmp", bmp(5, 4, 32, [bytes(rng.randrange(256) for _ in range(20)) for _ in range(4)]))
    p16 = colors(16)
    write("p4.bmp", bmp(w, h, 4, [pack_bits([rng.randrange(16) for _ in range(w)], 4) for _ in range(h)],
                        palette=p16))
    # a palette shorter than the indices used: Pillow fills the rest with a grey ramp
    write("p8_short_palette.bmp",
          bmp(w, h, 8, [bytes(rng.randrange(12) for _ in range(w)) for _ in range(h)], palette=colors(5)))
    write("core_header_p8.bmp",
          bmp(w, h, 8, [bytes(rng.randrange(256) for _ in range(w)) for _ in range(h)], palette=colors(256),
              header=12))
    write("rgb555.bmp", bmp(w, h, 16, [b"".join(struct.pack("<H", rng.randrange(1 << 15)) for _ in range(w))
                                       for _ in range(h)]))
    write("rgb565_bitfields.bmp",
          bmp(w, h, 16, [b"".join(struct.pack("<H", rng.randrange(1 << 16)) for _ in range(w)) for _ in range(h)],
              compression=3, masks=(0xF800, 0x07E0, 0x001F)))
    write("bitfields32_v4.bmp",
          bmp(w, h, 32, [bytes(rng.randrange(256) for _ in range(4 * w)) for _ in range(h)], compression=3,
              masks=(0x00FF0000, 0x0000FF00, 0x000000FF, 0xFF000000), header=108))
    write("v5_rgb24.bmp", bmp(w, h, 24, rows, header=124))

    # RLE8 (compression 1): not decoded (unsupported-format error); Pillow's decoder of it varies by
    # version. The test only needs the file.
    rle8 = bytes([5, 3, 0, 3, 9, 10, 11, 0, 3, 7, 0, 0, 0, 1])
    with open(out("rle8.bmp"), "wb") as f:
        f.write(bmp(11, 1, 8, None, palette=colors(16), compression=1, raw=rle8))


# ------------------------------------------------------------------------------------ WebP
# Pillow reads every WebP through libwebp's animation decoder (frame 0 on its canvas); the
# emovlm build decodes them the same way when it has libwebp.


def webps():
    photo = noise_rgb(37, 23)
    smooth = Image.new("RGB", (64, 48))
    smooth.putdata([(x * 4, y * 5, (x + y) * 2) for y in range(48) for x in range(64)])
    smooth.save(out("lossy.webp"), quality=80)
    expect("lossy.webp")
    photo.save(out("lossless.webp"), lossless=True)
    expect("lossless.webp")
    rgba = smooth.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize((64, 48)))
    rgba.save(out("lossy_alpha.webp"), quality=70)
    expect("lossy_alpha.webp")
    rgba.save(out("lossless_alpha.webp"), lossless=True)
    expect("lossless_alpha.webp")
    frames = [smooth, photo.resize((64, 48))]
    frames[0].save(out("animated.webp"), save_all=True, append_images=frames[1:], duration=100, lossless=True)
    expect("animated.webp")


if __name__ == "__main__":
    gifs()
    bmps()
    webps()
