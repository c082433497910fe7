#!/usr/bin/env python3
"""ebzip beside SZ3, ZFP and zstd on the real fields in ../shared/data, all in one run.

Every lossy codec gets the same absolute bound, abs_eb = rel x (max - min) of the
field, for each rel in --rel (default 1e-2 1e-3 1e-4). Per codec and field it
measures compression ratio, max |error| / abs_eb (in float64), bound violations,
PSNR, bits/value and compress/decompress throughput (original MB per second,
1 MB = 1e6 B, best of --repeats). ebzip runs at 1 and 2 threads (threads= passed
explicitly); the peers run single-threaded. zstd (level 3) is the lossless
reference, measured once per field.

Writes compare_cpu.md, compare_cpu.json and rate_distortion.png to --out
(default bench/results/) and prints the summary table. Peers that are not
installed are skipped with a note; so is the whole run when the data is absent.

    python bench/compare_cpu.py                 # everything
    python bench/compare_cpu.py --quick         # 3 smallest fields, 1 repeat (CI smoke)
    python bench/compare_cpu.py --fields 'mni*' --codecs ebzip,sz3 --repeats 5
"""

from __future__ import annotations

import argparse
import datetime
import fnmatch
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
ALL_CODECS = ("ebzip_t1", "ebzip_t2", "sz3", "zfp", "zstd")


# --------------------------------------------------------------------------- codec adapters
class Codec(NamedTuple):
    name: str
    lossless: bool
    version: str
    compress: Callable  # (x, abs_eb) -> bytes-like stream
    decompress: Callable  # (stream, shape, dtype) -> array of that shape/dtype


def _version(dist: str) -> str:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return "?"


def _as_4d(shape) -> tuple:
    # SZ3 and ZFP stop at 4 dimensions: merge leading axes (as BASELINES.md did for 5-D fields).
    return tuple(shape) if len(shape) <= 4 else (math.prod(shape[:-3]),) + tuple(shape[-3:])


def ebzip_codec(threads: int) -> Codec:
    import ebzip

    # threads= is passed on every call so neither the env nor the global default decides it.
    return Codec(f"ebzip_t{threads}", False, getattr(ebzip, "__version__", "?"),
                 lambda x, eb: ebzip.compress(x, eb, mode="abs", threads=threads),
                 lambda blob, shape, dtype: ebzip.decompress(blob, threads=threads))


def sz3_codec() -> Codec:
    from pysz import sz, szAlgorithm, szConfig, szErrorBoundMode

    def compress(x, eb):
        conf = szConfig()
        conf.errorBoundMode = szErrorBoundMode.ABS
        conf.absErrorBound = eb
        conf.cmprAlgo = szAlgorithm.INTERP_LORENZO  # the default; set so the config is explicit
        conf.openmp = False  # single-threaded peer, as in BASELINES.md
        blob, _ratio = sz.compress(x.reshape(_as_4d(x.shape)), conf)
        return blob  # a uint8 view of exactly the stream bytes

    def decompress(blob, shape, dtype):
        y, _conf = sz.decompress(blob, dtype, _as_4d(shape))
        return y.reshape(shape)

    return Codec("sz3", False, _version("pysz"), compress, decompress)


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


FACTORIES = {"ebzip_t1": lambda: ebzip_codec(1), "ebzip_t2": lambda: ebzip_codec(2),
             "sz3": sz3_codec, "zfp": zfp_codec, "zstd": zstd_codec}


def load_codecs(names) -> list[Codec]:
    codecs = []
    for name in names:
        try:
            codecs.append(FACTORIES[name]())
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
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, times


def measure(codec: Codec, x: np.ndarray, x64: np.ndarray, value_range: float, eb: float, repeats: int) -> dict:
    blob, comp_times = timed(lambda: codec.compress(x, eb), repeats)
    nbytes = memoryview(blob).nbytes
    y, decomp_times = timed(lambda: codec.decompress(blob, x.shape, x.dtype), repeats)
    tc, td = min(comp_times), min(decomp_times)
    if y.shape != x.shape or y.dtype != x.dtype:
        raise ValueError(f"decompressed {y.dtype}{y.shape}, expected {x.dtype}{x.shape}")
    # Errors in float64 of both sides, so no rounding in the check hides a violation.
    err = np.abs(x64 - y.astype(np.float64))
    max_err, mse = float(err.max()), float(np.mean(err * err))
    psnr = math.inf if mse == 0 else 20 * math.log10(value_range) - 10 * math.log10(mse)
    mb = x.nbytes / 1e6
    return dict(nbytes=nbytes, ratio=x.nbytes / nbytes, bits_per_value=8 * nbytes / x.size,
                max_err=max_err, err_over_eb=max_err / eb if eb > 0 else (0.0 if max_err == 0 else math.inf),
                violation=not (max_err <= eb),  # also true for NaN errors
                psnr=psnr, comp_s=tc, decomp_s=td, comp_mbs=mb / tc, decomp_mbs=mb / td,
                comp_times=comp_times, decomp_times=decomp_times)


def run(fields, root: Path, codecs: list[Codec], rels, repeats: int) -> list[dict]:
    records = []
    for e in fields:
        x = read_field(root, e)
        x64 = x.astype(np.float64)
        lo, hi = float(np.nanmin(x64)), float(np.nanmax(x64))
        value_range = hi - lo
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


def ratio_rows(summary, rels) -> list[dict]:
    """ebzip / SZ3 per bound: GM CR, and aggregate throughput of ebzip at 1 and 2 threads."""
    by = {(s["codec"], s["rel"]): s for s in summary}
    out = []
    for rel in rels:
        sz = by.get(("sz3", rel))
        eb1, eb2 = by.get(("ebzip_t1", rel)), by.get(("ebzip_t2", rel))
        if not sz or not (eb1 or eb2):
            continue
        row = dict(rel=rel, gm_cr=(eb2 or eb1)["gm_cr"] / sz["gm_cr"])
        for tag, s in (("t1", eb1), ("t2", eb2)):
            if s:
                row[f"comp_{tag}"] = s["comp_mbs"] / sz["comp_mbs"]
                row[f"decomp_{tag}"] = s["decomp_mbs"] / sz["decomp_mbs"]
        out.append(row)
    return out


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


def ratio_table(ratios) -> list[str]:
    lines = ["| rel eb | GM CR ebzip ÷ sz3 | comp MB/s ebzip(2 thr) ÷ sz3(1 thr) | decomp MB/s ebzip(2 thr) ÷ sz3(1 thr) "
             "| comp ebzip(1 thr) ÷ sz3 | decomp ebzip(1 thr) ÷ sz3 |",
             "|---|---|---|---|---|---|"]
    for r in ratios:
        lines.append(f"| {_rel(r['rel'])} | {_f(r['gm_cr'], '.2f')} | {_f(r.get('comp_t2'), '.2f')} | "
                     f"{_f(r.get('decomp_t2'), '.2f')} | {_f(r.get('comp_t1'), '.2f')} | {_f(r.get('decomp_t1'), '.2f')} |")
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


def write_markdown(path: Path, env, summary, ratios, records, codecs, rels, skipped):
    lines = ["# ebzip vs peers on CPU (bench/compare_cpu.py)", "",
             f"Generated {env['date']} on {env['machine']} ({env['cpu_model']}), {env['cpu_count']} CPUs, "
             f"Python {env['python']}, numpy {env['versions'].get('numpy')}.",
             f"{len(set(r['field'] for r in records))} fields from `{env['data']}`, best of {env['repeats']} "
             "repeats; abs_eb = rel × (max − min) of each field, the same for every codec. "
             "MB = 1e6 B of original data; aggregate MB/s = total MB / total seconds (dominated by the large fields). "
             "Errors are measured in float64; viol = fields with max |error| > abs_eb.", "",
             "Codecs: " + "; ".join(f"{c.name} {c.version}" for c in codecs)
             + ". ebzip_tN = ebzip with threads=N; sz3 = pysz ABS, ALGO_INTERP_LORENZO, openmp off; "
             "zfp = zfpy fixed-accuracy tolerance=abs_eb; zstd = level 3 on raw bytes (lossless). "
             "SZ3 and ZFP get >4-D fields with leading axes merged.", ""]
    if skipped:
        lines += [f"Skipped (not installed or failed to load): {', '.join(skipped)}.", ""]
    lines += ["## Summary", "", "GM CR = geometric mean of per-field ratios; GM CR native = the same over fields "
              "whose source is not already quantised (manifest `quantized_source: false`); agg CR = total original "
              "bytes / total compressed bytes.", ""] + summary_table(summary)
    if ratios:
        lines += ["", "## ebzip ÷ SZ3", ""] + ratio_table(ratios)
    lines += ["", "## Per field", "", "(q) = quantised source."] + field_tables(records, codecs, rels)
    path.write_text("\n".join(lines) + "\n")


def plot_rate_distortion(path: Path, records, codecs) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed; no rate_distortion.png"
    # ebzip_t1 and ebzip_t2 write the same stream, so plot ebzip once.
    names = [c.name for c in codecs if not c.lossless]
    names = [n for n in names if n != "ebzip_t2" or "ebzip_t1" not in names]
    fields = list(dict.fromkeys(r["field"] for r in records))
    if not names or not fields:
        return "nothing lossy to plot"
    ncol = min(4, len(fields))
    nrow = math.ceil(len(fields) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.2 * ncol, 2.6 * nrow), squeeze=False)
    for ax, f in zip(axes.flat, fields):
        for n in names:
            pts = sorted((r["bits_per_value"], r["psnr"]) for r in records
                         if r["field"] == f and r["codec"] == n and "error" not in r and math.isfinite(r["psnr"]))
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=n.removesuffix("_t1"))
        ax.set_title(f, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(fields):]:
        ax.axis("off")
    for ax in axes.flat[:len(fields)]:
        ax.set_xlabel("bits/value", fontsize=7)
        ax.set_ylabel("PSNR dB", fontsize=7)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=len(labels), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / (2.6 * nrow)))
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
    except (OSError, subprocess.SubprocessError):
        commit = None
    try:
        import ebzip

        ebzip_file = ebzip.__file__
    except Exception:
        ebzip_file = None
    return dict(date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                machine=platform.machine(), platform=platform.platform(), cpu_model=cpu_model,
                cpu_count=os.cpu_count(),
                cpu_affinity=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                python=platform.python_version(), repo_commit=commit, ebzip_file=ebzip_file,
                versions={d: _version(d) for d in ("numpy", "ebzip", "pysz", "zfpy", "zstandard", "matplotlib")},
                env={k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "EBZIP_NUM_THREADS")},
                data=str(data), repeats=args.repeats, rels=args.rel, argv=sys.argv[1:])


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
    args = parse_args(argv)
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
    records = run(fields, data, codecs, args.rel, args.repeats)
    summary = summarize(records, codecs, args.rel)
    ratios = ratio_rows(summary, args.rel)

    args.out.mkdir(parents=True, exist_ok=True)
    write_markdown(args.out / "compare_cpu.md", env, summary, ratios, records, codecs, args.rel, skipped)
    (args.out / "compare_cpu.json").write_text(json.dumps(_jsonable(
        dict(environment=env, codecs={c.name: dict(version=c.version, lossless=c.lossless) for c in codecs},
             skipped=skipped, summary=summary, ebzip_over_sz3=ratios, records=records)), indent=1) + "\n")
    note = plot_rate_distortion(args.out / "rate_distortion.png", records, codecs)

    print()
    print("\n".join(summary_table(summary)))
    if ratios:
        print()
        print("\n".join(ratio_table(ratios)))
    if note:
        print(f"note: {note}")
    print(f"\nwrote {args.out / 'compare_cpu.md'}, compare_cpu.json" + ("" if note else ", rate_distortion.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
