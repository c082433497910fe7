#!/usr/bin/env python3
"""ebzip beside SZ3, SZ2, ZFP and zstd on the real fields in ../shared/data, all in one run.

Every lossy codec gets the same absolute bound, abs_eb = rel x (max - min) of the
field, for each rel in --rel (default 1e-2 1e-3 1e-4). Per codec and field it
measures compression ratio, max |error| / abs_eb (in float64), bound violations,
PSNR, bits/value and compress/decompress throughput (original MB per second,
1 MB = 1e6 B, best of --repeats). ebzip runs at 1 and 2 threads (threads= passed
explicitly); the peers run single-threaded: SZ3 (pysz), SZ2 (the H5Z-SZ filter of
hdf5plugin, through an in-memory HDF5 file) and ZFP (zfpy). zstd (level 3) is the
lossless reference, measured once per field.

Then (unless --no-rd) a rate-distortion sweep measures ebzip, SZ3, SZ2 and ZFP at
the denser bounds --rd-rel (ratio and PSNR only, one run each) and compares, per
field, ebzip's PSNR with SZ3's at equal bits/value.

The "Acceptance" block of the report checks the bars of the "compression ratio
above SZ3" issue: GM CR of ebzip >= 1.10 x the better of SZ3 and SZ2 at each of
--rel with zero violations; ebzip (2 threads) compress/decompress MB/s >= SZ3
(1 thread); PSNR >= SZ3's at equal bits/value on >= 80 % of fields.

Writes compare_cpu.md, compare_cpu.json and rate_distortion.png to --out
(default bench/results/) and prints the summary and acceptance tables. Peers that
are not installed are skipped with a note; so is the whole run when the data is absent.

    python bench/compare_cpu.py                 # everything (timed run, then the RD sweep)
    python bench/compare_cpu.py --quick         # 3 smallest fields, 1 repeat, RD sweep on them (CI smoke)
    python bench/compare_cpu.py --fields 'mni*' --codecs ebzip,sz3 --repeats 5 --no-rd
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
import itertools
import importlib.metadata as md
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
DEFAULT_OUT = REPO / "bench" / "results"
DEFAULT_RELS = (1e-2, 1e-3, 1e-4)
# The rate-distortion sweep: denser bounds, ratio and PSNR only (bounds already in --rel are reused).
DEFAULT_RD_RELS = (3e-2, 1e-2, 5e-3, 2e-3, 1e-3, 5e-4, 2e-4, 1e-4, 5e-5)
ALL_CODECS = ("ebzip_t1", "ebzip_t2", "sz3", "sz2_h5", "zfp", "zstd")
RD_CODECS = ("ebzip", "sz3", "sz2_h5", "zfp")  # "ebzip" = the stream of ebzip_t2 (or _t1): the same for any count
# Bars of the "compression ratio above SZ3" issue.
BAR_CR = 1.10  # GM CR of ebzip / max(GM CR sz3, GM CR sz2_h5), at each bound of --rel
BAR_SPEED = 1.0  # aggregate MB/s of ebzip (2 threads) / SZ3 (1 thread), compress and decompress
BAR_RD = 0.80  # fraction of fields where ebzip's PSNR >= SZ3's at equal bits/value
CR_PEERS = ("sz3", "sz2_h5")


# --------------------------------------------------------------------------- codec adapters
class Codec(NamedTuple):
    name: str
    lossless: bool
    version: str
    compress: Callable  # (x, abs_eb) -> bytes-like stream (or an object with .nbytes, see _H5Chunk)
    decompress: Callable  # (stream, shape, dtype) -> array of that shape/dtype
    describe: Callable | None = None  # (stream) -> short note on what the codec chose (predictor), or None


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "?"


def _as_4d(shape) -> tuple:
    # SZ3, SZ2 and ZFP stop at 4 dimensions: merge leading axes (as BASELINES.md did for 5-D fields).
    # (H5Z-SZ aborts the whole process on a 5-D chunk: "doesn't support 5 dimensions".)
    return tuple(shape) if len(shape) <= 4 else (math.prod(shape[:-3]),) + tuple(shape[-3:])


def ebzip_codec(threads: int, predictor: str = "auto") -> Codec:
    import ebzip

    def describe(blob) -> str:
        # What predictor="auto" (the default) chose for this array.
        info = blob.info
        pipe = blob.pipeline  # "lorenzo", "interp" or "exact"
        if pipe == "interp" and isinstance(info.get("interp"), dict):
            pipe += "-cubic" if info["interp"].get("cubic") else "-linear"
        pred = info.get("pred_shape")
        return f"{pipe} {len(pred)}D" if pred else pipe

    # threads= is passed on every call so neither the env nor the global default decides it;
    # predictor is the default ("auto") unless --predictor says otherwise ("lorenzo": pipeline v1).
    return Codec(f"ebzip_t{threads}", False, getattr(ebzip, "__version__", "?"),
                 lambda x, eb: ebzip.compress(x, eb, mode="abs", threads=threads, predictor=predictor),
                 lambda blob, shape, dtype: ebzip.decompress(blob, threads=threads), describe)


def sz3_codec() -> Codec:
    from pysz import sz, szAlgorithm, szConfig, szErrorBoundMode

    algo_names = {getattr(szAlgorithm, k): k for k in dir(szAlgorithm) if k.isupper()}
    last_algo = {}  # id(stream) -> cmprAlgo read back by the last decompress (what INTERP_LORENZO chose)

    def compress(x, eb):
        conf = szConfig()
        conf.errorBoundMode = szErrorBoundMode.ABS
        conf.absErrorBound = eb
        conf.cmprAlgo = szAlgorithm.INTERP_LORENZO  # the default; set so the config is explicit
        conf.openmp = False  # single-threaded peer, as in BASELINES.md
        blob, _ratio = sz.compress(x.reshape(_as_4d(x.shape)), conf)
        return blob  # a uint8 view of exactly the stream bytes

    def decompress(blob, shape, dtype):
        y, conf = sz.decompress(blob, dtype, _as_4d(shape))
        last_algo.clear()
        last_algo[id(blob)] = conf.cmprAlgo
        return y.reshape(shape)

    def describe(blob):
        algo = last_algo.get(id(blob))
        return None if algo is None else algo_names.get(algo, str(algo))

    return Codec("sz3", False, _version("pysz"), compress, decompress, describe)


class _H5Chunk:
    """sz2_h5's compressed 'stream': an in-memory HDF5 file whose one dataset is one SZ-filtered chunk.

    nbytes = the chunk's stored size. The raw-data chunk cache is off (rdcc_nbytes=0), so
    writing runs the filter at once and every read decompresses the chunk again.
    """

    def __init__(self, file, dset):
        self.file, self.dset = file, dset
        self.nbytes = dset.id.get_storage_size()

    def __del__(self):
        try:
            self.file.close()
        except Exception:
            pass


def sz2_codec() -> Codec:
    import h5py
    import hdf5plugin

    if not hdf5plugin.get_config().registered_filters.get("sz"):
        raise ImportError("hdf5plugin has no SZ filter registered")
    names = itertools.count()

    def compress(x, eb):
        # As in BASELINES.md: hdf5plugin.SZ(absolute=abs_eb), the whole field one chunk; the file lives in
        # memory only (core driver, no backing store). File and dataset creation are timed with the write.
        x4 = np.ascontiguousarray(x.reshape(_as_4d(x.shape)))
        f = h5py.File(f"ebzip-bench-sz2-{os.getpid()}-{next(names)}.h5", "w", driver="core",
                      backing_store=False, rdcc_nbytes=0)
        dset = f.create_dataset("x", shape=x4.shape, dtype=x4.dtype, chunks=x4.shape,
                                **hdf5plugin.SZ(absolute=eb))
        dset[...] = x4
        return _H5Chunk(f, dset)

    def decompress(blob, shape, dtype):
        return blob.dset[()].reshape(shape)  # reading the dataset back = running the filter backwards

    hdf5 = getattr(h5py.version, "hdf5_version", "?")
    return Codec("sz2_h5", False, f"hdf5plugin {_version('hdf5plugin')} H5Z-SZ (h5py {_version('h5py')}, HDF5 {hdf5})",
                 compress, decompress)


def zfp_codec() -> Codec:
    import zfpy

    return Codec("zfp", False, _version("zfpy"),
                 lambda x, eb: zfpy.compress_numpy(x.reshape(_as_4d(x.shape)), tolerance=eb),
                 lambda blob, shape, dtype: zfpy.decompress_numpy(blob).reshape(shape))


def zstd_codec() -> Codec:
    import zstandard

    cctx, dctx = zstandard.ZstdCompressor(level=3), zstandard.ZstdDecompressor()
    return Codec("zstd", True, f"{_version('zstandard')} (libzstd {'.'.join(map(str, zstandard.ZSTD_VERSION))})",
                 lambda x, eb: cctx.compress(np.ascontiguousarray(x)),  # raw bytes, no shuffle
                 lambda blob, shape, dtype: np.frombuffer(dctx.decompress(blob), dtype=dtype).reshape(shape))


PREDICTOR = "auto"  # set from --predictor
FACTORIES = {"ebzip_t1": lambda: ebzip_codec(1, PREDICTOR), "ebzip_t2": lambda: ebzip_codec(2, PREDICTOR),
             "sz3": sz3_codec, "sz2_h5": sz2_codec, "zfp": zfp_codec, "zstd": zstd_codec}


def load_codecs(names) -> list[Codec]:
    codecs = []
    # One round trip on a small array first: loads plugins and libraries outside the timed runs
    # (the H5Z-SZ filter's first use costs tens of ms) and drops a codec that does not work here.
    warm = np.sin(np.arange(16 * 16 * 16, dtype=np.float32) / 50).reshape(16, 16, 16)
    for name in names:
        try:
            codec = FACTORIES[name]()
            codec.decompress(codec.compress(warm, 1e-3), warm.shape, warm.dtype)
            codecs.append(codec)
        except Exception as exc:  # ImportError, or a broken build: skip this peer, keep the run
            print(f"note: skipping {name}: {type(exc).__name__}: {exc}")
    return codecs


# --------------------------------------------------------------------------- data
def load_fields(root: Path, pattern: str | None, quick: bool) -> list[dict]:
    entries = [e for e in json.loads((root / "manifest.json").read_text())["entries"] if e["kind"] == "field"]
    if pattern:
        entries = [e for e in entries if pattern in e["name"] or fnmatch.fnmatch(e["name"], pattern)]
    if quick:  # the 3 smallest fields keep the CI smoke test short
        entries = sorted(entries, key=lambda e: math.prod(e["shape"]) * np.dtype(e["dtype"]).itemsize)[:3]
    return entries


def read_field(root: Path, e: dict) -> np.ndarray:
    return np.fromfile(root / e["file"], dtype=e["dtype"]).reshape(e["shape"])


# --------------------------------------------------------------------------- measurement
def timed(fn, repeats: int):
    """The last result and every wall time; callers keep the best (least disturbed) one."""
    times, out = [], None
    for _ in range(repeats):
        out = None  # free the previous result outside the timed region
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def measure(codec: Codec, x: np.ndarray, x64: np.ndarray, value_range: float, eb: float, repeats: int) -> dict:
    blob, comp_times = timed(lambda: codec.compress(x, eb), repeats)
    nbytes = blob.nbytes if isinstance(blob, _H5Chunk) else memoryview(blob).nbytes
    y, decomp_times = timed(lambda: codec.decompress(blob, x.shape, x.dtype), repeats)
    tc, td = min(comp_times), min(decomp_times)
    if y.shape != x.shape or y.dtype != x.dtype:
        raise ValueError(f"decompressed {y.dtype}{y.shape}, expected {x.dtype}{x.shape}")
    # Errors in float64 of both sides, so no rounding in the check hides a violation.
    err = np.abs(x64 - y.astype(np.float64))
    max_err, mse = float(err.max()), float(np.mean(err * err))
    psnr = math.inf if mse == 0 else 20 * math.log10(value_range) - 10 * math.log10(mse)
    mb = x.nbytes / 1e6
    chose = codec.describe(blob) if codec.describe else None
    return dict(nbytes=nbytes, ratio=x.nbytes / nbytes, bits_per_value=8 * nbytes / x.size,
                max_err=max_err, err_over_eb=max_err / eb if eb > 0 else (0.0 if max_err == 0 else math.inf),
                violation=not (max_err <= eb),  # also true for NaN errors
                psnr=psnr, comp_s=tc, decomp_s=td, comp_mbs=mb / tc, decomp_mbs=mb / td,
                comp_times=comp_times, decomp_times=decomp_times, **({"chose": chose} if chose else {}))


def _load(root: Path, e: dict):
    x = read_field(root, e)
    x64 = x.astype(np.float64)
    return x, x64, float(np.nanmax(x64)) - float(np.nanmin(x64))


def run(fields, root: Path, codecs: list[Codec], rels, repeats: int) -> list[dict]:
    records = []
    for e in fields:
        x, x64, value_range = _load(root, e)
        print(f"{e['name']:<30} {'x'.join(map(str, x.shape)):>18} {x.dtype}  {x.nbytes / 1e6:7.2f} MB", flush=True)
        for codec in codecs:
            for rel in (["lossless"] if codec.lossless else rels):
                eb = 0.0 if codec.lossless else rel * value_range
                rec = dict(field=e["name"], group=e.get("group"), shape=list(x.shape), dtype=str(x.dtype),
                           orig_bytes=x.nbytes, quantized_source=bool(e.get("quantized_source", False)),
                           codec=codec.name, rel=rel, abs_eb=eb)
                try:
                    rec.update(measure(codec, x, x64, value_range, eb, repeats))
                except Exception as exc:  # one failing codec/field must not sink the whole comparison
                    rec["error"] = f"{type(exc).__name__}: {exc}"
                    print(f"  {codec.name} rel={rel}: ERROR {rec['error']}")
                records.append(rec)
    return records


def rd_codecs(codecs: list[Codec]) -> dict[str, Codec]:
    """The codecs of the rate-distortion sweep, by series name ("ebzip" = ebzip_t2, else ebzip_t1)."""
    by = {c.name: c for c in codecs}
    out = {}
    for series in RD_CODECS:
        if series == "ebzip":
            c = by.get("ebzip_t2") or by.get("ebzip_t1")
        else:
            c = by.get(series)
        if c is not None:
            out[series] = c
    return out


def _series(codec_name: str) -> str:
    return "ebzip" if codec_name.startswith("ebzip") else codec_name


def run_rd(fields, root: Path, codecs: list[Codec], rd_rels, records) -> list[dict]:
    """Ratio/PSNR points at every bound of rd_rels (one run each; timing is not reported).

    Points the timed run already has (same codec stream, same bound) are reused, not measured again.
    """
    sweep = rd_codecs(codecs)
    names = {c.name for c in sweep.values()}
    have = {(r["field"], _series(r["codec"]), r["rel"]): r for r in records
            if "error" not in r and r["rel"] != "lossless" and r["codec"] in names}
    points = []
    for e in fields:
        x = x64 = value_range = None
        for series, codec in sweep.items():
            for rel in rd_rels:
                base = dict(field=e["name"], series=series, codec=codec.name, rel=rel)
                r = have.get((e["name"], series, rel))
                if r is None:
                    if x is None:
                        x, x64, value_range = _load(root, e)
                    try:
                        r = measure(codec, x, x64, value_range, rel * value_range, 1)
                    except Exception as exc:
                        print(f"  rd {e['name']} {codec.name} rel={rel:g}: ERROR {type(exc).__name__}: {exc}")
                        points.append(dict(base, error=f"{type(exc).__name__}: {exc}"))
                        continue
                    base["source"] = "rd"
                else:
                    base["source"] = "timed run"
                points.append(dict(base, **{k: r[k] for k in ("nbytes", "ratio", "bits_per_value", "psnr",
                                                              "err_over_eb", "violation")},
                                   **({"chose": r["chose"]} if "chose" in r else {})))
        print(f"  rd {e['name']}: {len(rd_rels)} bounds x {', '.join(sweep)}", flush=True)
    return points


def rd_gains(ours, theirs) -> list[dict]:
    """ebzip's PSNR interpolated at each peer point's bits/value, minus the peer's PSNR.

    ours: [(bits_per_value, psnr)] in the order of the bounds (loosest first), theirs: [(bits_per_value, psnr)].
    PSNR is interpolated linearly in log2(bits/value) along ebzip's measured curve, segment by segment
    between neighbouring bounds; where the curve is not monotone in bits/value (fields on a coarse value
    lattice can need *fewer* bits at a tighter bound) and several segments span the rate, the highest PSNR
    counts (ebzip reaches it at that rate). Peer points outside ebzip's measured bits/value range are not
    comparable (no extrapolation). Points with infinite PSNR (lossless) are left out of both curves.
    """
    pts = [(math.log2(b), p) for b, p in ours if b > 0 and math.isfinite(p)]
    if len(pts) < 2:
        return []
    out = []
    for b, p in sorted(theirs):
        if not (b > 0 and math.isfinite(p)):
            continue
        lx = math.log2(b)
        cands = []
        for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
            if min(x0, x1) <= lx <= max(x0, x1):
                cands.append(max(y0, y1) if x0 == x1 else y0 + (lx - x0) * (y1 - y0) / (x1 - x0))
        if cands:
            ours_p = max(cands)
            out.append(dict(bits_per_value=b, peer_psnr=p, ebzip_psnr=ours_p, gain_db=ours_p - p))
    return out


def rd_compare(points, peer: str = "sz3") -> dict:
    """Per field: ebzip vs peer at equal bits/value; a field passes if no comparable point loses."""
    fields = list(dict.fromkeys(p["field"] for p in points))
    per_field = []
    for f in fields:
        curve = {s: [(p["bits_per_value"], p["psnr"]) for p in sorted(
                     (p for p in points if p["field"] == f and p["series"] == s and "error" not in p),
                     key=lambda p: -p["rel"])] for s in ("ebzip", peer)}
        if not curve["ebzip"] or not curve[peer]:
            continue
        g = rd_gains(curve["ebzip"], curve[peer])
        gains = [x["gain_db"] for x in g]
        per_field.append(dict(field=f, comparable=len(g), peer_points=len(curve[peer]),
                              mean_gain_db=float(np.mean(gains)) if gains else math.nan,
                              min_gain_db=min(gains) if gains else math.nan,
                              passed=bool(gains) and min(gains) >= 0.0, points=g))
    n = len(per_field)
    passed = sum(r["passed"] for r in per_field)
    means = [r["mean_gain_db"] for r in per_field if r["comparable"]]
    return dict(peer=peer, fields=n, passed=passed, fraction=passed / n if n else math.nan,
                mean_gain_db=float(np.mean(means)) if means else math.nan,
                failing=[r["field"] for r in per_field if not r["passed"]],
                not_comparable=[r["field"] for r in per_field if not r["comparable"]], per_field=per_field)


# --------------------------------------------------------------------------- summary
def gmean(values) -> float:
    values = list(values)
    return math.exp(sum(map(math.log, values)) / len(values)) if values else math.nan


def summarize(records, codecs, rels) -> list[dict]:
    rows = []
    for codec in codecs:
        for rel in (["lossless"] if codec.lossless else rels):
            recs = [r for r in records if r["codec"] == codec.name and r["rel"] == rel]
            ok = [r for r in recs if "error" not in r]
            if not ok:
                continue
            native = [r["ratio"] for r in ok if not r["quantized_source"]]
            psnrs = sorted(r["psnr"] for r in ok)
            mb = sum(r["orig_bytes"] for r in ok) / 1e6
            rows.append(dict(codec=codec.name, rel=rel, fields=len(recs), errors=len(recs) - len(ok),
                             gm_cr=gmean(r["ratio"] for r in ok), gm_cr_native=gmean(native),
                             agg_cr=sum(r["orig_bytes"] for r in ok) / sum(r["nbytes"] for r in ok),
                             violations=sum(r["violation"] for r in ok),
                             max_err_over_eb=max(r["err_over_eb"] for r in ok),
                             median_psnr=float(np.median(psnrs)), min_psnr=psnrs[0],
                             comp_mbs=mb / sum(r["comp_s"] for r in ok),
                             decomp_mbs=mb / sum(r["decomp_s"] for r in ok)))
    return rows


def _ok(records, codec, rel) -> dict:
    return {r["field"]: r for r in records if r["codec"] == codec and r["rel"] == rel and "error" not in r}


def acceptance(records, codecs, rels, rd=None) -> dict:
    """The bars of the "compression ratio above SZ3" issue, from this run's measurements."""
    names = {c.name for c in codecs}
    ours = "ebzip_t2" if "ebzip_t2" in names else ("ebzip_t1" if "ebzip_t1" in names else None)
    acc = dict(ebzip=ours, bar_cr=BAR_CR, bar_speed=BAR_SPEED, bar_rd=BAR_RD, cr=[], speed=[])
    if ours is None:
        return acc
    peers = [p for p in CR_PEERS if p in names]
    for rel in rels:
        eb = _ok(records, ours, rel)
        recs = [r for r in records if r["codec"].startswith("ebzip") and r["rel"] == rel]
        row = dict(rel=rel, violations=sum(bool(r.get("violation")) for r in recs),
                   errors=sum("error" in r for r in recs))
        # GM over the fields every compared codec has (an error in one codec must not shift the others' means).
        common = set(eb)
        for p in peers:
            common &= set(_ok(records, p, rel))
        row["fields"] = len(common)
        row["gm_cr"] = {"ebzip": gmean(eb[f]["ratio"] for f in common) if common else math.nan}
        for p in peers:
            peer = _ok(records, p, rel)
            row["gm_cr"][p] = gmean(peer[f]["ratio"] for f in common) if common else math.nan
        if peers and common:
            best = max(peers, key=lambda p: row["gm_cr"][p])
            row.update(best_peer=best, ratio=row["gm_cr"]["ebzip"] / row["gm_cr"][best])
            row["passed"] = row["ratio"] >= BAR_CR and row["violations"] == 0 and row["errors"] == 0
        elif row["errors"] or row["violations"]:
            row["passed"] = False
        # ebzip_t1 and ebzip_t2 must write the same stream: count fields where the sizes differ.
        t1, t2 = _ok(records, "ebzip_t1", rel), _ok(records, "ebzip_t2", rel)
        row["t1_t2_size_mismatch"] = sum(t1[f]["nbytes"] != t2[f]["nbytes"] for f in set(t1) & set(t2))
        acc["cr"].append(row)
    if "sz3" in names:
        tot = {k: dict(mb=0.0, ec=0.0, ed=0.0, sc=0.0, sd=0.0) for k in ("all",)}
        for rel in list(rels):
            fast, sz = _ok(records, "ebzip_t2", rel), _ok(records, "sz3", rel)
            slow = _ok(records, "ebzip_t1", rel)
            common = set(fast) & set(sz)
            if not common:
                continue
            mb = sum(sz[f]["orig_bytes"] for f in common) / 1e6
            t = dict(mb=mb, ec=sum(fast[f]["comp_s"] for f in common), ed=sum(fast[f]["decomp_s"] for f in common),
                     sc=sum(sz[f]["comp_s"] for f in common), sd=sum(sz[f]["decomp_s"] for f in common))
            for k in t:
                tot["all"][k] += t[k]
            row = _speed_row(rel, t)
            if set(slow) >= common:  # informational: ebzip on 1 thread
                row["comp_ratio_t1"] = (mb / sum(slow[f]["comp_s"] for f in common)) / row["comp_sz3"]
                row["decomp_ratio_t1"] = (mb / sum(slow[f]["decomp_s"] for f in common)) / row["decomp_sz3"]
            acc["speed"].append(row)
        if acc["speed"]:
            acc["speed"].append(_speed_row("all", tot["all"]))
    if rd is not None:
        acc["rd"] = {k: v for k, v in rd.items() if k != "per_field"}
        acc["rd"]["passed_bar"] = rd["fraction"] >= BAR_RD if rd["fields"] else None
    return acc


def _speed_row(rel, t) -> dict:
    row = dict(rel=rel, mb=t["mb"], comp_ebzip_t2=t["mb"] / t["ec"], comp_sz3=t["mb"] / t["sc"],
               decomp_ebzip_t2=t["mb"] / t["ed"], decomp_sz3=t["mb"] / t["sd"])
    row["comp_ratio"] = row["comp_ebzip_t2"] / row["comp_sz3"]
    row["decomp_ratio"] = row["decomp_ebzip_t2"] / row["decomp_sz3"]
    row["passed"] = row["comp_ratio"] >= BAR_SPEED and row["decomp_ratio"] >= BAR_SPEED
    return row


# --------------------------------------------------------------------------- reports
def _f(v, fmt: str) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else ("inf" if v == math.inf else format(v, fmt))


def _rel(rel) -> str:
    return rel if isinstance(rel, str) else f"{rel:g}"


def summary_table(summary) -> list[str]:
    lines = ["| codec | rel eb | GM CR | GM CR native | agg CR | viol | max err/eb | median PSNR dB | "
             "min PSNR dB | comp MB/s | decomp MB/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        viol = f"{s['violations']}/{s['fields']}" + (f" ({s['errors']} failed)" if s["errors"] else "")
        lines.append(f"| {s['codec']} | {_rel(s['rel'])} | {_f(s['gm_cr'], '.2f')} | {_f(s['gm_cr_native'], '.2f')} | "
                     f"{_f(s['agg_cr'], '.2f')} | {viol} | {_f(s['max_err_over_eb'], '.4f')} | "
                     f"{_f(s['median_psnr'], '.1f')} | {_f(s['min_psnr'], '.1f')} | {_f(s['comp_mbs'], '.1f')} | "
                     f"{_f(s['decomp_mbs'], '.1f')} |")
    return lines


def _verdict(ok) -> str:
    return "–" if ok is None else ("PASS" if ok else "FAIL")


def acceptance_lines(acc) -> list[str]:
    """Markdown for the acceptance block (also what the script prints)."""
    lines = []
    if acc.get("cr"):
        peers = [p for p in CR_PEERS if any(p in r["gm_cr"] for r in acc["cr"])]
        lines += [f"**Compression ratio** ({acc['ebzip']}; bar: GM CR ≥ {BAR_CR:.2f} × the better of "
                  f"{' and '.join(peers) or 'the peers'} at each bound, zero violations)", "",
                  "| rel eb | fields | GM CR ebzip | " + " | ".join(f"GM CR {p}" for p in peers)
                  + " | better peer | ebzip ÷ better | ebzip violations (t1+t2 runs) | verdict |",
                  "|---|---|---|" + "---|" * len(peers) + "---|---|---|---|"]
        for r in acc["cr"]:
            viol = f"{r['violations']}" + (f" ({r['errors']} errors)" if r["errors"] else "")
            lines.append(f"| {_rel(r['rel'])} | {r['fields']} | {_f(r['gm_cr']['ebzip'], '.2f')} | "
                         + " | ".join(_f(r["gm_cr"].get(p), ".2f") for p in peers)
                         + f" | {r.get('best_peer', '–')} | {_f(r.get('ratio'), '.3f')} | {viol} | "
                         f"{_verdict(r.get('passed'))} |")
        mism = sum(r["t1_t2_size_mismatch"] for r in acc["cr"])
        if mism:
            lines += ["", f"WARNING: ebzip_t1 and ebzip_t2 streams differ in size on {mism} field/bound pairs."]
        verdicts = [r.get("passed") for r in acc["cr"]]
        lines += ["", f"Compression ratio bar: {_verdict(all(verdicts) if None not in verdicts else None)}"
                  + (" (failing at rel " + ", ".join(_rel(r['rel']) for r in acc["cr"] if r.get("passed") is False) + ")"
                     if False in verdicts else ""), ""]
    if acc.get("speed"):
        lines += [f"**Throughput** (aggregate MB/s = total MB / total seconds over the fields; bar: ebzip on 2 threads "
                  f"≥ {BAR_SPEED:g} × SZ3 on 1 thread, compress and decompress, at every bound)", "",
                  "| rel eb | MB | comp ebzip 2 thr | comp sz3 | comp ratio | decomp ebzip 2 thr | decomp sz3 | "
                  "decomp ratio | verdict | comp ratio ebzip 1 thr | decomp ratio ebzip 1 thr |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in acc["speed"]:
            lines.append(f"| {_rel(r['rel'])} | {r['mb']:.1f} | {r['comp_ebzip_t2']:.1f} | {r['comp_sz3']:.1f} | "
                         f"{r['comp_ratio']:.2f} | {r['decomp_ebzip_t2']:.1f} | {r['decomp_sz3']:.1f} | "
                         f"{r['decomp_ratio']:.2f} | {_verdict(r['passed'])} | {_f(r.get('comp_ratio_t1'), '.2f')} | "
                         f"{_f(r.get('decomp_ratio_t1'), '.2f')} |")
        per_rel = [r["passed"] for r in acc["speed"] if r["rel"] != "all"]
        lines += ["", f"Throughput bar: {_verdict(all(per_rel))}", ""]
        la, ncpu = acc.get("loadavg_before_timing"), acc.get("cpu_count") or 1
        if la and la[0] >= 0.5:
            lines += [f"WARNING: the 1-min load average was already {la[0]:.2f} on {ncpu} CPUs before the timed run: "
                      "other work competed for the cores; ebzip on 2 threads suffers most from that, so the throughput "
                      "ratios are probably understated: measure again on an idle machine.", ""]
    rd = acc.get("rd")
    if rd:
        lines += [f"**Rate-distortion** (bar: ebzip's PSNR ≥ {rd['peer']}'s at equal bits/value, at every comparable "
                  f"{rd['peer']} point, on ≥ {BAR_RD:.0%} of fields)", "",
                  f"{rd['passed']}/{rd['fields']} fields = {_f(rd['fraction'], '.0%')}; mean PSNR gain "
                  f"{_f(rd['mean_gain_db'], '+.2f')} dB. Rate-distortion bar: {_verdict(rd['passed_bar'])}"
                  + (f". Failing: {', '.join(rd['failing'])}" if rd["failing"] else "")
                  + (f". Not comparable (no {rd['peer']} point inside ebzip's bits/value range; counted as failing): "
                     f"{', '.join(rd['not_comparable'])}" if rd["not_comparable"] else "") + ".", ""]
    if acc.get("rd_violations"):
        lines += ["Bound violations in the rate-distortion sweep (fields × bounds): "
                  + ", ".join(f"{k} {v}" for k, v in acc["rd_violations"].items()) + ".", ""]
    return lines


def rd_tables(rds: dict, rd_rels) -> list[str]:
    """Per field gains vs each RD peer (sz3 decides the bar; the others are for information)."""
    peers = [p for p in rds if rds[p]["fields"]]
    if not peers:
        return []
    lines = [f"Bounds: rel ∈ {{{', '.join(_rel(r) for r in rd_rels)}}}. Gain = ebzip's PSNR, interpolated linearly in "
             "log2(bits/value) along its own curve at the peer's bits/value, minus the peer's PSNR; only peer points "
             "inside ebzip's measured bits/value range count (n = how many). A field passes when no such point has "
             "a negative gain.", "",
             "| peer | fields passing | fraction | mean gain dB |", "|---|---|---|---|"]
    for p in peers:
        r = rds[p]
        lines.append(f"| {p} | {r['passed']}/{r['fields']} | {_f(r['fraction'], '.0%')} | {_f(r['mean_gain_db'], '+.2f')} |")
    fields = list(dict.fromkeys(f["field"] for p in peers for f in rds[p]["per_field"]))
    by = {(p, f["field"]): f for p in peers for f in rds[p]["per_field"]}
    lines += ["", "| field | " + " | ".join(f"vs {p}: n / mean / min gain dB" for p in peers) + " |",
              "|---|" + "---|" * len(peers)]
    for f in fields:
        cells = []
        for p in peers:
            r = by.get((p, f))
            cells.append("–" if r is None else f"{r['comparable']} / {_f(r['mean_gain_db'], '+.2f')} / "
                         f"{_f(r['min_gain_db'], '+.2f')}" + ("" if r["passed"] else " ✗"))
        lines.append(f"| {f} | " + " | ".join(cells) + " |")
    return lines


def choice_table(records, codecs, rels) -> list[str]:
    """What ebzip's predictor="auto" and SZ3's ALGO_INTERP_LORENZO picked per field."""
    names = [n for n in ("ebzip_t2" if any(c.name == "ebzip_t2" for c in codecs) else "ebzip_t1", "sz3")
             if any(c.name == n for c in codecs)]
    by = {(r["field"], r["codec"], r["rel"]): r.get("chose") for r in records}
    if not any(by.get((r["field"], n, r["rel"])) for r in records for n in names):
        return []
    cols = [(n, rel) for n in names for rel in rels]
    lines = ["| field | " + " | ".join(f"{_series(n)} {_rel(rel)}" for n, rel in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for f in dict.fromkeys(r["field"] for r in records):
        lines.append(f"| {f} | " + " | ".join(by.get((f, n, rel)) or "–" for n, rel in cols) + " |")
    return lines


def _cell(r) -> str:
    if r is None:
        return "–"
    if "error" in r:
        return "ERROR"
    psnr = "" if r["rel"] == "lossless" else f" / {_f(r['psnr'], '.1f')}"
    return (f"{r['ratio']:.2f}{psnr} / {r['comp_mbs']:.0f} / {r['decomp_mbs']:.0f}"
            + (" !" if r["violation"] else ""))


def field_tables(records, codecs, rels) -> list[str]:
    lines = []
    fields = list(dict.fromkeys(r["field"] for r in records))
    meta = {r["field"]: r for r in records}
    by = {(r["field"], r["codec"], r["rel"]): r for r in records}
    groups = [(rel, [c.name for c in codecs if not c.lossless]) for rel in rels]
    groups.append(("lossless", [c.name for c in codecs if c.lossless]))
    for rel, names in groups:
        if not names:
            continue
        if rel == "lossless":
            title = "lossless references: CR / comp MB/s / decomp MB/s  (`!` = not bit-exact)"
        else:
            title = f"rel eb = {_rel(rel)}: CR / PSNR dB / comp MB/s / decomp MB/s  (`!` = bound violated)"
        lines += ["", f"### Per field, {title}", "",
                  "| field | shape | dtype | " + " | ".join(names) + " |", "|---|---|---|" + "---|" * len(names)]
        for f in fields:
            m = meta[f]
            cells = " | ".join(_cell(by.get((f, n, rel))) for n in names)
            lines.append(f"| {f}{' (q)' if m['quantized_source'] else ''} | {'×'.join(map(str, m['shape']))} | "
                         f"{m['dtype']} | {cells} |")
    return lines


def _load_note(env) -> str:
    la = env.get("loadavg") or {}
    parts = [f"{k.replace('_', ' ')} {' '.join(f'{v:.2f}' for v in la[k])}" for k in ("before_timing", "after_timing")
             if la.get(k)]
    return ("Load average (1/5/15 min): " + "; ".join(parts) + ".") if parts else ""


def write_markdown(path: Path, env, summary, acc, records, codecs, rels, skipped, rds=None, rd_rels=()):
    lines = ["# ebzip vs peers on CPU (bench/compare_cpu.py)", "",
             f"Generated {env['date']} on {env['machine']} ({env['cpu_model']}), {env['cpu_count']} CPUs, "
             f"Python {env['python']}, numpy {env['versions'].get('numpy')}, ebzip from `{env.get('ebzip_file')}`"
             f" (extension sha256 {(env.get('ebzip_build') or {}).get('sha256', '?')}, built "
             f"{(env.get('ebzip_build') or {}).get('mtime', '?')}; repository commit {env.get('repo_commit') or '?'}). "
             f"{_load_note(env)}",
             f"{len(set(r['field'] for r in records))} fields from `{env['data']}`, best of {env['repeats']} "
             "repeats; abs_eb = rel × (max − min) of each field, the same for every codec. "
             "MB = 1e6 B of original data; aggregate MB/s = total MB / total seconds (dominated by the large fields). "
             "Errors are measured in float64; viol = fields with max |error| > abs_eb.", "",
             "Codecs: " + "; ".join(f"{c.name} {c.version}" for c in codecs)
             + ". ebzip_tN = ebzip with threads=N and predictor=\"" + PREDICTOR + "\"; sz3 = pysz ABS, "
             "ALGO_INTERP_LORENZO, openmp off; sz2_h5 = hdf5plugin.SZ(absolute=abs_eb), whole field = 1 chunk, "
             "in-memory HDF5 file (core driver, no backing store, chunk cache off), size = the chunk's stored size, "
             "compress = create file + dataset + write, decompress = read the dataset back; "
             "zfp = zfpy fixed-accuracy tolerance=abs_eb; zstd = level 3 on raw bytes (lossless). "
             "SZ3, SZ2 and ZFP get >4-D fields with leading axes merged.", ""]
    if skipped:
        lines += [f"Skipped (not installed or failed to load): {', '.join(skipped)}.", ""]
    if acc.get("cr") or acc.get("speed") or acc.get("rd"):
        lines += ["## Acceptance (compression ratio above SZ3)", ""] + acceptance_lines(acc)
    lines += ["## Summary", "", "GM CR = geometric mean of per-field ratios; GM CR native = the same over fields "
              "whose source is not already quantised (manifest `quantized_source: false`); agg CR = total original "
              "bytes / total compressed bytes.", ""] + summary_table(summary)
    if rds:
        lines += ["", "## Rate-distortion at equal bits/value", ""] + rd_tables(rds, rd_rels)
        lines += ["", "Curves: `rate_distortion.png` (PSNR vs bits/value, log scale, one panel per field)."]
    choices = choice_table(records, codecs, rels)
    if choices:
        lines += ["", "## Predictor chosen", "", "ebzip: pipeline and the number of axes it predicts over "
                  "(predictor=\"auto\"); sz3: the algorithm ALGO_INTERP_LORENZO settled on (read back from the stream).",
                  ""] + choices
    lines += ["", "## Per field", "", "(q) = quantised source."] + field_tables(records, codecs, rels)
    path.write_text("\n".join(lines) + "\n")


PLOT_STYLE = {"ebzip": dict(color="C3", marker="o", zorder=4), "sz3": dict(color="C0", marker="s"),
              "sz2_h5": dict(color="C2", marker="^"), "zfp": dict(color="C1", marker="D")}


def plot_rate_distortion(path: Path, points) -> str | None:
    """PSNR vs bits/value per field, one panel per field, one curve per series (ebzip, sz3, sz2_h5, zfp)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed; no rate_distortion.png"
    series = [s for s in PLOT_STYLE if any(p["series"] == s for p in points)]
    series += [s for s in dict.fromkeys(p["series"] for p in points) if s not in series]
    fields = list(dict.fromkeys(p["field"] for p in points))
    if not series or not fields:
        return "nothing lossy to plot"
    ncol = min(4, len(fields))
    nrow = math.ceil(len(fields) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.4 * ncol, 2.8 * nrow), squeeze=False)
    for ax, f in zip(axes.flat, fields):
        for sname in series:
            # Joined in bound order (loosest first): on a coarse value lattice the curve can turn back.
            pts = [(p["bits_per_value"], p["psnr"]) for p in sorted(
                (p for p in points if p["field"] == f and p["series"] == sname and "error" not in p
                 and math.isfinite(p["psnr"])), key=lambda p: -p["rel"])]
            if pts:
                ax.plot(*zip(*pts), ms=3, lw=1, label=sname, **PLOT_STYLE.get(sname, {}))
        ax.set_xscale("log", base=2)
        ax.set_title(f, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3, which="both")
        ax.set_xlabel("bits/value", fontsize=7)
        ax.set_ylabel("PSNR dB", fontsize=7)
    for ax in axes.flat[len(fields):]:
        ax.axis("off")
    handles = {}
    for ax in axes.flat[:len(fields)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(list(handles.values()), list(handles), loc="upper center", ncol=len(handles), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.8 * nrow)))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def environment(args, data: Path) -> dict:
    cpu_model = platform.processor() or "?"
    try:
        cpu_model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
        dirty = bool(subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        if commit and dirty:
            commit += " + uncommitted changes"
    except (OSError, subprocess.SubprocessError):
        commit = None
    try:
        import h5py

        hdf5 = h5py.version.hdf5_version
    except Exception:
        hdf5 = None
    ebzip_file = ebzip_build = None
    try:
        import hashlib

        import ebzip

        ebzip_file = ebzip.__file__
        core = Path(ebzip._core.__file__)  # which build of the extension was measured
        ebzip_build = dict(path=str(core), sha256=hashlib.sha256(core.read_bytes()).hexdigest()[:16],
                           mtime=datetime.datetime.fromtimestamp(core.stat().st_mtime).astimezone()
                           .isoformat(timespec="seconds"))
    except Exception:
        pass
    return dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                machine=platform.machine(), platform=platform.platform(), cpu_model=cpu_model,
                cpu_count=os.cpu_count(),
                cpu_affinity=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                python=platform.python_version(), repo_commit=commit, ebzip_file=ebzip_file,
                ebzip_build=ebzip_build,
                versions=dict({d: _version(d) for d in ("numpy", "ebzip", "pysz", "zfpy", "hdf5plugin", "h5py",
                                                        "zstandard", "matplotlib")}, hdf5=hdf5),
                env={k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "EBZIP_NUM_THREADS")},
                data=str(data), repeats=args.repeats, rels=args.rel, rd_rels=args.rd_rel if args.rd else None,
                argv=sys.argv[1:], loadavg={})


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def _jsonable(obj):
    # Strict JSON has no inf/nan (PSNR of a lossless codec is inf): write them as strings.
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("EBZIP_DATA") or DEFAULT_DATA),
                   help=f"data directory with manifest.json (env EBZIP_DATA; default {DEFAULT_DATA})")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory (default bench/results/)")
    p.add_argument("--rel", type=float, nargs="+", default=list(DEFAULT_RELS),
                   help="value-range-relative bounds (default 1e-2 1e-3 1e-4)")
    p.add_argument("--repeats", type=int, default=3, help="timing repeats, best kept (default 3)")
    p.add_argument("--fields", metavar="PATTERN", help="only fields whose name contains PATTERN or matches it as a glob")
    p.add_argument("--codecs", default=",".join(ALL_CODECS),
                   help=f"comma-separated subset of {','.join(ALL_CODECS)} ('ebzip' = both ebzip entries)")
    p.add_argument("--quick", action="store_true", help="3 smallest fields, 1 repeat (CI smoke test)")
    p.add_argument("--predictor", default="auto", choices=["auto", "lorenzo", "interp"],
                   help="ebzip's predictor (default auto; lorenzo = the fast pipeline v1)")
    p.add_argument("--rd", action=argparse.BooleanOptionalAction, default=True,
                   help="after the timed run, the rate-distortion sweep over --rd-rel (default on; --no-rd skips it)")
    p.add_argument("--rd-rel", type=float, nargs="+", default=list(DEFAULT_RD_RELS),
                   help="bounds of the rate-distortion sweep (default " + " ".join(f"{r:g}" for r in DEFAULT_RD_RELS)
                   + ")")
    args = p.parse_args(argv)
    names = []
    for n in (s.strip() for s in args.codecs.split(",") if s.strip()):
        expanded = ["ebzip_t1", "ebzip_t2"] if n == "ebzip" else [n]
        for m in expanded:
            if m not in FACTORIES:
                p.error(f"unknown codec {m!r}; choose from {', '.join(ALL_CODECS)}")
            names.append(m)
    args.codecs = list(dict.fromkeys(names))
    if args.quick:
        args.repeats = 1
    if args.repeats < 1:
        p.error("--repeats must be >= 1")
    return args


def main(argv=None) -> int:
    global PREDICTOR
    args = parse_args(argv)
    PREDICTOR = args.predictor
    data = args.data.resolve()
    if not (data / "manifest.json").is_file():
        print(f"skipping: no data at {data} (manifest.json not found); pass --data DIR or set EBZIP_DATA")
        return 0
    fields = load_fields(data, args.fields, args.quick)
    if not fields:
        print(f"no field matches {args.fields!r}")
        return 0
    codecs = load_codecs(args.codecs)
    skipped = [n for n in args.codecs if n not in {c.name for c in codecs}]
    if not codecs:
        print("no codec available; nothing to measure")
        return 0

    env = environment(args, data)
    print(f"{len(fields)} fields, codecs: {', '.join(f'{c.name} {c.version}' for c in codecs)}; "
          f"best of {args.repeats}")
    env["loadavg"]["before_timing"] = _loadavg()
    t0 = time.perf_counter()
    records = run(fields, data, codecs, args.rel, args.repeats)
    env["timed_run_s"] = time.perf_counter() - t0
    env["loadavg"]["after_timing"] = _loadavg()
    summary = summarize(records, codecs, args.rel)

    points, rds = [], {}
    if args.rd and rd_codecs(codecs):
        print(f"rate-distortion sweep: rel {' '.join(f'{r:g}' for r in args.rd_rel)}", flush=True)
        t0 = time.perf_counter()
        points = run_rd(fields, data, codecs, args.rd_rel, records)
        env["rd_run_s"] = time.perf_counter() - t0
        if any(p["series"] == "ebzip" for p in points):
            rds = {peer: rd_compare(points, peer) for peer in ("sz3", "sz2_h5", "zfp")
                   if any(p["series"] == peer for p in points)}
    else:  # plot what the timed run has
        points = [dict(field=r["field"], series=_series(r["codec"]), codec=r["codec"], rel=r["rel"],
                       **{k: r[k] for k in ("bits_per_value", "psnr", "ratio")})
                  for r in records if "error" not in r and r["rel"] != "lossless"
                  and r["codec"] != ("ebzip_t2" if any(c.name == "ebzip_t1" for c in codecs) else None)]
    acc = acceptance(records, codecs, args.rel, rds.get("sz3"))
    acc.update(loadavg_before_timing=env["loadavg"]["before_timing"], cpu_count=env["cpu_count"])
    if points and args.rd:
        acc["rd_violations"] = {s: sum(bool(p.get("violation")) for p in points if p["series"] == s)
                                for s in dict.fromkeys(p["series"] for p in points)}

    args.out.mkdir(parents=True, exist_ok=True)
    write_markdown(args.out / "compare_cpu.md", env, summary, acc, records, codecs, args.rel, skipped, rds,
                   args.rd_rel)
    (args.out / "compare_cpu.json").write_text(json.dumps(_jsonable(
        dict(environment=env, codecs={c.name: dict(version=c.version, lossless=c.lossless) for c in codecs},
             skipped=skipped, summary=summary, acceptance=acc, rate_distortion=rds, records=records,
             rd_points=points if args.rd else [])), indent=1) + "\n")
    note = plot_rate_distortion(args.out / "rate_distortion.png", points)

    print()
    print("\n".join(summary_table(summary)))
    print()
    print("\n".join(acceptance_lines(acc)))
    if note:
        print(f"note: {note}")
    print(f"\nwrote {args.out / 'compare_cpu.md'}, compare_cpu.json" + ("" if note else ", rate_distortion.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
