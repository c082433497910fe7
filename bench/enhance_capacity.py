#!/usr/bin/env python3
"""How much can a network learn at all? Same-bound PSNR gain of a small and a big enhancer.

2x regulation (the correction clamped to +-eb: no fallback positions), single field,
``keep="always"``; the weights' bytes are ignored. If even a network a hundred times
larger, trained longer, gains little at the same bound, no weight budget can buy much
at equal bits. Fields from ../shared/data (centre-cropped like bench/enhance.py).

    python bench/enhance_capacity.py        # the five points of docs/enhance.md (~10 min on 2 cores)
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from enhance import DEFAULT_DATA, load_groups  # noqa: E402

POINTS = [("eraint_uvz", "eraint_u", 1e-2), ("eraint_uvz", "eraint_u", 1e-3),
          ("canesm2_daily_2095", "canesm2_tasmax", 1e-2), ("nrcan_secan", "nrcan_tg_mean", 1e-2),
          ("plot3d_comb", "plot3d_comb_density", 1e-2)]
NETWORKS = [dict(channels=4, blocks=2, steps=400), dict(channels=32, blocks=4, steps=1500)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("EBZIP_DATA") or DEFAULT_DATA))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if not (args.data / "manifest.json").is_file():
        print(f"skipping: no data at {args.data} (manifest.json not found)")
        return
    import ebzip.enhance as ee

    groups = load_groups(args.data, False, sorted({g for g, _, _ in POINTS}), 600_000)
    head = " | ".join(f"C={n['channels']}, B={n['blocks']}, {n['steps']} steps" for n in NETWORKS)
    print(f"| field, rel | {head} |\n|---|" + "---|" * len(NETWORKS))
    for g, name, rel in POINTS:
        cells = []
        for net in NETWORKS:
            c = ee.compress(groups[g][name], rel, "rel", regulation="2x", keep="always", seed=0,
                            threads=args.threads, **net)
            s = c.stats["x"]
            cells.append(f"{s['psnr'] - s['psnr_plain']:+.2f} dB ({s['params']} params, {s['train_seconds']:.0f} s)")
        print(f"| {name}, {rel:g} | " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
