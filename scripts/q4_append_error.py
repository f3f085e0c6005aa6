#!/usr/bin/env python3
"""Why a q4 page being filled keeps f16 copies of its keys: the error of the two ways to append a
token to a page whose keys are quantised per channel (kvcache/quant.h, q4), stdlib only.

  copies:  re-quantise the page from f16 copies of its keys on every append (what StreamCache does);
  requant: re-quantise the page from its own dequantised keys on every append (no copies kept).

Keys are synthetic (normal, one outlier channel per page, as LLM keys have). Prints the RMS and the
largest error relative to the channel's range over the page; half a quantisation step is 1/30.
Usage: q4_append_error.py [page_tokens] [trials]
"""
import math
import random
import struct
import sys


def f16(x):
    return struct.unpack("e", struct.pack("e", x))[0]


def quantise(col):  # one channel's values -> dequantised (scale and zero in f16, as quant.cc)
    lo, hi = min(col), max(col)
    zero = f16(lo)
    if zero > lo:
        zero = f16(zero - abs(zero) * 2 ** -10 - 2 ** -24)
    scale = f16((hi - zero) / 15)
    if zero + 15 * scale < hi:
        scale = f16(scale + scale * 2 ** -10 + 2 ** -24)
    if scale == 0:
        return [zero] * len(col)
    return [zero + scale * min(15, max(0, round((x - zero) / scale))) for x in col]


def main():
    page = int(sys.argv[1]) if len(sys.argv) > 1 else 16
    trials = int(sys.argv[2]) if len(sys.argv) > 2 else 4000
    rng = random.Random(1)
    sq = {"copies": 0.0, "requant": 0.0}
    worst = {"copies": 0.0, "requant": 0.0}
    n = 0
    for t in range(trials):
        spread = 6.0 if t % 8 == 0 else 1.0  # every eighth channel is an outlier channel
        k = [rng.gauss(0, spread) for _ in range(page)]
        k16 = [f16(x) for x in k]
        stored = []
        for i in range(page):
            stored = quantise(stored + [k16[i]])
        span = max(k) - min(k)
        for name, got in (("copies", quantise(k16)), ("requant", stored)):
            for a, b in zip(got, k):
                e = abs(a - b) / span
                sq[name] += e * e
                worst[name] = max(worst[name], e)
        n += page
    for name in sq:
        print(f"{name:8s} {page}-token pages: error / channel range: RMS {math.sqrt(sq[name] / n):.4f}, "
              f"max {worst[name]:.4f} (half a step: {1 / 30:.4f})")


if __name__ == "__main__":
    main()
