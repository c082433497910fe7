"""Routing to the device driver (csrc/cuda/codec_device.cu).

Two builds of one driver source may be present:

- ``ebzip._cuda``: nvcc build (Thrust's CUDA system). Takes CUDA device
  pointers and a CUDA stream; used for torch CUDA tensors and cupy arrays
  when a GPU is visible (:func:`cuda_runnable`).
- ``ebzip._shared_path``: the same source built by the host compiler for
  Thrust's OpenMP system. Takes host pointers; the tests and the benchmark
  run every device functor through it on the CPU.

Both write the CPU driver's bytes for the same input and settings (one
format). What the device driver does not run (predictor "auto", whose
sampling estimator is CPU-driver code; a bound of 0; PSNR mode; empty arrays)
goes through the CPU driver after one copy to host memory.
"""

from __future__ import annotations

import math

import numpy as np

from . import _arrays

_cuda_import_error = None
try:
    from . import _cuda
except ImportError as e:  # not built (no nvcc at build time, EBZIP_CUDA=OFF), or libcudart missing here
    _cuda = None
    _cuda_import_error = str(e)
try:
    from . import _shared_path
except ImportError:  # not built (no Thrust headers at build time)
    _shared_path = None
try:
    from . import _build_config as build_config
except ImportError:  # pragma: no cover - source tree without a build
    build_config = None


def cuda_built() -> bool:
    """Whether this install was built with the CUDA driver."""
    return bool(build_config and build_config.BUILT_CUDA)


def cuda_runnable() -> bool:
    """Whether ebzip._cuda imports and sees a GPU."""
    return _cuda is not None and bool(_cuda.can_run())


def backend():
    """The device driver that takes CUDA arrays here: ebzip._cuda when it can run, else None."""
    return _cuda if cuda_runnable() else None


# ---------------------------------------------------------------- device arrays

def is_cuda_array(x) -> bool:
    """A torch CUDA tensor or a cupy array (data that lives on a GPU)."""
    if _arrays._is_torch_tensor(x):
        return x.device.type == "cuda"
    return _arrays._is_cupy_array(x)


_TORCH_NAMES = ("float32", "float64", "float16", "bfloat16")


def cuda_view(x):
    """(contiguous array kept alive, shape, dtype name, Origin) of a CUDA array."""
    if _arrays._is_torch_tensor(x):
        import torch

        t = x.detach()
        name = str(t.dtype).replace("torch.", "")
        if name not in _TORCH_NAMES:
            raise TypeError(f"ebzip compresses floating-point tensors; got {t.dtype}")
        t = t.contiguous()
        return t, tuple(t.shape), name, _arrays.Origin("torch", str(t.device))
    import cupy

    a = cupy.ascontiguousarray(x)
    name = _arrays._numpy_dtype_name(np.dtype(a.dtype))
    return a, tuple(a.shape), name, _arrays.Origin("cupy", f"cuda:{a.device.id}")


def cuda_finite_range(x) -> tuple[float, float, int]:
    """min, max and count of the finite values, computed on the device (exact: no rounding)."""
    if _arrays._is_torch_tensor(x):
        import torch

        f = x[torch.isfinite(x)]
        if f.numel() == 0:
            return math.inf, -math.inf, 0
        return float(f.min().item()), float(f.max().item()), int(f.numel())
    import cupy

    f = x[cupy.isfinite(x)]
    if f.size == 0:
        return math.inf, -math.inf, 0
    return float(f.min().item()), float(f.max().item()), int(f.size)


def cuda_empty(shape, name: str, origin: _arrays.Origin):
    """An uninitialised array on the origin's CUDA device (torch or cupy)."""
    if origin.kind == "cupy":
        import cupy

        with cupy.cuda.Device(int(origin.device.split(":")[1])):
            dt = _arrays.NUMPY_BFLOAT16 if name == "bfloat16" else np.dtype(name)
            return cupy.empty(tuple(shape), dtype=dt)
    import torch

    return torch.empty(tuple(shape), dtype=getattr(torch, name), device=origin.device)


def stream_of(arr) -> int:
    """The current CUDA stream of the array's device (the device driver's work is ordered on it)."""
    if _arrays._is_torch_tensor(arr):
        import torch

        return torch.cuda.current_stream(arr.device).cuda_stream
    import cupy

    return cupy.cuda.get_current_stream().ptr


def data_ptr(arr) -> int:
    return arr.data_ptr() if _arrays._is_torch_tensor(arr) else arr.data.ptr


def on_device_of(arr):
    """Context that makes the array's GPU current (the driver allocates and launches on the current device)."""
    import contextlib

    if _arrays._is_torch_tensor(arr):
        import torch

        return torch.cuda.device(arr.device) if arr.device.type == "cuda" else contextlib.nullcontext()
    dev = getattr(arr, "device", None)
    return dev if hasattr(dev, "__enter__") else contextlib.nullcontext()


def try_compress(x, eb: float, mode: str, predictor: str, threads: int, block_elems):
    """Compress a CUDA array on the device; None where the CPU driver must do it."""
    from . import api

    mod = backend()
    if mod is None or not is_cuda_array(x) or mode == "psnr":
        return None
    keep, shape, name, origin = cuda_view(x)
    n = math.prod(shape)
    if mode == "abs":
        eb_abs = eb
    else:
        lo, hi, n_finite = cuda_finite_range(keep)
        eb_abs = api._absolute_bound(eb, mode, lo, hi, n_finite)[0]
    code = api.PREDICTORS[predictor]
    if not mod.supports(code, eb_abs, n):
        return None
    with on_device_of(keep):
        data = mod.compress(data_ptr(keep), list(shape), _arrays.DTYPE_CODES[name], api.MODES[mode], eb, eb_abs,
                            threads, int(block_elems or 0), code, stream_of(keep))
    c = api.Compressed(data)
    c._origin = origin
    return c


def try_decompress_into_new(data, shape, name: str, origin: _arrays.Origin):
    """Decode onto the origin's CUDA device with the device driver; None where it cannot."""
    mod = backend()
    if mod is None or not origin.device.startswith("cuda"):
        return None
    view = memoryview(data).cast("B")
    if not mod.can_decode(view):
        return None
    out = cuda_empty(shape, name, origin)
    nbytes = math.prod(shape) * _arrays.storage_dtype(name).itemsize
    with on_device_of(out):
        mod.decompress_into(view, data_ptr(out), nbytes, stream_of(out))
    return out


# ---------------------------------------------------------------- the shared path (host pointers)

def shared_path_compress(x: np.ndarray, eb_abs: float, *, dtype: str | None = None, block_elems: int | None = None,
                         threads: int = 1, predictor: str = "lorenzo") -> bytes:
    """Compress a numpy array with the device driver's source on the CPU (OpenMP device system).

    Absolute bound only (the API turns rel into abs the same way for every
    backend); predictor "lorenzo" or "interp". Returns the stream bytes.
    """
    if _shared_path is None:
        raise RuntimeError("ebzip._shared_path was not built (no Thrust headers at build time)")
    from .api import PREDICTORS

    arr, name, _ = _arrays.to_numpy(x, dtype)
    return _shared_path.compress(arr.ctypes.data, list(arr.shape), _arrays.DTYPE_CODES[name], 0, float(eb_abs),
                                 float(eb_abs), threads, int(block_elems or 0), PREDICTORS[predictor], 0)


def shared_path_decompress(data) -> np.ndarray:
    """Decode a lorenzo or interp stream with the device driver's source on the CPU; returns the storage array."""
    if _shared_path is None:
        raise RuntimeError("ebzip._shared_path was not built (no Thrust headers at build time)")
    from . import _core

    info = _core.inspect(data)
    out = np.empty(tuple(info["shape"]), dtype=_arrays.storage_dtype(_arrays.DTYPE_NAMES[info["dtype"]]))
    _shared_path.decompress_into(memoryview(data).cast("B"), out.ctypes.data, out.nbytes, 0)
    return out
