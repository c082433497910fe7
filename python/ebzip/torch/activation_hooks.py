"""Compress the activations autograd saves for backward (COMET-style), with ebzip.

:class:`ActivationCompressor` installs ``torch.autograd.graph.saved_tensors_hooks``:
every tensor an autograd node saves during the forward pass goes through
``pack`` (compressed with :func:`ebzip.compress` to an error bound), and comes
back through ``unpack`` (:func:`ebzip.decompress`, same dtype, device, shape
and strides) when backward needs it. :class:`CompressedActivations` wraps a
module so that its forward runs under the hooks.

What is never compressed (kept as the tensor itself): parameters and what
autocast or views made of them, tensors smaller than ``min_bytes``,
non-floating tensors (masks, indices), and tensors saved inside modules the
user excludes. A tensor saved by several nodes, or several views of one
tensor, is stored once. Bounds are fixed (``mode="fixed"``) or derived every
``update_every`` iterations from a tolerance on the relative weight-gradient
error they induce (``mode="adaptive"``; the model is in
docs/activation-compression.md). ``mode="off"`` keeps everything raw and only
counts: the baseline, measured with the same machinery.
"""

from __future__ import annotations

import math
import threading
import time
import weakref
from dataclasses import dataclass, field

import torch
from torch.multiprocessing.reductions import StorageWeakRef

import ebzip

__all__ = ["ActivationCompressor", "CompressedActivations"]

MODES = ("fixed", "adaptive", "off")
EB_MODES = ("rel", "abs")
# Layers whose weight gradient is (grad_output) x (saved input) summed over fan_in
# input elements per weight: the ones the adaptive analysis covers.
WEIGHT_LAYERS = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
# Batch norm: dL/dgamma_c = sum over (batch, positions) of grad_output * (x - mean_c) / sigma_c,
# the same analysis with fan_in 1 and grad_output weighted by 1 / sigma_c.
NORM_LAYERS = (torch.nn.modules.batchnorm._BatchNorm,)
# Modules whose backward tests the sign of what they saved (x > 0): their saved
# tensors keep every sign exactly (see ActivationCompressor._compress).
SIGN_SENSITIVE = (torch.nn.ReLU, torch.nn.LeakyReLU, torch.nn.PReLU, torch.nn.RReLU, torch.nn.Hardtanh,
                  torch.nn.Threshold, torch.nn.Hardshrink, torch.nn.Softshrink)
# Autograd nodes that only cast, transpose or reshape: a tensor reached from a
# parameter through them is that parameter in another form (autocast's copies).
_PARAMETER_FORM_NODES = frozenset({
    "ToCopyBackward0", "TBackward0", "TransposeBackward0", "PermuteBackward0", "ViewBackward0",
    "UnsafeViewBackward0", "ReshapeAliasBackward0", "AliasBackward0", "ExpandBackward0",
    "UnsqueezeBackward0", "SqueezeBackward0", "SqueezeBackward1", "SqueezeBackward2", "CloneBackward0",
})
_HALF_TYPES = (torch.float16, torch.bfloat16)
NO_MODULE = "<no module>"


@dataclass
class LayerStats:
    """What one layer (the innermost module that saved the tensors) stored, cumulated over the run."""

    saved: int = 0  # distinct tensors stored (after de-duplication)
    compressed: int = 0  # of which compressed
    raw_bytes: int = 0  # bytes they would take raw
    stored_bytes: int = 0  # bytes actually held (streams + tensors kept raw)
    compress_s: float = 0.0
    decompress_s: float = 0.0
    eb_abs: float = float("nan")  # absolute bound of the last compressed tensor
    kept_raw: dict = field(default_factory=dict)  # reason -> count

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["ratio"] = self.raw_bytes / self.stored_bytes if self.stored_bytes else float("nan")
        return d


class _Stored:
    """One stored tensor region, shared by every autograd node that saved it (or a view of it)."""

    __slots__ = ("stream", "bytes", "eb_abs", "shift", "dtype", "layer", "slot", "restored", "__weakref__")

    def __init__(self, stream, raw_nbytes: int, held_nbytes: int, eb_abs: float, layer: str, slot: int):
        self.stream = stream  # ebzip.Compressed, or None when the tensor is kept raw
        # [held, raw]: a list, so that the release callback sees a recompression's new size
        self.bytes = [held_nbytes, raw_nbytes]
        self.eb_abs = eb_abs
        self.shift = 0.0  # sign-preserving offset (see ActivationCompressor._compress)
        self.dtype = None  # the tensor's dtype (the stream may hold float32)
        self.layer = layer
        self.slot = slot  # ordinal among the distinct tensors stored in its forward pass
        self.restored = None  # weakref to the last decompressed base (views share it in backward)


class _Packed:
    """What autograd holds for one saved tensor: the shared record plus how to rebuild this tensor."""

    __slots__ = ("stored", "tensor", "version", "shape", "stride", "offset")

    def __init__(self, stored, tensor=None, version=0, shape=None, stride=None, offset=None):
        self.stored = stored
        self.tensor = tensor  # kept raw: the tensor itself
        self.version = version
        self.shape, self.stride, self.offset = shape, stride, offset


def _finite_range(t: torch.Tensor) -> tuple[float, float]:
    """(min, max) over the finite values of t ((0, 0) if none): NaN/Inf are stored exactly
    and must not turn the bound into NaN/Inf."""
    if t.numel() == 0:
        return 0.0, 0.0
    lo, hi = torch.aminmax(t)
    lo, hi = float(lo), float(hi)
    if math.isfinite(lo) and math.isfinite(hi):
        return lo, hi
    finite = t[torch.isfinite(t)]
    if finite.numel() == 0:
        return 0.0, 0.0
    lo, hi = torch.aminmax(finite)
    return float(lo), float(hi)


class _WeightGradHook:
    """The hook on an analysed layer's weight: an object, not a closure, so that a model carrying
    it can be deep-copied and pickled (torch.save) with its compressor."""

    def __init__(self, compressor, name: str):
        self.compressor, self.name = compressor, name

    def __call__(self, grad):
        self.compressor._record_weight_grad(self.name, grad)


def _dense_strides(t: torch.Tensor) -> tuple:
    """Strides of a dense tensor of t's shape whose axes lie in memory in t's order (a transpose
    stays a transpose, channels_last stays channels_last; gaps between t's rows are dropped)."""
    order = sorted(range(t.dim()), key=lambda a: (t.stride(a), t.shape[a]))  # innermost first
    strides, step = [0] * t.dim(), 1
    for a in order:
        strides[a] = step
        step *= max(t.shape[a], 1)
    return tuple(strides)


def _parameter_form(t: torch.Tensor, parameters) -> bool:
    """True when t is a parameter, or a cast/transpose/view of one (autocast's weight copies)."""
    node = t.grad_fn
    if node is None:
        # A leaf that requires grad is a parameter (or an input the caller holds anyway).
        return t.requires_grad
    for _ in range(6):
        name = type(node).__name__
        if name == "AccumulateGrad":
            variable = node.variable
            return parameters is None or id(variable) in parameters
        if name not in _PARAMETER_FORM_NODES:
            return False
        nxt = [f for f, _ in node.next_functions if f is not None]
        if len(nxt) != 1:
            return False
        node = nxt[0]
    return False


class ActivationCompressor:
    """Saved-tensor hooks that keep activations compressed with ebzip between forward and backward.

    Use as a context manager around the forward pass (backward may run outside)::

        ac = ActivationCompressor(model, mode="adaptive", tolerance=0.01)
        for x, y in loader:
            with ac:
                loss = loss_fn(model(x), y)
            loss.backward()
        print(ac.summary())

    Args:
        model: the module whose forward runs under the hooks. Needed for per-layer
            accounting, exclusions and the adaptive mode; without it the hooks
            still compress (fixed mode) and recognise parameters by autograd.
        mode: ``"fixed"`` (bound ``eb`` in ``eb_mode``), ``"adaptive"`` (bounds from
            ``tolerance``), or ``"off"`` (keep raw, count only: the baseline).
        eb, eb_mode: the fixed bound; ``"rel"``: fraction of each tensor's value range,
            ``"abs"``: absolute. The adaptive mode uses it until its first estimate
            (that first iteration's memory counts in the peak too).
        tolerance: adaptive mode: promised relative error (Frobenius norm) of each
            Linear/Conv weight gradient caused by compressing its saved input.
        update_every: adaptive mode: re-estimate the bounds every N iterations
            (iteration = one entry of the context / one forward of the wrapper).
        safety: adaptive mode: factor (< 1) applied to the derived bounds, margin for
            statistics that drift between re-estimations.
        min_bytes: tensors smaller than this are kept raw (per-call overhead ~0.1 ms).
        exclude: module names (a name also excludes its children), module types, or
            both; tensors saved while such a module runs are kept raw.
        predictor: ebzip predictor. ``"lorenzo"`` (default) reconstructs 0 as exactly 0
            (ReLU zeros stay zeros) and is the fastest on activations. Tensors whose signs
            are kept (``keep_sign``) always take Lorenzo, which that needs.
        threads: ebzip threads per call (default 1: calls are small and many).
        keep_sign: sign-preserving quantization (default) for nonnegative tensors (ReLU
            outputs) and what sign-sensitive modules (ReLU, LeakyReLU, ...) save: every
            value comes back with its sign, so ReLU masks are exact. With Lorenzo, zeros
            come back as exact zeros in any case (its pre-quantization).
    """

    def __init__(self, model: torch.nn.Module | None = None, *, mode: str = "fixed", eb: float = 1e-2,
                 eb_mode: str = "rel", tolerance: float = 0.01, update_every: int = 50, safety: float = 0.5,
                 min_bytes: int = 16384, exclude=(), predictor: str = "lorenzo",
                 threads: int = 1, keep_sign: bool = True):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
        if eb_mode not in EB_MODES:
            raise ValueError(f"eb_mode must be one of {EB_MODES}; got {eb_mode!r}")
        for label, value in (("eb", eb), ("tolerance", tolerance)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{label} must be a finite number >= 0; got {value!r}")
        if not (0 < safety <= 1):
            raise ValueError(f"safety must be in (0, 1]; got {safety!r}")
        if not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"update_every must be a positive integer; got {update_every!r}")
        if not isinstance(min_bytes, int) or min_bytes < 0:
            raise ValueError(f"min_bytes must be an integer >= 0; got {min_bytes!r}")
        if mode == "adaptive" and model is None:
            raise ValueError("mode='adaptive' needs the model (its Linear/Conv layers are where the bounds come from)")
        if model is not None and not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if isinstance(exclude, (str, type)):
            exclude = (exclude,)
        self.exclude_names = tuple(e for e in exclude if isinstance(e, str))
        self.exclude_types = tuple(e for e in exclude if isinstance(e, type))
        if len(self.exclude_names) + len(self.exclude_types) != len(tuple(exclude)):
            raise TypeError("exclude takes module names (str) and module types")
        if predictor not in ebzip.api.PREDICTORS:
            raise ValueError(f"predictor must be one of {sorted(ebzip.api.PREDICTORS)}; got {predictor!r}")
        ebzip.api._threads(threads)  # raises ValueError for a bad count

        self.model = model
        self.mode, self.eb, self.eb_mode = mode, float(eb), eb_mode
        self.tolerance, self.update_every, self.safety = float(tolerance), update_every, float(safety)
        self.min_bytes = min_bytes
        self.predictor, self.threads, self.keep_sign = predictor, threads, bool(keep_sign)

        self._lock = threading.RLock()  # (a finalizer may release bytes while it is held)
        self._hooks = None  # the active saved_tensors_hooks context
        self._stack: list[str] = []  # names of the modules running now (innermost last)
        self._excluded_depth = 0
        self._live: dict = {}  # dedup: region key -> (StorageWeakRef, weakref to _Stored)
        self._handles = []
        self.iteration = -1

        # adaptive state
        self._collecting = False
        self._next_collection = 0  # iteration at which the next collection may start
        self._grad_sq: dict[str, float] = {}  # weight layer -> sum over calls of ||grad_output||^2
        self._wgrad_norm: dict[str, float] = {}  # weight layer -> ||dL/dW||
        self._sigma_min: dict[str, float] = {}  # batch norm -> smallest per-channel standard deviation
        self._slot = 0  # ordinal of the next distinct stored tensor in this forward
        self._slot_savers: dict[int, set] = {}  # during a collecting iteration
        self.layer_eb: dict[str, float] = {}  # weight layer -> absolute bound for its saved input
        self._slot_eb: dict[int, float] = {}
        self._fallback_eb: float | None = None
        self.estimates = 0  # how many times the bounds were (re)derived
        self.recompressed = 0  # tensors recompressed because a later saver needed a tighter bound

        self._parameters = None
        self._frozen_shapes = set()
        self._module_names = {}
        self._fan_in = {}  # analysed layer -> input elements per weight (1 for batch norm)
        self._sign_sensitive = set()  # names of SIGN_SENSITIVE modules
        if model is not None:
            self._attach(model)
        self.reset_stats()

    # ------------------------------------------------------------------ set-up

    def _attach(self, model):
        for name, module in model.named_modules():
            name = name or type(module).__name__
            self._module_names[module] = name
            self._handles.append(module.register_forward_pre_hook(self._enter_module))
            self._handles.append(module.register_forward_hook(self._leave_module, always_call=True))
            weight = getattr(module, "weight", None)
            trainable = isinstance(weight, torch.nn.Parameter) and weight.requires_grad
            if isinstance(module, WEIGHT_LAYERS) and trainable:
                self._fan_in[name] = weight[0].numel()
            elif isinstance(module, NORM_LAYERS) and trainable:
                self._fan_in[name] = 1
            if name in self._fan_in:
                self._handles.append(module.register_forward_hook(self._watch_output))
                self._handles.append(module.weight.register_hook(_WeightGradHook(self, name)))
            if isinstance(module, SIGN_SENSITIVE):
                self._sign_sensitive.add(name)
        self._refresh_parameters()

    def _refresh_parameters(self):
        if self.model is None:
            return
        params = list(self.model.parameters())
        self._parameters = {id(p) for p in params}
        self._parameter_storages = {p.untyped_storage().data_ptr() for p in params}
        self._frozen_shapes = {tuple(p.shape) for p in params if not p.requires_grad}
        self._frozen_shapes |= {s[::-1] for s in self._frozen_shapes}  # (Linear saves weight.t())

    def __getstate__(self):
        """For copy.deepcopy / torch.save of a model carrying this compressor's hooks: the
        settings, bounds and statistics travel; locks and live (per-forward) state do not."""
        if self._hooks is not None:
            raise RuntimeError("an ActivationCompressor cannot be copied or pickled while it is active")
        state = dict(self.__dict__)
        state.update(_lock=None, _live={})
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.RLock()

    def close(self):
        """Remove the module and parameter hooks this object put on the model."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def reset_stats(self):
        """Start the accounting afresh (peaks restart from what is held now; bounds are kept)."""
        with self._lock:
            self.layers: dict[str, LayerStats] = {}
            if not hasattr(self, "held_bytes"):
                self.held_bytes = 0  # bytes held by the hooks now
                self.raw_held_bytes = 0  # what the same tensors would take raw
            self.peak_held_bytes = self.steady_peak_held_bytes = self.held_bytes
            self.peak_raw_bytes = self.steady_peak_raw_bytes = self.raw_held_bytes
            self.parameters_seen = 0  # saves of parameters (never stored, never counted)

    # ------------------------------------------------------------------ iterations

    def __enter__(self):
        if self._hooks is not None:
            raise RuntimeError("this ActivationCompressor is already active (it does not nest, and serves one "
                               "thread at a time: give each thread its own)")
        self._begin_iteration()
        self._hooks = torch.autograd.graph.saved_tensors_hooks(self._pack, self._unpack)
        self._hooks.__enter__()
        return self

    def __exit__(self, *exc):
        hooks, self._hooks = self._hooks, None
        self._live.clear()
        return hooks.__exit__(*exc)

    def _begin_iteration(self):
        self.iteration += 1
        self._stack.clear()
        self._excluded_depth = 0
        self._live.clear()
        self._slot = 0
        self._refresh_parameters()
        if self.mode != "adaptive":
            return
        # Collecting runs from a forward until a backward has brought the weight gradients:
        # usually the next iteration, later when several forwards share one backward
        # (siamese models, two `with` blocks per step); those forwards are collected too.
        if self._collecting and self._wgrad_norm:
            self._derive_bounds()
            self._collecting = False
        if not self._collecting and self.iteration >= self._next_collection:
            self._collecting = True
            self._next_collection = self.iteration + self.update_every
            self._grad_sq, self._wgrad_norm, self._slot_savers, self._sigma_min = {}, {}, {}, {}

    def _derive_bounds(self):
        """eb = safety * tolerance * ||dW|| / sqrt(fan_in / 3 * sum ||grad_output||^2) (docs/activation-compression.md).

        Batch norm: also eb <= safety * tolerance * sqrt(3) * min_c sigma_c, which keeps the
        relative error of its input gradient (through x_hat = (x - mean) / sigma) within tolerance.
        """
        bounds = {}
        for name, g_sq in self._grad_sq.items():
            w = self._wgrad_norm.get(name, 0.0)
            if g_sq > 0 and w > 0 and math.isfinite(g_sq) and math.isfinite(w):
                bounds[name] = self.safety * self.tolerance * w / math.sqrt(self._fan_in[name] / 3.0 * g_sq)
                if name in self._sigma_min:
                    bounds[name] = min(bounds[name], self.safety * self.tolerance * math.sqrt(3.0) * self._sigma_min[name])
        if not bounds:
            return  # nothing learned (no grad reached the layers): keep what we had
        self.layer_eb = bounds
        if self.estimates == 0:  # the warm-up bound is over: peaks "after the first estimate" start now
            with self._lock:
                self.steady_peak_held_bytes, self.steady_peak_raw_bytes = self.held_bytes, self.raw_held_bytes
        self._fallback_eb = min(bounds.values())
        # A tensor saved by several modules (a ReLU output is also the next conv's
        # input) gets the tightest bound of the weight layers among them.
        self._slot_eb = {}
        for slot, savers in self._slot_savers.items():
            known = [bounds[s] for s in savers if s in bounds]
            self._slot_eb[slot] = min(known) if known else self._fallback_eb
        self.estimates += 1

    # ------------------------------------------------------------------ module tracking

    def _enter_module(self, module, args):
        if self._hooks is None:
            return
        name = self._module_names.get(module, NO_MODULE)
        self._stack.append(name)
        if self._is_excluded(name, module):
            self._excluded_depth += 1

    def _leave_module(self, module, args, output):
        if self._hooks is None or not self._stack:
            return
        name = self._stack.pop()
        if self._is_excluded(name, module):
            self._excluded_depth -= 1

    def _is_excluded(self, name, module) -> bool:
        if self.exclude_types and isinstance(module, self.exclude_types):
            return True
        return any(name == e or name.startswith(e + ".") for e in self.exclude_names)

    def _watch_output(self, module, args, output):
        """Collecting iteration: record ||grad_output||^2 of each analysed layer call
        (batch norm: sum over channels of ||grad_output_c||^2 / sigma_c^2)."""
        if self._hooks is None or not self._collecting or not isinstance(output, torch.Tensor):
            return
        if not output.requires_grad:
            return
        name = self._module_names[module]
        weight = None
        if isinstance(module, NORM_LAYERS):
            x = args[0].detach().float()
            dims = [d for d in range(x.dim()) if d != 1]
            var = x.var(dim=dims, unbiased=False) if module.training or module.running_var is None \
                else module.running_var.float()
            var = var + module.eps
            weight = (1.0 / var).reshape([-1] + [1] * (x.dim() - 2))
            with self._lock:
                sigma = math.sqrt(float(var.min()))
                self._sigma_min[name] = min(sigma, self._sigma_min.get(name, math.inf))

        def record(grad):
            g2 = grad.detach().float().pow(2)
            g_sq = float((g2 * weight).sum() if weight is not None else g2.sum())
            with self._lock:
                self._grad_sq[name] = self._grad_sq.get(name, 0.0) + g_sq

        output.register_hook(record)

    def _record_weight_grad(self, name, grad):
        if self._collecting:
            with self._lock:
                self._wgrad_norm[name] = float(grad.detach().float().norm())

    # ------------------------------------------------------------------ pack / unpack

    def _keep_raw_reason(self, t: torch.Tensor) -> str | None:
        if not t.is_floating_point():
            return "not float"
        if t.numel() == 0:
            return "empty"
        if t.dtype not in (torch.float32, torch.float64, torch.float16, torch.bfloat16):
            return "dtype"
        if t.numel() * t.element_size() < self.min_bytes:
            return "small"
        if self._excluded_depth > 0:
            return "excluded"
        if self.mode == "off":
            return "mode off"
        return None

    def _is_parameter(self, t: torch.Tensor) -> bool:
        if _parameter_form(t, self._parameters):
            return True
        if t.grad_fn is not None or t.requires_grad or self._parameters is None:
            return False
        if t.untyped_storage().data_ptr() in self._parameter_storages:  # a frozen parameter (or a view of one)
            return True
        # Autocast's copy of a frozen parameter has no autograd history (and autocast reads
        # as disabled inside the op that saves it): recognise it by shape.
        return t.dtype in _HALF_TYPES and tuple(t.shape) in self._frozen_shapes

    def _fixed_bound(self, t: torch.Tensor) -> float:
        """The fixed bound, absolute: "rel" is a fraction of the range of t itself (a view's own
        values, not its storage's), over its finite values."""
        if self.eb_mode == "abs":
            return self.eb
        lo, hi = _finite_range(t.detach())
        return self.eb * (hi - lo)

    def _bound_for(self, slot: int, layer: str, t: torch.Tensor) -> float:
        """Absolute bound for t, first saved as the slot-th distinct tensor of this forward by `layer`."""
        if self.mode == "fixed" or self._fallback_eb is None:  # (adaptive: before the first estimate)
            return self._fixed_bound(t)
        # (the slot's bound is from the forward that collected; the saver's own layer bound also
        # holds when the structure changed since, e.g. a layer skipped: LayerDrop, a branch)
        return min(self._slot_eb.get(slot, math.inf), self.layer_eb.get(layer, self._fallback_eb))

    def _pack(self, t: torch.Tensor):
        layer = self._stack[-1] if self._stack else NO_MODULE
        # Kept as they are, with autograd's in-place check (the hooks replace it): sparse (torch.sparse.mm),
        # nested, ... (no storage to key or compress), and parameters (the model holds them anyway).
        if t.layout != torch.strided:
            stats = self.layers.setdefault(layer, LayerStats())
            stats.kept_raw["not strided"] = stats.kept_raw.get("not strided", 0) + 1
            return _Packed(None, tensor=t, version=t._version)
        if self._is_parameter(t):
            self.parameters_seen += 1
            return _Packed(None, tensor=t, version=t._version)
        item = t.element_size()
        storage = t.untyped_storage()
        storage_nbytes = storage.nbytes()
        # Store the whole storage when t covers most of it, so that views of it
        # (a reshaped Linear input, an in-place ReLU's output) are stored once.
        whole = t.numel() > 0 and storage_nbytes % item == 0 and storage_nbytes <= 2 * t.numel() * item
        if whole:
            key = (storage.data_ptr(), str(t.device), t.dtype, t._version)
        else:
            key = (storage.data_ptr(), str(t.device), t.dtype, t._version, t.storage_offset(),
                   tuple(t.shape), tuple(t.stride()))
        reason = self._keep_raw_reason(t)
        # An excluded module gets its tensors raw even when another module stored them compressed.
        key += (reason == "excluded",)
        stored = self._lookup(key)
        if stored is None:
            stored = self._store(t, key, storage, whole, storage_nbytes, reason, layer)
        elif stored.stream is not None:
            self._meet(stored, t, whole, storage_nbytes, layer)
        if self._collecting:
            self._slot_savers.setdefault(stored.slot, set()).add(layer)
        if stored.stream is None:
            return _Packed(stored, tensor=t, version=t._version)
        if whole:
            return _Packed(stored, shape=tuple(t.shape), stride=tuple(t.stride()), offset=t.storage_offset())
        return _Packed(stored, shape=tuple(t.shape), stride=_dense_strides(t))

    def _lookup(self, key):
        entry = self._live.get(key)
        if entry is None:
            return None
        storage_ref, stored_ref = entry
        stored = stored_ref()
        if stored is None or storage_ref.expired():
            del self._live[key]
            return None
        return stored

    def _source(self, t, whole, storage_nbytes):
        """The tensor to compress: t itself, or its whole storage as a flat tensor."""
        item = t.element_size()
        if not whole or (t.is_contiguous() and t.storage_offset() == 0 and t.numel() * item == storage_nbytes):
            return t
        return t.as_strided((storage_nbytes // item,), (1,), 0)

    def _compress(self, stored, t, whole, storage_nbytes, eb, stats: LayerStats, sign: bool = False):
        """Compress t's region at absolute bound eb into stored (stream, bound, shift, dtype).

        sign: keep signs exactly even if neither t's region nor its first saver asks for it
        (a sign-sensitive module saved it later)."""
        start = time.perf_counter()
        x = self._source(t, whole, storage_nbytes).detach()
        if x.dim() > 2:
            # Predict along the last axis and across rows only: neighbours along the
            # batch and channel axes are unrelated, and a 4-D Lorenzo stencil sums
            # their noise (2-D rows of W: ratio 7.7 -> 9.7 on digits CNN activations,
            # 15 -> 23 on MNIST, rel 3e-2; docs/activation-compression.md).
            x = x.reshape(-1, x.shape[-1])
        shift = 0.0
        predictor = self.predictor
        if self.keep_sign and 0 < eb < math.inf:
            # Sign-preserving quantization: move every nonzero value 1.5 eb away from 0,
            # so that the quantizer cannot send it to 0 or across; undone after
            # decompression. Lorenzo's pre-quantization (q = round(x / 2eb), value 2eb q)
            # keeps zeros exactly 0 and a shifted value at >= 2eb from 0, so after the
            # undo every sign is exact: a ReLU's backward (which tests output > 0) sees the
            # mask it would have seen raw. So such tensors always take Lorenzo
            # (interpolation neither keeps zeros nor the side of 0). float32 arithmetic for
            # 16-bit types, so that their rounding cannot undo the offset; float64 as is.
            wide = x.float() if x.dtype in _HALF_TYPES else x
            # Only where a sign is tested: nonnegative tensors (ReLU outputs) and what
            # sign-sensitive modules save; elsewhere the offset only costs ratio.
            lo, hi = _finite_range(wide)
            # (no offset where it would overflow the type: values within 2.5 eb of its largest)
            headroom = max(abs(lo), abs(hi)) + 2.5 * eb <= torch.finfo(wide.dtype).max
            if headroom and (sign or stored.layer in self._sign_sensitive or lo >= 0):
                shift = 1.5 * eb
                x = wide + torch.sign(wide) * shift
                predictor = "lorenzo"
        stream = ebzip.compress(x, eb, "abs", predictor=predictor, threads=self.threads)
        stats.compress_s += time.perf_counter() - start
        stats.compressed += 1
        stats.eb_abs = stream.eb_abs
        stored.stream, stored.eb_abs, stored.shift, stored.dtype = stream, stream.eb_abs, shift, t.dtype
        stored.restored = None
        stored.bytes[0] = stream.nbytes

    def _store(self, t, key, storage, whole, storage_nbytes, reason, layer) -> _Stored:
        raw_nbytes = storage_nbytes if whole else t.numel() * t.element_size()
        stats = self.layers.setdefault(layer, LayerStats())
        slot, self._slot = self._slot, self._slot + 1
        if reason is not None:
            stored = _Stored(None, raw_nbytes, raw_nbytes, 0.0, layer, slot)
            stats.kept_raw[reason] = stats.kept_raw.get(reason, 0) + 1
        else:
            stored = _Stored(None, raw_nbytes, raw_nbytes, 0.0, layer, slot)
            self._compress(stored, t, whole, storage_nbytes, self._bound_for(slot, layer, t), stats)
        stats.saved += 1
        stats.raw_bytes += raw_nbytes
        stats.stored_bytes += stored.bytes[0]
        self._account(stored.bytes[0], raw_nbytes)
        weakref.finalize(stored, self._account, stored.bytes, None)
        self._live[key] = (StorageWeakRef(storage), weakref.ref(stored))
        return stored

    def _meet(self, stored, t, whole, storage_nbytes, layer):
        """Another saver (or a view) of a stored tensor needs more than it was stored with: recompress.

        A tighter bound: an adaptive weight layer's, or in "rel" a view with a smaller range
        than the one first saved (both halves of h.chunk(2) are one stored region). Exact
        signs: a sign-sensitive module saves what another module stored without them.
        """
        if self.mode == "adaptive" and self._fallback_eb is not None:
            need = self.layer_eb.get(layer, math.inf)
        else:
            need = self._fixed_bound(t)
        need_sign = self.keep_sign and layer in self._sign_sensitive and not stored.shift and stored.eb_abs > 0
        if need >= stored.eb_abs and not need_sign:
            return
        stats = self.layers.setdefault(stored.layer, LayerStats())
        before = stored.bytes[0]
        self._compress(stored, t, whole, storage_nbytes, min(need, stored.eb_abs), stats,
                       sign=need_sign or bool(stored.shift))
        stats.stored_bytes += stored.bytes[0] - before
        self._account(stored.bytes[0] - before, 0)
        self.recompressed += 1

    def _account(self, held, raw):
        """Add held/raw bytes; called with a _Stored's [held, raw] list and None when it is freed."""
        with self._lock:
            if raw is None:  # release
                held, raw = -held[0], -held[1]
            self.held_bytes += held
            self.raw_held_bytes += raw
            self.peak_held_bytes = max(self.peak_held_bytes, self.held_bytes)
            self.peak_raw_bytes = max(self.peak_raw_bytes, self.raw_held_bytes)
            self.steady_peak_held_bytes = max(self.steady_peak_held_bytes, self.held_bytes)
            self.steady_peak_raw_bytes = max(self.steady_peak_raw_bytes, self.raw_held_bytes)

    def _unpack(self, packed):
        if packed.tensor is not None:
            if packed.tensor._version != packed.version:
                raise RuntimeError("one of the variables needed for gradient computation has been modified by an "
                                   "inplace operation (a tensor ebzip.torch kept uncompressed changed after it "
                                   "was saved)")
            return packed.tensor
        base = self._restore(packed.stored)
        if packed.offset is None:  # t's own values, C order: back in t's axis order (a transpose, channels_last)
            view = base.view(packed.shape)
            if packed.stride == view.stride():
                return view
            return torch.empty_strided(packed.shape, packed.stride, dtype=base.dtype, device=base.device).copy_(view)
        return base.reshape(-1).as_strided(packed.shape, packed.stride, packed.offset)

    def _restore(self, stored: _Stored) -> torch.Tensor:
        base = stored.restored() if stored.restored is not None else None
        if base is None:
            start = time.perf_counter()
            base = ebzip.decompress(stored.stream, threads=self.threads)
            if stored.shift:
                base = base - torch.sign(base) * stored.shift
                if stored.dtype in _HALF_TYPES:  # within eb of a finite 16-bit value, but maybe past its largest
                    big = torch.finfo(stored.dtype).max
                    base = torch.where(base.isfinite(), base.clamp(-big, big), base)
            base = base.to(stored.dtype)
            elapsed = time.perf_counter() - start
            stored.restored = weakref.ref(base)
            with self._lock:  # (setdefault: reset_stats may have run since the pack)
                self.layers.setdefault(stored.layer, LayerStats()).decompress_s += elapsed
        return base

    # ------------------------------------------------------------------ reporting

    def stats(self) -> dict:
        """The accounting as plain data (JSON-ready)."""
        with self._lock:
            layers = {name: st.as_dict() for name, st in self.layers.items()}
            raw = sum(st.raw_bytes for st in self.layers.values())
            stored = sum(st.stored_bytes for st in self.layers.values())
            return {
                "mode": self.mode,
                "iterations": self.iteration + 1,
                "peak_saved_bytes": self.peak_held_bytes,
                "peak_raw_bytes": self.peak_raw_bytes,
                "peak_ratio": self.peak_raw_bytes / self.peak_held_bytes if self.peak_held_bytes else float("nan"),
                # adaptive: since the first estimate (before it, the fixed bound is used); else = peak
                "steady_peak_saved_bytes": self.steady_peak_held_bytes,
                "steady_peak_raw_bytes": self.steady_peak_raw_bytes,
                "raw_bytes": raw,
                "stored_bytes": stored,
                "ratio": raw / stored if stored else float("nan"),
                "compress_s": sum(st.compress_s for st in self.layers.values()),
                "decompress_s": sum(st.decompress_s for st in self.layers.values()),
                "parameters_seen": self.parameters_seen,
                "estimates": self.estimates,
                "recompressed": self.recompressed,
                "layers": layers,
            }

    def summary(self) -> str:
        """A table per layer and the totals, to print or log."""
        s = self.stats()
        mib = 1 / 2**20
        rows = [f"{'layer':<28} {'saved':>5} {'compr':>5} {'raw MiB':>9} {'held MiB':>9} {'ratio':>7} "
                f"{'eb_abs':>9} {'comp s':>7} {'decomp s':>8}  kept raw"]
        for name, st in s["layers"].items():
            kept = ", ".join(f"{k}: {v}" for k, v in st["kept_raw"].items())
            rows.append(f"{name[:28]:<28} {st['saved']:>5} {st['compressed']:>5} {st['raw_bytes'] * mib:>9.2f} "
                        f"{st['stored_bytes'] * mib:>9.2f} {st['ratio']:>7.2f} {st['eb_abs']:>9.2e} "
                        f"{st['compress_s']:>7.3f} {st['decompress_s']:>8.3f}  {kept}")
        rows.append(f"total: {s['raw_bytes'] * mib:.2f} MiB saved raw -> {s['stored_bytes'] * mib:.2f} MiB held "
                    f"(ratio {s['ratio']:.2f}); peak {s['peak_raw_bytes'] * mib:.2f} -> "
                    f"{s['peak_saved_bytes'] * mib:.2f} MiB (ratio {s['peak_ratio']:.2f}); "
                    f"compress {s['compress_s']:.3f} s, decompress {s['decompress_s']:.3f} s; "
                    f"mode {s['mode']}, {s['iterations']} iteration(s)"
                    + (f", bounds estimated {s['estimates']} time(s); peak since the first estimate "
                       f"{s['steady_peak_raw_bytes'] * mib:.2f} -> {s['steady_peak_saved_bytes'] * mib:.2f} MiB"
                       if self.mode == "adaptive" else ""))
        return "\n".join(rows)


class CompressedActivations(torch.nn.Module):
    """Wrap a module so that each forward runs under an :class:`ActivationCompressor`.

    ``CompressedActivations(model, mode="adaptive", tolerance=0.01)``; keyword
    arguments go to :class:`ActivationCompressor`, available as ``.compressor``
    (``.compressor.summary()``). Under ``torch.no_grad()`` (inference) nothing is
    saved, so nothing is compressed and no iteration is counted; eval mode alone does
    not stop autograd from saving (e.g. for input gradients), so it is compressed.
    """

    def __init__(self, module: torch.nn.Module, **kwargs):
        super().__init__()
        self.module = module
        # not a submodule attribute: keep the compressor out of state_dict/modules()
        object.__setattr__(self, "compressor", ActivationCompressor(module, **kwargs))

    def forward(self, *args, **kwargs):
        if not torch.is_grad_enabled():
            return self.module(*args, **kwargs)
        with self.compressor:
            return self.module(*args, **kwargs)

    def summary(self) -> str:
        return self.compressor.summary()
