"""Arrays beyond 2**31 elements and streams beyond 4 GiB (64-bit sizes and offsets).

Slow and memory-hungry (about 13 GiB), so skipped unless asked for:

    python -m pytest -m slow tests/test_scale.py -s      # or EBZIP_SLOW=1

Each test needs the memory it names free (MemAvailable), else it skips.
Values are checked in C++ (ebzip._core.error_stats) and in slices, so the
checks themselves add no full-size temporaries.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

import ebzip
from ebzip import _core

N_BIG = 2**31 + 1000  # float16: 4 GiB + 2000 bytes
GiB = 2**30
F16_CODE = 2  # dtype code of float16 in the stream header


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def _need(nbytes: int) -> None:
    if _mem_available() < nbytes:
        pytest.skip(f"needs {nbytes / GiB:.1f} GiB free, {_mem_available() / GiB:.1f} GiB available")


def _fill_pattern(x: np.ndarray, period: np.ndarray) -> None:
    """Fill x with repeats of `period` (a cheap, non-trivial >2**31-element array)."""
    p = period.size
    for start in range(0, x.size, p):
        end = min(x.size, start + p)
        x[start:end] = period[: end - start]


def _slices(n: int, step: int = 1 << 27):
    for start in range(0, n, step):
        yield slice(start, min(n, start + step))


@pytest.mark.slow
def test_more_than_2_31_elements_lossy():
    """2**31 + 1000 float16 elements, lossy (predictor "auto"): shape, bound and the last elements."""
    _need(14 * GiB)
    rng = np.random.default_rng(0)
    # a prime period; values in [0, 100): above 32 the float16 step (>= 1/32) exceeds 2*eb, so many
    # values take the exact-value path (u32 indices within chunks, at scale)
    period = (np.cumsum(rng.standard_normal(1_000_003)) * 0.05 % 100).astype(np.float16)
    period[::4099] = np.nan
    x = np.empty(N_BIG, np.float16)
    _fill_pattern(x, period)
    x[-1], x[-2], x[2**31] = np.float16(-7.25), np.inf, np.float16(1234.0)

    t0 = time.perf_counter()
    c = ebzip.compress(x, 1e-2, threads=2)
    t1 = time.perf_counter()
    assert c.shape == (N_BIG,)
    assert c.info["shape"] == (N_BIG,)
    y = ebzip.decompress(c, threads=2)
    t2 = time.perf_counter()
    max_err, _, n_finite, nonfinite_mismatch = _core.error_stats(x, y, F16_CODE, 1.0, 2)
    t3 = time.perf_counter()
    print(f"\n{N_BIG} float16 elements ({x.nbytes / GiB:.3f} GiB) -> {c.nbytes / 2**20:.1f} MiB "
          f"(ratio {c.ratio:.2f}); compress {t1 - t0:.1f} s, decompress {t2 - t1:.1f} s, check {t3 - t2:.1f} s; "
          f"max err {max_err:.6g} <= {c.eb_abs}, {n_finite} finite, {nonfinite_mismatch} NaN/Inf mismatches")
    assert max_err <= c.eb_abs
    assert nonfinite_mismatch == 0
    n_nan = sum(int(np.isnan(x[s]).sum()) for s in _slices(N_BIG))
    assert n_finite == N_BIG - n_nan - 1  # and the one inf
    # the elements past 2**31: within the bound (lossy: not necessarily equal), the inf bit-exact
    assert abs(float(y[-1]) + 7.25) <= c.eb_abs and np.isposinf(y[-2]) and abs(float(y[2**31]) - 1234.0) <= c.eb_abs


@pytest.mark.slow
def test_stream_larger_than_4_gib():
    """eb=0 on 4 GiB of random float16 bits: a > 4 GiB stream (64-bit lengths and offsets), bit-exact back."""
    _need(14 * GiB)
    rng = np.random.default_rng(1)
    x = np.empty(N_BIG, np.uint16)
    for s in _slices(N_BIG):
        x[s] = rng.integers(0, 2**16, s.stop - s.start, dtype=np.uint16)
    x = x.view(np.float16)

    t0 = time.perf_counter()
    c = ebzip.compress(x, 0.0, threads=2)
    t1 = time.perf_counter()
    assert c.pipeline == "exact"
    assert c.nbytes > 2**32, c.nbytes
    assert c.shape == (N_BIG,)
    y = ebzip.decompress(c, threads=2)
    t2 = time.perf_counter()
    xb, yb = x.view(np.uint16), y.view(np.uint16)
    for s in _slices(N_BIG):
        assert np.array_equal(xb[s], yb[s]), f"differs in {s}"
    print(f"\n{N_BIG} float16 elements of random bits, eb=0 -> stream of {c.nbytes} bytes "
          f"({c.nbytes / GiB:.3f} GiB > 4 GiB); compress {t1 - t0:.1f} s, decompress {t2 - t1:.1f} s; bit-exact")
    # a damaged byte beyond the 4 GiB mark is found by its chunk's CRC
    del y, x, xb, yb
    damaged = bytearray(c)
    damaged[2**32 + 12345] ^= 0x10
    with pytest.raises(ebzip.StreamError, match="checksum"):
        ebzip.decompress(damaged, threads=2)
