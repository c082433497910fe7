"""Shared helpers and hypothesis strategies for the ebzip test suite.

Arrays are generated at the storage level: float16/float32/float64 as numpy
float arrays, bfloat16 as uint16 bit patterns (so generation needs neither
ml_dtypes nor torch). ``as_numpy`` / ``as_torch`` turn them into what a user
would pass in.

Every round trip is checked by :func:`assert_within_bound`, the way a user
checks it: in float64 and in the element's own type.
"""

from __future__ import annotations

import math
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

import ebzip
from ebzip import _arrays

try:
    import ml_dtypes
except ImportError:  # pragma: no cover - depends on the environment
    ml_dtypes = None

try:
    import torch
except ImportError:  # pragma: no cover - depends on the environment
    torch = None

# ---------------------------------------------------------------- hypothesis


def pytest_collection_modifyitems(config, items):
    """``@pytest.mark.slow`` tests (minutes, many GiB) run only when asked: ``-m slow`` or EBZIP_SLOW=1."""
    if "slow" in (config.getoption("markexpr") or "") or os.environ.get("EBZIP_SLOW"):
        return
    skip = pytest.mark.skip(reason="slow: run with `pytest -m slow` (or EBZIP_SLOW=1)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def pytest_configure(config):
    # hypothesis' failure explainer imports libcst, which warns about mypy_extensions
    config.addinivalue_line("filterwarnings", "ignore::DeprecationWarning:libcst.*")


# EBZIP_HYPOTHESIS_SCALE=10 multiplies every test's number of examples (for a long bug hunt).
EXAMPLES_SCALE = float(os.environ.get("EBZIP_HYPOTHESIS_SCALE", "1"))


def scaled(n: int) -> int:
    return max(1, int(n * EXAMPLES_SCALE))


settings.register_profile(
    "default",
    max_examples=scaled(150),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("default")

# ---------------------------------------------------------------- dtypes

ALL_DTYPES = ("float32", "float64", "float16", "bfloat16")
# numpy arrays of bfloat16 need ml_dtypes
NUMPY_DTYPES = tuple(d for d in ALL_DTYPES if d != "bfloat16" or ml_dtypes is not None)
MODES = ("abs", "rel", "psnr")

UINT_OF = {"float16": np.uint16, "bfloat16": np.uint16, "float32": np.uint32, "float64": np.uint64}
# largest finite value and smallest subnormal of each type
FMAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38,
        "float32": float(np.finfo(np.float32).max), "float64": float(np.finfo(np.float64).max)}
TINY = {"float16": 2.0**-24, "bfloat16": 2.0**-133, "float32": 2.0**-149, "float64": 5e-324}
# decimal exponent range where random data is "ordinary" for each type
EXP_RANGE = {"float16": (-7, 4), "bfloat16": (-35, 35), "float32": (-35, 35), "float64": (-300, 300)}


def storage_dtype(name: str) -> np.dtype:
    return np.dtype(np.uint16) if name == "bfloat16" else np.dtype(name)


def numpy_dtype(name: str) -> np.dtype:
    if name == "bfloat16":
        if ml_dtypes is None:
            pytest.skip("ml_dtypes is not installed")
        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def torch_dtype(name: str):
    return getattr(torch, name)


def f32_to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """Round float32 values to bfloat16 (nearest, ties to even) as uint16 patterns; NaN stays NaN."""
    a = np.asarray(a, dtype=np.float32).copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
    b = a.view(np.uint32).astype(np.uint64)
    rounded = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    return np.where(nan, ((b >> 16) | 0x40).astype(np.uint16), rounded).astype(np.uint16)


def bf16_bits_to_f64(bits: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # signalling NaNs
        return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32).astype(np.float64)


def from_float64(values: np.ndarray, name: str) -> np.ndarray:
    """Storage-level array of `name` from float64 values (overflow goes to +-inf, as a cast would)."""
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "bfloat16":
            return f32_to_bf16_bits(values.astype(np.float32))
        return values.astype(name)


def as_numpy(storage: np.ndarray, name: str) -> np.ndarray:
    """What a numpy user passes in (bfloat16 as an ml_dtypes array)."""
    if name == "bfloat16":
        return storage.view(numpy_dtype("bfloat16"))
    return storage


def as_torch(storage: np.ndarray, name: str):
    """What a torch user passes in: a CPU tensor of the dtype, same bits."""
    storage = np.asarray(storage).copy(order="C")
    if name == "bfloat16":
        return torch.from_numpy(storage.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(storage.copy())


def bits_of(a) -> np.ndarray:
    """The raw bit patterns of a numpy array or torch tensor (uint view, C order)."""
    if torch is not None and isinstance(a, torch.Tensor):
        t = a.detach().contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16).copy()
        if t.dtype == torch.float16:
            return t.view(torch.int16).numpy().view(np.uint16).copy()
        if t.dtype == torch.float32:
            return t.view(torch.int32).numpy().view(np.uint32).copy()
        if t.dtype == torch.float64:
            return t.view(torch.int64).numpy().view(np.uint64).copy()
        raise AssertionError(f"unexpected tensor dtype {t.dtype}")
    a = np.asarray(a).copy(order="C")
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]).copy()


def dtype_name_of(a) -> str:
    if torch is not None and isinstance(a, torch.Tensor):
        return {torch.float16: "float16", torch.bfloat16: "bfloat16", torch.float32: "float32",
                torch.float64: "float64"}[a.dtype]
    if ml_dtypes is not None and a.dtype == np.dtype(ml_dtypes.bfloat16):
        return "bfloat16"
    assert a.dtype.kind == "f", f"not a float array: {a.dtype}"
    return a.dtype.name


def to_float64(a) -> np.ndarray:
    """Exact float64 copy of a numpy array / torch tensor of any supported dtype."""
    if torch is not None and isinstance(a, torch.Tensor):
        return a.detach().to(torch.float64).numpy()
    if dtype_name_of(a) == "bfloat16":
        return bf16_bits_to_f64(bits_of(a)).reshape(a.shape)
    with np.errstate(invalid="ignore"):  # signalling NaNs
        return np.asarray(a, dtype=np.float64)


# ---------------------------------------------------------------- the check


def assert_within_bound(x, y, eb_abs: float) -> None:
    """Assert that y is a faithful reconstruction of x under the absolute bound eb_abs.

    * same kind (numpy/torch), shape and dtype;
    * every element whose original is NaN/+-Inf comes back bit-exactly;
    * every finite element: |float64(x) - float64(y)| <= eb_abs, and the same
      check done in the element's own type: |x - y| <= dtype(eb_abs) (numpy
      float16/float32/float64 arithmetic, ml_dtypes or torch bfloat16 arithmetic);
    * eb_abs == 0: every element bit-exact (-0.0 included).
    """
    is_torch = torch is not None and isinstance(x, torch.Tensor)
    assert (torch is not None and isinstance(y, torch.Tensor)) == is_torch, \
        f"kind changed: {type(x).__name__} in, {type(y).__name__} out"
    assert tuple(y.shape) == tuple(x.shape), f"shape changed: {tuple(x.shape)} -> {tuple(y.shape)}"
    name = dtype_name_of(x)
    assert dtype_name_of(y) == name, f"dtype changed: {x.dtype} -> {y.dtype}"
    assert isinstance(eb_abs, float) and eb_abs >= 0 and math.isfinite(eb_abs), eb_abs

    xb, yb = bits_of(x).reshape(-1), bits_of(y).reshape(-1)
    x64, y64 = to_float64(x).reshape(-1), to_float64(y).reshape(-1)
    finite = np.isfinite(x64)

    if eb_abs == 0:
        bad = np.flatnonzero(xb != yb)
        assert bad.size == 0, (f"eb=0 must be lossless: {bad.size} elements differ, first at flat index {bad[0]}: "
                               f"{x64[bad[0]]!r} (bits {xb[bad[0]]:#x}) -> {y64[bad[0]]!r} (bits {yb[bad[0]]:#x})")
        return

    nonfinite = np.flatnonzero(~finite & (xb != yb))
    assert nonfinite.size == 0, (f"{nonfinite.size} NaN/Inf elements not bit-exact, first at {nonfinite[0]}: "
                                 f"bits {xb[nonfinite[0]]:#x} -> {yb[nonfinite[0]]:#x}")

    with np.errstate(over="ignore", invalid="ignore"):
        err64 = np.abs(x64 - y64)
    ok64 = err64 <= eb_abs  # NaN/inf errors compare False
    bad = np.flatnonzero(finite & ~ok64)
    assert bad.size == 0, (f"float64 check: {bad.size} finite elements violate eb_abs={eb_abs!r}; first at flat index "
                           f"{bad[0]}: x={x64[bad[0]]!r} y={y64[bad[0]]!r} |err|={err64[bad[0]]!r}")

    # the same check in the array's own type
    if is_torch:
        xt, yt = x.detach().reshape(-1), y.detach().reshape(-1)
        ok_t = ((xt - yt).abs() <= torch.tensor(eb_abs, dtype=xt.dtype)).numpy()
        err_t = None
    else:
        xn, yn = np.asarray(x).reshape(-1), np.asarray(y).reshape(-1)
        with np.errstate(over="ignore", invalid="ignore"):
            err_t = np.abs(xn - yn)
            ok_t = err_t <= xn.dtype.type(eb_abs)
    bad = np.flatnonzero(finite & ~np.asarray(ok_t))
    assert bad.size == 0, (f"{name} arithmetic check: {bad.size} finite elements violate {name}({eb_abs!r}); first at "
                           f"flat index {bad[0]}: x={x64[bad[0]]!r} y={y64[bad[0]]!r}"
                           + ("" if err_t is None else f" |x-y| in {name} = {err_t[bad[0]]!r}"))


def psnr(x, y) -> float:
    """PSNR of y against x over finite elements of x, in dB, computed without overflow.

    PSNR = 10 log10(range^2 / mse) = -10 log10(mean(((x - y) / range)^2)).
    """
    x64, y64 = to_float64(x).reshape(-1), to_float64(y).reshape(-1)
    finite = np.isfinite(x64)
    if not finite.any():
        return math.inf
    xf, yf = x64[finite], y64[finite]
    lo, hi = xf.min(), xf.max()
    # the range and the errors, both halved so that neither overflows
    half_range = hi / 2 - lo / 2
    if half_range == 0:
        return math.inf if np.array_equal(xf, yf) else -math.inf
    e = (xf / 2 - yf / 2) / half_range
    mse = float(np.mean(e * e))
    return math.inf if mse == 0 else -10 * math.log10(mse)


def finite_range(x) -> float:
    x64 = to_float64(x).reshape(-1)
    x64 = x64[np.isfinite(x64)]
    if x64.size == 0:
        return 0.0
    with np.errstate(over="ignore"):
        return float(x64.max() - x64.min())


def check_roundtrip(x, eb, mode, **kw):
    """Compress + decompress x and check everything the API promises; returns (c, y)."""
    c = ebzip.compress(x, eb, mode, **kw)
    y = ebzip.decompress(c)
    assert c.mode == mode
    assert c.eb == float(eb)
    assert c.shape == tuple(x.shape)
    assert c.nbytes == len(bytes(c))
    if mode == "abs":
        assert c.eb_abs == float(eb)
    elif mode == "rel":
        r = finite_range(x)
        if math.isfinite(eb * r):  # (else any finite bound is fair; the check below still applies)
            assert c.eb_abs == pytest.approx(eb * r, rel=1e-12, abs=0)
    assert_within_bound(x, y, c.eb_abs)
    if mode == "psnr":
        achieved = psnr(x, y)
        # 1e-9 dB: room for summation order only
        assert achieved >= eb - 1e-9, f"PSNR {achieved} dB < target {eb} dB (eb_abs {c.eb_abs})"
    return c, y


# ---------------------------------------------------------------- strategies


@st.composite
def shapes(draw, max_dims: int = 5, max_elems: int = 600) -> tuple:
    """0-d, empty, 1..5-D; small, odd and size-1 axes; at most max_elems elements."""
    ndim = draw(st.integers(0, max_dims))
    side = st.one_of(st.sampled_from([1, 1, 2, 3, 5, 7]), st.integers(1, 40))
    dims = [draw(side) for _ in range(ndim)]
    while math.prod(dims) > max_elems:
        i = int(np.argmax(dims))
        dims[i] = max(1, dims[i] // 2)
    if ndim and draw(st.integers(0, 9)) == 0:  # now and then an empty array
        dims[draw(st.integers(0, ndim - 1))] = 0
    return tuple(dims)


KINDS = ("noise", "walk", "smooth", "constant", "huge", "denormal", "bits", "mixed", "steps")


def _specials(name: str) -> list:
    m, t = FMAX[name], TINY[name]
    return [np.nan, np.inf, -np.inf, -0.0, 0.0, m, -m, t, -t, 1.0, -1.0]


def make_values(kind: str, shape: tuple, name: str, rng: np.random.Generator, scale_exp: float) -> np.ndarray:
    """A storage-level array of `name` with the character of `kind`."""
    n = math.prod(shape)
    scale = 10.0**scale_exp
    m = FMAX[name]
    if kind == "bits":  # every bit pattern: NaN payloads, signalling NaNs, subnormals, extremes
        it = storage_dtype(name).itemsize
        raw = rng.integers(0, 2**63, size=n, dtype=np.uint64, endpoint=False)
        raw = raw ^ (rng.integers(0, 2, size=n, dtype=np.uint64) << np.uint64(63))
        u = raw >> np.uint64(64 - 8 * it)
        arr = u.astype({2: np.uint16, 4: np.uint32, 8: np.uint64}[it])
        if name != "bfloat16":
            arr = arr.view(storage_dtype(name))
        return arr.reshape(shape)
    if kind == "noise":
        v = rng.standard_normal(n) * scale + rng.standard_normal() * scale * 10.0 ** rng.integers(0, 4)
    elif kind == "walk":
        v = np.cumsum(rng.standard_normal(n)) * scale
    elif kind == "smooth":
        if n:
            grids = np.meshgrid(*[np.linspace(0, 3, d) for d in shape], indexing="ij") if shape else [np.zeros(())]
            v = sum(np.sin((i + 1.3) * g + rng.random()) for i, g in enumerate(grids)).reshape(-1) * scale
        else:
            v = np.zeros(0)
    elif kind == "constant":
        c = rng.choice([0.0, -0.0, 1.0, scale, -scale, m, -m, TINY[name], np.nan, np.inf])
        v = np.full(n, c)
    elif kind == "huge":  # the whole range of the type, extremes included
        v = rng.uniform(-1, 1, n) * m
        if n:
            v[rng.integers(0, n, size=min(n, 3))] = m
            v[rng.integers(0, n, size=min(n, 3))] = -m
    elif kind == "denormal":
        v = rng.integers(-40, 41, n) * TINY[name]
    elif kind == "steps":  # piecewise constant with jumps of many magnitudes
        v = np.cumsum(np.where(rng.random(n) < 0.1, rng.standard_normal(n) * 10.0 ** rng.integers(-3, 8, n), 0.0)) * scale
    else:  # mixed: noise with NaN/Inf/extremes/subnormals sprinkled in
        v = rng.standard_normal(n) * scale
        if n:
            k = rng.integers(1, n + 1)
            idx = rng.integers(0, n, size=k)
            v[idx] = rng.choice(_specials(name), size=k)
    with np.errstate(over="ignore", invalid="ignore"):
        v = np.clip(v, -m, m) if kind != "mixed" and kind != "constant" else v
    return from_float64(np.asarray(v, dtype=np.float64), name).reshape(shape)


@st.composite
def arrays(draw, name: str, shape=None, kinds=KINDS, max_elems: int = 600) -> np.ndarray:
    """A storage-level array of dtype `name` (bfloat16 as uint16 bits)."""
    if shape is None:
        shape = draw(shapes(max_elems=max_elems))
    kind = draw(st.sampled_from(kinds))
    lo, hi = EXP_RANGE[name]
    scale_exp = draw(st.one_of(st.just(0.0), st.floats(lo, hi)))
    seed = draw(st.integers(0, 2**32 - 1))
    arr = make_values(kind, shape, name, np.random.default_rng(seed), scale_exp)
    if kind not in ("mixed", "bits") and arr.size and draw(st.integers(0, 3)) == 0:
        # a few NaN/Inf in any kind of data
        rng = np.random.default_rng(seed + 1)
        flat = arr.reshape(-1)
        k = int(rng.integers(1, max(2, arr.size // 10)))
        idx = rng.integers(0, arr.size, size=k)
        flat[idx] = from_float64(rng.choice([np.nan, np.inf, -np.inf], size=k), name)
    return arr


def _log_uniform(lo_exp: float, hi_exp: float):
    return st.floats(lo_exp, hi_exp).map(lambda e: float(10.0**e))


EB_SPECIAL_ABS = [5e-324, 1e-300, 1e-45, 2.0**-24, 1e-7, 0.1, 0.5, 1.0, 16.0, 65504.0, 1e5,
                  3.4028234663852886e38, 1e300, 1.7976931348623157e308]


@st.composite
def bounds(draw, mode: str, storage: np.ndarray, name: str) -> float:
    """An error bound for `mode`: zero, tiny, huge, special values, or relative to the data's magnitude."""
    if mode == "psnr":
        return draw(st.one_of(st.floats(0.5, 250.0), st.sampled_from([1e-3, 1.0, 20.0, 60.0, 100.0, 300.0])))
    if draw(st.integers(0, 9)) == 0:
        return 0.0
    if mode == "rel":
        return draw(st.one_of(_log_uniform(-12, 0.3), st.sampled_from([1e-300, 1e-16, 1e-3, 1.0, 10.0, 1e10, 1e300])))
    # abs
    with np.errstate(invalid="ignore"):  # signalling NaNs
        x64 = (bf16_bits_to_f64(storage) if name == "bfloat16" else storage.astype(np.float64)).reshape(-1)
    x64 = np.abs(x64[np.isfinite(x64)])
    mag = float(x64.max()) if x64.size and x64.max() > 0 else 1.0
    return draw(st.one_of(
        st.sampled_from(EB_SPECIAL_ABS),
        _log_uniform(-320, 308),
        _log_uniform(-12, 1).map(lambda f: min(f * mag, 1.7976931348623157e308)),
    ))


@pytest.fixture
def restore_threads():
    n = ebzip.get_num_threads()
    yield
    ebzip.set_num_threads(n)


# ---------------------------------------------------------------- stream layout


class Layout:
    """Section offsets of a stream, per csrc/include/ebzip/format.hpp (format versions 1 to 3)."""

    def __init__(self, s: bytes):
        assert s[:4] == b"EBZP"
        version = struct.unpack_from("<H", s, 4)[0]
        assert version in (1, 2, 3), f"the layout helper in {__file__} knows format versions 1-3, not {version}: update it"
        self.version = version
        if version >= 3:
            self._header_v3(s)
        else:
            self.ndim = s[7]
            self.pipeline = s[9]
            self.pred_ndim = s[40]
            # version 2, interpolation pipeline: u8 cubic, u8 order[4], 3 reserved, f64 alpha, f64 beta, u64 tile[4]
            interp_params = 56 if version >= 2 and self.pipeline == 2 else 0
            self.header_len = 48 + 8 * self.ndim + 8 * self.pred_ndim + interp_params  # without its CRC
        pos = self.header_len + 4
        self.codebook = None
        if self.pipeline in (1, 2):
            (cb_len,) = struct.unpack_from("<I", s, pos)
            self.codebook = (pos, cb_len)  # (offset of the u32 length, payload length)
            pos += 8 + cb_len
        self.table = pos
        (self.n_chunks,) = struct.unpack_from("<Q", s, pos)
        self.table_end = pos + 8 + 16 * self.n_chunks  # offset of the table CRC
        self.chunks = []
        p = self.table_end + 4
        for k in range(self.n_chunks):
            ln, flags, crc = struct.unpack_from("<QII", s, pos + 8 + 16 * k)
            self.chunks.append((p, ln, flags))
            p += ln
        assert p == len(s)

    def _header_v3(self, s: bytes) -> None:
        h, self.header_len = parse_header_v3(s)
        self.pipeline, self.ndim, self.pred_ndim = h["pipeline"], len(h["shape"]), len(h["pred_shape"])


# Format version 3 header fields, in stream order after "EBZP" and the u16 version.
_V3_BYTES = ("dtype", "mode", "pipeline", "grid_bits")
# bytes of an element by dtype code (the fill value's size), from the package's own tables
_ITEM_BYTES = {code: _arrays.storage_dtype(name).itemsize for code, name in _arrays.DTYPE_NAMES.items()}


def _uvar(x: int) -> bytes:
    out = bytearray()
    while x >= 0x80:
        out.append((x & 0x7F) | 0x80)
        x >>= 7
    out.append(x)
    return bytes(out)


def parse_header_v3(s: bytes) -> tuple[dict, int]:
    """A version 3 header as a dict of its fields, and its length without the CRC."""
    assert s[:4] == b"EBZP" and struct.unpack_from("<H", s, 4)[0] == 3
    h = dict(zip(_V3_BYTES, s[6:10]))
    ndim, pred_ndim, flags = s[10], s[11], s[12]
    pos = 13

    def uvar():
        nonlocal pos
        shift = x = 0
        while True:
            b = s[pos]
            pos += 1
            x |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return x

    def f64():
        nonlocal pos
        pos += 8
        return struct.unpack_from("<d", s, pos - 8)[0]

    h["radius"] = uvar()
    h["eb_abs"] = f64()
    h["eb_param"] = f64() if flags & 1 else None
    h["block_elems"] = uvar()
    h["shape"] = [uvar() for _ in range(ndim)]
    h["pred_shape"] = [uvar() for _ in range(pred_ndim)]
    if h["pipeline"] == 2:
        h["stencil"], h["order"] = s[pos], s[pos + 1]
        pos += 2
        h["alpha"], h["beta"] = f64(), f64()
        h["tile"] = [uvar() for _ in range(4)]
        h["fill"] = s[pos]
        pos += 1
        size = _ITEM_BYTES.get(h["dtype"], 0)
        h["fill_bits"] = int.from_bytes(s[pos:pos + size], "little") if h["fill"] else None
        pos += size if h["fill"] else 0
    return h, pos


def pack_header_v3(h: dict) -> bytes:
    """The inverse of parse_header_v3, with the header CRC appended."""
    import zlib

    b = bytearray(b"EBZP" + struct.pack("<H", 3) + bytes(h[k] for k in _V3_BYTES))
    b += bytes([len(h["shape"]), len(h["pred_shape"]), 0 if h["eb_param"] is None else 1])
    b += _uvar(h["radius"]) + struct.pack("<d", h["eb_abs"])
    if h["eb_param"] is not None:
        b += struct.pack("<d", h["eb_param"])
    b += _uvar(h["block_elems"]) + b"".join(_uvar(d) for d in h["shape"] + h["pred_shape"])
    if h["pipeline"] == 2:
        b += bytes([h["stencil"], h["order"]]) + struct.pack("<dd", h["alpha"], h["beta"])
        b += b"".join(_uvar(t) for t in h["tile"]) + bytes([h["fill"]])
        if h["fill"]:
            b += h["fill_bits"].to_bytes(_ITEM_BYTES[h["dtype"]], "little")
    return bytes(b) + struct.pack("<I", zlib.crc32(bytes(b)))


def with_header(s: bytes, **fields) -> bytes:
    """The stream s (format version 3) with header fields replaced; the header CRC is recomputed."""
    h, n = parse_header_v3(s)
    h.update(fields)
    return pack_header_v3(h) + s[n + 4:]
