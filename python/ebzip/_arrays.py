"""Array plumbing: numpy, torch, cupy and DLPack/``__array__`` inputs.

Everything is brought to a C-contiguous numpy array (zero-copy where the
input already is one) plus an :class:`Origin` that says how to hand the
result back. 16-bit brain floats travel as ``uint16`` bit patterns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# dtype codes shared with the C++ core (csrc/include/ebzip/dtype.hpp)
DTYPE_CODES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}
DTYPE_NAMES = {v: k for k, v in DTYPE_CODES.items()}

try:  # optional: numpy's bfloat16 comes from ml_dtypes
    import ml_dtypes as _ml_dtypes

    NUMPY_BFLOAT16 = np.dtype(_ml_dtypes.bfloat16)
except ImportError:  # pragma: no cover - depends on the environment
    NUMPY_BFLOAT16 = None


@dataclass(frozen=True)
class Origin:
    """Where an array came from, so decompress can return the same kind."""

    kind: str  # "numpy", "torch" or "cupy"
    device: str = "cpu"


NUMPY = Origin("numpy")


def _torch():
    import sys

    return sys.modules.get("torch")


def _is_torch_tensor(x) -> bool:
    torch = _torch()
    return torch is not None and isinstance(x, torch.Tensor)


def _is_cupy_array(x) -> bool:
    return type(x).__module__.startswith("cupy") and hasattr(x, "get")


def _numpy_dtype_name(dt: np.dtype) -> str:
    if NUMPY_BFLOAT16 is not None and dt == NUMPY_BFLOAT16:
        return "bfloat16"
    if dt.kind == "f" and dt.itemsize in (2, 4, 8):
        return {2: "float16", 4: "float32", 8: "float64"}[dt.itemsize]
    raise TypeError(
        f"ebzip compresses floating-point arrays (float16, bfloat16, float32, float64); got dtype {dt}"
    )


def to_numpy(x, dtype: str | None = None) -> tuple[np.ndarray, str, Origin]:
    """Return (C-contiguous storage array, dtype name, origin).

    ``dtype="bfloat16"`` declares that a uint16/int16 array holds bfloat16
    bit patterns (for numpy users without ml_dtypes).
    """
    if _is_torch_tensor(x):
        torch = _torch()
        t = x.detach()
        if t.layout != torch.strided:
            raise TypeError(f"ebzip compresses dense tensors; got layout {t.layout} (call .to_dense() first)")
        origin = Origin("torch", str(t.device))
        if t.device.type != "cpu":
            # What the CUDA driver does not run (ebzip/_device.py decides)
            # makes one trip through host memory.
            t = t.cpu()
        names = {torch.float32: "float32", torch.float64: "float64", torch.float16: "float16",
                 torch.bfloat16: "bfloat16"}
        if t.dtype not in names:
            raise TypeError(f"ebzip compresses floating-point tensors; got {t.dtype}")
        name = names[t.dtype]
        if dtype is not None and dtype != name:
            raise TypeError(f"tensor dtype {t.dtype} does not match dtype={dtype!r}")
        t = t.contiguous()
        if name == "bfloat16":
            return t.view(torch.int16).numpy().view(np.uint16), name, origin
        return t.numpy(), name, origin
    if _is_cupy_array(x):
        return (*to_numpy(x.get(), dtype)[:2], Origin("cupy", f"cuda:{x.device.id}"))
    if isinstance(x, np.ndarray):
        arr = x
    elif hasattr(x, "__array__") or isinstance(x, (list, tuple, float, int)):
        arr = np.asarray(x)
    elif hasattr(x, "__dlpack__"):
        arr = np.from_dlpack(x)
    else:
        raise TypeError(f"ebzip.compress expects an array (numpy, torch, cupy, DLPack); got {type(x).__name__}")
    if dtype is not None:
        if dtype not in DTYPE_CODES:
            raise ValueError(f"dtype must be one of {sorted(DTYPE_CODES)}; got {dtype!r}")
        if dtype == "bfloat16" and arr.dtype.kind in "iu" and arr.dtype.itemsize == 2:
            arr = _native_order(arr).view(np.uint16)  # (the bit patterns are read in the array's byte order)
        elif _numpy_dtype_name(arr.dtype) != dtype:
            raise TypeError(f"array dtype {arr.dtype} does not match dtype={dtype!r}")
        name = dtype
    else:
        name = _numpy_dtype_name(arr.dtype)
        if name == "bfloat16":
            arr = arr.view(np.uint16)
    arr = _native_order(arr)
    if not arr.flags.c_contiguous:  # (np.ascontiguousarray would turn 0-d into 1-d)
        arr = arr.copy(order="C")
    return arr, name, NUMPY


def _native_order(arr: np.ndarray) -> np.ndarray:
    return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))


def storage_dtype(name: str) -> np.dtype:
    return np.dtype(np.uint16) if name == "bfloat16" else np.dtype(name)


def as_float64(stored: np.ndarray, name: str) -> np.ndarray:
    """Values held in their storage dtype (bfloat16: uint16 bit patterns) as float64."""
    if name == "bfloat16":
        return (stored.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return stored.astype(np.float64)


def public_dtype(name: str):
    """The dtype users see for a stream's element type (numpy flavour)."""
    if name == "bfloat16":
        return NUMPY_BFLOAT16 if NUMPY_BFLOAT16 is not None else "bfloat16"
    return np.dtype(name)


def allocate(shape, name: str, origin: Origin):
    """Allocate the result; returns (object to return, numpy storage view to fill)."""
    if origin.kind == "torch":
        torch = _torch()
        if torch is None:
            import torch  # noqa: F811 - only reached when a torch tensor was compressed
        tdtype = getattr(torch, name)
        t = torch.empty(tuple(shape), dtype=tdtype)
        view = t.view(torch.int16).numpy().view(np.uint16) if name == "bfloat16" else t.numpy()
        return t, view
    arr = np.empty(tuple(shape), dtype=storage_dtype(name))
    return arr, arr


def finish(result, name: str, origin: Origin, raw_bf16: bool = False):
    """Move/convert the filled result to the origin's kind and device."""
    if origin.kind == "torch":
        return result if origin.device == "cpu" else result.to(origin.device)
    if name == "bfloat16" and not raw_bf16:
        if NUMPY_BFLOAT16 is None:
            raise ImportError(
                "this stream holds bfloat16 values; install ml_dtypes to get a numpy bfloat16 array, "
                "or pass raw_bf16=True to receive the uint16 bit patterns"
            )
        result = result.view(NUMPY_BFLOAT16)
    if origin.kind == "cupy":
        import cupy

        with cupy.cuda.Device(int(origin.device.split(":")[1])):
            return cupy.asarray(result)
    return result


def prepare_out(out, shape, name: str):
    """Validate a user-given ``out``; returns (object to return, storage view)."""
    shape = tuple(shape)
    if _is_torch_tensor(out):
        torch = _torch()
        if out.device.type != "cpu":
            raise ValueError("out= on a CUDA device needs the CUDA backend (not built)")
        if tuple(out.shape) != shape or out.dtype != getattr(torch, name):
            raise ValueError(f"out has shape {tuple(out.shape)} / {out.dtype}; the stream holds {shape} / {name}")
        if not out.is_contiguous():
            raise ValueError("out must be contiguous")
        if out.requires_grad:
            raise ValueError("out must not require grad (decompress into out.detach(), which shares its memory)")
        view = out.view(torch.int16).numpy().view(np.uint16) if name == "bfloat16" else out.numpy()
        return out, view
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array or torch tensor; got {type(out).__name__}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}; the stream holds {shape}")
    ok = out.dtype == storage_dtype(name) or (name == "bfloat16" and out.dtype == NUMPY_BFLOAT16)
    if not ok:
        raise ValueError(f"out has dtype {out.dtype}; the stream holds {name}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writable C-contiguous array")
    return out, out.view(storage_dtype(name))


def on_device(origin: Origin, device) -> Origin:
    """The origin moved to ``device`` ("cpu", "cuda", "cuda:N" or a torch.device)."""
    dev = str(device)
    if dev == "cpu":
        return Origin("numpy") if origin.kind == "cupy" else Origin(origin.kind, "cpu")
    if not (dev == "cuda" or (dev.startswith("cuda:") and dev[5:].isdigit())):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N'; got {device!r}")
    if dev == "cuda":
        dev = "cuda:0"
    if origin.kind == "cupy":
        return Origin("cupy", dev)
    return Origin("torch", dev)


def check_reachable(origin: Origin) -> None:
    """A clear ValueError where the result cannot be put on origin's CUDA device (no torch GPU)."""
    if origin.kind != "torch" or not origin.device.startswith("cuda"):
        return
    try:
        import torch
    except ImportError:
        raise ValueError(f"device={origin.device!r} returns a torch tensor, and torch is not installed") from None
    index = int(origin.device.split(":")[1])
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        raise ValueError(f"the result would go to {origin.device}, and torch sees no such CUDA device "
                         f"({torch.cuda.device_count() if torch.cuda.is_available() else 0} available); "
                         "device='cpu' decodes to host memory")


def origin_of(like) -> Origin:
    if like is None:
        return NUMPY
    if isinstance(like, Origin):
        return like
    if _is_torch_tensor(like):
        return Origin("torch", str(like.device))
    if _is_cupy_array(like):
        return Origin("cupy", f"cuda:{like.device.id}")
    if isinstance(like, str) and like in ("numpy", "torch", "cupy"):
        return Origin(like)
    return NUMPY


def spread_indices(n: int, k: int) -> list[int]:
    """``k`` of ``range(n)``, one at the middle of each of ``k`` equal strata: an even spread that
    never takes the edges first (``ebzip estimate``: a volume's first and last blocks are often
    empty borders, which compress far better than the rest)."""
    n = int(n)
    k = max(1, min(int(k), n))
    picks = set()
    for i in range(k):  # stratum i's centre is q + r / 2k; round to the nearest, a tie towards the middle
        q, r = divmod((2 * i + 1) * n - k, 2 * k)
        picks.add(q + (r > k or (r == k and 2 * i + 1 < k)))
    return sorted(picks)
