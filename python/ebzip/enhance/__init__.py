"""Learned enhancers (NeurLZ- and GWLZ-style): a small CNN, trained at compression time, sharpens
the decompressed field; its fp16 weights travel with the stream. The bound is kept.

>>> import numpy as np, ebzip.enhance as ee                                  # doctest: +SKIP
>>> c = ee.compress(x, eb=1e-2, mode="rel")             # 1x mode: |x - y| <= eb everywhere
>>> y = ee.decompress(c)                                 # or ebzip.decompress(bytes(c))
>>> c = ee.compress_fields({"u": u, "v": v}, eb=1e-2, mode="rel")   # cross-field
>>> ee.decompress(c)                                     # {"u": ..., "v": ...}

How: compress each field with :func:`ebzip.compress`, decompress it, train a
residual CNN (a few hundred to a few thousand parameters, 2-D or 3-D
convolutions) to predict ``(x - x_hat) / eb`` from inputs the decoder also has
(the decompressed field, and in cross-field mode the other decompressed fields
on the same grid). Regulation: ``"1x"`` keeps ``|x - y| <= eb`` on every element
(where the enhanced value would leave the bound the plain reconstruction is used;
those positions are stored); ``"2x"`` clamps the correction to the plain
reconstruction +- eb, so ``|x - y| <= 2 eb``. ``groups=G`` (GWLZ) trains one
network per value-range group of the decompressed field. The container layout
is in docs/format.md; measurements in docs/enhance.md.

Needs torch (``pip install 'ebzip[torch]'``) to compress, and to decompress
with the enhancer; ``decompress(..., enhance=False)`` returns the plain
reconstructions (within the bound) without torch.
"""

from __future__ import annotations

import math
import time

import numpy as np

from .. import api
from ..api import StreamError
from . import container

__all__ = ["Enhanced", "compress", "compress_fields", "decompress", "is_container"]


# regulation -> (the base stream's bound as a fraction of the user's, the output's bound as a multiple
# of the base stream's). "1x": base at the user's bound, enhanced values that would leave it fall back
# (positions stored); "2x": the correction is clamped to +-eb, so the output is within 2 eb;
# "1x-half": the base at half the user's bound and the 2x clamp on it: within the user's bound with
# no stored positions (a different point on the same rate-distortion curve).
REGULATIONS = {"1x": (1.0, 1.0), "2x": (1.0, 2.0), "1x-half": (0.5, 2.0)}
# An enhanced value is accepted only where its error is within this fraction of the bound
# (minus two ulps of the element type): the decoder's convolutions may round differently
# from the encoder's (other CPU, thread count) by ~1e-6 of the bound; this margin absorbs it.
SAFETY = 1e-3
_CHANNEL_CHOICES = (16, 12, 8, 6, 4)
_SECTION_OVERHEAD = 200  # bytes an enhancer adds besides its payloads (3 table entries, its meta entry), roughly
SCALES = (1.0, 0.75, 0.5, 0.35, 0.25, 0.15)  # candidate scales of the learned correction (_choose_scale)
_LIMITS = dict(channels=256, blocks=16, groups=64, in_channels=64)


def _torch_model():
    """ebzip.enhance.model (imports torch), or an ImportError that says what to install."""
    try:
        from . import model
    except ImportError as e:
        raise ImportError("ebzip.enhance needs torch for its networks: pip install 'ebzip[torch]' "
                          "(decompress(..., enhance=False) gives the plain reconstruction without torch)") from e
    return model


def is_container(data) -> bool:
    """True for an enhancer container: an :class:`Enhanced`, or bytes starting with its magic."""
    return isinstance(data, Enhanced) or container.is_container(data)


class Enhanced:
    """An enhancer container: ``bytes(c)`` is the stream; ``c.stats`` what the encoder measured per field."""

    def __init__(self, data: bytes, stats: dict, single: bool):
        self._data = data
        self.stats = stats
        self.single = single

    def __bytes__(self) -> bytes:
        return self._data

    def __len__(self) -> int:
        return len(self._data)

    def __buffer__(self, flags):  # Python >= 3.12 buffer protocol
        return memoryview(self._data)

    @property
    def nbytes(self) -> int:
        return len(self._data)

    @property
    def fields(self) -> list[str]:
        return list(self.stats)

    def __repr__(self) -> str:
        return f"<ebzip.enhance.Enhanced {self.fields} {self.nbytes} bytes>"


# ---------------------------------------------------------------- helpers

def _as_field(x, name) -> np.ndarray:
    """The field as a C-contiguous float32/float64 array in native byte order, its shape kept."""
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    native = a.dtype.newbyteorder("=")
    if native not in (np.float32, np.float64):
        raise TypeError(f"ebzip.enhance compresses float32/float64 arrays (either byte order); field {name!r} "
                        f"is {a.dtype}")
    return np.asarray(a, dtype=native, order="C")  # (np.ascontiguousarray would make a 0-d array 1-d)


def _work_shape(shape: tuple) -> tuple:
    """The field as the networks see it: at least 2-D."""
    return shape if len(shape) >= 2 else (1,) * (2 - len(shape)) + shape


def _auto_dims(shape: tuple) -> int:
    """3-D convolutions where the third-last axis is long enough to be a spatial axis."""
    return 3 if len(shape) >= 3 and shape[-3] >= 16 else 2


def _norm_constants(recon: np.ndarray) -> tuple[float, float]:
    f = recon[np.isfinite(recon)]
    return (float(f.min()), float(f.max())) if f.size else (0.0, 0.0)


def _normalise(recon: np.ndarray, lo: float, hi: float) -> np.ndarray:
    span = hi - lo
    with np.errstate(invalid="ignore", over="ignore"):
        z = (recon.astype(np.float64) - lo) / span - 0.5 if span > 0 and math.isfinite(span) else np.zeros(recon.shape)
    z[~np.isfinite(z)] = 0.0
    return z.astype(np.float32)


def _highpass(recon: np.ndarray, eb_abs: float, wshape: tuple, dims: int) -> np.ndarray:
    """(x_hat - its 3^dims box mean) / eb over the conv axes, clipped to [-8, 8]: the local
    structure the residual correlates with, independent of the value's offset and scale."""
    v = recon.astype(np.float64).reshape(wshape)
    v = np.where(np.isfinite(v), v, 0.0)
    axes = tuple(range(len(wshape) - dims, len(wshape)))
    pad = [(1, 1) if a in axes else (0, 0) for a in range(len(wshape))]
    p = np.pad(v, pad, mode="edge")
    acc = np.zeros_like(v)
    for offs in np.ndindex(*(3,) * dims):
        sl = [slice(None)] * len(wshape)
        for a, o in zip(axes, offs):
            sl[a] = slice(o, o + wshape[a])
        acc += p[tuple(sl)]
    hp = (v - acc / 3**dims) / eb_abs if eb_abs > 0 else np.zeros_like(v)
    return np.clip(hp, -8, 8).astype(np.float32)


def _features(recons, norms, ebs, inputs_idx, wshape, dims) -> np.ndarray:
    """The network's input channels: per input field, its normalised value and its high-pass."""
    chans = []
    for j in inputs_idx:
        chans.append(_normalise(recons[j], *norms[j]).reshape(wshape))
        chans.append(_highpass(recons[j], ebs[j], wshape, dims))
    return np.stack(chans)


def _groups_of(own_norm: np.ndarray, edges: list[float]) -> np.ndarray | None:
    if not edges:
        return None
    return np.searchsorted(np.asarray(edges, dtype=np.float32), own_norm, side="right").astype(np.int64)


def _apply(recon: np.ndarray, r_hat: np.ndarray, eb_abs: float) -> np.ndarray:
    """The enhanced values in the field's type: x_hat + r_hat * eb, in float64 then one rounding."""
    with np.errstate(invalid="ignore", over="ignore"):
        return (recon.astype(np.float64) + r_hat.astype(np.float64) * eb_abs).astype(recon.dtype)


def _within(x: np.ndarray, y: np.ndarray, bound: float, margin: float = 0.0) -> np.ndarray:
    """|x - y| <= bound, checked in float64 and in the element type; margin shrinks the bound (safety)."""
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        if margin:
            ulp = np.spacing(np.abs(x64).astype(x.dtype)).astype(np.float64)
            lim = bound * (1 - margin) - 2 * ulp
        else:
            lim = bound
        ok = np.abs(x64 - y64) <= lim
        ok &= np.abs(x - y) <= x.dtype.type(bound)
    return ok


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    """PSNR in dB over the finite elements of x (value range of x as the peak)."""
    f = np.isfinite(x)
    xf, yf = x[f].astype(np.float64), y[f].astype(np.float64)
    if xf.size == 0:
        return math.inf
    r = xf.max() - xf.min()
    mse = float(np.mean((xf - yf) ** 2))
    if mse == 0:
        return math.inf
    return -math.inf if r == 0 else 10 * math.log10(r * r / mse)


def _check_int(name, v, lo, hi):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not lo <= v <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}]; got {v!r}")
    return int(v)


# ---------------------------------------------------------------- compression

def compress(x, eb: float, mode: str = "rel", **options) -> Enhanced:
    """Compress one array with a learned enhancer; see :func:`compress_fields` for the options.

    ``decompress`` of the result returns the array (not a dict).
    """
    return compress_fields({"x": x}, eb, mode, _single=True, **options)


def compress_fields(fields: dict, eb, mode: str = "rel", *, cross_field: bool = True, regulation: str = "1x",
                    groups: int = 1, steps: int = 400, time_limit: float | None = None, seed: int = 0,
                    channels: int | None = None, blocks: int = 2, conv_dims: int | None = None,
                    size_budget: float = 0.03, predictor: str = "auto", threads: int | None = 2,
                    device: str | None = None, keep: str = "auto", verify: bool = True,
                    _single: bool = False) -> Enhanced:
    """Compress several fields (same grid when ``cross_field``), each with its own enhancer.

    Args:
        fields: name (str) -> float32/float64 array (numpy, or a torch tensor).
        eb, mode: the bound, as for :func:`ebzip.compress` (``"abs"`` or ``"rel"``);
            ``eb`` may be a dict name -> bound.
        cross_field: every field's network also sees the other fields' decompressed values.
        regulation: ``"1x"`` (|x - y| <= eb everywhere; where the enhanced value would leave
            the bound, the plain value, positions stored), ``"2x"`` (|x - y| <= 2 eb: the
            correction clamped to the plain value +- eb), or ``"1x-half"`` (|x - y| <= eb: the
            base stream at eb/2 and the 2x clamp on it; no positions to store).
        groups: 1, or G > 1 for GWLZ: one network per value-range group (quantiles of
            the decompressed field).
        steps: training steps (Adam, random crops); ``time_limit`` (seconds) stops
            earlier, at the cost of determinism across machines.
        seed: results are deterministic for a seed (same machine and thread count).
        channels: width of the network (default: the widest in 16/12/8/6/4 whose fp16
            weights fit ``size_budget`` x the base stream's size, at least 4).
        blocks: residual layers; conv_dims: 2 or 3 (default: 3 when the third-last
            axis has >= 16 points, else 2 with leading axes as the batch).
        threads: torch threads (default 2; None leaves torch's setting);
            device: "cpu"/"cuda" (default: cuda when available).
        keep: ``"auto"`` stores a field's enhancer only where it pays: its PSNR gain beats
            what its bytes (weights, fallback positions) would buy the plain codec, estimated
            at the plain codec's local slope (dB per doubling of size, measured by one more
            plain compression at half the bound); ``"always"`` stores it regardless.
        verify: decode the container and check the bound on every element (raises
            RuntimeError if it failed: a bug, never expected).
    """
    model = _torch_model()
    if not isinstance(fields, dict) or not fields:
        raise ValueError("fields must be a non-empty dict name -> array")
    not_str = [n for n in fields if not isinstance(n, str)]
    if not_str:  # names are stored as JSON strings and come back as decompress's keys
        raise TypeError(f"field names must be str; got {not_str[0]!r} ({type(not_str[0]).__name__})")
    if regulation not in REGULATIONS:
        raise ValueError(f"regulation must be one of {sorted(REGULATIONS)}; got {regulation!r}")
    if mode not in ("abs", "rel"):
        raise ValueError(f"mode must be 'abs' or 'rel' for enhanced compression; got {mode!r}")
    groups = _check_int("groups", groups, 1, _LIMITS["groups"])
    steps = _check_int("steps", steps, 0, 10**7)
    blocks = _check_int("blocks", blocks, 0, _LIMITS["blocks"])
    if channels is not None:
        channels = _check_int("channels", channels, 1, _LIMITS["channels"])
    if keep not in ("auto", "always"):
        raise ValueError(f"keep must be 'auto' or 'always'; got {keep!r}")
    if conv_dims not in (None, 2, 3):
        raise ValueError(f"conv_dims must be 2, 3 or None; got {conv_dims!r}")
    if not (isinstance(size_budget, (int, float)) and size_budget > 0):
        raise ValueError(f"size_budget must be > 0; got {size_budget!r}")
    threads = None if threads is None else api._threads(threads)
    seed = _check_int("seed", seed, 0, 2**62)
    names = list(fields)
    arrays = [_as_field(fields[n], n) for n in names]
    if cross_field and len(arrays) > 1 and len({a.shape for a in arrays}) != 1:
        raise ValueError("cross_field needs all fields on one grid (same shape); got "
                         + ", ".join(f"{n}: {a.shape}" for n, a in zip(names, arrays)))
    ebs = eb if isinstance(eb, dict) else {n: eb for n in names}
    if set(ebs) != set(names):
        raise ValueError("an eb dict must give a bound for every field")
    dev = model.device_for(device)

    base_fraction, bound_factor = REGULATIONS[regulation]
    bases, recons, user_eb_abs, plain_psnr_at_user_bound = [], [], [], []
    for n, a in zip(names, arrays):
        c = api.compress(a, ebs[n], mode, predictor=predictor)
        user_eb_abs.append(float(c.eb_abs))
        if base_fraction != 1.0 and c.eb_abs > 0:
            plain_psnr_at_user_bound.append(psnr(a, api.decompress(c)))
            c = api.compress(a, c.eb_abs * base_fraction, "abs", predictor=predictor)
        bases.append(c)
        recons.append(api.decompress(c))
        if len(plain_psnr_at_user_bound) < len(bases):
            plain_psnr_at_user_bound.append(psnr(a, recons[-1]))
    norms = [_norm_constants(r) for r in recons]
    eb_list = [float(c.eb_abs) for c in bases]

    meta_fields, payloads, stats = [], [], {}
    for i, (n, a) in enumerate(zip(names, arrays)):
        base, recon = bases[i], recons[i]
        eb_abs = float(base.eb_abs)  # the base stream's bound: the network's unit
        guaranteed = bound_factor * eb_abs
        entry = dict(name=n, shape=list(a.shape), dtype=a.dtype.name, eb=float(ebs[n]), mode=mode, eb_abs=eb_abs,
                     bound_abs=guaranteed)
        # eb_abs in the stats: the user's bound (1x modes: every element within it; 2x: within twice it)
        st = dict(n=a.size, eb_abs=user_eb_abs[i], base_eb_abs=eb_abs, bound_abs=guaranteed, base_nbytes=base.nbytes,
                  enhancer_nbytes=0, params=0, fallbacks=0, train_seconds=0.0, train_steps=0,
                  psnr_plain=psnr(a, recon), psnr_plain_user_bound=plain_psnr_at_user_bound[i])
        secs = [(container.BASE, i, bytes(base))]
        entry["enhancer"] = None
        if eb_abs > 0 and math.isfinite(eb_abs) and a.size >= 8:
            t0 = time.perf_counter()
            inputs_idx = [i] + ([j for j in range(len(names)) if j != i] if cross_field else [])
            wshape = _work_shape(a.shape)
            dims = conv_dims or _auto_dims(wshape)
            if len(wshape) < dims:
                dims = 2
            n_in = 2 * len(inputs_idx)
            width = channels or _pick_width(n_in, blocks, dims, groups, base.nbytes * size_budget, model)
            cfg = dict(dims=dims, in_channels=n_in, channels=width, blocks=blocks)
            inputs = _features(recons, norms, eb_list, inputs_idx, wshape, dims)
            with np.errstate(invalid="ignore", over="ignore"):
                target = ((a.astype(np.float64) - recon.astype(np.float64)) / eb_abs).reshape(wshape)
            target[~np.isfinite(target)] = 0.0
            target = target.astype(np.float32)
            own = inputs[0]
            edges = ([float(q) for q in np.quantile(own, np.arange(1, groups) / groups)] if groups > 1 else [])
            group_of = _groups_of(own, edges)
            with model.torch_threads(threads):
                nets = model.build(cfg, groups, seed=seed + 7919 * i)
                info = model.train(nets, inputs, target, dims, group_of, steps=steps, time_limit=time_limit,
                                   seed=seed + 7919 * i, device=dev)
                weights = model.weights_to_fp16(nets)
                model.load_fp16(nets, weights)  # predict with exactly the weights the decoder will have
                r_hat = model.predict(nets, inputs, dims, group_of, dev).reshape(a.shape)
            norm_vals = np.array([v for j in inputs_idx for v in norms[j]], dtype="<f8")
            fixed_bytes = len(weights) + norm_vals.nbytes + _SECTION_OVERHEAD
            slope = _plain_slope(a, eb_abs, base.nbytes, st["psnr_plain"], predictor) if keep == "auto" else 0.0
            scale, fallback, fb_bytes, score = _choose_scale(a, recon, r_hat, eb_abs, bound_factor * eb_abs,
                                                             base.nbytes, fixed_bytes, slope)
            st["plain_slope_db_per_doubling"] = slope
            kept = np.where(fallback, recon, _apply(recon, r_hat * np.float32(scale), eb_abs))
            st.update(train_seconds=info["seconds"], train_steps=info["steps"], **cfg, groups=groups,
                      params=len(weights) // 2, scale=scale, rd_score_db=score, psnr_if_kept=psnr(a, kept),
                      extra_nbytes_if_kept=fixed_bytes - _SECTION_OVERHEAD + len(fb_bytes))
            if keep == "always" or score > 0:
                entry["enhancer"] = dict(cfg, groups=groups, group_edges=edges, inputs=inputs_idx,
                                         regulation=regulation, scale=scale, seed=seed)
                secs += [(container.WEIGHTS, i, weights), (container.NORM, i, norm_vals.tobytes()),
                         (container.FALLBACK, i, fb_bytes)]
                st.update(enhancer_nbytes=len(weights) + norm_vals.nbytes + len(fb_bytes),
                          fallbacks=int(fallback.sum()), fallback_encoding=["none", "bitmask", "deltas"][fb_bytes[0]])
            st["encode_seconds"] = time.perf_counter() - t0
        st["enhanced"] = entry["enhancer"] is not None
        meta_fields.append(entry)
        payloads.append(secs)
        stats[n] = st

    meta = dict(fields=meta_fields, single=_single, container_version=container.VERSION)
    meta_bytes = container.meta_payload(meta)
    data = container.pack([(container.META, 0, meta_bytes)] + [s for secs in payloads for s in secs])
    # per-field share of the container: its sections, plus an equal share of header, table and meta
    shared = len(data) - sum(len(p) for secs in payloads for _, _, p in secs)
    for n, secs in zip(names, payloads):
        stats[n]["nbytes"] = sum(len(p) for _, _, p in secs) + shared / len(names)
        stats[n]["bits_per_value"] = 8 * stats[n]["nbytes"] / max(stats[n]["n"], 1)
    out = Enhanced(data, stats, single=_single)
    if verify:
        t0 = time.perf_counter()
        decoded = _decode(data, enhance=True, threads=threads, device=device)
        for n, a in zip(names, arrays):
            y = decoded[n]
            bound = stats[n]["bound_abs"]
            finite = np.isfinite(a)  # (non-finite values come back bit-exactly from the base stream)
            bad = finite & ~_within(a, y, bound)
            if bad.any():
                raise RuntimeError(f"ebzip.enhance: field {n!r} missed its bound on {int(bad.sum())} elements "
                                   "after encoding (a bug; please report)")
            err = np.abs(a[finite].astype(np.float64) - y[finite].astype(np.float64))
            stats[n]["max_err_over_eb"] = float(err.max() / stats[n]["eb_abs"]) if err.size and stats[n]["eb_abs"] else 0.0
            stats[n]["psnr"] = psnr(a, y)
        for n in names:
            stats[n]["verify_seconds"] = (time.perf_counter() - t0) / len(names)
    return out


def _plain_slope(a, eb_abs, base_nbytes, psnr_plain, predictor) -> float:
    """dB of PSNR the plain codec gains per doubling of its size, around this bound (one more
    compression at half the bound); the price of the enhancer's bytes."""
    half = api.compress(a, eb_abs / 2, "abs", predictor=predictor)
    p2 = psnr(a, api.decompress(half))
    doublings = math.log2(half.nbytes / base_nbytes) if half.nbytes > base_nbytes else 0.0
    if doublings <= 0.01 or not math.isfinite(p2) or not math.isfinite(psnr_plain):
        return 30.0  # bits are nearly free for the plain codec here (or lossless): the enhancer must be huge
    return float(min(max((p2 - psnr_plain) / doublings, 1.0), 30.0))


def _choose_scale(a, recon, r_hat, eb_abs, bound, base_nbytes, fixed_bytes, slope):
    """The correction's scale (shrinking it trades gain for fewer fallback positions), by RD score.

    score = PSNR gain (dB) - slope * log2(size with enhancer / base size): positive means
    the enhancer beats spending its bytes on a tighter bound instead (to first order).
    Returns (scale, fallback mask, fallback bytes, score).
    """
    finite = np.isfinite(a)
    x64 = a[finite].astype(np.float64)
    mse_plain = float(np.mean((x64 - recon[finite].astype(np.float64)) ** 2)) if x64.size else 0.0
    best = None
    for scale in SCALES:
        enhanced = _apply(recon, r_hat * np.float32(scale), eb_abs)
        fallback = finite & ~_within(a, enhanced, bound, margin=SAFETY)
        y = np.where(fallback, recon, enhanced)[finite].astype(np.float64)
        mse = float(np.mean((x64 - y) ** 2)) if x64.size else 0.0
        fb_bytes = container.encode_positions(fallback)
        gain = 10 * math.log10(mse_plain / mse) if mse > 0 and mse_plain > 0 else 0.0
        score = gain - slope * math.log2((base_nbytes + fixed_bytes + len(fb_bytes)) / base_nbytes)
        if best is None or score > best[3]:
            best = (scale, fallback, fb_bytes, score)
    return best


def _pick_width(in_channels, blocks, dims, groups, budget_bytes, model) -> int:
    for c in _CHANNEL_CHOICES:
        if 2 * groups * model.n_params(in_channels, c, blocks, dims) <= budget_bytes:
            return c
    return _CHANNEL_CHOICES[-1]


# ---------------------------------------------------------------- decompression

def decompress(data, *, enhance: bool = True, threads: int | None = 2, device: str | None = None):
    """The arrays of an enhancer container: the array for :func:`compress`, a dict for :func:`compress_fields`.

    ``enhance=False`` returns the plain ebzip reconstructions (within the bound, no torch needed).
    Raises :class:`ebzip.StreamError` for a truncated, corrupted or unknown container.
    """
    if isinstance(data, Enhanced):
        data = bytes(data)
    threads = None if threads is None else api._threads(threads)
    meta, out = _decode(data, enhance=enhance, threads=threads, device=device, with_meta=True)
    return next(iter(out.values())) if meta.get("single") else out


def inspect(data) -> dict:
    """The container's meta section (fields, bounds, network configurations), checked but not decoded."""
    return container.read(bytes(data) if isinstance(data, Enhanced) else data)[0]


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_field(i: int, entry, recon: np.ndarray, base_eb_abs: float) -> tuple[str, float]:
    """A field's description in the meta section, checked against its base stream (whose header is
    authoritative): (name, eb_abs). eb_abs scales the learned correction: a forged one would move
    values beyond the bound."""
    try:
        name, shape, dtype, eb_abs = (entry[k] for k in ("name", "shape", "dtype", "eb_abs"))
    except (KeyError, TypeError) as e:
        raise StreamError(f"enhancer container: field {i} description unreadable ({e!r})") from None
    if not (isinstance(name, str) or _is_int(name)):  # integers: older versions wrote int keys (verify=False)
        raise StreamError(f"enhancer container: field {i}'s name is not a string")
    if (not isinstance(shape, list) or not all(_is_int(n) for n in shape) or tuple(shape) != recon.shape
            or dtype not in ("float32", "float64") or dtype != recon.dtype.name):
        raise StreamError(f"enhancer container: field {i}'s base stream does not match its description")
    if not (_is_number(eb_abs) and math.isfinite(eb_abs) and eb_abs >= 0 and eb_abs == base_eb_abs):
        raise StreamError(f"enhancer container: field {i}'s eb_abs {eb_abs!r} is not its base stream's "
                          f"bound {base_eb_abs!r}")
    return str(name), float(eb_abs)


def _check_config(entry: dict, n_fields: int, ndim: int) -> dict:
    """An enhancer's configuration from the meta section, types and ranges checked (JSON numbers are
    not converted: a string or a float where an integer belongs is refused)."""
    try:
        e = entry["enhancer"]
        cfg = {k: e[k] for k in ("dims", "in_channels", "channels", "blocks")}
        groups, inputs, edges, regulation, scale = (e[k] for k in ("groups", "inputs", "group_edges", "regulation",
                                                                    "scale"))
    except (KeyError, TypeError) as ex:
        raise StreamError(f"enhancer container: enhancer config unreadable ({ex!r})") from None
    if not (all(_is_int(v) for v in (*cfg.values(), groups)) and isinstance(inputs, list)
            and all(_is_int(j) for j in inputs) and isinstance(edges, list) and all(_is_number(v) for v in edges)
            and isinstance(regulation, str) and _is_number(scale)):
        raise StreamError("enhancer container: enhancer config has a value of the wrong type")
    if (cfg["dims"] not in (2, 3) or cfg["dims"] > ndim or not 1 <= cfg["channels"] <= _LIMITS["channels"]
            or not 0 <= cfg["blocks"] <= _LIMITS["blocks"] or not 1 <= groups <= _LIMITS["groups"]
            or cfg["in_channels"] != 2 * len(inputs) or not 1 <= len(inputs) <= _LIMITS["in_channels"]
            or any(not 0 <= j < n_fields for j in inputs) or len(edges) != groups - 1
            or regulation not in REGULATIONS or not 0 <= scale <= 1):
        raise StreamError("enhancer container: enhancer config out of range")
    return dict(cfg=cfg, groups=groups, inputs=inputs, edges=[float(v) for v in edges], regulation=regulation,
                scale=float(scale))


def _decode(data, *, enhance: bool, threads, device, with_meta: bool = False):
    meta, by_key = container.read(data)
    fields = meta["fields"]
    single = meta.get("single")
    if not isinstance(single, bool) or (single and len(fields) != 1):
        raise StreamError(f"enhancer container: 'single' is {single!r} with {len(fields)} fields")
    recons, names, ebs = [], [], []
    for i, entry in enumerate(fields):
        base = by_key[(container.BASE, i)]
        y = api.decompress(base)
        name, eb_abs = _check_field(i, entry, y, api.inspect(base)["eb_abs"])
        recons.append(y)
        names.append(name)
        ebs.append(eb_abs)
    if len(set(names)) != len(names):
        raise StreamError("enhancer container: duplicate field names")
    out = dict(zip(names, recons))
    wanted = [i for i, e in enumerate(fields) if e.get("enhancer")]
    stray = [f for kind, f in by_key if kind != container.BASE and f not in wanted]
    if stray:
        raise StreamError(f"enhancer container: enhancer sections for field {stray[0]}, which has no enhancer")
    if enhance and wanted:
        model = _torch_model()
        dev = model.device_for(device)
        for i in wanted:
            entry, recon = fields[i], recons[i]
            c = _check_config(entry, len(fields), len(_work_shape(recon.shape)))
            if any(recons[j].shape != recon.shape for j in c["inputs"]):
                raise StreamError("enhancer container: cross-field inputs are not on the field's grid")
            weights, norm, fb = (by_key.get((k, i)) for k in (container.WEIGHTS, container.NORM, container.FALLBACK))
            if weights is None or norm is None or fb is None:
                raise StreamError(f"enhancer container: field {i}'s enhancer section is incomplete")
            n_weights = c["groups"] * model.n_params(**{k: c["cfg"][k] for k in ("in_channels", "channels", "blocks",
                                                                                   "dims")})
            if len(weights) != 2 * n_weights:
                raise StreamError(f"enhancer container: field {i} has {len(weights)} weight bytes, "
                                  f"its config needs {2 * n_weights}")
            if len(norm) != 16 * len(c["inputs"]) or c["cfg"]["in_channels"] != 2 * len(c["inputs"]):
                raise StreamError(f"enhancer container: field {i}'s normalisation constants have the wrong length")
            nv = np.frombuffer(bytes(norm), dtype="<f8").reshape(-1, 2)
            fallback = container.decode_positions(fb, recon.size).reshape(recon.shape)
            eb_abs = ebs[i]
            wshape = _work_shape(recon.shape)
            norms = {j: tuple(nv[k]) for k, j in enumerate(c["inputs"])}
            inputs = _features(recons, norms, ebs, c["inputs"], wshape, c["cfg"]["dims"])
            with model.torch_threads(threads):
                nets = model.build(c["cfg"], c["groups"])
                model.load_fp16(nets, bytes(weights))
                r_hat = model.predict(nets, inputs, c["cfg"]["dims"], _groups_of(inputs[0], c["edges"]), dev)
            enhanced = _apply(recon, r_hat.reshape(recon.shape) * np.float32(c["scale"]), eb_abs)
            keep_plain = fallback | ~np.isfinite(recon)
            out[names[i]] = np.where(keep_plain, recon, enhanced)
    return (meta, out) if with_meta else out
