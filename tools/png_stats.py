#!/usr/bin/env python3
"""Checks that a PNG screenshot is not blank, with Python's standard library only.

Usage: png_stats.py FILE.png [--min-colours N] [--require '#rrggbb:COUNT' ...]

Decodes the PNG (8-bit greyscale, RGB or RGBA, not interlaced), counts its distinct colours
and, for each --require, the pixels within 24 of that colour in every channel. Exits 1 with
a reason when the image has fewer than --min-colours colours (a blank page has one or two)
or a required colour has fewer pixels than COUNT (a chart's lines did not draw).
"""
import struct
import sys
import zlib


def decode(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, idat, hdr = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            hdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    width, height, depth, ctype, _, _, interlace = hdr
    channels = {0: 1, 2: 3, 4: 2, 6: 4}.get(ctype)
    if depth != 8 or channels is None or interlace != 0:
        raise ValueError(f"unsupported PNG (depth {depth}, colour type {ctype}, interlace {interlace})")
    raw = zlib.decompress(b"".join(idat))
    stride = width * channels
    rows, prev, i = [], bytearray(stride), 0
    for _ in range(height):
        f = raw[i]
        line = bytearray(raw[i + 1:i + 1 + stride])
        i += 1 + stride
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b = prev[x]
            c = prev[x - channels] if x >= channels else 0
            if f == 1:
                line[x] = (line[x] + a) & 255
            elif f == 2:
                line[x] = (line[x] + b) & 255
            elif f == 3:
                line[x] = (line[x] + ((a + b) >> 1)) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[x] = (line[x] + pr) & 255
        rows.append(bytes(line))
        prev = line
    pixels = []
    for line in rows:
        for x in range(0, stride, channels):
            px = line[x:x + channels]
            if channels <= 2:
                pixels.append((px[0], px[0], px[0]))
            else:
                pixels.append((px[0], px[1], px[2]))
    return width, height, pixels


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    path, min_colours, required = argv[1], 2, []
    args = argv[2:]
    while args:
        flag = args.pop(0)
        if flag == "--min-colours":
            min_colours = int(args.pop(0))
        elif flag == "--require":
            colour, count = args.pop(0).split(":")
            h = colour.lstrip("#")
            required.append(((int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)), colour, int(count)))
        else:
            print(f"unknown argument {flag}")
            return 2
    try:
        width, height, pixels = decode(path)
    except (OSError, ValueError, zlib.error, TypeError) as e:
        print(f"FAIL: cannot read {path}: {e}")
        return 1
    counts = {}
    for p in pixels:
        counts[p] = counts.get(p, 0) + 1
    top = max(counts.values())
    print(f"{path}: {width}x{height}, {len(counts)} colours, the commonest covers {100 * top / len(pixels):.1f}%")
    ok = True
    if len(counts) < min_colours:
        print(f"FAIL: the screenshot is blank: {len(counts)} colour(s), fewer than {min_colours}")
        ok = False
    for rgb, name, need in required:
        n = sum(c for p, c in counts.items() if all(abs(p[k] - rgb[k]) <= 24 for k in range(3)))
        print(f"  pixels of {name}: {n} (need {need})")
        if n < need:
            print(f"FAIL: too few pixels of {name}: the charts did not render")
            ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
