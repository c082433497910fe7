"""Physically simulated sample data for the demo and tests (no downloads).

Gray-Scott reaction-diffusion: two species U, V with
    dU/dt = Du lap(U) - U V^2 + F (1 - U)
    dV/dt = Dv lap(V) + U V^2 - (F + k) V
on a periodic grid, explicit Euler, 5-point Laplacian. The V concentration
forms the spots and stripes of pattern formation: smooth regions with sharp
fronts, a fair stand-in for a scientific field.
"""

from __future__ import annotations

import numpy as np


def _laplacian(a: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.multiply(a, -4.0, out=out)
    out[1:] += a[:-1]
    out[0] += a[-1]
    out[:-1] += a[1:]
    out[-1] += a[0]
    out[:, 1:] += a[:, :-1]
    out[:, 0] += a[:, -1]
    out[:, :-1] += a[:, 1:]
    out[:, -1] += a[:, 0]
    return out


def gray_scott(size: int = 256, snapshots: int = 32, warmup: int = 2000, every: int = 40,
               F: float = 0.037, k: float = 0.06, seed: int = 0) -> np.ndarray:
    """Return V snapshots as a float32 array of shape (snapshots, size, size)."""
    if size < 16 or snapshots < 1:
        raise ValueError("size must be >= 16 and snapshots >= 1")
    rng = np.random.default_rng(seed)
    u = np.ones((size, size), dtype=np.float32)
    v = np.zeros((size, size), dtype=np.float32)
    for _ in range(max(1, size // 32)):  # a few seeded square perturbations
        cy, cx = rng.integers(0, size - size // 8, size=2)
        r = max(size // 16, 4)  # (smaller patches die out on small grids: a constant field)
        u[cy:cy + r, cx:cx + r] = 0.5
        v[cy:cy + r, cx:cx + r] = 0.25
    v += 0.01 * rng.random((size, size), dtype=np.float32)
    du, dv, dt = 0.16, 0.08, 1.0
    lu, lv, uvv = (np.empty_like(u) for _ in range(3))
    out = np.empty((snapshots, size, size), dtype=np.float32)
    steps = warmup + snapshots * every
    for step in range(1, steps + 1):
        _laplacian(u, lu)
        _laplacian(v, lv)
        np.multiply(v, v, out=uvv)
        uvv *= u
        u += dt * (du * lu - uvv + F * (1.0 - u))
        v += dt * (dv * lv + uvv - (F + k) * v)
        if step > warmup and (step - warmup) % every == 0:
            out[(step - warmup) // every - 1] = v
    return out
