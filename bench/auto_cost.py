"""Compress time of predictor="auto" relative to predictor="lorenzo" over the real fields.

The sampling "auto" does (bench/compare_cpu.py measures only the total) costs this
ratio; run it with two builds alternately to compare them on a busy machine:

    python bench/auto_cost.py [--rel 1e-2 1e-3 1e-4] [--passes 2] [--threads 2]
"""
import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_cpu as cc  # noqa: E402

import ebzip  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("EBZIP_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data")))
    ap.add_argument("--rel", type=float, nargs="+", default=[1e-2, 1e-3, 1e-4])
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    if not (args.data / "manifest.json").exists():
        print(f"no data at {args.data}")
        return 1
    fields = [cc._load(args.data, e) for e in cc.load_fields(args.data, None, False)]
    total = {"auto": 0.0, "lorenzo": 0.0}
    for _ in range(args.passes):
        for x, _x64, value_range in fields:
            for rel in args.rel:
                for predictor in total:
                    t0 = time.perf_counter()
                    ebzip.compress(x, rel * value_range, mode="abs", threads=args.threads, predictor=predictor)
                    total[predictor] += time.perf_counter() - t0
    print(f"ebzip {ebzip.__file__}; load average {os.getloadavg()[0]:.1f}")
    print(f"compress seconds: auto {total['auto']:.2f}, lorenzo {total['lorenzo']:.2f}, "
          f"auto / lorenzo = {total['auto'] / total['lorenzo']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
