#!/usr/bin/env python3
"""ebzip.enhance on the multi-field groups of ../shared/data: PSNR at equal bits/value, bound, time.

Per group (fields on one grid) and per field:
- plain ebzip at a sweep of rel bounds (--plain-rel): the rate-distortion curve (bits/value, PSNR);
- ebzip + enhancer at rel in --rel (default 1e-2 1e-3), in four variants: 1x cross-field
  (the acceptance series), 1x single-field, 2x cross-field, GWLZ (1x cross-field, --gwlz groups);
  bits/value count the whole container share of the field (base stream, fp16 weights,
  normalisation constants, fallback positions, its share of header and meta);
- gain = enhanced PSNR - plain PSNR interpolated at the same bits/value along the plain curve
  (linear in log2 bits/value, rd_gains of compare_cpu.py); the acceptance number is the mean
  gain over fields and the two bounds of the 1x cross-field series (bar: >= 3 dB, zero violations).
- encode time (base + training + choosing the scale + the verifying decode), training time,
  decode time; max |error| / eb and violations, checked on every element.

Fields over --max-elems elements are centre-cropped (mni152: 151x188x159 -> a central
cube) to keep the run within minutes on 2 shared cores; PSNR is over all elements
(masked groups: the fill values count like any other). Writes enhance.json, enhance.md
and enhance_rd.png to --out (default bench/results/).

    python bench/enhance.py                 # all groups (~15 min on 2 busy cores)
    python bench/enhance.py --quick         # one small group, few steps (smoke test)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare_cpu import rd_gains  # noqa: E402

PLAIN_REL = [5e-2, 3e-2, 2e-2, 1e-2, 7e-3, 5e-3, 3e-3, 2e-3, 1e-3, 7e-4, 5e-4, 3e-4, 2e-4]
QUANTISED: dict = {}  # field name -> manifest quantized_source (values on a coarse lattice already)
VARIANTS = {  # name -> compress_fields options
    "cross_1x": dict(cross_field=True, regulation="1x"),
    "single_1x": dict(cross_field=False, regulation="1x"),
    "cross_2x": dict(cross_field=True, regulation="2x"),
    "gwlz_1x": dict(cross_field=True, regulation="1x", groups=4),
    "half_1x": dict(cross_field=True, regulation="1x-half"),  # base at eb/2, 2x clamp: within eb, no positions
}


def load_groups(root: Path, quick: bool, only: list[str] | None, max_elems: int) -> dict:
    entries = [e for e in json.loads((root / "manifest.json").read_text())["entries"] if e["kind"] == "field"]
    groups: dict = {}
    for e in entries:
        groups.setdefault(e.get("group"), []).append(e)
    groups = {g: es for g, es in groups.items() if len(es) > 1 and (not only or g in only)}
    if quick:
        groups = {g: es for g, es in groups.items() if g == "plot3d_comb"} or dict(list(groups.items())[:1])
    out = {}
    for g, es in groups.items():
        fields = {}
        for e in es:
            x = np.fromfile(root / e["file"], dtype=e["dtype"]).reshape(e["shape"])
            fields[e["name"]] = centre_crop(x, max_elems)
            QUANTISED[e["name"]] = bool(e.get("quantized_source"))
        out[g] = fields
    return out


def centre_crop(x: np.ndarray, max_elems: int) -> np.ndarray:
    shape = list(x.shape)
    while math.prod(shape) > max_elems:
        i = int(np.argmax(shape))
        shape[i] = int(shape[i] * 0.9)
    sl = tuple(slice((n - m) // 2, (n - m) // 2 + m) for n, m in zip(x.shape, shape))
    return np.ascontiguousarray(x[sl])


def plain_curve(x: np.ndarray, rels) -> list[dict]:
    import ebzip
    from ebzip.enhance import psnr
    pts = []
    for rel in rels:
        t0 = time.perf_counter()
        c = ebzip.compress(x, rel, "rel")
        t1 = time.perf_counter()
        y = ebzip.decompress(c)
        t2 = time.perf_counter()
        err = float(np.max(np.abs(x.astype(np.float64) - y))) if x.size else 0.0
        pts.append(dict(rel=rel, bits_per_value=8 * c.nbytes / x.size, psnr=psnr(x, y), encode_s=t1 - t0,
                        decode_s=t2 - t1, max_err_over_eb=err / c.eb_abs if c.eb_abs else 0.0))
    return pts


def run(args) -> dict:
    import ebzip.enhance as ee

    groups = load_groups(args.data, args.quick, args.groups, args.max_elems)
    rels = [1e-2] if args.quick else args.rel
    variants = ["cross_1x"] if args.quick else args.variants
    records, plain = [], {}
    for g, fields in groups.items():
        for name, x in fields.items():
            plain[name] = plain_curve(x, args.plain_rel)
        for rel in rels:
            for v in variants:
                if v != "cross_1x" and rel not in args.variant_rel:
                    continue
                opts = dict(VARIANTS[v])
                if "groups" in opts:
                    opts["groups"] = args.gwlz
                t0 = time.perf_counter()
                c = ee.compress_fields(fields, rel, "rel", steps=args.steps, seed=0, threads=args.threads, **opts)
                t1 = time.perf_counter()
                out = ee.decompress(bytes(c), threads=args.threads)
                t2 = time.perf_counter()
                bound_factor = 2.0 if opts["regulation"] == "2x" else 1.0
                for name, x in fields.items():
                    s = c.stats[name]
                    err = np.abs(x.astype(np.float64) - out[name].astype(np.float64))
                    violations = int(np.sum(err > bound_factor * s["eb_abs"]))
                    curve = [(p["bits_per_value"], p["psnr"]) for p in plain[name]]
                    gain = rd_gains(curve, [(s["bits_per_value"], s["psnr"])])
                    kept_bpv = 8 * (s["base_nbytes"] + s.get("extra_nbytes_if_kept", 0)) / s["n"]
                    gain_kept = rd_gains(curve, [(kept_bpv, s.get("psnr_if_kept", s["psnr"]))])
                    rec = dict(group=g, field=name, shape=list(x.shape), rel=rel, variant=v,
                               quantized_source=QUANTISED.get(name, False),
                               bits_per_value=s["bits_per_value"], base_bits_per_value=8 * s["base_nbytes"] / s["n"],
                               psnr=s["psnr"], psnr_plain_same_bound=s["psnr_plain_user_bound"],
                               gain_db=s["psnr"] - gain[0]["ebzip_psnr"] if gain else None,
                               enhanced=s["enhanced"], params=s["params"], channels=s.get("channels"),
                               dims=s.get("dims"), scale=s.get("scale"), fallbacks=s["fallbacks"],
                               fallback_fraction=s["fallbacks"] / s["n"], fallback_encoding=s.get("fallback_encoding"),
                               enhancer_bytes=s["enhancer_nbytes"], max_err_over_eb=float(err.max() / s["eb_abs"]),
                               violations=violations, train_s=s["train_seconds"], train_steps=s["train_steps"],
                               encode_s=(t1 - t0) / len(fields), decode_s=(t2 - t1) / len(fields),
                               rd_score_db=s.get("rd_score_db"),
                               # what the network alone would give if stored regardless (keep="always")
                               always_bits_per_value=kept_bpv, always_psnr=s.get("psnr_if_kept"),
                               always_gain_db=(s.get("psnr_if_kept", s["psnr"]) - gain_kept[0]["ebzip_psnr"])
                               if gain_kept else None)
                    records.append(rec)
                    print(f"{g:20s} {name:30s} rel={rel:<6g} {v:10s} bpv {rec['bits_per_value']:.3f} "
                          f"(base {rec['base_bits_per_value']:.3f}) PSNR {rec['psnr']:.2f} "
                          f"(plain same bound {rec['psnr_plain_same_bound']:.2f}) gain@bits "
                          f"{_fmt(rec['gain_db'])} kept={rec['enhanced']} always-gain {_fmt(rec['always_gain_db'])} "
                          f"err/eb {rec['max_err_over_eb']:.4f} viol {violations} train {rec['train_s']:.1f}s",
                          flush=True)
    return dict(args={k: str(v) for k, v in vars(args).items()}, records=records, plain=plain,
                acceptance=summarise(records, variants))


def summarise(records: list[dict], variants) -> dict:
    """The acceptance number (mean gain at equal bits, 1x cross-field, all fields and bounds) and per variant."""
    cross = [r for r in records if r["variant"] == "cross_1x"]
    acc = [r["gain_db"] for r in cross if r["gain_db"] is not None]
    violations = sum(r["violations"] for r in cross)
    mean = float(np.mean(acc)) if acc else None

    def stats(rs):
        return dict(mean_gain_db=_mean([r["gain_db"] for r in rs]),
                    median_gain_db=_median([r["gain_db"] for r in rs]),
                    mean_gain_not_quantised_db=_mean([r["gain_db"] for r in rs if not r.get("quantized_source")]),
                    mean_always_gain_db=_mean([r["always_gain_db"] for r in rs]),
                    best_gain_db=max([r["gain_db"] for r in rs if r["gain_db"] is not None], default=None),
                    kept=sum(r["enhanced"] for r in rs), points=len(rs),
                    mean_train_s=_mean([r["train_s"] for r in rs]), mean_encode_s=_mean([r["encode_s"] for r in rs]),
                    mean_decode_s=_mean([r["decode_s"] for r in rs]),
                    violations=sum(r["violations"] for r in rs))
    return dict(mean_gain_db=mean, comparable=len(acc), points=len(cross), violations=violations, bar_db=3.0,
                passed=mean is not None and mean >= 3.0 and violations == 0,
                mean_gain_always_db=_mean([r["always_gain_db"] for r in cross]),
                per_variant={v: stats([r for r in records if r["variant"] == v]) for v in variants},
                cross_1x_per_rel={str(rel): stats([r for r in cross if r["rel"] == rel])
                                  for rel in sorted({r["rel"] for r in cross}, reverse=True)})


def _median(v):
    v = [x for x in v if x is not None]
    return float(np.median(v)) if v else None


def _mean(v):
    v = [x for x in v if x is not None]
    return float(np.mean(v)) if v else None


def _fmt(v, spec="+.2f"):
    return "n/a" if v is None else format(v, spec)


def write_report(report: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "enhance.json").write_text(json.dumps(report, indent=1))
    acc = report["acceptance"]
    lines = ["# ebzip.enhance bench", "", f"`python bench/enhance.py {' '.join(sys.argv[1:])}`", "",
             "## Acceptance (1x cross-field, mean PSNR gain at equal bits/value over fields and bounds)", "",
             f"- mean gain: **{_fmt(acc['mean_gain_db'])} dB** over {acc['comparable']} of {acc['points']} points "
             f"(bar +3 dB): {'PASSED' if acc['passed'] else 'NOT MET'}; violations: {acc['violations']}",
             f"- the networks alone, stored regardless (keep='always'): {_fmt(acc['mean_gain_always_db'])} dB", "",
             "| series | bounds | mean gain dB | median | mean, not-quantised sources | best | mean if always "
             "stored | enhancer kept | train s | encode s | decode s | violations |", "|" + "---|" * 12]
    rels_of = {v: sorted({r["rel"] for r in report["records"] if r["variant"] == v}, reverse=True)
               for v in acc["per_variant"]}
    rows = [(v, ", ".join(f"{q:g}" for q in rels_of[v]), s) for v, s in acc["per_variant"].items()]
    rows += [(f"cross_1x at {rel}", rel, s) for rel, s in acc.get("cross_1x_per_rel", {}).items()]
    for v, rels, s in rows:
        lines.append(f"| {v} | {rels} | {_fmt(s['mean_gain_db'])} | {_fmt(s['median_gain_db'])} | "
                     f"{_fmt(s['mean_gain_not_quantised_db'])} | {_fmt(s['best_gain_db'])} | "
                     f"{_fmt(s['mean_always_gain_db'])} | {s['kept']}/{s['points']} "
                     f"| {_fmt(s['mean_train_s'], '.1f')} | {_fmt(s['mean_encode_s'], '.1f')} | "
                     f"{_fmt(s['mean_decode_s'], '.2f')} | {s['violations']} |")
    lines += ["", "## Per field", "",
              "| group | field | rel | variant | bits/value | base bits/value | PSNR | plain PSNR same bound | "
              "gain at equal bits | kept | always: gain | C | params | scale | fallbacks % (enc) | max err/eb | "
              "train s |", "|" + "---|" * 17]
    for r in report["records"]:
        lines.append(f"| {r['group']} | {r['field']} | {r['rel']:g} | {r['variant']} | {r['bits_per_value']:.3f} | "
                     f"{r['base_bits_per_value']:.3f} | {r['psnr']:.2f} | {r['psnr_plain_same_bound']:.2f} | "
                     f"{_fmt(r['gain_db'])} | {r['enhanced']} | {_fmt(r['always_gain_db'])} | {r['channels']} | "
                     f"{r['params']} | {r['scale']} | {100 * r['fallback_fraction']:.2f} ({r['fallback_encoding']}) | "
                     f"{r['max_err_over_eb']:.4f} | {r['train_s']:.1f} |")
    (out / "enhance.md").write_text("\n".join(lines) + "\n")
    try:
        plot(report, out / "enhance_rd.png")
    except ImportError:
        print("matplotlib not installed: no plot")


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(report["plain"])
    cols = min(4, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    marks = {"cross_1x": "o", "single_1x": "s", "cross_2x": "^", "gwlz_1x": "D", "half_1x": "v"}
    for ax, n in zip(axes.flat, names):
        p = report["plain"][n]
        ax.plot([q["bits_per_value"] for q in p], [q["psnr"] for q in p], "k-", lw=1, label="plain ebzip")
        for v, m in marks.items():
            rs = [r for r in report["records"] if r["field"] == n and r["variant"] == v]
            if rs:
                ax.plot([r["always_bits_per_value"] for r in rs], [r["always_psnr"] for r in rs], m, mfc="none",
                        label=f"{v} (always stored)")
        ax.set_xscale("log", base=2)
        ax.set_title(n, fontsize=9)
        ax.set_xlabel("bits/value")
        ax.set_ylabel("PSNR dB")
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("EBZIP_DATA") or DEFAULT_DATA))
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--quick", action="store_true", help="plot3d_comb only, rel 1e-2, cross_1x only, 10 steps, 4 plain bounds (smoke test)")
    p.add_argument("--groups", nargs="*", help="only these groups (manifest 'group')")
    p.add_argument("--rel", type=float, nargs="+", default=[1e-2, 1e-3])
    p.add_argument("--plain-rel", type=float, nargs="+", default=PLAIN_REL)
    p.add_argument("--variant-rel", type=float, nargs="+", default=[1e-3],
                   help="bounds at which the variants other than cross_1x run (default 1e-3, where the networks gain; time)")
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--steps", type=int, default=120, help="training steps per field (default 120)")
    p.add_argument("--gwlz", type=int, default=4, help="value-range groups of the GWLZ variant")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-elems", type=int, default=600_000, help="centre-crop larger fields to this many")
    p.add_argument("--copy-plot", type=Path, help="also copy the plot here (e.g. docs/enhance_rd.png)")
    p.add_argument("--report-only", type=Path, nargs="+",
                   help="write the report and plot from one or more runs' enhance.json (records merged), no runs")
    args = p.parse_args()
    if args.report_only:  # one report from the records of one or more runs
        runs = [json.loads(f.read_text()) for f in args.report_only]
        report = dict(runs[0], records=[r for run in runs for r in run["records"]],
                      plain={k: v for run in runs for k, v in run["plain"].items()},
                      runs=[run["args"] for run in runs])
        variants = list(dict.fromkeys(r["variant"] for r in report["records"]))
        report["acceptance"] = summarise(report["records"], variants)
        write_report(report, args.out)
        if args.copy_plot and (args.out / "enhance_rd.png").is_file():
            shutil.copy(args.out / "enhance_rd.png", args.copy_plot)
        print(json.dumps(report["acceptance"], indent=1))
        return
    if args.quick:
        args.steps = min(args.steps, 10)
        args.plain_rel = [3e-2, 1e-2, 3e-3, 1e-3]
    if not (args.data / "manifest.json").is_file():
        print(f"skipping: no data at {args.data} (manifest.json not found)")
        return
    t0 = time.perf_counter()
    report = run(args)
    report["seconds"] = time.perf_counter() - t0
    write_report(report, args.out)
    if args.copy_plot and (args.out / "enhance_rd.png").is_file():
        shutil.copy(args.out / "enhance_rd.png", args.copy_plot)
    print(json.dumps(report["acceptance"], indent=1))
    print(f"{report['seconds']:.0f} s; wrote {args.out}/enhance.md, enhance.json, enhance_rd.png")


if __name__ == "__main__":
    main()
