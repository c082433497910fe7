"""Training with compressed activations: accuracy, saved-activation memory and time, beside the peers.

    python bench/activation_training.py                          # digits (8x8), 3 seeds, every method
    python bench/activation_training.py --dataset mnist5k --epochs 4
    python bench/activation_training.py --methods baseline,ebzip-fixed --seeds 0 --epochs 2

A small ResNet-style CNN (stem + 2 basic blocks + linear head) is trained from
the same initialisation on the same batches with each method:

- ``baseline``: plain autograd; its saved tensors are counted by
  :class:`ebzip.torch.ActivationCompressor` in ``mode="off"`` (same hooks, raw).
- ``ebzip-fixed``: every saved activation compressed at a value-range-relative bound.
- ``ebzip-adaptive``: bounds derived from a tolerance on the weight-gradient error.
- ``save_on_cpu``: ``torch.autograd.graph.save_on_cpu`` (moves saved tensors to host
  memory: on a CPU-only machine ``tensor.cpu()`` is the tensor itself, so it saves
  nothing here; it is timed for completeness).
- ``checkpoint``: ``torch.utils.checkpoint`` (non-reentrant) around each residual
  block. The counting hooks see what is saved outside the blocks and the block
  inputs (checkpoint saves them with ``save_for_backward`` outside its own hooks);
  the peak adds the largest block's saved tensors, which backward recomputes and
  holds for a moment (taken from the baseline's per-layer counts).
- ``checkpoint+ebzip``: both: the block inputs and everything outside the blocks
  compressed (fixed bound); the recomputation starts from the decompressed input.

Reported per method: final test accuracy (mean, std over seeds), peak
saved-activation bytes and the ratio to the baseline's (``steady``: since the
adaptive mode's first estimate; the first iterations use its warm-up bound), wall time per epoch and
the overhead over the baseline. Data: ``../shared/data`` (or ``--data`` /
``EBZIP_DATA``); ``--dataset sklearn-digits`` uses scikit-learn's bundled copy.
A table is printed and JSON written to ``bench/results/activation_training.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
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
from torch.utils.checkpoint import checkpoint

import ebzip
from ebzip.torch import ActivationCompressor

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path(os.environ.get("EBZIP_DATA") or REPO.parent / "shared" / "data")
METHODS = ("baseline", "ebzip-fixed", "ebzip-adaptive", "save_on_cpu", "checkpoint", "checkpoint+ebzip")


# ---------------------------------------------------------------- data


def load_dataset(name: str, data_dir: Path):
    """(images float32 (N, 1, H, W) standardised, labels int64 (N,))."""
    if name == "sklearn-digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        x, y = d.images.astype(np.float32), d.target.astype(np.int64)
    else:
        manifest = json.loads((data_dir / "manifest.json").read_text())["entries"]
        entry = {e["name"]: e for e in manifest}
        stem = {"digits": "digits", "mnist5k": "mnist5k"}[name]
        img, lab = entry[f"{stem}_images"], entry[f"{stem}_labels"]
        x = np.fromfile(data_dir / img["file"], dtype=img["dtype"]).reshape(img["shape"]).astype(np.float32)
        y = np.fromfile(data_dir / lab["file"], dtype=lab["dtype"]).reshape(lab["shape"])
    x = (x - x.mean()) / x.std()
    return torch.from_numpy(x[:, None]), torch.from_numpy(y)


def split(x, y, test_fraction=0.2, seed=1234):
    """A fixed train/test split (the same for every training seed)."""
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    n_test = int(len(y) * test_fraction)
    test, train = order[:n_test], order[n_test:]
    return (x[train], y[train]), (x[test], y[test])


# ---------------------------------------------------------------- model


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.down is None else self.down(x)
        return self.relu(out)


class SmallResNet(nn.Module):
    """stem (conv-bn-relu) -> block(w) -> block(2w, stride 2) -> global average pool -> linear."""

    def __init__(self, width=16, classes=10, checkpoint_blocks=False):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True))
        self.layer1 = BasicBlock(width, width)
        self.layer2 = BasicBlock(width, 2 * width, stride=2)
        self.head = nn.Linear(2 * width, classes)
        self.checkpoint_blocks = checkpoint_blocks

    def forward(self, x):
        x = self.stem(x)
        for block in (self.layer1, self.layer2):
            if self.checkpoint_blocks and torch.is_grad_enabled():
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.head(x)


# ---------------------------------------------------------------- training


def evaluate(model, x, y, batch=512) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(y), batch):
            correct += int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum())
    model.train()
    return 100.0 * correct / len(y)


def train(method: str, train_set, test_set, *, seed: int, epochs: int, batch: int, lr: float, width: int,
          fixed_eb: float, tolerance: float, update_every: int, autocast: str | None = None, log=None) -> dict:
    """Train one model with one method; returns accuracy, memory and time."""
    torch.manual_seed(seed)
    model = SmallResNet(width, checkpoint_blocks=method.startswith("checkpoint"))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    steps = epochs * ((len(train_set[1]) + batch - 1) // batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    if method in ("ebzip-fixed", "checkpoint+ebzip"):
        hooks = ActivationCompressor(model, mode="fixed", eb=fixed_eb, eb_mode="rel")
    elif method == "ebzip-adaptive":
        # (until its first estimate, the adaptive mode uses the fixed bound)
        hooks = ActivationCompressor(model, mode="adaptive", tolerance=tolerance, update_every=update_every,
                                     eb=fixed_eb, eb_mode="rel")
    else:  # count what the method leaves to autograd, raw
        hooks = ActivationCompressor(model, mode="off")
    x_train, y_train = train_set
    gen = torch.Generator().manual_seed(seed)
    epoch_times = []
    amp = torch.autocast("cpu", dtype=getattr(torch, autocast)) if autocast else contextlib.nullcontext()
    for epoch in range(epochs):
        order = torch.randperm(len(y_train), generator=gen)
        start = time.perf_counter()
        for i in range(0, len(order), batch):
            idx = order[i:i + batch]
            outer = torch.autograd.graph.save_on_cpu() if method == "save_on_cpu" else contextlib.nullcontext()
            with outer, hooks, amp:
                loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        epoch_times.append(time.perf_counter() - start)
        if log:
            log(f"  {method:<15} seed {seed} epoch {epoch + 1}/{epochs}: loss {float(loss):.4f}, "
                f"{epoch_times[-1]:.2f} s")
    stats = hooks.stats()
    hooks.close()
    result = {
        "method": method, "seed": seed, "test_accuracy": evaluate(model, *test_set),
        "epoch_s": epoch_times, "peak_saved_bytes": stats["peak_saved_bytes"],
        "steady_peak_saved_bytes": stats["steady_peak_saved_bytes"],
        "peak_raw_bytes": stats["peak_raw_bytes"], "compress_s": stats["compress_s"],
        "decompress_s": stats["decompress_s"], "hooks": stats,
    }
    if method.startswith("checkpoint"):
        # Plus one block's saved tensors, recomputed (raw) during backward.
        recompute = max(_BLOCK_RAW.get("layer1", 0), _BLOCK_RAW.get("layer2", 0))
        result["peak_saved_bytes"] += recompute
        result["steady_peak_saved_bytes"] += recompute
        result["note"] = "peak held by the hooks (block inputs included) + the largest block's saved tensors (recomputed)"
    if method == "save_on_cpu":
        result["note"] = "CPU-only: tensor.cpu() returns the tensor, host memory unchanged; on a GPU the device holds ~0"
    return result


_BLOCK_RAW: dict = {}  # block name -> raw saved bytes per iteration, from the baseline run


def remember_block_sizes(baseline_stats: dict, iterations: int):
    """Per-iteration raw bytes each residual block saves (from the baseline's counting hooks)."""
    for block in ("layer1", "layer2"):
        total = sum(st["raw_bytes"] for name, st in baseline_stats["layers"].items()
                    if name == block or name.startswith(block + "."))
        _BLOCK_RAW[block] = total // max(1, iterations)


# ---------------------------------------------------------------- report


def summarise(results: list[dict]) -> list[dict]:
    rows = []
    base = [r for r in results if r["method"] == "baseline"]
    base_peak = statistics.mean(r["peak_saved_bytes"] for r in base) if base else float("nan")
    base_epoch = statistics.mean(statistics.mean(r["epoch_s"]) for r in base) if base else float("nan")
    base_acc = statistics.mean(r["test_accuracy"] for r in base) if base else float("nan")
    for method in dict.fromkeys(r["method"] for r in results):
        rs = [r for r in results if r["method"] == method]
        acc = [r["test_accuracy"] for r in rs]
        peak = statistics.mean(r["peak_saved_bytes"] for r in rs)
        steady = statistics.mean(r["steady_peak_saved_bytes"] for r in rs)
        epoch = statistics.mean(statistics.mean(r["epoch_s"]) for r in rs)
        rows.append({
            "method": method, "seeds": len(rs), "acc_mean": statistics.mean(acc),
            "acc_std": statistics.stdev(acc) if len(acc) > 1 else 0.0,
            "acc_delta": statistics.mean(acc) - base_acc,
            "peak_saved_MiB": peak / 2**20, "memory_ratio": base_peak / peak if peak else float("inf"),
            "steady_memory_ratio": base_peak / steady if steady else float("inf"),
            "epoch_s": epoch, "overhead": epoch / base_epoch - 1,
            "compress_s_per_epoch": statistics.mean(r["compress_s"] / len(r["epoch_s"]) for r in rs),
            "decompress_s_per_epoch": statistics.mean(r["decompress_s"] / len(r["epoch_s"]) for r in rs),
        })
    return rows


def table(rows) -> str:
    out = [f"{'method':<15} {'seeds':>5} {'test acc %':>14} {'d acc':>6} {'peak saved':>11} {'mem ratio':>9} "
           f"{'steady':>7} {'s/epoch':>8} {'overhead':>8} {'comp s/ep':>9} {'dec s/ep':>8}"]
    for r in rows:
        out.append(f"{r['method']:<15} {r['seeds']:>5} {r['acc_mean']:>7.2f} ± {r['acc_std']:<4.2f} "
                   f"{r['acc_delta']:>+6.2f} {r['peak_saved_MiB']:>7.3f} MiB {r['memory_ratio']:>8.1f}x {r['steady_memory_ratio']:>6.1f}x "
                   f"{r['epoch_s']:>8.3f} {100 * r['overhead']:>+7.0f}% {r['compress_s_per_epoch']:>9.3f} "
                   f"{r['decompress_s_per_epoch']:>8.3f}")
    return "\n".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="digits", choices=("digits", "mnist5k", "sklearn-digits"))
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--fixed-eb", type=float, default=3e-2, help="ebzip-fixed: value-range-relative bound")
    ap.add_argument("--tolerance", type=float, default=0.05, help="ebzip-adaptive: weight-gradient error tolerance")
    ap.add_argument("--update-every", type=int, default=20)
    ap.add_argument("--autocast", choices=("bfloat16", "float16"), default=None)
    ap.add_argument("--threads", type=int, default=1, help="torch and ebzip threads (the machine is shared)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    if args.dataset != "sklearn-digits" and not (args.data / "manifest.json").is_file():
        print(f"no data at {args.data} (use --dataset sklearn-digits, --data or EBZIP_DATA); nothing to do")
        return 0
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - set(METHODS)
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}; choose from {METHODS}")
    if "baseline" in methods:  # first: the checkpoint row needs its block sizes
        methods.remove("baseline")
        methods.insert(0, "baseline")
    torch.set_num_threads(args.threads)
    ebzip.set_num_threads(args.threads)
    x, y = load_dataset(args.dataset, args.data)
    train_set, test_set = split(x, y)
    log = None if args.quiet else print
    load_before = os.getloadavg()
    results = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for method in methods:  # interleaved, so that machine load drifts hit every method alike
            r = train(method, train_set, test_set, seed=seed, epochs=args.epochs, batch=args.batch, lr=args.lr,
                      width=args.width, fixed_eb=args.fixed_eb, tolerance=args.tolerance,
                      update_every=args.update_every, autocast=args.autocast, log=log)
            if method == "baseline" and not _BLOCK_RAW:
                remember_block_sizes(r["hooks"], r["hooks"]["iterations"])
            results.append(r)
            if log:
                log(f"{method:<15} seed {seed}: test accuracy {r['test_accuracy']:.2f} %, peak saved "
                    f"{r['peak_saved_bytes'] / 2**20:.3f} MiB, {statistics.mean(r['epoch_s']):.2f} s/epoch")
    rows = summarise(results)
    text = table(rows)
    print(text)
    report = {
        "command": " ".join([Path(sys.argv[0]).name] + (argv if argv is not None else sys.argv[1:])),
        "args": {k: str(v) for k, v in vars(args).items()}, "summary": rows, "runs": results,
        "dataset_shape": list(x.shape), "train": len(train_set[1]), "test": len(test_set[1]),
        "torch": torch.__version__, "ebzip": ebzip.__version__, "cpu": platform.processor() or platform.machine(),
        "load_before": load_before, "load_after": os.getloadavg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"activation_training_{args.dataset}" + (f"_{args.autocast}" if args.autocast else "") + ".json"
    (args.out / name).write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
