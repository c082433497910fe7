"""The small residual CNN, its training on the decoder's inputs, and its fp16 weights.

Imports torch at module import: only :mod:`ebzip.enhance` imports this module,
and only when a network is trained or applied.
"""

from __future__ import annotations

import contextlib
import math
import time

import numpy as np
import torch
from torch import nn


class ResidualCNN(nn.Module):
    """head conv -> ``blocks`` x (h + relu(conv h)) -> tail conv; 3-wide kernels, 2-D or 3-D.

    The output is the predicted residual in units of the bound (x - x_hat) / eb.
    The tail starts at zero, so an untrained network predicts "no change".
    """

    def __init__(self, in_channels: int, channels: int, blocks: int, dims: int):
        super().__init__()
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[dims]

        def layer(cin, cout):
            return conv(cin, cout, 3, padding=1, padding_mode="replicate")

        self.head = layer(in_channels, channels)
        self.body = nn.ModuleList(layer(channels, channels) for _ in range(blocks))
        self.tail = layer(channels, 1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x):
        h = torch.relu(self.head(x))
        for conv in self.body:
            h = h + torch.relu(conv(h))  # skip connection around every body layer
        return self.tail(h)


def n_params(in_channels: int, channels: int, blocks: int, dims: int) -> int:
    k = 3**dims
    return (in_channels * channels * k + channels) + blocks * (channels * channels * k + channels) + (channels * k + 1)


def build(cfg: dict, count: int = 1, seed: int | None = None) -> list[ResidualCNN]:
    """``count`` networks of the configuration; initialised from ``seed`` when given.

    The caller's torch RNG state is left as it was (fork_rng). The networks are built on the CPU,
    whose generator is seeded as torch.manual_seed(seed) seeds it: the same initial weights.
    """
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.random.default_generator.manual_seed(seed)
        return [ResidualCNN(cfg["in_channels"], cfg["channels"], cfg["blocks"], cfg["dims"]) for _ in range(count)]


def weights_to_fp16(models: list[ResidualCNN]) -> bytes:
    """All parameters of all models, in state_dict order, as little-endian float16."""
    parts = [p.detach().cpu().reshape(-1).to(torch.float16).numpy() for m in models for p in m.state_dict().values()]
    return np.concatenate(parts).astype("<f2").tobytes()


def load_fp16(models: list[ResidualCNN], blob: bytes) -> None:
    """Fill the models from :func:`weights_to_fp16` bytes (length checked by the caller)."""
    flat = torch.from_numpy(np.frombuffer(blob, dtype="<f2").astype(np.float32))
    pos = 0
    for m in models:
        state = m.state_dict()
        for name, p in state.items():
            state[name] = flat[pos:pos + p.numel()].reshape(p.shape).clone()
            pos += p.numel()
        m.load_state_dict(state)


@contextlib.contextmanager
def torch_threads(n: int | None):
    """Run with n torch threads (others share the cores), restoring the caller's setting."""
    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def device_for(name: str | None) -> torch.device:
    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _as_batch(inputs: np.ndarray, dims: int) -> np.ndarray:
    """(C, *spatial) -> (N, C, *last `dims` axes): leading spatial axes become the batch."""
    c = inputs.shape[0]
    spatial = inputs.shape[1:]
    lead = math.prod(spatial[:-dims])
    x = inputs.reshape((c, lead) + spatial[-dims:])
    return np.ascontiguousarray(np.moveaxis(x, 1, 0))


def predict(models: list[ResidualCNN], inputs: np.ndarray, dims: int, group_of: np.ndarray | None,
            device: torch.device, batch_elems: int = 1 << 21) -> np.ndarray:
    """Predicted residual (eb units, float32, clipped to [-1, 1]) for every element of the field.

    inputs: (C, *shape) float32 network inputs. group_of: per-element group index
    (GWLZ) or None (one model).
    """
    batch = _as_batch(inputs, dims)  # (N, C, *tile)
    per_item = math.prod(batch.shape[2:])
    step = max(1, batch_elems // max(per_item, 1))
    out = np.empty((batch.shape[0], 1) + batch.shape[2:], dtype=np.float32)
    groups = _as_batch(group_of[None], dims) if group_of is not None else None
    with torch.no_grad():
        for m in models:
            m.eval().to(device)
        for i in range(0, batch.shape[0], step):
            xb = torch.from_numpy(batch[i:i + step]).to(device)
            if len(models) == 1:
                yb = models[0](xb)
            else:
                g = torch.from_numpy(groups[i:i + step]).to(device)
                yb = torch.zeros((xb.shape[0], 1) + tuple(xb.shape[2:]), device=device)
                for k, m in enumerate(models):
                    yb = torch.where(g == k, m(xb), yb)
            # (a NaN passes clamp: non-finite weights, forged or fp16-overflowed, would give NaN values)
            out[i:i + step] = torch.nan_to_num(yb, nan=0.0).clamp(-1.0, 1.0).cpu().numpy()
    # back to the field's shape
    return np.moveaxis(out, 0, 1).reshape(inputs.shape[1:])


def train(models: list[ResidualCNN], inputs: np.ndarray, target: np.ndarray, dims: int,
          group_of: np.ndarray | None, *, steps: int, time_limit: float | None, seed: int,
          device: torch.device, patch: int | None = None, batch: int | None = None, lr: float = 3e-3) -> dict:
    """Fit the residual (eb units) on random crops of the field; returns what it did.

    Deterministic for a seed when ``time_limit`` is None (a time limit makes the
    number of steps depend on the machine's speed).
    """
    rng = np.random.default_rng(seed)
    x_all = _as_batch(inputs, dims)  # (N, C, *tile)
    y_all = _as_batch(target[None], dims)
    g_all = _as_batch(group_of[None], dims) if group_of is not None else None
    tile = x_all.shape[2:]
    patch = patch or (48 if dims == 2 else 20)
    crop = tuple(min(patch, s) for s in tile)
    batch = batch or (16 if dims == 2 else 4)
    params = [p for m in models for p in m.parameters()]
    for m in models:
        m.train().to(device)
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1), eta_min=lr * 0.05)
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        return _train_loop(models, opt, sched, x_all, y_all, g_all, tile, crop, batch, steps, time_limit, rng, device)
    finally:
        torch.use_deterministic_algorithms(deterministic)


def _train_loop(models, opt, sched, x_all, y_all, g_all, tile, crop, batch, steps, time_limit, rng, device):
    t0 = time.perf_counter()
    done = 0
    for step in range(steps):
        if time_limit is not None and time.perf_counter() - t0 > time_limit:
            break
        idx = rng.integers(0, x_all.shape[0], size=batch)
        starts = [rng.integers(0, s - c + 1, size=batch) for s, c in zip(tile, crop)]
        sl = [tuple([i, slice(None)] + [slice(st[b], st[b] + c) for st, c in zip(starts, crop)])
              for b, i in enumerate(idx)]
        xb = torch.from_numpy(np.stack([x_all[s] for s in sl])).to(device)
        yb = torch.from_numpy(np.stack([y_all[s] for s in sl])).to(device)
        if len(models) == 1:
            loss = torch.mean((models[0](xb) - yb) ** 2)
        else:  # GWLZ: the models take turns (same compute per step as one model); each one's
            # loss counts only the elements of its value group
            k = step % len(models)
            w = (torch.from_numpy(np.stack([g_all[s] for s in sl])).to(device) == k).to(xb.dtype)
            loss = torch.sum(w * (models[k](xb) - yb) ** 2) / torch.clamp(w.sum(), min=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        done += 1
    return dict(steps=done, seconds=time.perf_counter() - t0)
