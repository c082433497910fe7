"""Freeze-cache: train the unfrozen suffix of a model from compressed feature maps of its frozen prefix.

When the first ``k`` stages of a model are frozen, their output for a training
input no longer changes, so the prefix is run once over the training set and its
outputs are kept, compressed with ebzip under an absolute error bound; later epochs
feed the suffix from this cache and never run the prefix again. See
``docs/freeze-cache.md`` for the design, the disk format and measurements.

* **Chunks**: ``chunk_size`` consecutive samples' maps form one ebzip stream (one call
  per chunk amortises per-call overhead). Each epoch shuffles the chunk order and the
  samples within each chunk, so reads stay sequential.
* **Memory budget and spill**: compressed chunks stay in memory while their bytes fit
  ``memory_budget``; later ones are written to ``spill_dir`` as files. A background
  thread reads and decompresses the next chunks while the suffix trains.
* **Progressive bound** (:class:`ProgressiveBound`): the relative bound grows with the
  freeze point; the cache is rebuilt at each new freeze point.
* **Similarity-aware channel augmentation** (:class:`ChannelAugmentation`): channels
  whose maps commute with an augmentation (augmenting the cached map matches the map
  of the augmented input) are augmented in feature space; the most sensitive channels
  get cached augmented variants, within a storage budget.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import ebzip

MANIFEST = "manifest.json"
FORMAT_NAME = "ebzip-freeze-cache"
FORMAT_VERSION = 1


class FreezeCacheError(ValueError):
    """A cache directory is missing, incomplete, corrupted or of an unknown format version
    (or a cache cannot be saved as one)."""


# ---------------------------------------------------------------- the bound


class ProgressiveBound:
    """The error bound at each freeze point: relative ``rel(k) = min(base * growth**(k - 1), max_rel)``
    for a prefix of ``k`` frozen stages, as a fraction of the value range of the prefix's
    feature maps (measured on the calibration samples); ``growth=1`` gives one fixed bound.

    Deeper maps feed fewer trainable layers and are more abstract, so they tolerate a
    looser bound, and a looser bound is what keeps the deeper (often wider) cache small.
    """

    def __init__(self, base: float = 1e-2, growth: float = 2.0, max_rel: float = 0.05):
        for name, v in (("base", base), ("growth", growth), ("max_rel", max_rel)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
                raise ValueError(f"{name} must be a positive finite number; got {v!r}")
        if growth < 1:
            raise ValueError(f"growth must be >= 1 (the bound must not shrink as the freeze point deepens); "
                             f"got {growth!r}")
        self.base, self.growth, self.max_rel = float(base), float(growth), float(max_rel)

    @classmethod
    def fixed(cls, rel: float) -> "ProgressiveBound":
        return cls(base=rel, growth=1.0, max_rel=rel)

    def rel(self, n_frozen: int) -> float:
        if not isinstance(n_frozen, int) or isinstance(n_frozen, bool) or n_frozen < 1:
            raise ValueError(f"the freeze point is a number of frozen stages >= 1; got {n_frozen!r}")
        try:
            return min(self.base * self.growth ** (n_frozen - 1), self.max_rel)
        except OverflowError:  # growth ** (k - 1) beyond float: far past max_rel
            return self.max_rel

    def to_json(self) -> dict:
        return {"base": self.base, "growth": self.growth, "max_rel": self.max_rel}


# ---------------------------------------------------------------- augmentations


class Shift:
    """Translate an image by ``(dy, dx)`` input pixels.

    On inputs the uncovered border is filled with ``fill`` (the background); on a feature
    map of stride ``s`` the shift is ``(dy / s, dx / s)`` map pixels with the border
    replicated (a map's background is a per-channel constant after batch norm, not 0).
    Both shifts must be whole numbers of map pixels.
    """

    def __init__(self, dy: int, dx: int, fill: float = 0.0):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (dy, dx)):
            raise TypeError(f"shifts are whole pixels; got dy={dy!r}, dx={dx!r}")
        self.dy, self.dx, self.fill = dy, dx, float(fill)

    def __repr__(self) -> str:
        return f"Shift({self.dy}, {self.dx})"

    def to_json(self) -> dict:
        return {"kind": "shift", "dy": self.dy, "dx": self.dx, "fill": self.fill}

    @staticmethod
    def _shift(x: torch.Tensor, dy: int, dx: int, mode: str, value: float = 0.0) -> torch.Tensor:
        h, w = x.shape[-2:]
        if abs(dy) >= h or abs(dx) >= w:
            raise ValueError(f"shift ({dy}, {dx}) is not smaller than the map ({h}x{w})")
        pad = (max(dx, 0), max(-dx, 0), max(dy, 0), max(-dy, 0))
        padded = F.pad(x, pad, mode=mode, value=value) if mode == "constant" else F.pad(x, pad, mode=mode)
        y0, x0 = max(-dy, 0), max(-dx, 0)
        return padded[..., y0:y0 + h, x0:x0 + w]

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return self._shift(x, self.dy, self.dx, "constant", self.fill)

    def feature(self, f: torch.Tensor, stride: tuple[int, int]) -> torch.Tensor:
        sy, sx = stride
        if self.dy % sy or self.dx % sx:
            raise ValueError(f"{self!r} is not a whole number of pixels of a feature map of stride {stride}: "
                             "choose shifts that are multiples of the stride at every freeze point")
        return self._shift(f, self.dy // sy, self.dx // sx, "replicate")


@dataclass
class ChannelAugmentation:
    """Similarity-aware channel augmentation at the freeze boundary.

    For each augmentation ``a`` and channel ``c`` the mismatch
    ``||a(prefix(x))_c - prefix(a(x))_c|| / ||prefix(a(x))_c||`` (relative L2 over the
    calibration samples, averaged over the augmentations) says whether ``a`` commutes
    with the prefix on that channel. Channels with mismatch <= ``threshold`` are augmented
    directly on the cached map. The others are *sensitive*: for the most sensitive ones
    (in order of mismatch), as many as fit ``variant_budget`` (a fraction of the bytes of
    the base cache), each sample also gets ``variants_per_sample`` cached variants
    ``prefix(a_i(x))`` for randomly drawn augmentations ``a_i``. When variants are cached,
    a sample is augmented each epoch with one of its own ``a_i`` or not at all (so every
    channel is right within the bound or commutes); without variants, with any of the
    augmentations or not at all, uniformly.
    """

    augmentations: Sequence[Shift]
    threshold: float = 0.1
    variant_budget: float = 0.25
    variants_per_sample: int = 1
    calibration_samples: int = 64

    def __post_init__(self):
        self.augmentations = list(self.augmentations)
        if not self.augmentations or not all(hasattr(a, "input") and hasattr(a, "feature")
                                             for a in self.augmentations):
            raise TypeError("augmentations must be a non-empty list of augmentations such as Shift(dy, dx)")
        if not (isinstance(self.threshold, (int, float)) and self.threshold >= 0):
            raise ValueError(f"threshold must be >= 0; got {self.threshold!r}")
        if not (isinstance(self.variant_budget, (int, float)) and 0 <= self.variant_budget < math.inf):
            raise ValueError(f"variant_budget is a fraction of the base cache's bytes, finite and >= 0; "
                             f"got {self.variant_budget!r}")
        if not (isinstance(self.variants_per_sample, int) and 1 <= self.variants_per_sample
                <= len(self.augmentations)):
            raise ValueError(f"variants_per_sample must be in [1, {len(self.augmentations)}]; "
                             f"got {self.variants_per_sample!r}")
        if not (isinstance(self.calibration_samples, int) and self.calibration_samples >= 1):
            raise ValueError(f"calibration_samples must be a positive integer; got {self.calibration_samples!r}")

    @torch.no_grad()
    def mismatch(self, prefix: Callable, x: torch.Tensor, features: torch.Tensor,
                 stride: tuple[int, int], batch_size: int | None = None) -> torch.Tensor:
        """Per channel, the mean relative L2 mismatch between augmenting the map and mapping the augmented input
        (over the elements finite in both); the prefix runs on ``batch_size`` samples at a time (all when None)."""
        step = batch_size or max(len(x), 1)
        total = torch.zeros(features.shape[1], dtype=torch.float64)
        for aug in self.augmentations:
            num = torch.zeros(features.shape[1], dtype=torch.float64)
            den = torch.zeros(features.shape[1], dtype=torch.float64)
            for i in range(0, len(x), step):
                on_map = aug.feature(features[i:i + step], stride).double().cpu()
                of_input = prefix(aug.input(x[i:i + step])).double().cpu()
                # over the elements finite in both: one NaN or Inf would make its channel's mismatch NaN
                ok = on_map.isfinite() & of_input.isfinite()
                num += (on_map - of_input).where(ok, 0).pow(2).sum(dim=(0, 2, 3))
                den += of_input.where(ok, 0).pow(2).sum(dim=(0, 2, 3))
            total += num.sqrt() / den.sqrt().clamp_min(1e-30)
        return total / len(self.augmentations)


# ---------------------------------------------------------------- the cache


@dataclass
class _Chunk:
    n: int
    labels: torch.Tensor  # (n,) as given
    aug_ids: np.ndarray | None  # (n, variants_per_sample) indices into the augmentations, or None
    nbytes: int  # base stream
    variant_nbytes: int
    nonnegative: bool  # every map value >= 0 (after a ReLU): decoded values are clamped at 0
    base: bytes | None = None  # in memory, or None when spilled
    variants: bytes | None = None
    directory: Path | None = None  # where its files are, when on disk
    files: dict = field(default_factory=dict)  # "base"/"variants" -> {"file", "nbytes", "sha256"} when on disk


def _atomic_write(path: Path, data) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _identity(path: Path) -> tuple:
    """Which file ``path`` is now: another file written or renamed over it differs."""
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _chunk_file_name(stem: str, kind: str) -> str:
    return f"{stem}.ebz" if kind == "base" else f"{stem}.variants.ebz"


def _free_stem(directory: Path, index: int, taken: set | frozenset = frozenset()) -> str:
    """The first stem of chunk-00007, chunk-00007-1, ... whose files are neither in ``directory`` (a cache
    saved there, or another cache's spill) nor in ``taken``: spilling and saving never replace a file."""
    stem, tries = f"chunk-{index:05d}", 0
    while any(name in taken or (directory / name).exists()
              for name in (_chunk_file_name(stem, "base"), _chunk_file_name(stem, "variants"))):
        tries += 1
        stem = f"chunk-{index:05d}-{tries}"
    return stem


class FeatureCache:
    """Compressed feature maps of a frozen prefix, in memory under a byte budget, spilling to disk.

    Args:
        memory_budget: bytes of compressed streams kept in memory (base maps and variants);
            chunks that do not fit are written to ``spill_dir``. ``0`` keeps everything on disk.
        spill_dir: directory for spilled chunks (a temporary directory, removed by
            :meth:`close`, when None). :meth:`save` makes any directory a loadable cache; spilling
            never replaces a file already in ``spill_dir`` (such as a cache saved there).
        chunk_size: samples per ebzip stream.
        bound: a :class:`ProgressiveBound` (default ``ProgressiveBound()``).
        channel_aug: a :class:`ChannelAugmentation`, or None for no augmentation of cached maps.
        predictor: ebzip's predictor. ``"lorenzo"`` by default: on ReLU feature maps stored as
            rows (see ``docs/freeze-cache.md``) it matched ``"auto"``'s ratio, compressed
            faster and keeps more exact zeros.
        prefetch: chunks decoded ahead by the background thread.
        threads: ebzip threads per call (None: ebzip's default).
        seed: seeds the shuffles, the augmentation draws and the variants' augmentations.

    ``build(prefix, inputs, labels, n_frozen=k)`` fills it; ``batches(batch_size, epoch)``
    iterates ``(features, labels)``; ``save(path)`` / ``FeatureCache.load(path)``.
    """

    def __init__(self, *, memory_budget: int = 256 << 20, spill_dir: str | os.PathLike | None = None,
                 chunk_size: int = 512, bound: ProgressiveBound | None = None,
                 channel_aug: ChannelAugmentation | None = None, predictor: str = "lorenzo",
                 prefetch: int = 2, threads: int | None = None, seed: int = 0):
        if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget < 0:
            raise ValueError(f"memory_budget is a number of bytes >= 0; got {memory_budget!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer; got {chunk_size!r}")
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise ValueError(f"prefetch must be a positive integer; got {prefetch!r}")
        if predictor not in ("auto", "lorenzo", "interp"):
            raise ValueError(f"predictor must be 'auto', 'lorenzo' or 'interp'; got {predictor!r}")
        if bound is not None and not isinstance(bound, ProgressiveBound):
            raise TypeError(f"bound must be a ProgressiveBound; got {type(bound).__name__}")
        if channel_aug is not None and not isinstance(channel_aug, ChannelAugmentation):
            raise TypeError(f"channel_aug must be a ChannelAugmentation or None; got {type(channel_aug).__name__}")
        self.memory_budget = memory_budget
        self.chunk_size = chunk_size
        self.bound = bound or ProgressiveBound()
        self.channel_aug = channel_aug
        self.predictor = predictor
        self.prefetch = prefetch
        self.threads = threads
        self.seed = _seed_like("seed", seed)
        self._spill_dir = Path(spill_dir) if spill_dir is not None else None
        self._own_spill_dir = spill_dir is None
        self._chunks: list[_Chunk] = []
        self._spilled_files: list[tuple[str, tuple]] = []  # (name, _identity) of each file it spilled
        self._meta: dict = {}
        self._stats: dict = {}  # accounting of the cache held now ({} when empty)
        self._generation = 0  # counts clear()s: an epoch being iterated stops when its cache is gone
        self.history: list[dict] = []  # accounting of every completed build, in order
        # time the prefetch thread spent reading, decoding and augmenting chunks, and the time
        # the training loop waited for it (near 0 when prefetch keeps ahead)
        self.decode_seconds = 0.0
        self.wait_seconds = 0.0

    # ------------------------------------------------------------ properties

    @property
    def n_samples(self) -> int:
        return sum(c.n for c in self._chunks)

    @property
    def n_chunks(self) -> int:
        return len(self._chunks)

    @property
    def eb_abs(self) -> float:
        """The absolute bound every cached base value is within."""
        return self._meta["eb_abs"]

    @property
    def memory_bytes(self) -> int:
        """Bytes of compressed streams held in memory now (what ``memory_budget`` limits)."""
        return sum(len(c.base) if c.base is not None else 0 for c in self._chunks) + \
            sum(len(c.variants) if c.variants is not None else 0 for c in self._chunks)

    @property
    def spilled_chunks(self) -> int:
        return sum(1 for c in self._chunks if c.base is None)

    @property
    def stats(self) -> dict:
        """Accounting of the cache held now: bytes raw vs compressed, bound, channels, timings
        (``{}`` when it holds nothing, e.g. after :meth:`clear` or a failed build)."""
        return dict(self._stats)

    @property
    def sensitive_channels(self) -> list[int]:
        """Channels with cached augmented variants."""
        return list(self._meta.get("variant_channels", []))

    @property
    def channel_mismatch(self) -> list[float] | None:
        return self._meta.get("channel_mismatch")

    # ------------------------------------------------------------ building

    def _spill_path(self) -> Path:
        if self._spill_dir is None:
            self._spill_dir = Path(tempfile.mkdtemp(prefix="ebzip-freeze-cache-"))
        self._spill_dir.mkdir(parents=True, exist_ok=True)
        return self._spill_dir

    def _compress(self, t: torch.Tensor, eb_abs: float) -> bytes:
        # Rows layout: maps as (..., W) rows stacked, so Lorenzo predicts along a map's rows and
        # columns only, never across samples or channels (unrelated neighbours cost ratio).
        rows = t.detach().reshape(-1, t.shape[-1]).cpu().contiguous()
        return bytes(ebzip.compress(rows, eb_abs, "abs", predictor=self.predictor, threads=self.threads))

    def _decompress(self, data: bytes, shape: Sequence[int], nonnegative: bool) -> torch.Tensor:
        out = ebzip.decompress(data, like="torch", threads=self.threads).reshape(tuple(shape))
        if nonnegative:
            # every original value was >= 0 (a ReLU): clamping moves a value toward the truth, so it
            # stays within the bound, and the ReLU's exact zeros come back
            out.clamp_(min=0)
        return out

    def _store(self, index: int, chunk: _Chunk, base: bytes, variants: bytes | None) -> None:
        size = len(base) + (len(variants) if variants is not None else 0)
        if self.memory_bytes + size <= self.memory_budget:
            chunk.base, chunk.variants = base, variants
        else:
            chunk.directory = self._spill_path()
            stem = _free_stem(chunk.directory, index)
            for kind, data in (("base", base), ("variants", variants)):
                if data is not None:
                    name = _chunk_file_name(stem, kind)
                    _atomic_write(chunk.directory / name, data)
                    # the file's identity: clear() deletes it only while it is still the file written here
                    self._spilled_files.append((name, _identity(chunk.directory / name)))
                    chunk.files[kind] = {"file": name, "nbytes": len(data),
                                         "sha256": hashlib.sha256(data).hexdigest()}
        self._chunks.append(chunk)

    def clear(self) -> None:
        """Drop every chunk: from memory, and the files this cache spilled and still owns (never a loaded
        or saved cache's files, nor a file that replaced one of its own)."""
        for name, identity in self._spilled_files:
            try:
                f = self._spill_dir / name
                if _identity(f) == identity:
                    f.unlink()
            except OSError:
                pass
        self._spilled_files = []
        self._chunks = []
        self._meta = {}
        self._stats = {}
        self._generation += 1

    @torch.no_grad()
    def build(self, prefix: Callable[[torch.Tensor], torch.Tensor], inputs: torch.Tensor, labels: torch.Tensor,
              *, n_frozen: int, batch_size: int = 256) -> dict:
        """Run the frozen ``prefix`` once over ``inputs`` (N, C, H, W) and cache its compressed maps.

        Replaces what the cache held (the progressive rewrite at a new freeze point).
        ``prefix`` is put in eval mode when it is an ``nn.Module``. Returns :attr:`stats`.

        All or nothing: the arguments and the calibration maps are checked before the old
        cache is dropped, so a build refused there keeps it; a build that fails after that
        (the prefix raising on a later sample, a spill that cannot be written) leaves the
        cache empty (its spilled files removed, :attr:`stats` ``{}``), never half built.
        """
        if not isinstance(inputs, torch.Tensor) or inputs.dim() != 4:
            raise ValueError(f"inputs must be a 4-D tensor (N, C, H, W); got "
                             f"{tuple(inputs.shape) if isinstance(inputs, torch.Tensor) else type(inputs).__name__}")
        if not isinstance(labels, torch.Tensor) or labels.dim() == 0 or labels.shape[:1] != inputs.shape[:1]:
            raise ValueError("labels must be a tensor with one entry per input")
        if labels.is_complex():
            raise TypeError(f"labels must be integer, floating-point or bool (a saved cache holds them as JSON "
                            f"numbers); got {labels.dtype}")
        if inputs.shape[0] == 0:
            raise ValueError("inputs is empty")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        if isinstance(prefix, torch.nn.Module):
            prefix.eval()
        rel = self.bound.rel(n_frozen)
        t_start = time.perf_counter()
        n = inputs.shape[0]
        rng = np.random.default_rng([self.seed, n_frozen])
        aug = self.channel_aug

        # calibration: the bound's scale, the stride, and which channels commute with the augmentations
        cal_x = inputs[:aug.calibration_samples if aug else min(n, 256)]
        cal_f = torch.cat([prefix(cal_x[i:i + batch_size]) for i in range(0, len(cal_x), batch_size)])
        if cal_f.dim() != 4:
            raise ValueError(f"the prefix must return (N, C, H, W) maps; got shape {tuple(cal_f.shape)}")
        if not cal_f.is_floating_point():
            raise TypeError(f"the prefix returned {cal_f.dtype}; ebzip caches floating-point maps")
        # the range of the finite values: ebzip stores NaN and Inf exactly, they need no bound
        finite = cal_f[cal_f.isfinite()]
        if finite.numel() == 0:
            raise ValueError("the prefix's maps of the calibration samples have no finite value, so no value range "
                             "to scale the relative bound by")
        value_range = float(finite.max()) - float(finite.min())
        eb_abs = rel * value_range
        # input pixels per map pixel, for shifting maps; a map larger than its input (padding, upsampling) has no
        # whole stride and records 1 (channel augmentation refuses such maps just below)
        stride = (max(1, inputs.shape[2] // cal_f.shape[2]), max(1, inputs.shape[3] // cal_f.shape[3]))
        if aug is not None and (inputs.shape[2] % cal_f.shape[2] or inputs.shape[3] % cal_f.shape[3]):
            raise ValueError(f"channel augmentation needs maps whose size divides the input's: "
                             f"{tuple(inputs.shape[2:])} -> {tuple(cal_f.shape[2:])}")
        channels = cal_f.shape[1]
        mismatch, variant_channels, n_sensitive = None, [], 0
        if aug is not None:
            mismatch = aug.mismatch(prefix, cal_x, cal_f, stride, batch_size)
            order = torch.argsort(mismatch, descending=True)
            sensitive = [int(c) for c in order if float(mismatch[c]) > aug.threshold]
            n_sensitive = len(sensitive)
            variant_channels = self._fit_variant_budget(sensitive, cal_f, eb_abs)
        meta = {
            "n_frozen": n_frozen, "eb_rel": rel, "eb_abs": eb_abs, "value_range": value_range,
            "feature_shape": list(cal_f.shape[1:]), "dtype": str(cal_f.dtype).replace("torch.", ""),
            "device": str(cal_f.device), "stride": list(stride),
            "variant_channels": variant_channels,
            "channel_mismatch": None if mismatch is None else [float(v) for v in mismatch],
            "augmentations": [a.to_json() for a in aug.augmentations] if aug else [],
            "variants_per_sample": aug.variants_per_sample if aug else 0,
        }
        self.clear()  # everything checkable is checked: drop the old cache (and its spilled files)
        try:
            return self._build_chunks(prefix, inputs, labels, batch_size, cal_f, rng, t_start, meta, n_sensitive)
        except BaseException:
            self.clear()  # never leave a half-built cache
            raise

    def _build_chunks(self, prefix: Callable, inputs: torch.Tensor, labels: torch.Tensor, batch_size: int,
                      cal_f: torch.Tensor, rng: np.random.Generator, t_start: float, meta: dict,
                      n_sensitive: int) -> dict:
        """Run the prefix over every chunk, compress and store it (``build`` after calibration)."""
        self._meta = meta
        aug, n = self.channel_aug, inputs.shape[0]
        n_frozen, rel, eb_abs = meta["n_frozen"], meta["eb_rel"], meta["eb_abs"]
        variant_channels, channels = meta["variant_channels"], meta["feature_shape"][0]
        vc = torch.tensor(variant_channels, dtype=torch.long)
        raw_bytes = raw_variant_bytes = 0
        for index, start in enumerate(range(0, n, self.chunk_size)):
            stop = min(start + self.chunk_size, n)
            x = inputs[start:stop]
            done = cal_f[:stop] if start == 0 else cal_f[:0]  # the calibration maps are the first ones: reuse
            feats = torch.cat([done, *(prefix(x[i:i + batch_size]) for i in range(len(done), len(x), batch_size))])
            raw_bytes += feats.numel() * feats.element_size()
            base = self._compress(feats, eb_abs)
            variants, aug_ids = None, None
            if variant_channels:
                k = aug.variants_per_sample
                # each sample draws k distinct augmentations; their sensitive channels are cached
                aug_ids = np.argsort(rng.random((stop - start, len(aug.augmentations))), axis=1)[:, :k]
                var = torch.empty((k, stop - start, len(variant_channels), *feats.shape[2:]), dtype=feats.dtype)
                for j in range(k):
                    for a in np.unique(aug_ids[:, j]):
                        rows = torch.from_numpy(np.flatnonzero(aug_ids[:, j] == a))
                        xa = aug.augmentations[a].input(x[rows])
                        fa = torch.cat([prefix(xa[i:i + batch_size]) for i in range(0, len(xa), batch_size)])
                        var[j, rows] = fa[:, vc].cpu()
                raw_variant_bytes += var.numel() * var.element_size()
                variants = self._compress(var, eb_abs)
            nonnegative = bool(feats.min() >= 0) and (not variant_channels or bool(var.min() >= 0))
            chunk = _Chunk(n=stop - start, labels=labels[start:stop].clone(), aug_ids=aug_ids,
                           nbytes=len(base), variant_nbytes=len(variants) if variants is not None else 0,
                           nonnegative=nonnegative)
            self._store(index, chunk, base, variants)
        base_bytes = sum(c.nbytes for c in self._chunks)
        variant_bytes = sum(c.variant_nbytes for c in self._chunks)
        self._stats = {
            "n_frozen": n_frozen, "eb_rel": rel, "eb_abs": eb_abs, "n_samples": n, "chunks": len(self._chunks),
            "feature_shape": self._meta["feature_shape"], "raw_bytes": raw_bytes, "compressed_bytes": base_bytes,
            "ratio": raw_bytes / base_bytes if base_bytes else math.inf,
            "variant_raw_bytes": raw_variant_bytes, "variant_bytes": variant_bytes,
            "total_ratio": raw_bytes / (base_bytes + variant_bytes) if base_bytes else math.inf,
            "channels": channels, "sensitive_channels": n_sensitive, "variant_channels": len(variant_channels),
            "memory_bytes": self.memory_bytes, "spilled_chunks": self.spilled_chunks,
            "build_seconds": time.perf_counter() - t_start,
        }
        self.history.append(dict(self._stats))
        return self.stats

    def _fit_variant_budget(self, sensitive: list[int], cal_f: torch.Tensor, eb_abs: float) -> list[int]:
        """The most sensitive channels whose variants fit the budget, judged by compressing the calibration maps."""
        aug = self.channel_aug
        if not sensitive or aug.variant_budget == 0:
            return []
        base_bytes = len(self._compress(cal_f, eb_abs))
        count = min(len(sensitive), max(0, int(aug.variant_budget * cal_f.shape[1] / aug.variants_per_sample)))
        while count > 0:
            chosen = sensitive[:count]
            # k variants of a channel cost about k times that channel's bytes
            cost = aug.variants_per_sample * len(self._compress(cal_f[:, chosen], eb_abs))
            if cost <= aug.variant_budget * base_bytes:
                return sorted(chosen)
            count = min(count - 1, int(count * aug.variant_budget * base_bytes / cost))
        return []

    # ------------------------------------------------------------ reading

    def _read(self, chunk: _Chunk, kind: str) -> bytes:
        data = chunk.base if kind == "base" else chunk.variants
        if data is not None:
            return data
        info = chunk.files[kind]
        path = chunk.directory / info["file"]
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FreezeCacheError(f"cache chunk file {path} is missing") from None
        if len(data) != info["nbytes"] or hashlib.sha256(data).hexdigest() != info["sha256"]:
            raise FreezeCacheError(f"cache chunk file {path} is corrupted (size or SHA-256 differs from the manifest)")
        return data

    def _stream_shape(self, chunk: _Chunk, kind: str) -> tuple:
        c, h, w = self._meta["feature_shape"]
        if kind == "base":
            return (chunk.n, c, h, w)
        return (chunk.aug_ids.shape[1], chunk.n, len(self._meta["variant_channels"]), h, w)

    def _checked_stream(self, chunk: _Chunk, kind: str) -> bytes:
        """The chunk's stream, its header checked against the manifest: a FreezeCacheError naming the
        file, not a reshape error, when they disagree."""
        data = self._read(chunk, kind)
        shape = self._stream_shape(chunk, kind)
        rows = (math.prod(shape[:-1]), shape[-1])
        info = ebzip.inspect(data)
        if tuple(info["shape"]) != rows or info["dtype"] != self._meta["dtype"] or \
                not info["eb_abs"] <= self._meta["eb_abs"]:
            where = chunk.directory / chunk.files[kind]["file"] if kind in chunk.files else f"the {kind} stream"
            raise FreezeCacheError(f"cache chunk file {where} holds {info['dtype']} rows {tuple(info['shape'])} "
                                   f"within {info['eb_abs']!r}; the manifest says {self._meta['dtype']} maps "
                                   f"{shape} stored as rows {rows} within {self._meta['eb_abs']!r}")
        return data

    def chunk_features(self, index: int) -> torch.Tensor:
        """The decoded base maps of chunk ``index``, in sample order (no shuffle, no augmentation)."""
        return self._chunk_features(self._chunks[index])

    def _chunk_features(self, chunk: _Chunk) -> torch.Tensor:
        return self._decompress(self._checked_stream(chunk, "base"), self._stream_shape(chunk, "base"),
                                chunk.nonnegative)

    def _check_generation(self, generation: int) -> None:
        if self._generation != generation:
            raise RuntimeError("the cache was cleared, closed or rebuilt while an epoch was being iterated; "
                               "start a new epoch with batches()")

    def _prepare(self, index: int, perm: np.ndarray, choice: np.ndarray, start: int, generation: int):
        """Decode chunk ``index`` and apply the epoch's augmentation; runs in the prefetch thread."""
        t_start = time.perf_counter()
        chunks = self._chunks
        self._check_generation(generation)
        chunk = chunks[index]
        feats = self._chunk_features(chunk)
        aug_index = np.full(chunk.n, -1)  # -1: identity
        if choice is not None:
            augs = self.channel_aug_list
            stride = tuple(self._meta["stride"])
            if chunk.aug_ids is not None:
                var = self._decompress(self._checked_stream(chunk, "variants"),
                                       self._stream_shape(chunk, "variants"), chunk.nonnegative)
                vc = torch.tensor(self._meta["variant_channels"], dtype=torch.long)
                used = choice > 0
                aug_index[used] = chunk.aug_ids[np.flatnonzero(used), choice[used] - 1]
            else:
                var = None
                aug_index = choice - 1
            for a in np.unique(aug_index[aug_index >= 0]):
                rows = torch.from_numpy(np.flatnonzero(aug_index == a))
                feats[rows] = augs[a].feature(feats[rows], stride)
            if var is not None:
                for j in range(chunk.aug_ids.shape[1]):
                    rows = torch.from_numpy(np.flatnonzero(choice == j + 1))
                    feats[rows.unsqueeze(1), vc.unsqueeze(0)] = var[j, rows]
        p = torch.from_numpy(perm)
        self.decode_seconds += time.perf_counter() - t_start
        return feats[p], chunk.labels[p], torch.from_numpy(start + perm), torch.from_numpy(aug_index[perm])

    @property
    def channel_aug_list(self) -> list:
        if self.channel_aug is not None:
            return self.channel_aug.augmentations
        return [_augmentation_from_json(a) for a in self._meta.get("augmentations", [])]

    def batches(self, batch_size: int, epoch: int = 0, *, device=None, augment: bool = True, shuffle: bool = True,
                drop_last: bool = False, with_index: bool = False) -> Iterator[tuple]:
        """Iterate ``(features, labels)`` batches for one epoch (``with_index``: also each sample's
        index in the inputs and the augmentation applied, -1 for none).

        ``shuffle``: chunk order and the order within each chunk change with ``epoch``;
        batches run on across chunk boundaries. ``augment``: apply the channel augmentation
        (needs augmentations in the cache). ``device``: where batches go (default: the
        device the prefix produced the maps on).
        """
        if not self._chunks:
            raise RuntimeError("the cache is empty: call build() or load() first")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
        augs = self.channel_aug_list if augment else []
        device = torch.device(device if device is not None else self._meta.get("device", "cpu"))
        generation = self._generation
        rng = np.random.default_rng([self.seed, _seed_like("epoch", epoch), 1])
        order = rng.permutation(len(self._chunks)) if shuffle else np.arange(len(self._chunks))
        starts = np.cumsum([0] + [c.n for c in self._chunks])
        plans = []  # all randomness drawn here, in order, so the prefetch thread cannot change it
        for i in order:
            n = self._chunks[i].n
            perm = rng.permutation(n) if shuffle else np.arange(n)
            choice = None
            if augs:
                options = (self._chunks[i].aug_ids.shape[1] if self._chunks[i].aug_ids is not None else len(augs))
                choice = rng.integers(0, options + 1, size=n)  # 0: not augmented
            plans.append((int(i), perm, choice, int(starts[i]), generation))

        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ebzip-freeze-cache-prefetch")
        try:
            pending = [pool.submit(self._prepare, *plan) for plan in plans[:self.prefetch]]
            next_plan = len(pending)
            carry = None
            while pending:
                t_wait = time.perf_counter()
                try:
                    part = pending.pop(0).result()
                except Exception:
                    self._check_generation(generation)  # a chunk gone with its cache: say so, not what broke
                    raise
                self.wait_seconds += time.perf_counter() - t_wait
                if next_plan < len(plans):
                    pending.append(pool.submit(self._prepare, *plans[next_plan]))
                    next_plan += 1
                if carry is not None:
                    part = tuple(torch.cat([a, b]) for a, b in zip(carry, part))
                    carry = None
                n = part[0].shape[0]
                full = n - n % batch_size
                for s in range(0, full, batch_size):
                    self._check_generation(generation)
                    yield self._emit(tuple(t[s:s + batch_size] for t in part), device, with_index)
                if full < n:
                    carry = tuple(t[full:] for t in part)
            if carry is not None and not drop_last:
                self._check_generation(generation)
                yield self._emit(carry, device, with_index)
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _emit(part: tuple, device: torch.device, with_index: bool) -> tuple:
        feats, labels = part[0].to(device, non_blocking=True), part[1].to(device, non_blocking=True)
        return (feats, labels, part[2], part[3]) if with_index else (feats, labels)

    # ------------------------------------------------------------ disk format

    def save(self, path: str | os.PathLike) -> Path:
        """Write the cache as a directory: one ebzip stream file per chunk (and per chunk's
        variants) plus ``manifest.json``, each written to a temporary name and renamed
        (the manifest last, so a directory with a manifest is complete).

        Never replaces a chunk file already in ``path`` (another cache's spill or save): a taken
        name gets the next free one, as in spilling. The manifest is built and checked as
        :meth:`load` checks it before any file is written, and on failure the chunk files this
        call wrote are removed."""
        if not self._chunks:
            raise RuntimeError("the cache is empty: nothing to save")
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        here = path.resolve()
        entries, writes, taken = [], [], set()
        for index, c in enumerate(self._chunks):
            if c.directory is not None and c.directory.resolve() == here:
                files = c.files  # already there (spilled to this directory)
            else:
                stem, files = _free_stem(path, index, taken), {}
                for kind in ("base", "variants") if c.variant_nbytes else ("base",):
                    name = _chunk_file_name(stem, kind)
                    data = c.base if kind == "base" else c.variants
                    files[kind] = dict(c.files[kind], file=name) if data is None else \
                        {"file": name, "nbytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                    taken.add(name)
                    writes.append((c, kind, name))
            entries.append({"n": c.n, "nonnegative": c.nonnegative, "labels": c.labels.tolist(),
                            "labels_dtype": str(c.labels.dtype).replace("torch.", ""),
                            "aug_ids": None if c.aug_ids is None else c.aug_ids.tolist(),
                            "base": files["base"], "variants": files.get("variants")})
        manifest = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "ebzip_format_version": ebzip.FORMAT_VERSION,
            "layout": "rows: a chunk's maps (n, C, H, W) are stored as one (n*C*H, W) array; "
                      "its variants (k, n, S, H, W) as one (k*n*S*H, W) array",
            "predictor": self.predictor, "chunk_size": self.chunk_size, "n_samples": self.n_samples,
            "bound": self.bound.to_json(), "stats": self.stats, **self._meta, "chunks": entries,
        }
        try:  # what load() would refuse is refused here, before anything is written
            _check_manifest(manifest, path / MANIFEST)
            text = json.dumps(manifest, indent=1).encode()
        except (FreezeCacheError, TypeError, ValueError) as e:
            raise FreezeCacheError(f"this cache cannot be saved as freeze-cache format version {FORMAT_VERSION}: "
                                   f"{e}") from None
        written = []
        try:
            for c, kind, name in writes:
                _atomic_write(path / name, self._read(c, kind))
                written.append(name)
            _atomic_write(path / MANIFEST, text)
        except BaseException:
            for name in written:
                (path / name).unlink(missing_ok=True)
            raise
        for c in self._chunks:
            if c.directory is not None and c.directory.resolve() == here:
                c.directory = path
        if self._spill_dir is not None and self._spill_dir.resolve() == here:
            # they belong to the saved cache now: clear() and close() keep them (and the directory, even
            # a temporary one), and later builds spill beside them under other names
            self._spilled_files = []
            self._own_spill_dir = False
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, prefetch: int = 2,
             threads: int | None = None, seed: int = 0) -> "FeatureCache":
        """Open a saved cache directory; checks every field of the manifest, that every chunk file
        exists with its recorded size, and the first chunk's streams (SHA-256, and shape, dtype and
        bound against the manifest); the other chunks are checked the same way when read. Chunks
        stay in ``path`` and are read from there; a rebuild spills to a new temporary directory,
        never into ``path``."""
        path = Path(path)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise FreezeCacheError(f"{path} is not a freeze-cache directory: {MANIFEST} is missing") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise FreezeCacheError(f"{path / MANIFEST} is not valid JSON: {e}") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
            raise FreezeCacheError(f"{path / MANIFEST} is not an ebzip freeze-cache manifest")
        if manifest.get("version") != FORMAT_VERSION:
            raise FreezeCacheError(f"{path} has freeze-cache format version {manifest.get('version')!r}; "
                                   f"this ebzip reads version {FORMAT_VERSION}")
        _check_manifest(manifest, path / MANIFEST)
        cache = cls(memory_budget=0, chunk_size=manifest["chunk_size"],
                    bound=ProgressiveBound(**manifest["bound"]), predictor=manifest["predictor"],
                    prefetch=prefetch, threads=threads, seed=seed)
        cache._meta = {k: manifest[k] for k in _META_KEYS}
        k = manifest["variants_per_sample"]
        for i, entry in enumerate(manifest["chunks"]):
            files = {kind: entry[kind] for kind in ("base", "variants") if entry[kind] is not None}
            for info in files.values():
                f = path / info["file"]
                if not f.is_file():
                    raise FreezeCacheError(f"cache chunk file {f} is missing")
                if f.stat().st_size != info["nbytes"]:
                    raise FreezeCacheError(f"cache chunk file {f} has {f.stat().st_size} bytes; the manifest "
                                           f"says {info['nbytes']} (truncated or replaced)")
            try:
                labels = torch.tensor(entry["labels"], dtype=getattr(torch, entry["labels_dtype"]))
                aug_ids = None if entry["aug_ids"] is None else np.asarray(entry["aug_ids"], dtype=np.int64)
            except (TypeError, ValueError, RuntimeError, OverflowError) as e:
                raise FreezeCacheError(f"{path / MANIFEST} is malformed: chunks[{i}]: "
                                       f"{type(e).__name__}: {e}") from None
            if labels.dim() == 0 or labels.shape[0] != entry["n"]:
                raise FreezeCacheError(f"{path / MANIFEST} is malformed: chunks[{i}]'s labels do not match its "
                                       f"sample count {entry['n']}")
            if aug_ids is not None and (aug_ids.shape != (entry["n"], k) or aug_ids.min() < 0
                                        or aug_ids.max() >= len(manifest["augmentations"])):
                raise FreezeCacheError(f"{path / MANIFEST} is malformed: chunks[{i}].aug_ids must be {k} indices "
                                       f"below {len(manifest['augmentations'])} per sample")
            cache._chunks.append(_Chunk(n=entry["n"], labels=labels, aug_ids=aug_ids,
                                        nbytes=files["base"]["nbytes"],
                                        variant_nbytes=files["variants"]["nbytes"] if "variants" in files else 0,
                                        nonnegative=entry["nonnegative"], directory=path, files=files))
        # the first chunk's streams against the manifest (map shape, dtype, bound); the others when read
        first = cache._chunks[0]
        for kind in first.files:
            cache._checked_stream(first, kind)
        if manifest.get("stats"):
            cache._stats = dict(manifest["stats"])
            cache.history.append(manifest["stats"])
        return cache

    def close(self) -> None:
        """Drop the chunks and the files this cache spilled; remove the spill directory if it created it."""
        self.clear()
        if self._own_spill_dir and self._spill_dir is not None:
            shutil.rmtree(self._spill_dir, ignore_errors=True)
            self._spill_dir = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


_META_KEYS = ("n_frozen", "eb_rel", "eb_abs", "value_range", "feature_shape", "dtype", "device", "stride",
              "variant_channels", "channel_mismatch", "augmentations", "variants_per_sample")
_MAP_DTYPES = ("float16", "bfloat16", "float32", "float64")


def _seed_like(name: str, v) -> int:
    """A seed or an epoch number: an integer >= 0 (what numpy's seeding takes)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ValueError(f"{name} must be an integer >= 0; got {v!r}")
    return int(v)


def _is_int(v, lo: int = 0) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _is_real(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_manifest(m: dict, where: Path) -> None:
    """Every field of a version-1 manifest, checked for type, range and agreement with the others
    (the chunks' labels and augmentation ids are converted, and checked, by ``load``)."""

    def need(ok: bool, what: str):
        if not ok:
            raise FreezeCacheError(f"{where} is malformed: {what}")

    def field(obj: dict, key: str, ok: Callable, expected: str, name: str = ""):
        need(key in obj, f"{name or key} is missing")
        v = obj[key]
        need(ok(v), f"{name or key} must be {expected}; got {v!r:.80}")
        return v

    field(m, "predictor", lambda v: v in ("auto", "lorenzo", "interp"), "'auto', 'lorenzo' or 'interp'")
    chunk_size = field(m, "chunk_size", lambda v: _is_int(v, 1), "a positive integer")
    n_samples = field(m, "n_samples", lambda v: _is_int(v, 1), "a positive integer")
    bound = field(m, "bound", lambda v: isinstance(v, dict) and set(v) == {"base", "growth", "max_rel"},
                  "an object with base, growth and max_rel")
    try:
        bound = ProgressiveBound(**bound)
    except ValueError as e:
        need(False, f"bound: {e}")
    n_frozen = field(m, "n_frozen", lambda v: _is_int(v, 1), "a positive integer")
    finite = lambda v: _is_real(v) and math.isfinite(v) and v >= 0  # noqa: E731
    eb_rel = field(m, "eb_rel", lambda v: finite(v) and math.isclose(v, bound.rel(n_frozen), rel_tol=1e-9),
                   f"the bound's rel({n_frozen}) = {bound.rel(n_frozen)!r}")
    value_range = field(m, "value_range", finite, "a finite number >= 0")
    field(m, "eb_abs", lambda v: finite(v) and math.isclose(v, eb_rel * value_range, rel_tol=1e-9),
          f"eb_rel * value_range = {eb_rel * value_range!r}")
    channels = field(m, "feature_shape",
                     lambda v: isinstance(v, list) and len(v) == 3 and all(_is_int(d, 1) for d in v),
                     "[C, H, W] of positive integers")[0]
    field(m, "dtype", lambda v: v in _MAP_DTYPES, " or ".join(_MAP_DTYPES))
    field(m, "device", lambda v: isinstance(v, str), "a device name such as 'cpu'")
    try:
        torch.device(m["device"])
    except (RuntimeError, ValueError) as e:
        need(False, f"device {m['device']!r}: {e}")
    field(m, "stride", lambda v: isinstance(v, list) and len(v) == 2 and all(_is_int(d, 1) for d in v),
          "[sy, sx] of positive integers")
    field(m, "channel_mismatch", lambda v: v is None or (isinstance(v, list) and len(v) == channels
                                                         and all(map(_is_real, v))),
          f"null or {channels} numbers")
    augs = field(m, "augmentations", lambda v: isinstance(v, list) and all(isinstance(a, dict) for a in v),
                 "a list of augmentations")
    for spec in augs:
        try:
            _augmentation_from_json(spec)
        except (KeyError, TypeError, ValueError) as e:
            need(False, f"augmentation {spec!r:.80}: {type(e).__name__}: {e}")
    variant_channels = field(m, "variant_channels", lambda v: isinstance(v, list) and len(set(v)) == len(v)
                             and all(_is_int(c) and c < channels for c in v) and (not v or augs),
                             f"distinct channels below {channels} (none without augmentations)")
    field(m, "variants_per_sample", lambda v: _is_int(v, 1) and v <= len(augs) if augs else _is_int(v) and v == 0,
          f"in [1, {len(augs)}]" if augs else "0 without augmentations")
    field(m, "stats", lambda v: v is None or isinstance(v, dict), "null or an object")
    chunks = field(m, "chunks", lambda v: isinstance(v, list) and v and all(isinstance(c, dict) for c in v),
                   "a non-empty list of chunks")
    file_info = lambda v: (isinstance(v, dict) and isinstance(v.get("file"), str)  # noqa: E731
                           and v["file"] not in ("", ".", "..") and Path(v["file"]).name == v["file"]
                           and _is_int(v.get("nbytes")) and isinstance(v.get("sha256"), str)
                           and len(v["sha256"]) == 64 and all(c in "0123456789abcdef" for c in v["sha256"]))
    for i, c in enumerate(chunks):
        last = i == len(chunks) - 1
        field(c, "n", lambda v: _is_int(v, 1) and (v <= chunk_size if last else v == chunk_size),
              f"at most chunk_size = {chunk_size}" if last else f"chunk_size = {chunk_size}", f"chunks[{i}].n")
        field(c, "nonnegative", lambda v: isinstance(v, bool), "true or false", f"chunks[{i}].nonnegative")
        field(c, "labels_dtype", lambda v: isinstance(v, str) and isinstance(getattr(torch, v, None), torch.dtype),
              "a torch dtype name", f"chunks[{i}].labels_dtype")
        field(c, "labels", lambda v: isinstance(v, list), "a list", f"chunks[{i}].labels")
        field(c, "base", file_info, '{"file": plain name, "nbytes", "sha256"}', f"chunks[{i}].base")
        if variant_channels:
            field(c, "variants", file_info, '{"file": plain name, "nbytes", "sha256"}', f"chunks[{i}].variants")
            field(c, "aug_ids", lambda v: isinstance(v, list), "a list", f"chunks[{i}].aug_ids")
        else:
            for key in ("variants", "aug_ids"):
                field(c, key, lambda v: v is None, "null without variant channels", f"chunks[{i}].{key}")
    need(sum(c["n"] for c in chunks) == n_samples, f"the chunks hold {sum(c['n'] for c in chunks)} samples; "
         f"n_samples says {n_samples}")


def _augmentation_from_json(spec: dict):
    if spec.get("kind") == "shift":
        return Shift(int(spec["dy"]), int(spec["dx"]), float(spec.get("fill", 0.0)))
    raise FreezeCacheError(f"unknown augmentation in the manifest: {spec!r}")


def prefix_of(stages: Sequence[torch.nn.Module], n_frozen: int) -> torch.nn.Sequential:
    """The first ``n_frozen`` stages as one module."""
    return torch.nn.Sequential(*stages[:n_frozen])


def suffix_of(stages: Sequence[torch.nn.Module], n_frozen: int) -> torch.nn.Sequential:
    """The stages after the first ``n_frozen`` as one module."""
    return torch.nn.Sequential(*stages[n_frozen:])


def iterate_tensors(inputs: torch.Tensor, labels: torch.Tensor, batch_size: int, *, epoch: int, seed: int = 0,
                    augmentations: Sequence | None = None) -> Iterable[tuple]:
    """Shuffled input batches with each sample augmented by one of ``augmentations`` or not at all
    (uniformly), the way the cache augments; for the epochs before a freeze and for baselines."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    rng = np.random.default_rng([_seed_like("seed", seed), _seed_like("epoch", epoch), 2])
    perm = torch.from_numpy(rng.permutation(inputs.shape[0]))
    choice = rng.integers(0, len(augmentations) + 1, size=inputs.shape[0]) if augmentations else None
    for s in range(0, inputs.shape[0], batch_size):
        idx = perm[s:s + batch_size]
        x = inputs[idx]
        if choice is not None:
            c = choice[idx.numpy()]
            for a in np.unique(c[c > 0]):
                rows = torch.from_numpy(np.flatnonzero(c == a))
                x[rows] = augmentations[a - 1].input(x[rows])
        yield x, labels[idx]
