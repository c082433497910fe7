#!/usr/bin/env python3
"""GPU benchmark harness: ebzip's CUDA driver beside GPU peers and the CPU backend.

    python bench/gpu.py                      # shared fields + synthetic 256 MB, 1 GB, 4 GB
    python bench/gpu.py --sizes-mb 256,1024  # choose the synthetic sizes
    python bench/gpu.py --smoke              # seconds: 1-4 MB, used by the CI smoke test

Rows (each skipped, with the reason printed and kept in the JSON, where it cannot run):

- ``ebzip-cuda``: ebzip.compress / decompress on a torch CUDA tensor, timed with
  CUDA events on the current stream (GB/s of the uncompressed size); memory
  high-water: torch's peak for the input/output tensors plus the device
  driver's own stream-ordered pool high-water (``_cuda.pool_high_water``).
  Compression ends with the stream in host memory (its zstd stage runs on the
  host, over compressed bytes), so the time includes that.
- ``nvcomp-<algo>``: nvCOMP's Python API (``pip install nvidia-nvcomp-cu13``),
  lossless, on the same device tensor.
- ``cuszp``: cuSZp's Python binding if one is importable.
- ``ebzip-cpu``: the CPU backend on the same data in host memory (wall clock,
  ``threads`` CPU threads); memory: growth of the process's peak RSS.
- ``ebzip-shared-path``: the CUDA driver's own source run on the CPU through
  Thrust's OpenMP device system (what CI tests); a correctness path, not a
  fast one.

Every row checks its result: ebzip rows the bound on every finite element and
stream identity with the CPU backend (one format); nvCOMP rows bit-exact
round trips. Writes a table and ``bench/results/gpu_<host>.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import resource
import socket
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EBZIP_DATA") or REPO.parent / "shared" / "data")

import ebzip  # noqa: E402
from ebzip import _device  # noqa: E402


# ---------------------------------------------------------------- data

def synthetic(nbytes: int, seed: int = 0) -> np.ndarray:
    """A smooth 3-D float32 field with mild noise, about nbytes large (built in slabs: no float64 copy)."""
    n = max(nbytes // 4, 8)
    side = max(2, int(round((n / 64) ** 0.5)))
    depth = max(1, n // (side * side))
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 6, side, dtype=np.float32)
    base = (np.sin(y)[:, None] * np.cos(1.3 * y)[None, :]).astype(np.float32)
    out = np.empty((depth, side, side), np.float32)
    for k in range(depth):
        out[k] = base * np.float32(1 + 0.01 * k) + np.float32(0.01) * rng.standard_normal((side, side), np.float32)
    return out


def shared_fields(limit: int | None) -> list[tuple[str, np.ndarray]]:
    manifest = DATA / "manifest.json"
    if not manifest.is_file():
        return []
    entries = [e for e in json.loads(manifest.read_text())["entries"] if e.get("kind") == "field"
               and e.get("dtype") == "float32"]
    fields = []
    for e in entries[:limit]:
        x = np.fromfile(DATA / e["file"], dtype="<f4").reshape(e["shape"])
        fields.append((e["name"], x))
    return fields


# ---------------------------------------------------------------- timing helpers

def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def wall_timed(fn, *args, **kwargs):
    """(seconds, result) of one call, by the host clock."""
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - t0, result


def best_of(repeat: int, fn):
    best, result = math.inf, None
    for _ in range(repeat):
        t, result = fn()
        best = min(best, t)
    return best, result


def check_bound(x: np.ndarray, y: np.ndarray, eb: float) -> float:
    xd = x.astype(np.float64, copy=False)
    yd = np.asarray(y).astype(np.float64, copy=False)
    fin = np.isfinite(xd)
    return float(np.max(np.abs(xd[fin] - yd[fin]), initial=0.0)) / eb


# ---------------------------------------------------------------- rows

def row_ebzip_cpu(x, eb, args):
    before = peak_rss_bytes()
    tc, c = best_of(args.repeat, lambda: wall_timed(ebzip.compress, x, eb, predictor=args.predictor,
                                                    threads=args.threads))
    td, y = best_of(args.repeat, lambda: wall_timed(ebzip.decompress, c, threads=args.threads))
    return {"ratio": c.ratio, "comp_s": tc, "decomp_s": td, "max_err_over_eb": check_bound(x, y, eb),
            "mem_highwater_bytes": max(0, peak_rss_bytes() - before), "mem_note": "peak RSS growth",
            "stream": bytes(c)}


def row_shared_path(x, eb, args):
    tc, s = best_of(args.repeat, lambda: wall_timed(_device.shared_path_compress, x, eb, threads=args.threads,
                                                    predictor=args.predictor))
    td, y = best_of(args.repeat, lambda: wall_timed(_device.shared_path_decompress, s))
    return {"ratio": x.nbytes / len(s), "comp_s": tc, "decomp_s": td, "max_err_over_eb": check_bound(x, y, eb),
            "stream": s}


def cuda_timer(torch):
    def timed(fn):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        result = fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3, result
    return timed


def row_ebzip_cuda(x, eb, args):
    import torch

    timed = cuda_timer(torch)
    xg = torch.from_numpy(x).cuda()
    torch.cuda.reset_peak_memory_stats()
    _device._cuda.pool_high_water(True)
    tc, c = best_of(args.repeat, lambda: timed(lambda: ebzip.compress(xg, eb, predictor=args.predictor)))
    td, y = best_of(args.repeat, lambda: timed(lambda: ebzip.decompress(c)))
    assert y.is_cuda, "decompress left the device"
    high = torch.cuda.max_memory_allocated() + _device._cuda.pool_high_water(False)
    return {"ratio": c.ratio, "comp_s": tc, "decomp_s": td, "max_err_over_eb": check_bound(x, y.cpu().numpy(), eb),
            "mem_highwater_bytes": high, "mem_note": "torch peak + ebzip device pool high-water",
            "stream": bytes(c)}


def nvcomp_rows(x, args):
    from nvidia import nvcomp
    import torch

    timed = cuda_timer(torch)
    xg = torch.from_numpy(x).cuda()
    rows = {}
    for algo in args.nvcomp_algos.split(","):
        codec = nvcomp.Codec(algorithm=algo)
        arr = nvcomp.as_array(xg.view(torch.uint8))
        torch.cuda.reset_peak_memory_stats()
        tc, enc = best_of(args.repeat, lambda: timed(lambda: codec.encode(arr)))
        td, dec = best_of(args.repeat, lambda: timed(lambda: codec.decode(enc)))
        back = torch.as_tensor(dec, device="cuda").view(torch.uint8)
        exact = bool(torch.equal(back.flatten(), xg.view(torch.uint8).flatten()))
        rows[f"nvcomp-{algo}"] = {"ratio": x.nbytes / enc.buffer_size, "comp_s": tc, "decomp_s": td,
                                  "lossless_exact": exact, "mem_highwater_bytes": torch.cuda.max_memory_allocated(),
                                  "mem_note": "torch peak only (nvCOMP allocates its own)"}
    return rows


def row_cuszp(x, eb, args):  # pragma: no cover - needs a GPU and a cuSZp build
    import cuSZp  # noqa: F401

    raise NotImplementedError("a cuSZp binding is importable, but its API is not wired here yet")


# ---------------------------------------------------------------- main

def environment() -> dict:
    from ebzip.info import backends

    env = {"host": socket.gethostname(), "python": platform.python_version(), "cpus": os.cpu_count(),
           "ebzip": ebzip.__version__, "backends": backends()}
    try:
        import torch

        env["torch"] = torch.__version__
        env["torch_cuda"] = torch.version.cuda
        env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        env["torch"] = None
    return env


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-mb", default="256,1024,4096", help="synthetic sizes in MB (comma-separated)")
    ap.add_argument("--rel", type=float, default=1e-3, help="bound as a fraction of each array's value range")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--predictor", default="lorenzo", choices=["lorenzo", "interp"],
                    help="ebzip's predictor in every ebzip row (the device driver runs these two)")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--fields", type=int, default=None, help="at most this many shared fields (default all)")
    ap.add_argument("--cpu-max-mb", type=float, default=256,
                    help="CPU rows only up to this size (4 GB on 2 cores takes minutes per row)")
    ap.add_argument("--shared-path-max-mb", type=float, default=64)
    ap.add_argument("--nvcomp-algos", default="LZ4,Cascaded,Bitcomp,zstd")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat, two fields: a few seconds")
    ap.add_argument("--out", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)
    if args.smoke:
        args.sizes_mb, args.repeat, args.fields = "1,4", 1, 2

    try:
        import torch

        gpu = torch.cuda.is_available()
    except ImportError:
        gpu = False
    skipped: list[str] = []
    if not gpu:
        skipped.append("ebzip-cuda, nvcomp, cuszp: no CUDA device (torch.cuda.is_available() is False)")
    elif not _device.cuda_runnable():
        skipped.append("ebzip-cuda: ebzip._cuda not built or cannot run here")
    have_nvcomp = importlib.util.find_spec("nvidia") is not None and importlib.util.find_spec("nvidia.nvcomp") is not None
    if gpu and not have_nvcomp:
        skipped.append("nvcomp: nvidia-nvcomp-cu13 not installed")
    if gpu and importlib.util.find_spec("cuSZp") is None:
        skipped.append("cuszp: no cuSZp Python binding installed")
    if _device._shared_path is None:
        skipped.append("ebzip-shared-path: ebzip._shared_path not built")

    inputs = [(name, x) for name, x in shared_fields(args.fields)]
    if not inputs:
        skipped.append(f"shared fields: no data at {DATA}")
    gpu_rows = gpu and (_device.cuda_runnable() or have_nvcomp)
    for mb in [float(s) for s in args.sizes_mb.split(",") if s]:
        name = f"synthetic_{mb:g}MB"
        cpu_rows = mb <= args.cpu_max_mb or (_device._shared_path is not None and mb <= args.shared_path_max_mb)
        if gpu_rows or cpu_rows:
            inputs.append((name, mb))
        else:
            skipped.append(f"{name}: every row skipped (no GPU here; > --cpu-max-mb {args.cpu_max_mb:g})")

    records = []
    for name, x in inputs:
        if not isinstance(x, np.ndarray):
            x = synthetic(int(x * 2**20))
        lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
        eb = args.rel * (hi - lo) if hi > lo else args.rel
        mb = x.nbytes / 2**20
        plan = []
        if mb <= args.cpu_max_mb:
            plan.append(("ebzip-cpu", lambda: row_ebzip_cpu(x, eb, args)))
        else:
            skipped.append(f"ebzip-cpu on {name}: {mb:.0f} MB > --cpu-max-mb {args.cpu_max_mb:g}")
        if _device._shared_path is not None:
            if mb <= args.shared_path_max_mb:
                plan.append(("ebzip-shared-path", lambda: row_shared_path(x, eb, args)))
            else:
                skipped.append(f"ebzip-shared-path on {name}: {mb:.0f} MB > --shared-path-max-mb")
        if gpu and _device.cuda_runnable():
            plan.append(("ebzip-cuda", lambda: row_ebzip_cuda(x, eb, args)))
        if gpu and have_nvcomp:
            plan.append(("nvcomp", lambda: nvcomp_rows(x, args)))
        if gpu and importlib.util.find_spec("cuSZp") is not None:
            plan.append(("cuszp", lambda: row_cuszp(x, eb, args)))
        streams = {}
        for codec, run in plan:
            try:
                out = run()
            except Exception as e:  # a peer failing must not stop the others: record it
                records.append({"input": name, "codec": codec, "error": f"{type(e).__name__}: {e}"})
                continue
            for c, r in (out.items() if codec == "nvcomp" else [(codec, out)]):
                if "stream" in r:
                    streams[c] = r.pop("stream")
                r.update(input=name, codec=c, mb=mb, eb_abs=eb,
                         comp_gbps=x.nbytes / r["comp_s"] / 1e9, decomp_gbps=x.nbytes / r["decomp_s"] / 1e9)
                records.append(r)
        ref = streams.get("ebzip-cpu")
        for r in records:
            if r.get("input") == name and r["codec"] in ("ebzip-cuda", "ebzip-shared-path") and ref is not None:
                r["same_bytes_as_cpu"] = streams[r["codec"]] == ref

    print(f"{'input':<26} {'codec':<20} {'MB':>8} {'ratio':>8} {'comp GB/s':>10} {'decomp GB/s':>12} "
          f"{'err/eb':>7} {'mem MB':>8}  same bytes")
    for r in records:
        if "error" in r:
            print(f"{r['input']:<26} {r['codec']:<20} ERROR {r['error']}")
            continue
        mem = r.get("mem_highwater_bytes")
        same = r.get("same_bytes_as_cpu", "")
        err = r.get("max_err_over_eb", float("nan"))
        print(f"{r['input']:<26} {r['codec']:<20} {r['mb']:8.1f} {r['ratio']:8.2f} {r['comp_gbps']:10.3f} "
              f"{r['decomp_gbps']:12.3f} {err:7.3f} {mem / 2**20 if mem is not None and mem >= 0 else float('nan'):8.1f}  {same}")
    for s in skipped:
        print(f"skipped: {s}")

    report = {"environment": environment(), "args": vars(args), "records": records, "skipped": skipped}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"gpu_{socket.gethostname()}{'_smoke' if args.smoke else ''}.json"
    path.write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {path}")
    bad = [r for r in records if r.get("max_err_over_eb", 0) > 1 or r.get("same_bytes_as_cpu") is False
           or r.get("lossless_exact") is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
