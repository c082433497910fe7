"""The public API: argument checking, array kinds, out=/like=, pickling, threads."""

from __future__ import annotations

import math
import pickle
import threading

import numpy as np
import pytest

import ebzip
from conftest import (
    ALL_DTYPES,
    Layout,
    NUMPY_DTYPES,
    as_numpy,
    as_torch,
    assert_within_bound,
    bits_of,
    check_roundtrip,
    from_float64,
    numpy_dtype,
)


def walk(shape, name="float32", seed=0, nan=False):
    rng = np.random.default_rng(seed)
    v = np.cumsum(rng.standard_normal(math.prod(shape))).reshape(shape)
    if nan and v.size:
        v.reshape(-1)[:: max(1, v.size // 7)] = np.nan
    return as_numpy(from_float64(v, name), name)


# ---------------------------------------------------------------- array layouts


def _views(x):
    yield "transposed", x.T
    yield "strided", x[::2, 1::3]
    yield "negative", x[::-1, ::-2]
    yield "fortran", np.asfortranarray(x)
    yield "column", x[:, 3]
    yield "scalar-element", x[2, 2, ...]


@pytest.mark.parametrize("name", NUMPY_DTYPES)
@pytest.mark.parametrize("mode,eb", [("abs", 1e-2), ("abs", 0.0), ("rel", 1e-3), ("psnr", 70.0)])
def test_noncontiguous_inputs(name, mode, eb):
    x = walk((37, 23), name, nan=True)
    for label, v in _views(x):
        c, y = check_roundtrip(v, eb, mode)
        assert y.flags.c_contiguous, label
        # the stream does not depend on the memory layout
        assert bytes(c) == bytes(ebzip.compress(v.copy(order="C"), eb, mode)), label


@pytest.mark.parametrize("name", ["float16", "float32", "float64"])
@pytest.mark.parametrize("mode,eb", [("abs", 1e-2), ("abs", 0.0), ("rel", 1e-3)])
def test_big_endian_inputs(name, mode, eb):
    x = walk((19, 21), name, nan=True)
    be = x.astype(x.dtype.newbyteorder(">"))
    assert not be.dtype.isnative
    c = ebzip.compress(be, eb, mode)
    assert bytes(c) == bytes(ebzip.compress(x, eb, mode))
    y = ebzip.decompress(c)
    assert y.dtype == x.dtype and y.dtype.isnative
    assert_within_bound(x, y, c.eb_abs)
    # a big-endian strided view too
    c2 = ebzip.compress(be[::-2, 1::2], eb, mode)
    assert_within_bound(x[::-2, 1::2], ebzip.decompress(c2), c2.eb_abs)


def test_list_and_scalar_inputs():
    c, y = check_roundtrip(np.asarray([1.0, 2.5, -3.0]), 0.01, "abs")
    c = ebzip.compress([1.0, 2.5, -3.0], 0.01)
    assert c.dtype == np.float64 and c.shape == (3,)
    assert_within_bound(np.asarray([1.0, 2.5, -3.0]), ebzip.decompress(c), 0.01)
    c = ebzip.compress(np.float32(1.25), 0.1)
    y = ebzip.decompress(c)
    assert y.shape == () and y.dtype == np.float32
    assert abs(float(y) - 1.25) <= 0.1


# ---------------------------------------------------------------- bfloat16 as numpy


def test_bfloat16_uint16_declared():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = walk((30, 20), "bfloat16", nan=True)
    raw = x.view(np.uint16)
    c = ebzip.compress(raw, 0.05, dtype="bfloat16")
    assert bytes(c) == bytes(ebzip.compress(x, 0.05))
    assert c.dtype_name == "bfloat16" and c.dtype == np.dtype(ml_dtypes.bfloat16)
    y = ebzip.decompress(c)
    assert y.dtype == np.dtype(ml_dtypes.bfloat16)
    assert_within_bound(x, y, 0.05)
    r = ebzip.decompress(c, raw_bf16=True)
    assert r.dtype == np.uint16
    np.testing.assert_array_equal(r, bits_of(y).reshape(r.shape))


# ---------------------------------------------------------------- torch


@pytest.mark.parametrize("name", ALL_DTYPES)
def test_torch_in_torch_out(name):
    torch = pytest.importorskip("torch")
    storage = from_float64(np.cumsum(np.random.default_rng(2).standard_normal(600)).reshape(20, 30), name)
    t = as_torch(storage, name)
    for mode, eb in [("abs", 0.01), ("abs", 0.0), ("rel", 1e-3), ("psnr", 50.0)]:
        c, y = check_roundtrip(t, eb, mode)
        assert isinstance(y, torch.Tensor) and y.dtype == t.dtype and y.shape == t.shape and y.device.type == "cpu"
        # the same bytes as the numpy route
        declared = "bfloat16" if name == "bfloat16" else None  # (bfloat16 storage is uint16 bits)
        assert bytes(c) == bytes(ebzip.compress(storage, eb, mode, dtype=declared))
        # non-contiguous tensors
        v = t.t()[::2]
        c2, y2 = check_roundtrip(v, eb, mode)
        assert y2.is_contiguous()


@pytest.mark.parametrize("name", ALL_DTYPES)
def test_torch_requires_grad(name):
    torch = pytest.importorskip("torch")
    t = as_torch(from_float64(np.linspace(-3, 3, 200).reshape(10, 20), name), name).requires_grad_(True)
    w = t * 2  # a non-leaf with grad history
    for src in (t, w):
        c = ebzip.compress(src, 0.01)
        y = ebzip.decompress(c)
        assert isinstance(y, torch.Tensor) and y.dtype == t.dtype and not y.requires_grad
        assert_within_bound(src.detach(), y, 0.01)
    assert t.grad is None


def test_torch_bfloat16_without_ml_dtypes_path():
    """like='torch' returns a bfloat16 tensor from plain bytes."""
    torch = pytest.importorskip("torch")
    t = as_torch(from_float64(np.linspace(-1, 1, 64), "bfloat16"), "bfloat16")
    c = ebzip.compress(t, 0.01)
    y = ebzip.decompress(bytes(c), like="torch")
    assert isinstance(y, torch.Tensor) and y.dtype == torch.bfloat16
    assert_within_bound(t, y, 0.01)


# ---------------------------------------------------------------- out= and like=


@pytest.mark.parametrize("name", NUMPY_DTYPES)
def test_out_numpy(name):
    x = walk((13, 17), name, nan=True)
    c = ebzip.compress(x, 0.01)
    out = np.full(x.shape, 7, dtype=x.dtype)
    r = ebzip.decompress(c, out=out)
    assert r is out
    np.testing.assert_array_equal(bits_of(out), bits_of(ebzip.decompress(c)))
    assert_within_bound(x, out, 0.01)
    if name == "bfloat16":  # the uint16 storage dtype is accepted too
        out16 = np.zeros(x.shape, dtype=np.uint16)
        assert ebzip.decompress(c, out=out16) is out16
        np.testing.assert_array_equal(out16, bits_of(out))


@pytest.mark.parametrize("name", ALL_DTYPES)
def test_out_torch(name):
    torch = pytest.importorskip("torch")
    t = as_torch(from_float64(np.linspace(-5, 5, 120).reshape(4, 30), name), name)
    c = ebzip.compress(t, 0.01)
    out = torch.zeros(4, 30, dtype=t.dtype)
    r = ebzip.decompress(c, out=out)
    assert r is out
    assert_within_bound(t, out, 0.01)


def test_like():
    torch = pytest.importorskip("torch")
    x = walk((8, 9), "float32")
    c = ebzip.compress(x, 0.01)
    for like in (torch.zeros(1), "torch"):
        y = ebzip.decompress(c, like=like)
        assert isinstance(y, torch.Tensor) and y.dtype == torch.float32 and tuple(y.shape) == x.shape
        assert_within_bound(torch.from_numpy(x), y, 0.01)
    for like in ("numpy", np.zeros(1)):
        y = ebzip.decompress(c, like=like)
        assert isinstance(y, np.ndarray)
    # a Compressed from torch comes back as torch, unless like= says numpy
    ct = ebzip.compress(torch.from_numpy(x), 0.01)
    assert isinstance(ebzip.decompress(ct), torch.Tensor)
    assert isinstance(ebzip.decompress(ct, like="numpy"), np.ndarray)
    # plain bytes carry no origin: numpy
    assert isinstance(ebzip.decompress(bytes(ct)), np.ndarray)


# ---------------------------------------------------------------- stream objects


@pytest.mark.parametrize("name", NUMPY_DTYPES)
def test_decompress_from_buffers(name):
    x = walk((11, 12), name, nan=True)
    c = ebzip.compress(x, 1e-3)
    ref = bits_of(ebzip.decompress(c))
    b = bytes(c)
    sources = [c, b, bytearray(b), memoryview(b), memoryview(c), np.frombuffer(b, dtype=np.uint8),
               np.frombuffer(b, dtype=np.uint8).copy(), ebzip.Compressed(b), ebzip.Compressed(bytearray(b))]
    for s in sources:
        y = ebzip.decompress(s)
        assert isinstance(y, np.ndarray) and y.shape == x.shape and y.dtype == x.dtype, type(s)
        np.testing.assert_array_equal(bits_of(y), ref)
    assert bytes(ebzip.Compressed(b)) == b


def test_decompress_from_noncontiguous_buffer():
    """A strided uint8 view holding a valid stream must decode (or be refused as
    non-contiguous) -- never be misread as a corrupt stream or read out of bounds."""
    x = walk((11, 12), "float32")
    c = ebzip.compress(x, 1e-3)
    b = np.frombuffer(bytes(c), dtype=np.uint8)
    ref = bits_of(ebzip.decompress(c))
    spread = np.zeros(2 * b.size, dtype=np.uint8)
    spread[::2] = b
    backwards = b[::-1].copy()[::-1]
    for label, view in [("every other byte", spread[::2]), ("negative stride", backwards)]:
        assert not view.flags.c_contiguous
        np.testing.assert_array_equal(view, b)
        try:
            y = ebzip.decompress(view)
        except ebzip.StreamError as e:
            pytest.fail(f"{label}: a valid stream in a strided buffer was reported as corrupt: {e}")
        except (TypeError, ValueError) as e:
            assert "contiguous" in str(e), f"{label}: unclear error {e!r}"
        else:
            np.testing.assert_array_equal(bits_of(y), ref, err_msg=label)


@pytest.mark.parametrize("name", NUMPY_DTYPES)
@pytest.mark.parametrize("mode,eb", [("abs", 0.5), ("abs", 0.0), ("rel", 1e-2), ("psnr", 40.0)])
def test_compressed_attributes(name, mode, eb):
    x = walk((16, 5, 3), name)
    c = ebzip.compress(x, eb, mode)
    assert isinstance(c, ebzip.Compressed)
    assert c.nbytes == len(bytes(c)) == len(c) == memoryview(c).nbytes
    assert c.shape == (16, 5, 3)
    assert c.dtype == numpy_dtype(name) and c.dtype_name == name
    assert c.mode == mode and c.eb == eb
    assert c.original_nbytes == x.nbytes
    assert c.ratio == pytest.approx(x.nbytes / c.nbytes)
    if mode == "abs":
        assert c.eb_abs == eb
    x64 = x.astype(np.float64)
    if mode == "rel":
        assert c.eb_abs == pytest.approx(eb * (x64.max() - x64.min()), rel=1e-12)
    assert c.pipeline == ("exact" if c.eb_abs == 0 else "lorenzo")
    info = ebzip.inspect(bytes(c))
    assert info["shape"] == c.shape and info["dtype"] == name and info["mode"] == mode
    assert info["eb_param"] == c.eb and info["eb_abs"] == c.eb_abs
    assert info["format_version"] == ebzip.FORMAT_VERSION
    assert name in repr(c) and mode in repr(c)


@pytest.mark.parametrize("name", NUMPY_DTYPES)
def test_pickle_compressed(name):
    x = walk((9, 31), name, nan=True)
    c = ebzip.compress(x, 0.01, "abs")
    for proto in range(2, pickle.HIGHEST_PROTOCOL + 1):
        c2 = pickle.loads(pickle.dumps(c, protocol=proto))
        assert isinstance(c2, ebzip.Compressed)
        assert bytes(c2) == bytes(c)
        assert (c2.shape, c2.dtype_name, c2.mode, c2.eb, c2.eb_abs) == (c.shape, c.dtype_name, c.mode, c.eb, c.eb_abs)
        np.testing.assert_array_equal(bits_of(ebzip.decompress(c2)), bits_of(ebzip.decompress(c)))


# ---------------------------------------------------------------- threads


def _threaded_inputs():
    rng = np.random.default_rng(4)
    base = np.cumsum(np.cumsum(rng.standard_normal((120, 210)), axis=0), axis=1)
    base[5, ::7] = np.nan
    base[9, 3] = np.inf
    base[50, 50] = 1e30  # an outlier
    for name in NUMPY_DTYPES:
        yield name, as_numpy(from_float64(base, name), name)


# Interpolation tiles hold 4 x block_elems elements, so fewer chunks.
MIN_CHUNKS = {"auto": 5, "lorenzo": 20, "interp": 5}


@pytest.mark.parametrize("predictor", ["auto", "lorenzo", "interp"])
@pytest.mark.parametrize("mode,eb", [("abs", 1e-2), ("abs", 0.0), ("rel", 1e-4), ("psnr", 60.0)])
def test_thread_count_independence(mode, eb, predictor, restore_threads):
    for name, x in _threaded_inputs():
        kw = dict(block_elems=1000, predictor=predictor)
        c1 = ebzip.compress(x, eb, mode, threads=1, **kw)
        c2 = ebzip.compress(x, eb, mode, threads=2, **kw)
        c3 = ebzip.compress(x, eb, mode, threads=3, **kw)
        assert bytes(c1) == bytes(c2) == bytes(c3), name
        assert Layout(bytes(c1)).n_chunks >= MIN_CHUNKS[predictor], name
        ebzip.set_num_threads(1)
        assert ebzip.get_num_threads() == 1
        d1 = bytes(ebzip.compress(x, eb, mode, **kw))
        ebzip.set_num_threads(2)
        assert ebzip.get_num_threads() == 2
        d2 = bytes(ebzip.compress(x, eb, mode, **kw))
        assert d1 == d2 == bytes(c1), name
        y1 = ebzip.decompress(c1, threads=1)
        y2 = ebzip.decompress(c1, threads=2)
        np.testing.assert_array_equal(bits_of(y1), bits_of(y2))
        assert_within_bound(x, y2, c1.eb_abs)
        # a one-chunk stream of the same data decodes to the same values in abs mode
        if mode == "abs":
            one = ebzip.compress(x, eb, mode, block_elems=x.size)
            assert_within_bound(x, ebzip.decompress(one), eb)


def test_concurrent_python_threads():
    """Per-thread work buffers: concurrent calls from Python threads give the serial result."""
    inputs = [x for _, x in _threaded_inputs()]
    inputs += [walk((n, 17), "float32", seed=n) for n in (3, 50, 400)]
    expected = [bytes(ebzip.compress(x, 1e-3, block_elems=997)) for x in inputs]
    decoded = [bits_of(ebzip.decompress(e)) for e in expected]
    errors = []

    def work(k):
        try:
            for i in range(6):
                j = (k + i) % len(inputs)
                if bytes(ebzip.compress(inputs[j], 1e-3, block_elems=997, threads=2)) != expected[j]:
                    errors.append(f"compress {j} differs in thread {k}")
                if not np.array_equal(bits_of(ebzip.decompress(expected[j], threads=2)), decoded[j]):
                    errors.append(f"decompress {j} differs in thread {k}")
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


# ---------------------------------------------------------------- bad arguments

X = np.linspace(0, 1, 50, dtype=np.float32)


@pytest.mark.parametrize("mode", ["abs", "rel", "psnr"])
@pytest.mark.parametrize("eb", [-1.0, -1e-300, -0.0 - 1e-9, float("nan"), float("inf"), float("-inf")])
def test_bad_bound_value(mode, eb):
    with pytest.raises(ValueError, match="eb"):
        ebzip.compress(X, eb, mode)


def test_bound_beyond_float_range_and_negative_zero():
    with pytest.raises(ValueError, match="eb"):
        ebzip.compress(X, 10**400)
    c = ebzip.compress(X, -0.0)
    assert c.eb_abs == 0 and math.copysign(1.0, c.eb_abs) == 1.0 and "-0" not in repr(c)


@pytest.mark.parametrize("data", [None, "EBZP...", 123, [1, 2], 1.5])
def test_inspect_and_compressed_of_non_buffers(data):
    for call in (ebzip.inspect, ebzip.decompress, ebzip.Compressed):
        if call is ebzip.Compressed and data is None:
            continue  # (Compressed() is an empty stream buffer, filled by the codec)
        with pytest.raises(TypeError, match="bytes") as e:
            call(data)
        assert "incompatible" not in str(e.value)


def test_psnr_zero_target():
    with pytest.raises(ValueError, match="PSNR"):
        ebzip.compress(X, 0.0, "psnr")


@pytest.mark.parametrize("eb", ["0.1", None, [0.1], 1 + 2j, True])
def test_bad_bound_type(eb):
    with pytest.raises(TypeError, match="eb"):
        ebzip.compress(X, eb)


@pytest.mark.parametrize("mode", ["ABS", "relative", "", None, 0, "pw_rel"])
def test_bad_mode(mode):
    with pytest.raises(ValueError, match="mode"):
        ebzip.compress(X, 0.1, mode)


@pytest.mark.parametrize("arr", [
    np.arange(10), np.arange(10, dtype=np.int16), np.arange(10, dtype=np.uint8), np.ones(4, dtype=bool),
    np.ones(4, dtype=np.complex64), np.ones(4, dtype=np.complex128), np.array([1.0, "a"], dtype=object),
    np.array(["a", "b"]), np.ones(3, dtype=np.longdouble) if np.dtype(np.longdouble).itemsize > 8 else np.ones(3, dtype="m8[s]"),
    np.zeros(3, dtype=[("a", "f4")]), "abc", None, object(),
], ids=lambda a: type(a).__name__ + ("-" + str(a.dtype) if isinstance(a, np.ndarray) else ""))
def test_bad_array_type(arr):
    with pytest.raises(TypeError):
        ebzip.compress(arr, 0.1)


def test_bad_torch_dtype():
    torch = pytest.importorskip("torch")
    for t in (torch.arange(10), torch.ones(3, dtype=torch.bool), torch.ones(3, dtype=torch.complex64),
              torch.ones(3, dtype=torch.int8)):
        with pytest.raises(TypeError):
            ebzip.compress(t, 0.1)


def test_bad_dtype_declaration():
    with pytest.raises(ValueError, match="dtype"):
        ebzip.compress(X, 0.1, dtype="float8")
    with pytest.raises(TypeError):
        ebzip.compress(X, 0.1, dtype="bfloat16")  # float32 data declared as bfloat16


@pytest.mark.parametrize("threads", [0, -1, 1.5, "2", True])
def test_bad_threads(threads, restore_threads):
    with pytest.raises(ValueError, match="thread"):
        ebzip.compress(X, 0.1, threads=threads)
    c = ebzip.compress(X, 0.1)
    with pytest.raises(ValueError, match="thread"):
        ebzip.decompress(c, threads=threads)
    with pytest.raises(ValueError, match="thread"):
        ebzip.set_num_threads(threads)


def test_huge_thread_counts_are_capped(restore_threads):
    """A count OpenMP cannot create (it aborted the process) or pybind cannot pass (>= 2**31) is
    taken as MAX_THREADS; the stream is the same as with 2 threads."""
    x = walk((2**17,), "float64")
    expected = {mode: bytes(ebzip.compress(x, eb, mode, threads=2)) for mode, eb in (("rel", 1e-3), ("psnr", 60.0))}
    for threads in (100_000, 2**31, np.uint64(2**63)):
        for mode, eb in (("rel", 1e-3), ("psnr", 60.0)):
            c = ebzip.compress(x, eb, mode, threads=threads)
            assert bytes(c) == expected[mode]
        assert_within_bound(x, ebzip.decompress(c, threads=threads), c.eb_abs)
    assert bytes(ebzip.compress(x, 1e-3, predictor="lorenzo", threads=100_000)) == bytes(
        ebzip.compress(x, 1e-3, predictor="lorenzo", threads=2))
    ebzip.set_num_threads(2**31)
    assert ebzip.get_num_threads() == ebzip.api.MAX_THREADS
    assert bytes(ebzip.compress(x, 1e-3, "rel")) == expected["rel"]


@pytest.mark.parametrize("value,expected", [("3", 3), ("abc", None), ("4.0", None), ("-3", None), ("0", None),
                                            ("", None), ("99999999", "max")])
def test_thread_count_from_the_environment(value, expected):
    import os
    import subprocess
    import sys

    code = ("import warnings; warnings.simplefilter('error', RuntimeWarning)\n"
            "try:\n import ebzip\nexcept RuntimeWarning as w:\n print('warned', w)\n"
            "import warnings; warnings.simplefilter('ignore'); import ebzip, os\n"
            "print(ebzip.get_num_threads(), os.cpu_count(), ebzip.api.MAX_THREADS)")
    env = dict(os.environ, EBZIP_NUM_THREADS=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got, cpus, cap = map(int, out.stdout.split()[-3:])
    warned = "warned" in out.stdout and "EBZIP_NUM_THREADS" in out.stdout
    if expected is None:
        assert got == min(cpus, cap)
        assert warned == (value != "")
    else:
        assert got == (cap if expected == "max" else expected) and not warned


@pytest.mark.parametrize("block", [0, -5, 2**28 + 1, 2**32 + 1, 1.5])
def test_bad_block_elems(block):
    with pytest.raises(ValueError, match="block_elems"):
        ebzip.compress(X, 0.1, block_elems=block)


@pytest.mark.parametrize("predictor", ["lorenzo", "interp"])
def test_largest_block_elems(predictor):
    """2**28 is the largest chunk: its 32-bit outlier and exact-value counts cannot wrap."""
    c = ebzip.compress(X, 0.1, predictor=predictor, block_elems=2**28)
    assert np.abs(ebzip.decompress(c).astype(np.float64) - X).max() <= c.eb_abs


@pytest.mark.parametrize("data", ["EBZP", "", 12345, None, 1.5, [1, 2, 3], object()],
                         ids=lambda d: type(d).__name__)
def test_decompress_wrong_type(data):
    with pytest.raises(TypeError):
        ebzip.decompress(data)


def test_out_wrong_shape_or_dtype():
    c = ebzip.compress(walk((6, 7), "float32"), 0.01)
    for out in (np.empty((7, 6), np.float32), np.empty((42,), np.float32), np.empty((6, 7), np.float64),
                np.empty((6, 7), np.float16), np.empty((6, 7), np.uint32), np.empty((6, 14), np.float32)[:, ::2],
                np.empty((7, 6), np.float32).T):
        with pytest.raises(ValueError, match="out"):
            ebzip.decompress(c, out=out)
    ro = np.empty((6, 7), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="out"):
        ebzip.decompress(c, out=ro)
    with pytest.raises(TypeError, match="out"):
        ebzip.decompress(c, out=[[0.0] * 7] * 6)


def test_out_torch_wrong_shape_or_dtype():
    torch = pytest.importorskip("torch")
    c = ebzip.compress(walk((6, 7), "float32"), 0.01)
    for out in (torch.empty(7, 6), torch.empty(6, 7, dtype=torch.float64), torch.empty(6, 7, dtype=torch.bfloat16),
                torch.empty(7, 6).t()):
        with pytest.raises(ValueError, match="out"):
            ebzip.decompress(c, out=out)


def test_repr_of_a_buffer_that_is_not_a_stream():
    for c in (ebzip.Compressed(), ebzip.Compressed(b"xyz")):
        assert "not a valid stream" in repr(c)
        with pytest.raises(ebzip.StreamError):
            ebzip.decompress(c)


def test_bfloat16_bit_patterns_in_either_byte_order():
    bits = np.array([0x3F80, 0x4000, 0xC040, 0x7FC0], dtype=np.uint16)  # 1, 2, -3, NaN
    expected = bytes(ebzip.compress(bits, 1e-2, dtype="bfloat16"))
    for arr in (bits.astype(">u2"), bits.view(np.int16).astype(">i2"), bits.view(np.int16)):
        assert bytes(ebzip.compress(arr, 1e-2, dtype="bfloat16")) == expected, arr.dtype


def test_torch_argument_errors():
    torch = pytest.importorskip("torch")
    t = torch.linspace(0, 1, 50)
    with pytest.raises(TypeError, match="dtype"):
        ebzip.compress(t, 0.1, dtype="bfloat16")  # a float32 tensor declared as bfloat16
    assert ebzip.compress(t, 0.1, dtype="float32").dtype_name == "float32"
    with pytest.raises(TypeError, match="dense"):
        ebzip.compress(t.to_sparse(), 0.1)
    c = ebzip.compress(t, 0.1)
    with pytest.raises(ValueError, match="grad"):
        ebzip.decompress(c, out=torch.empty(50, requires_grad=True))
    if not torch.cuda.is_available():
        for device in ("cuda", "cuda:3"):
            with pytest.raises(ValueError, match="no such CUDA device"):
                ebzip.decompress(c, device=device)


def test_stream_error_is_value_error():
    assert issubclass(ebzip.StreamError, ValueError)
    with pytest.raises(ebzip.StreamError):
        ebzip.decompress(b"not a stream at all")


def test_bad_predictor():
    with pytest.raises(ValueError, match="predictor"):
        ebzip.compress(np.zeros(4, np.float32), 0.1, predictor="magic")
