"""Freeze-cache benchmark: train a small ResNet on real MNIST (or digits) with augmentation,
as a baseline, with plain progressive freezing, and with the freeze-cache (and its ablations).

Every variant of every seed runs in this one process, interleaved (the variant order rotates
with the seed), so load from other jobs on the machine hits them alike. Reports wall time
(training including cache builds), estimated training FLOPs, cache bytes raw vs compressed,
the bound per freeze point, and test accuracy mean +- std; prints a table and writes JSON.

    python bench/freeze_cache_training.py                  # MNIST 5k, 3 seeds (a few minutes on 2 cores)
    python bench/freeze_cache_training.py --quick          # 1 seed, 1+1+1 epochs, 600 samples (seconds)

Data: ../shared/data (or --data / $EBZIP_DATA); without it the script prints a note and exits 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import ebzip
from ebzip.torch import (ChannelAugmentation, FeatureCache, ProgressiveBound, ProgressiveFreezer, Shift,
                         stage_forward_flops)
from ebzip.torch.freeze_cache import iterate_tensors, prefix_of, suffix_of

REPO = Path(__file__).resolve().parents[1]


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def make_stages(width: int, classes: int = 10) -> list[nn.Module]:
    """stem + block (stride 1) | block (stride 2) | block (stride 2) | head: freeze points after 1 and 2 stages."""
    return [
        nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                      BasicBlock(width, width, 1)),
        BasicBlock(width, 2 * width, 2),
        BasicBlock(2 * width, 4 * width, 2),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(4 * width, classes)),
    ]


def load_data(root: Path, name: str, n_train: int, n_test: int):
    manifest = {e["name"]: e for e in json.loads((root / "manifest.json").read_text())["entries"]}
    img, lab = manifest[f"{name}_images"], manifest[f"{name}_labels"]
    x = np.fromfile(root / img["file"], dtype=img["dtype"]).reshape(img["shape"]).astype(np.float32)
    x /= max(float(x.max()), 1e-12)  # [0, 1]: background 0, so shifts fill with 0
    y = np.fromfile(root / lab["file"], dtype=lab["dtype"]).reshape(lab["shape"])
    perm = np.random.default_rng(1234).permutation(len(x))
    x, y = torch.from_numpy(x[perm][:, None]), torch.from_numpy(y[perm])
    if n_train + n_test > len(x):
        raise SystemExit(f"{name} has {len(x)} samples; asked for {n_train} + {n_test}")
    return x[:n_train], y[:n_train], x[n_train:n_train + n_test], y[n_train:n_train + n_test]


@torch.no_grad()
def accuracy(stages, x, y) -> float:
    model = nn.Sequential(*stages).eval()
    correct = sum(int((model(x[i:i + 500]).argmax(1) == y[i:i + 500]).sum()) for i in range(0, len(x), 500))
    return 100.0 * correct / len(x)


def run_variant(variant: str, seed: int, data, args, augs, spill_root: Path) -> dict:
    x_train, y_train, x_test, y_test = data
    torch.manual_seed(seed)
    stages = make_stages(args.width)
    fwd = stage_forward_flops(stages, x_train[:8])
    torch.manual_seed(seed)
    stages = make_stages(args.width)
    schedule = {} if variant == "baseline" else {args.freeze_at[0]: 1, args.freeze_at[1]: 2}
    freezer = ProgressiveFreezer(stages, schedule=schedule or {0: 0})
    params = [p for s in stages for p in s.parameters()]
    opt = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps_per_epoch = math.ceil(len(x_train) / args.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.15)
    use_cache = variant.startswith("freeze-cache")
    cache = None
    if use_cache:
        bound = ProgressiveBound.fixed(args.base_rel) if variant == "freeze-cache/fixed-bound" else \
            ProgressiveBound(base=args.base_rel, growth=args.growth, max_rel=args.max_rel)
        chaug = None if variant == "freeze-cache/no-chaug" else ChannelAugmentation(
            augs, threshold=args.threshold, variant_budget=args.variant_budget)
        cache = FeatureCache(memory_budget=args.memory_budget, spill_dir=None, chunk_size=args.chunk,
                             bound=bound, channel_aug=chaug, threads=1, seed=seed)
    flops = 0.0
    builds = []
    frozen = 0
    t0, c0 = time.perf_counter(), time.process_time()
    for epoch in range(args.epochs):
        new_frozen = freezer.start_epoch(epoch)
        if use_cache and new_frozen != frozen and new_frozen > 0:
            stats = cache.build(prefix_of(stages, new_frozen), x_train, y_train, n_frozen=new_frozen,
                                batch_size=500)
            builds.append(stats)
            k = chaug.variants_per_sample if (chaug := cache.channel_aug) and stats["variant_channels"] else 0
            flops += (1 + k) * len(x_train) * sum(fwd[:new_frozen])
        frozen = new_frozen
        for s in stages[frozen:]:
            s.train()
        trainable = suffix_of(stages, frozen)
        if use_cache and frozen:
            batches = cache.batches(args.batch, epoch, augment=cache.channel_aug is not None)
        else:
            batches = iterate_tensors(x_train, y_train, args.batch, epoch=epoch, seed=seed, augmentations=augs)
        for xb, yb in batches:
            if frozen and not use_cache:
                with torch.no_grad():
                    xb = prefix_of(stages, frozen)(xb)
                flops += len(xb) * sum(fwd[:frozen])
            loss = F.cross_entropy(trainable(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            flops += 3 * len(xb) * sum(fwd[frozen:])  # forward + backward ~ 3x forward
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    acc = accuracy(stages, x_test, y_test)
    timing = {}
    if cache is not None:
        timing = {"decode_s": cache.decode_seconds, "wait_s": cache.wait_seconds,
                  "build_s": sum(b["build_seconds"] for b in builds)}
        cache.close()
    return {"variant": variant, "seed": seed, "wall_s": wall, "cpu_s": cpu, "test_acc": acc, "train_flops": flops,
            "builds": builds, "stage_forward_flops_per_sample": fwd, **timing}


def mean_std(values):
    return (statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(os.environ.get("EBZIP_DATA") or REPO.parent / "shared" / "data"))
    p.add_argument("--dataset", default="mnist5k", choices=["mnist5k", "digits"])
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--ablation-seeds", type=int, default=2, help="seeds for the freeze-cache/* ablations")
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--freeze-at", type=int, nargs=2, default=[6, 8], metavar=("E1", "E2"),
                   help="epochs at which 1, then 2 stages freeze")
    p.add_argument("--train", type=int, default=2500)
    p.add_argument("--test", type=int, default=2500)
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--chunk", type=int, default=500)
    p.add_argument("--memory-budget", type=int, default=4 << 20, help="bytes of compressed cache in memory")
    p.add_argument("--base-rel", type=float, default=1e-2)
    p.add_argument("--growth", type=float, default=2.0)
    p.add_argument("--max-rel", type=float, default=0.05)
    p.add_argument("--threshold", type=float, default=0.1)
    p.add_argument("--variant-budget", type=float, default=0.25)
    p.add_argument("--variants", default="baseline,plain-freezing,freeze-cache,freeze-cache/no-chaug,"
                                          "freeze-cache/fixed-bound")
    p.add_argument("--torch-threads", type=int, default=1,
                   help="torch intra-op threads (1: robust to other jobs on the machine; ebzip decodes in its own thread)")
    p.add_argument("--quick", action="store_true", help="1 seed, 3 epochs, 600 + 300 samples (a smoke run)")
    args = p.parse_args(argv)
    if args.quick:
        args.seeds, args.ablation_seeds, args.epochs, args.freeze_at, args.train, args.test = 1, 1, 3, [1, 2], 600, 300
    if not (args.data / "manifest.json").is_file():
        print(f"no benchmark data at {args.data}: nothing to do")
        return 0
    torch.set_num_threads(args.torch_threads)
    data = load_data(args.data, args.dataset, args.train, args.test)
    augs = [Shift(dy, dx) for dy in (-2, 0, 2) for dx in (-2, 0, 2) if (dy, dx) != (0, 0)]
    variants = args.variants.split(",")
    load_before = os.getloadavg()
    records = []
    for seed in range(args.seeds):
        order = variants[seed % len(variants):] + variants[:seed % len(variants)]  # rotate: no variant always first
        for v in order:
            if "/" in v and seed >= args.ablation_seeds:
                continue
            r = run_variant(v, seed, data, args, augs, args.out)
            records.append(r)
            extra = (f"  (cache builds {r['build_s']:.2f} s, decoding {r['decode_s']:.2f} s in the prefetch thread, "
                     f"training waited {r['wait_s']:.2f} s for it)" if "build_s" in r else "")
            print(f"seed {seed} {v:26s} wall {r['wall_s']:6.2f} s  cpu {r['cpu_s']:6.2f} s  acc {r['test_acc']:6.2f}%{extra}", flush=True)
    load_after = os.getloadavg()

    summary = {}
    for v in variants:
        rs = [r for r in records if r["variant"] == v]
        wall, acc = mean_std([r["wall_s"] for r in rs]), mean_std([r["test_acc"] for r in rs])
        s = {"seeds": len(rs), "wall_s": wall, "cpu_s": mean_std([r["cpu_s"] for r in rs]), "test_acc": acc,
             "train_flops": statistics.mean(r["train_flops"] for r in rs)}
        if rs[0]["builds"]:
            s["builds"] = [{k: b[k] for k in ("n_frozen", "eb_rel", "eb_abs", "raw_bytes", "compressed_bytes",
                                              "variant_bytes", "ratio", "total_ratio", "channels",
                                              "sensitive_channels", "variant_channels", "spilled_chunks",
                                              "memory_bytes", "build_seconds")}
                           for b in rs[0]["builds"]]
            raw = sum(b["raw_bytes"] for b in rs[0]["builds"])
            comp = sum(b["compressed_bytes"] + b["variant_bytes"] for b in rs[0]["builds"])
            s["cache_ratio_all_builds"] = raw / comp
        summary[v] = s
    base = summary.get("baseline")
    print(f"\n{args.dataset}: {args.train} train / {args.test} test, {args.epochs} epochs, freeze 1 stage at epoch "
          f"{args.freeze_at[0]}, 2 at {args.freeze_at[1]}, {args.seeds} seed(s) ({args.ablation_seeds} for "
          f"ablations); load avg before {load_before[0]:.2f}"
          f", after {load_after[0]:.2f} (other jobs share this machine)\n")
    print(f"{'variant':26s} {'seeds':>5s} {'wall s':>14s} {'vs base':>8s} {'CPU s':>14s} {'vs base':>8s} "
          f"{'FLOPs vs base':>13s} {'test acc %':>14s} "
          f"{'acc - base':>10s}  cache (raw -> stored, ratio; bound rel/abs per freeze point)")
    for v, s in summary.items():
        dw = f"{100 * (1 - s['wall_s'][0] / base['wall_s'][0]):+.1f}%" if base else "-"
        dc = f"{100 * (1 - s['cpu_s'][0] / base['cpu_s'][0]):+.1f}%" if base else "-"
        df = f"{100 * (1 - s['train_flops'] / base['train_flops']):+.1f}%" if base else "-"
        da = f"{s['test_acc'][0] - base['test_acc'][0]:+.2f}" if base else "-"
        cache = "; ".join(f"k={b['n_frozen']}: {b['raw_bytes'] / 1e6:.1f} MB -> "
                          f"{(b['compressed_bytes'] + b['variant_bytes']) / 1e6:.2f} MB ({b['total_ratio']:.1f}x, "
                          f"{b['variant_channels']}/{b['sensitive_channels']} sens. ch. cached), "
                          f"rel {b['eb_rel']:g} abs {b['eb_abs']:.3g}"
                          for b in s.get("builds", []))
        print(f"{v:26s} {s['seeds']:5d} {s['wall_s'][0]:6.2f} +- {s['wall_s'][1]:5.2f} {dw:>8s} "
              f"{s['cpu_s'][0]:6.2f} +- {s['cpu_s'][1]:5.2f} {dc:>8s} {df:>13s} "
              f"{s['test_acc'][0]:6.2f} +- {s['test_acc'][1]:4.2f} {da:>10s}  {cache}")
    print("\n(savings: 1 - variant/baseline, positive = faster; CPU s = process time of all threads, which other "
          "jobs on the machine disturb less than wall time. FLOPs: forward+backward ~ 3x forward "
          "of trainable stages, 1x forward of frozen stages run without grad, cache builds counted.)")
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "summary": summary, "records": records, "load_before": load_before, "load_after": load_after,
              "torch": torch.__version__, "ebzip": ebzip.__version__, "torch_threads": torch.get_num_threads(),
              "cpu": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
              "command": " ".join([os.path.basename(sys.executable), *sys.argv])}
    out = args.out / f"freeze_cache_training{'_quick' if args.quick else ''}.json"
    out.write_text(json.dumps(report, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
