"""Which ebzip predictor and array layout for cached feature maps: ratio, speed, zeros kept.

Trains the freeze-cache bench's small ResNet briefly on MNIST (so batch norm and weights are
not at initialisation), takes the maps at both freeze points for 500 samples and compresses
them at several relative bounds as one (N, C, H, W) array ("4d"), as (N*C, H, W) ("3d") and
as rows (N*C*H, W) ("rows", what the cache stores), with predictor lorenzo and auto.

    python bench/freeze_cache_layouts.py
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import ebzip

sys.path.insert(0, str(Path(__file__).resolve().parent))
from freeze_cache_training import REPO, load_data, make_stages  # noqa: E402


def main():
    root = Path(os.environ.get("EBZIP_DATA") or REPO.parent / "shared" / "data")
    if not (root / "manifest.json").is_file():
        print(f"no benchmark data at {root}: nothing to do")
        return 0
    torch.manual_seed(0)
    torch.set_num_threads(1)
    x, y, _, _ = load_data(root, "mnist5k", 2000, 0)
    stages = make_stages(8)
    model = torch.nn.Sequential(*stages)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for step in range(60):
        idx = torch.randint(0, len(x), (128,))
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        maps = {1: stages[0](x[:500])}
        maps[2] = stages[1](maps[1])
    rows = []
    print(f"{'point':>5s} {'rel':>6s} {'layout':>6s} {'predictor':>9s} {'ratio':>6s} {'pipeline':>8s} "
          f"{'comp MB/s':>9s} {'dec MB/s':>8s} {'zeros kept':>10s}")
    for point, f in maps.items():
        value_range = float(f.max() - f.min())
        layouts = {"4d": f, "3d": f.reshape(-1, *f.shape[2:]), "rows": f.reshape(-1, f.shape[-1])}
        for rel in (5e-3, 1e-2, 2e-2):
            for name, arr in layouts.items():
                for predictor in ("lorenzo", "auto"):
                    arr = arr.contiguous()
                    t = time.perf_counter()
                    c = ebzip.compress(arr, rel * value_range, "abs", predictor=predictor, threads=1)
                    tc = time.perf_counter() - t
                    t = time.perf_counter()
                    d = ebzip.decompress(c, threads=1)
                    td = time.perf_counter() - t
                    zeros = arr == 0
                    kept = float((d[zeros] == 0).float().mean()) if zeros.any() else 1.0
                    mb = arr.numel() * 4 / 1e6
                    r = {"freeze_point": point, "rel": rel, "layout": name, "predictor": predictor,
                         "ratio": c.ratio, "pipeline": c.pipeline, "compress_MBps": mb / tc,
                         "decompress_MBps": mb / td, "zeros_kept": kept, "zero_fraction": float(zeros.float().mean())}
                    rows.append(r)
                    print(f"{point:5d} {rel:6g} {name:>6s} {predictor:>9s} {c.ratio:6.2f} {c.pipeline:>8s} "
                          f"{r['compress_MBps']:9.0f} {r['decompress_MBps']:8.0f} {kept:10.3f}")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "freeze_cache_layouts.json").write_text(json.dumps(rows, indent=1))
    print(f"wrote {out / 'freeze_cache_layouts.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
