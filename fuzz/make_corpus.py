"""Writes the seed corpus fuzz/corpus/ (committed; rerun after a format change).

    python fuzz/make_corpus.py

Three kinds of seeds, in the input format of fuzz/fuzz_api.py and
fuzz/codec_fuzz.cpp: valid streams (start with 'E' of "EBZP"), the same
streams prefixed with 'F' (the harness fixes their CRCs after mutation), and
compress-path inputs (parameters + element bytes). All small (< 4 KB).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct

import numpy as np

import ebzip

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def streams():
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.standard_normal(300))
    yield ebzip.compress(walk.astype(np.float32), 1e-2, block_elems=64)
    yield ebzip.compress(walk.astype(np.float64).reshape(15, 20), 1e-3, "rel", block_elems=50)
    yield ebzip.compress(walk.astype(np.float16), 1e-2, block_elems=7)
    yield ebzip.compress(walk.astype(np.float32).view(np.uint16)[:300], 1e-2, dtype="bfloat16")
    yield ebzip.compress(walk.astype(np.float32)[:64].reshape(4, 4, 4), 0.0)
    yield ebzip.compress(np.zeros((0, 3), np.float32), 1e-3)
    yield ebzip.compress(np.float64(np.pi), 1e-6)
    yield ebzip.compress(np.full(50, 7.0, np.float32), 1e-3, "rel")
    sp = walk.copy()
    sp[::9] = np.nan
    sp[5], sp[17], sp[40] = np.inf, -np.inf, 1e300
    yield ebzip.compress(sp, 1e-4, block_elems=100)
    with np.errstate(over="ignore"):
        sp32 = sp.astype(np.float32)
    yield ebzip.compress(sp32.reshape(3, 4, 5, 5), 30.0, "psnr")
    yield ebzip.compress(np.sin(np.linspace(0, 20, 2 * 3 * 4 * 5 * 2)).reshape(2, 3, 4, 5, 2), 1e-3)
    yield ebzip.compress(rng.standard_normal(400).astype(np.float32), 1e-30)  # int64 grid, outliers
    yield ebzip.compress(rng.standard_normal(200), 1e300)
    # format version 2: interpolation (cubic and linear), 2-axis prediction
    smooth = np.sin(np.linspace(0, 6, 12 * 13 * 9)).reshape(12, 13, 9)
    yield ebzip.compress(smooth.astype(np.float32), 1e-3, predictor="interp", block_elems=500)
    yield ebzip.compress(sp.reshape(20, 15), 1e-3, predictor="interp")
    yield ebzip.compress(smooth.astype(np.float16), 1e-2, predictor="auto")
    yield ebzip.compress(smooth.reshape(4, 3, 13, 9), 1e-4, predictor="lorenzo", block_elems=117)


def compress_seeds():
    """[0] dtype|eb kind<<2, [1] ndim, [2:10] f64 eb, [10] block|predictor<<3|linear<<5|2axes<<6,
    [11] mode|layout<<2|threads<<4 (see codec_cpu.cpp parse_array and fuzz_api.build_case)."""
    rng = np.random.default_rng(1)
    for k in range(24):
        dtype = k % 4
        eb_kind = k % 8
        ndim = k % 6
        eb = float(10.0 ** rng.uniform(-6, 1))
        block_pred = (k % 8) | ((k // 2) % 3) << 3 | (k % 2) << 5 | ((k // 5) % 2) << 6
        head = bytes([dtype | eb_kind << 2, ndim]) + struct.pack("<d", eb) + bytes([block_pred,
                                                                                   (k % 3) | (k % 4) << 2 | (k % 4) << 4])
        dims = bytes(int(d) for d in rng.integers(1, 17, ndim))
        itemsize = (4, 8, 2, 2)[dtype]
        n = int(np.prod([d % 17 for d in dims])) if ndim else 1
        if k % 3 == 0:
            body = rng.bytes(min(n * itemsize, 512))  # any bit patterns
        else:
            v = np.cumsum(rng.standard_normal(min(n, 200)))
            v = v.astype({0: np.float32, 1: np.float64, 2: np.float16, 3: np.float32}[dtype])
            body = v.tobytes() if dtype != 3 else (v.view(np.uint32) >> 16).astype(np.uint16).tobytes()
        yield head + dims + body


def main() -> None:
    shutil.rmtree(CORPUS, ignore_errors=True)
    os.makedirs(CORPUS)
    seeds = []
    for c in streams():
        s = bytes(c)
        seeds += [s, b"F" + s]
    seeds += list(compress_seeds())
    for s in seeds:
        assert len(s) < 4096, len(s)
        with open(os.path.join(CORPUS, hashlib.sha1(s).hexdigest()[:16]), "wb") as f:
            f.write(s)
    print(f"wrote {len(seeds)} seeds to {CORPUS}")


if __name__ == "__main__":
    main()
