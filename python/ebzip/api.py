"""The public API: :func:`compress`, :func:`decompress`, :class:`Compressed`."""

from __future__ import annotations

import math
import os
import threading

import numpy as np

from . import _arrays, _core, _device

StreamError = _core.StreamError
StreamError.__module__ = "ebzip"
StreamError.__doc__ = "An ebzip stream is truncated, corrupted, foreign or of an unsupported format version."

FORMAT_VERSION: int = _core.FORMAT_VERSION
MODES = {"abs": 0, "rel": 1, "psnr": 2}
MODE_NAMES = {v: k for k, v in MODES.items()}
PIPELINES = {0: "exact", 1: "lorenzo", 2: "interp"}
PREDICTORS = {"auto": 0, "lorenzo": 1, "interp": 2}

# Thread counts above this are taken as this: more never helps, and OpenMP cannot create tens of
# thousands of threads (it aborts the process).
MAX_THREADS = 1024


def _env_threads() -> int:
    """EBZIP_NUM_THREADS if it is a positive integer (a warning and the CPU count otherwise)."""
    value = os.environ.get("EBZIP_NUM_THREADS", "").strip()
    if value:
        if value.isdigit() and int(value) > 0:
            return min(int(value), MAX_THREADS)
        import warnings

        warnings.warn(f"EBZIP_NUM_THREADS={value!r} is not a positive integer; ignored", RuntimeWarning, stacklevel=2)
    return min(os.cpu_count() or 1, MAX_THREADS)


_thread_lock = threading.Lock()
_num_threads = _env_threads()


def set_num_threads(n: int) -> None:
    """Default number of threads for compress/decompress (the stream does not depend on it).

    Counts above :data:`MAX_THREADS` are taken as ``MAX_THREADS``.
    """
    global _num_threads
    n = _threads(n, "number of threads")
    with _thread_lock:
        _num_threads = n


def get_num_threads() -> int:
    return _num_threads


def _threads(threads, what: str = "threads") -> int:
    if threads is None:
        return _num_threads
    if not isinstance(threads, (int, np.integer)) or isinstance(threads, bool) or threads < 1:
        raise ValueError(f"{what} must be a positive integer; got {threads!r}")
    return min(int(threads), MAX_THREADS)


class Compressed(_core.StreamBuffer):
    """A compressed array: the stream bytes (buffer protocol) and what they hold.

    ``bytes(c)`` or ``memoryview(c)`` give the stream; ``ebzip.decompress(c)``
    restores the array as the kind it came from (numpy or torch, same device).
    """

    def __init__(self, data=None):
        if data is None:
            super().__init__()
        elif isinstance(data, str):
            raise TypeError("Compressed expects the stream's bytes, not a str")
        else:
            try:
                super().__init__(data)
            except TypeError:
                raise TypeError(f"Compressed expects a bytes-like stream; got {type(data).__name__}") from None
        self._origin = _arrays.NUMPY
        self._info = None

    @property
    def info(self) -> dict:
        if self._info is None:
            self._info = _core.inspect(self)
        return self._info

    @property
    def shape(self) -> tuple:
        return tuple(self.info["shape"])

    @property
    def dtype(self):
        return _arrays.public_dtype(self.dtype_name)

    @property
    def dtype_name(self) -> str:
        return _arrays.DTYPE_NAMES[self.info["dtype"]]

    @property
    def mode(self) -> str:
        return MODE_NAMES[self.info["mode"]]

    @property
    def eb(self) -> float:
        """The bound as given: absolute value, fraction of the value range, or PSNR in dB."""
        return self.info["eb_param"]

    @property
    def eb_abs(self) -> float:
        """The absolute error bound every finite element is within (0: stored exactly)."""
        return self.info["eb_abs"]

    @property
    def pipeline(self) -> str:
        """How the values were coded: "lorenzo", "interp" (interpolation), or "exact" (bound 0)."""
        return PIPELINES[self.info["pipeline"]]

    @property
    def nbytes(self) -> int:
        return len(self)

    @property
    def original_nbytes(self) -> int:
        return math.prod(self.shape) * _arrays.storage_dtype(self.dtype_name).itemsize

    @property
    def ratio(self) -> float:
        return self.original_nbytes / self.nbytes

    def __bytes__(self) -> bytes:
        return memoryview(self).tobytes()

    def __reduce__(self):
        return (_unpickle, (bytes(self), self._origin))

    def __repr__(self) -> str:
        try:
            self.info
        except StreamError as e:  # (built from arbitrary bytes: repr must not raise)
            return f"<ebzip.Compressed {self.nbytes} bytes, not a valid stream: {e}>"
        return (f"<ebzip.Compressed {self.dtype_name}{list(self.shape)} {self.mode} eb={self.eb:g} "
                f"(abs {self.eb_abs:g}) {self.nbytes} bytes, ratio {self.ratio:.2f}>")


def _unpickle(data: bytes, origin) -> "Compressed":
    c = Compressed(data)
    c._origin = origin
    return c


def check_bound(eb, mode: str) -> float:
    """eb as a float, checked for mode (TypeError / ValueError otherwise); also used by ebzip.h5."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}; got {mode!r}")
    if isinstance(eb, bool) or not isinstance(eb, (int, float, np.integer, np.floating)):
        raise TypeError(f"eb must be a real number; got {type(eb).__name__}")
    try:
        eb = float(eb) + 0.0  # (+ 0.0: a bound of -0.0 is stored as 0)
    except OverflowError:  # an int beyond float range
        eb = math.inf
    if not math.isfinite(eb) or eb < 0:
        raise ValueError(f"eb must be finite and >= 0; got {eb!r}")
    if mode == "psnr" and eb <= 0:
        raise ValueError("a PSNR target must be > 0 dB")
    return eb


def _psnr_of(scaled_sse: float, n: int) -> float:
    """PSNR from the sum of squared errors already divided by the value range."""
    mse = scaled_sse / n if n else 0.0
    return math.inf if mse == 0 else -10 * math.log10(mse)


_DBL_MAX = float(np.finfo(np.float64).max)


def _value_range(lo: float, hi: float) -> float:
    """hi - lo of finite values (0 if none: lo > hi), capped at float64's largest: -1e308 .. 1e308 overflows.
    The range compress uses; estimate and verify use it too."""
    if not float(hi) >= float(lo):
        return 0.0
    value_range = float(hi) - float(lo)
    return value_range if math.isfinite(value_range) else _DBL_MAX


def _absolute_bound(eb: float, mode: str, lo: float, hi: float, n_finite: int) -> tuple[float, float]:
    """(absolute bound, value range) for a rel or psnr bound over finite values in [lo, hi]."""
    value_range = _value_range(lo, hi) if n_finite else 0.0
    if mode == "rel":
        eb_abs = eb * value_range
    else:  # uniform error in [-e, e] has RMSE e/sqrt(3); small factor first, so no overflow
        eb_abs = (math.sqrt(3.0) * 10 ** (-eb / 20)) * value_range
    return min(eb_abs, _DBL_MAX), value_range  # a bound beyond float64 means "anything": keep it finite


def compress(x, eb: float, mode: str = "abs", *, predictor: str = "auto", threads: int | None = None,
             dtype: str | None = None, block_elems: int | None = None) -> Compressed:
    """Compress a floating-point array so every finite element comes back within a bound.

    Args:
        x: numpy array, torch tensor (CPU or CUDA), cupy array, or anything with
           ``__array__``/``__dlpack__``; float16, bfloat16, float32 or float64, any shape.
        eb: the bound. ``mode="abs"``: absolute error; ``"rel"``: fraction of the
            value range (max - min over finite values); ``"psnr"``: target PSNR in dB
            (the absolute bound is chosen so that PSNR >= target; checked).
        predictor: ``"auto"`` (default) picks, per array, among Lorenzo and linear/cubic
            interpolation over all axes or over the last two, by encoding a sample of
            blocks with each; ``"lorenzo"`` or ``"interp"`` force one (over all axes).
        threads: CPU threads (default :func:`get_num_threads`); the stream is the same for any count.
        dtype: ``"bfloat16"`` to declare a uint16 numpy array as bfloat16 bit patterns.
        block_elems: elements per independent chunk (a stream parameter; default 2**18).

    NaN and +-Inf are stored bit-exactly; values the quantizer cannot bring within
    the bound in the array's own precision are stored exactly too.
    """
    mode_code = MODES.get(mode, -1)
    eb = check_bound(eb, mode)
    if predictor not in PREDICTORS:
        raise ValueError(f"predictor must be one of {sorted(PREDICTORS)}; got {predictor!r}")
    nthreads = _threads(threads)
    if block_elems is not None and not (isinstance(block_elems, (int, np.integer)) and 1 <= block_elems <= 2**28):
        raise ValueError(f"block_elems must be an integer in [1, 2**28]; got {block_elems!r}")
    if dtype is None and _device.is_cuda_array(x):
        # On the GPU where the device driver runs this pipeline (the same bytes
        # as the CPU driver); otherwise one trip through host memory.
        c = _device.try_compress(x, eb, mode, predictor, nthreads, block_elems)
        if c is not None:
            return c
    arr, name, origin = _arrays.to_numpy(x, dtype)
    code = _arrays.DTYPE_CODES[name]

    if mode == "abs":
        eb_abs = eb
        value_range = None
    else:
        eb_abs, value_range = _absolute_bound(eb, mode, *_core.finite_range(arr, code, nthreads))

    def run(bound: float) -> Compressed:
        c = Compressed()
        _core.compress(arr, code, mode_code, eb, bound, c, nthreads, int(block_elems or 0), PREDICTORS[predictor])
        c._origin = origin
        return c

    c = run(eb_abs)
    if mode == "psnr" and eb_abs > 0:
        # The PSNR target is a promise too: measure, tighten until it holds,
        # and store exactly if tightening stops helping (tiny arrays).
        recon = np.empty_like(arr)
        previous = -math.inf
        for _ in range(8):
            _core.decompress_into(c, recon, nthreads)
            _, sse, n, _ = _core.error_stats(arr, recon, code, value_range, nthreads)
            achieved = _psnr_of(sse, n)
            if achieved >= eb:
                return c
            shrink = 10 ** ((achieved - eb) / 20) * 0.97 if achieved > previous else 0.5
            previous = achieved
            eb_abs *= shrink
            c = run(eb_abs)
        c = run(0.0)
    return c


def decompress(data, out=None, like=None, *, threads: int | None = None, raw_bf16: bool = False,
               device: str | None = None, enhance: bool = True):
    """Restore an array from a :class:`Compressed` or any bytes-like ebzip stream.

    Returns the kind of array that was compressed when ``data`` is a
    :class:`Compressed` (torch in, torch out, same device); otherwise numpy,
    unless ``like`` (an array/tensor, or "numpy"/"torch") says otherwise.
    ``out``: a C-contiguous numpy array or CPU tensor of the right shape and
    dtype to fill in place. Raises :class:`StreamError` for a bad stream.
    bfloat16 streams come back as ``ml_dtypes.bfloat16`` numpy arrays (or the
    uint16 bit patterns with ``raw_bf16=True``).
    ``device``: ``"cuda"``/``"cuda:N"`` puts the result on that GPU (a torch
    tensor, or a cupy array when cupy went in), decoded there by the CUDA
    driver where it runs this stream's pipeline; ``"cpu"`` keeps it on the host.

    An enhancer container (``ebzip.enhance``) is delegated to
    :func:`ebzip.enhance.decompress`: the enhanced numpy array (or dict of
    arrays), which needs torch, or the plain reconstruction with
    ``enhance=False``; ``out``, ``like`` and ``device`` are refused there.
    """
    nthreads = _threads(threads)
    if _is_enhanced(data):
        if out is not None or like is not None or device is not None:
            raise ValueError("out=, like= and device= are not supported for enhancer containers: they decode to "
                             "numpy arrays (ebzip.enhance.decompress(..., device=) picks the networks' device)")
        from . import enhance as _enhance
        return _enhance.decompress(data, enhance=enhance, threads=nthreads)
    info = data.info if isinstance(data, Compressed) else _inspect_header(data, "decompress")
    name = _arrays.DTYPE_NAMES[info["dtype"]]
    shape = tuple(info["shape"])
    if out is not None:
        result, view = _arrays.prepare_out(out, shape, name)
        _core.decompress_into(data, view, nthreads)
        return result
    origin = _arrays.origin_of(like) if like is not None else getattr(data, "_origin", _arrays.NUMPY)
    if device is not None:
        origin = _arrays.on_device(origin, device)
    if origin.device.startswith("cuda"):
        result = _device.try_decompress_into_new(data, shape, name, origin)
        if result is not None:
            return result
        _arrays.check_reachable(origin)  # (decoded on the host next, then moved there by torch)
    if origin.kind != "torch" and name == "bfloat16" and not raw_bf16 and _arrays.NUMPY_BFLOAT16 is None:
        raise ImportError("this stream holds bfloat16 values; install ml_dtypes for a numpy bfloat16 array, "
                          "pass raw_bf16=True for the uint16 bit patterns, or like='torch'")
    result, view = _arrays.allocate(shape, name, origin)
    _core.decompress_into(data, view, nthreads)
    return _arrays.finish(result, name, origin, raw_bf16)


def _is_enhanced(data) -> bool:
    """An ebzip.enhance container (magic "EBZN") rather than a core stream ("EBZP")."""
    if isinstance(data, Compressed):
        return False
    try:
        return bytes(memoryview(data)[:4]) == b"EBZN"
    except TypeError:  # not a buffer: an Enhanced object (a buffer only from Python 3.12), or a bad argument
        from .enhance import Enhanced  # imported only here: plain streams never load ebzip.enhance
        return isinstance(data, Enhanced)


def _inspect_header(data, caller: str) -> dict:
    """The stream's header fields (_core.inspect), with a clear TypeError for what is not a buffer."""
    if isinstance(data, str):
        raise TypeError(f"{caller} expects the compressed bytes, not a str")
    try:
        return _core.inspect(data)
    except TypeError:
        raise TypeError(f"{caller} expects a Compressed object or a bytes-like stream; got {type(data).__name__}") from None


def inspect(data) -> dict:
    """The header of a stream as a dict (shape, dtype, mode, bounds, ...), checked but not decoded."""
    info = dict(data.info if isinstance(data, Compressed) else _inspect_header(data, "inspect"))
    info["dtype"] = _arrays.DTYPE_NAMES[info["dtype"]]
    info["mode"] = MODE_NAMES[info["mode"]]
    info["pipeline"] = PIPELINES[info["pipeline"]]
    return info
