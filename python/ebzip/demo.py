"""The main job: compress a simulated physical field at several bounds."""

from __future__ import annotations

import math
import time

import numpy as np

from . import api
from .simulate import gray_scott


def _best_time(fn, repeats: int = 3) -> tuple[float, object]:
    best, result = math.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def run_demo(size: int = 256, snapshots: int = 32, threads: int | None = None) -> list[dict]:
    t0 = time.perf_counter()
    field = gray_scott(size=size, snapshots=snapshots)
    sim_s = time.perf_counter() - t0
    mb = field.nbytes / 1e6
    nthreads = threads or api.get_num_threads()
    print(f"Gray-Scott reaction-diffusion, species V: {field.shape} float32 ({mb:.1f} MB), "
          f"simulated in {sim_s:.1f} s; {nthreads} thread(s)")
    value_range = float(field.max() - field.min())
    header = f"{'rel eb':>8} {'abs eb':>10} {'ratio':>8} {'max err/eb':>11} {'PSNR dB':>8} {'comp MB/s':>10} {'decomp MB/s':>12}"
    print(header)
    print("-" * len(header))
    rows = []
    for rel in (1e-2, 1e-3, 1e-4):
        ct, c = _best_time(lambda: api.compress(field, rel, mode="rel", threads=nthreads))
        dt, y = _best_time(lambda: api.decompress(c, threads=nthreads))
        err = np.abs(field.astype(np.float64) - y.astype(np.float64))
        max_err = float(err.max())
        mse = float(np.mean(err**2))
        psnr = math.inf if mse == 0 else 20 * math.log10(value_range) - 10 * math.log10(mse)
        err_over_eb = max_err / c.eb_abs if c.eb_abs else 0.0  # (a constant field is stored exactly)
        row = dict(rel=rel, eb_abs=c.eb_abs, ratio=c.ratio, err_over_eb=err_over_eb, psnr=psnr,
                   comp_mbs=mb / ct, decomp_mbs=mb / dt)
        rows.append(row)
        print(f"{rel:>8.0e} {c.eb_abs:>10.3e} {c.ratio:>8.2f} {row['err_over_eb']:>11.4f} {psnr:>8.2f} "
              f"{row['comp_mbs']:>10.0f} {row['decomp_mbs']:>12.0f}")
        if max_err > c.eb_abs:
            raise AssertionError(f"error bound violated at rel {rel}: {max_err} > {c.eb_abs}")
    print("Every element is within its bound (max err/eb <= 1).")
    return rows
