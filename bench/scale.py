"""Compress a ~8.6 GB float32 array (more than 2**31 elements) and report peak memory.

    python bench/scale.py                       # (2049, 1024, 1024) float32 = 8.59 GB, rel 1e-4
    python bench/scale.py --shape 512 1024 1024 --eb 1e-3 --json out.json

The goal (issue 9): compression needs at most 1.5x the input size beyond the
input itself. Peak memory is read from the kernel's high-water mark of this
process (VmHWM in /proc/self/status), reset before each step by writing 5 to
/proc/self/clear_refs, so every number below is the peak *during* that step
minus the resident size just before it. The data is a smooth 3-D field plus
noise (a stand-in for simulation output), built slab by slab so that
building it needs no full-size temporaries.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

import numpy as np

import ebzip
from ebzip import _core

GB = 1e9


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Peak:
    """Peak resident memory during a block, beyond what was resident at its start."""

    def __enter__(self):
        self.ok = _reset_peak()
        self.before = _status("VmRSS")
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.peak = _status("VmHWM")
        self.extra = self.peak - self.before
        return False


def make_field(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    nz, ny, nx = shape
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(0, 6 * math.pi, ny, dtype=np.float32),
                         np.linspace(0, 4 * math.pi, nx, dtype=np.float32), indexing="ij")
    base = (np.sin(yy) * np.cos(xx) + 0.3 * np.sin(3.1 * xx + yy)).astype(np.float32)
    noise = (rng.standard_normal((ny, nx)) * 1e-3).astype(np.float32)
    x = np.empty(shape, np.float32)
    for k in range(nz):
        np.multiply(base, np.float32(math.cos(0.002 * k)), out=x[k])
        x[k] += np.roll(noise, k, axis=1)
        x[k] += np.float32(0.001 * k)
    return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", type=int, nargs=3, default=[2049, 1024, 1024])
    ap.add_argument("--eb", type=float, default=1e-4)
    ap.add_argument("--mode", default="rel")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    shape = tuple(args.shape)

    with Peak() as gen:
        x = make_field(shape)
    n = x.size
    print(f"input: float32 {shape} = {n} elements ({'> 2**31' if n > 2**31 else '<= 2**31'}), "
          f"{x.nbytes / GB:.2f} GB, built in {gen.seconds:.1f} s; {platform.node()}, {os.cpu_count()} CPUs, "
          f"{args.threads} threads")

    with Peak() as comp:
        c = ebzip.compress(x, args.eb, args.mode, threads=args.threads)
    print(f"compress   {args.mode} {args.eb:g} (abs {c.eb_abs:.3g}): {c.nbytes / GB:.3f} GB, ratio {c.ratio:.2f}, "
          f"{comp.seconds:.1f} s ({x.nbytes / GB / comp.seconds:.2f} GB/s); peak memory beyond the input "
          f"{comp.extra / GB:.2f} GB = {comp.extra / x.nbytes:.2f}x the input (goal <= 1.5x)")

    with Peak() as dec:
        y = ebzip.decompress(c, threads=args.threads)
    print(f"decompress: {dec.seconds:.1f} s ({x.nbytes / GB / dec.seconds:.2f} GB/s); peak memory beyond input + "
          f"stream {dec.extra / GB:.2f} GB = output {y.nbytes / GB:.2f} GB + {(dec.extra - y.nbytes) / GB:.3f} GB")

    t0 = time.perf_counter()
    max_err, _, n_finite, bad_nonfinite = _core.error_stats(x, y, 0, 1.0, args.threads)
    ok = max_err <= c.eb_abs and bad_nonfinite == 0 and n_finite == n
    print(f"check: max |err| {max_err:.4g} <= eb_abs {c.eb_abs:.4g}: {'ok' if ok else 'FAIL'} "
          f"({time.perf_counter() - t0:.1f} s)")
    res = {"shape": shape, "elements": n, "input_bytes": x.nbytes, "stream_bytes": c.nbytes, "ratio": c.ratio,
           "eb": args.eb, "mode": args.mode, "eb_abs": c.eb_abs, "threads": args.threads,
           "compress_s": comp.seconds, "compress_peak_extra_bytes": comp.extra,
           "compress_peak_extra_over_input": comp.extra / x.nbytes,
           "decompress_s": dec.seconds, "decompress_peak_extra_bytes": dec.extra, "max_abs_err": max_err,
           "ok": bool(ok), "peak_reset_supported": comp.ok}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
