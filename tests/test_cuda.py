"""The CUDA driver: its build, its source run on the CPU (the shared path), and GPU tests.

No GPU runs our CI. The device driver (csrc/cuda/codec_device.cu) is built
twice: by nvcc into ebzip._cuda, and by the host compiler for Thrust's OpenMP
device system into ebzip._shared_path. These tests run every device functor
through the shared path and check that it writes the CPU driver's bytes and
decodes them bit-exactly; the GPU tests at the end skip without a device.
"""

from __future__ import annotations

import math
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

import ebzip
from conftest import Layout
from ebzip import _device

ROOT = Path(__file__).resolve().parents[1]
shared = pytest.mark.skipif(_device._shared_path is None, reason="ebzip._shared_path not built (no Thrust headers)")


def _nvcc_expected() -> bool:
    return shutil.which("nvcc") is not None and os.environ.get("EBZIP_CUDA", "AUTO").upper() != "OFF"


# ---------------------------------------------------------------- the build


@pytest.mark.skipif(not _nvcc_expected(), reason="nvcc not on PATH: the CUDA extension is not expected")
def test_cuda_extension_was_built_with_nvcc():
    cfg = _device.build_config
    assert cfg is not None and cfg.BUILT_CUDA, "nvcc is on PATH but ebzip._cuda was not built"
    assert "80" in cfg.CUDA_ARCHITECTURES.split(";") and "90" in cfg.CUDA_ARCHITECTURES.split(";")
    from ebzip import _cuda  # imports without a GPU (static CUDA runtime)

    assert _cuda.DEVICE_SYSTEM == "cuda"
    assert _cuda.CUDA_ARCHITECTURES.split(",") == cfg.CUDA_ARCHITECTURES.split(";")
    # Without a GPU it must say so, not crash; with one it must see it.
    assert _cuda.can_run() == _gpu_visible()
    assert "compiled with CUDA" in _cuda.runtime_info()


def _gpu_visible() -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return bool(_device._cuda and _device._cuda.can_run())
    return torch.cuda.is_available()


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not on PATH")
def test_shared_path_is_built_where_the_cuda_toolkit_is():
    assert _device._shared_path is not None
    assert _device._shared_path.DEVICE_SYSTEM == "omp"


def _cmake_configure(tmp_path, *defines, env=None):
    cmake = shutil.which("cmake")
    try:
        import pybind11
    except ImportError:
        pybind11 = None
    if cmake is None or pybind11 is None:
        pytest.skip("cmake and pybind11 are needed to configure the build")
    args = [cmake, "-S", str(ROOT), "-B", str(tmp_path), f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
            f"-DPython_EXECUTABLE={sys.executable}", *defines]
    return subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)


def test_cmake_option_off_skips_the_cuda_extension(tmp_path):
    r = _cmake_configure(tmp_path, "-DEBZIP_CUDA=OFF")
    assert r.returncode == 0, r.stderr
    cfg = (tmp_path / "_build_config.py").read_text()
    assert "BUILT_CUDA = False" in cfg and 'EBZIP_CUDA = "OFF"' in cfg


def test_cmake_option_on_without_nvcc_fails_clearly(tmp_path):
    env = dict(os.environ, PATH=os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                                if not (Path(p) / "nvcc").exists()), CUDACXX="")
    env.pop("CUDACXX")
    r = _cmake_configure(tmp_path, "-DEBZIP_CUDA=ON", "-DCMAKE_CUDA_COMPILER=", env=env)
    if r.returncode == 0:  # pragma: no cover - cmake found a CUDA compiler off PATH
        pytest.skip("cmake found a CUDA compiler outside PATH")
    assert "EBZIP_CUDA=ON but no CUDA compiler" in r.stdout + r.stderr


def test_cmake_rejects_a_bad_option(tmp_path):
    r = _cmake_configure(tmp_path, "-DEBZIP_CUDA=maybe")
    assert r.returncode != 0 and "EBZIP_CUDA must be AUTO, ON or OFF" in r.stdout + r.stderr


# ---------------------------------------------------------------- shared path == CPU driver


def _field(shape, dtype, seed=0, noise=0.01):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 3, n) for n in shape], indexing="ij") if shape else []
    x = sum(np.sin((k + 1) * g) for k, g in enumerate(grids)) if shape else np.float64(0.5)
    x = np.asarray(x, dtype=np.float64) + noise * rng.standard_normal(shape)
    return x.astype(dtype)


def _bf16(x):
    import ml_dtypes

    return x.astype(ml_dtypes.bfloat16)


CASES = [
    # (shape, dtype, eb, block_elems)
    ((1000,), np.float32, 1e-3, None),
    ((1000,), np.float32, 1e-3, 96),          # many blocks, the last shorter
    ((64, 65), np.float64, 1e-4, None),
    ((64, 65), np.float64, 1e-4, 65 * 7),     # slabs of 7 rows, last block 1 row: a 1-D block
    ((17, 18, 19), np.float32, 1e-2, 500),    # blocks split the middle axis
    ((6, 7, 8, 9), np.float32, 1e-3, None),
    ((6, 7, 8, 9), np.float16, 1e-2, 200),
    ((3, 1, 4, 5, 6, 2), np.float32, 1e-3, None),  # size-1 axis dropped, >4 axes merged
    ((1,), np.float32, 1e-3, None),
    ((1, 1), np.float64, 1e-6, None),
    ((2, 300), np.float32, 1e-5, None),       # tight bound: large deltas become outliers
]


def _assert_same_bytes(x, eb, block_elems=None, dtype=None, predictor="lorenzo"):
    cpu = bytes(ebzip.compress(x, eb, predictor=predictor, block_elems=block_elems, dtype=dtype, threads=2))
    dev = _device.shared_path_compress(x, eb, block_elems=block_elems, dtype=dtype, threads=2, predictor=predictor)
    assert dev == cpu, f"shared path wrote different bytes ({len(dev)} vs {len(cpu)})"
    return cpu


def _assert_decodes_alike(stream, x=None, eb=None):
    ref = ebzip.decompress(stream, raw_bf16=True)
    got = _device.shared_path_decompress(stream)
    assert got.dtype.itemsize == ref.dtype.itemsize and got.shape == ref.shape
    assert got.tobytes() == np.ascontiguousarray(ref).tobytes(), "shared-path decode differs from the CPU decode"
    if x is not None:
        xd = np.asarray(x).astype(np.float64)
        yd = np.asarray(ebzip.decompress(stream)).astype(np.float64)
        fin = np.isfinite(xd)
        assert np.all(np.abs(xd[fin] - yd[fin]) <= eb)
        assert np.array_equal(np.isnan(xd), np.isnan(yd))


@shared
@pytest.mark.parametrize("predictor", ["lorenzo", "interp"])
@pytest.mark.parametrize("shape,dtype,eb,block_elems", CASES)
def test_shared_path_writes_the_cpu_bytes(shape, dtype, eb, block_elems, predictor):
    x = _field(shape, dtype)
    stream = _assert_same_bytes(x, eb, block_elems, predictor=predictor)
    assert ebzip.inspect(stream)["pipeline"] == predictor
    _assert_decodes_alike(stream, x, eb)


@shared
@pytest.mark.parametrize("predictor", ["lorenzo", "interp"])
def test_shared_path_bfloat16(predictor):
    x = _bf16(_field((40, 50), np.float32))
    stream = _assert_same_bytes(x, 1e-2, 300, predictor=predictor)
    _assert_decodes_alike(stream, x, 1e-2)
    raw = x.view(np.uint16)  # bit patterns declared as bfloat16
    assert _device.shared_path_compress(raw, 1e-2, dtype="bfloat16", block_elems=300, predictor=predictor) == stream


@shared
@pytest.mark.parametrize("predictor", ["lorenzo", "interp"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_shared_path_nan_inf_and_huge_values(dtype, predictor):
    x = _field((30, 40), dtype, seed=3)
    x[0, 0], x[5, 7], x[29, 39] = np.nan, np.inf, -np.inf
    x[10, 10] = np.finfo(dtype).max  # off the integer grid: stored exactly
    x[11, 3] = -np.finfo(dtype).max / 2
    stream = _assert_same_bytes(x, 1e-3, 256, predictor=predictor)
    _assert_decodes_alike(stream, x, 1e-3)
    y = _device.shared_path_decompress(stream)
    for idx in [(0, 0), (5, 7), (29, 39), (10, 10), (11, 3)]:
        assert y[idx].tobytes() == x[idx].tobytes()


@shared
def test_shared_path_uses_the_64_bit_grid_when_the_range_needs_it():
    x = _field((50, 60), np.float64) * 1e9
    stream = _assert_same_bytes(x, 1e-2, 1000)
    assert ebzip.inspect(stream)["grid_bits"] == 64
    _assert_decodes_alike(stream, x, 1e-2)


@shared
def test_shared_path_all_outliers_and_all_exact():
    rng = np.random.default_rng(7)
    noisy = (rng.standard_normal(5000) * 1e6).astype(np.float32)  # every delta out of range
    _assert_decodes_alike(_assert_same_bytes(noisy, 1e-3, 1024), noisy, 1e-3)
    nan = np.full((20, 20), np.nan, np.float32)
    _assert_decodes_alike(_assert_same_bytes(nan, 1e-3), nan, 1e-3)
    const = np.full((33, 34), 2.5, np.float64)  # zstd takes the Huffman bits
    _assert_decodes_alike(_assert_same_bytes(const, 1e-3), const, 1e-3)
    for x in (noisy, nan, const):
        _assert_decodes_alike(_assert_same_bytes(x, 1e-3, 1024, predictor="interp"), x, 1e-3)


@shared
def test_shared_path_on_real_digits():
    sklearn = pytest.importorskip("sklearn.datasets")
    x = sklearn.load_digits().images.astype(np.float32)  # (1797, 8, 8)
    for eb in (1e-2, 0.5):
        for predictor in ("lorenzo", "interp"):
            _assert_decodes_alike(_assert_same_bytes(x, eb, 4096, predictor=predictor), x, eb)


@shared
def test_shared_path_property_random_arrays():
    hyp = pytest.importorskip("hypothesis")
    st = pytest.importorskip("hypothesis.strategies")
    hnp = pytest.importorskip("hypothesis.extra.numpy")

    @hyp.settings(max_examples=40, deadline=None, derandomize=True)
    @hyp.given(
        x=hnp.arrays(st.sampled_from([np.float32, np.float64, np.float16]),
                     hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=9),
                     elements=st.one_of(st.floats(-1e4, 1e4, width=16),
                                        st.sampled_from([math.nan, math.inf, -math.inf]))),
        eb=st.sampled_from([1e-3, 0.1, 10.0]),
        block_elems=st.sampled_from([None, 7, 64]),
        predictor=st.sampled_from(["lorenzo", "interp"]),
    )
    def check(x, eb, block_elems, predictor):
        _assert_decodes_alike(_assert_same_bytes(x, eb, block_elems, predictor=predictor), x, eb)

    check()


@shared
@pytest.mark.parametrize("stencil", [0, 2])
def test_shared_path_decodes_fill_value_streams(stencil):
    """A fill value is the host's choice ("auto"), but a device must decode its streams."""
    from ebzip import _core
    from ebzip.api import Compressed

    x = _field((6, 20, 24), np.float32)
    x[:, :8, :10] = np.float32(3.5)
    x[1, 10, 10] = np.nan
    c = Compressed()
    _core.compress(x, 0, 0, 1e-3, 1e-3, c, threads=2, predictor=2, interp_cubic=stencil, interp_fill=1,
                   interp_fill_bits=int(np.float32(3.5).view(np.uint32)))
    assert _core.inspect(bytes(c))["interp"]["fill"] == 1
    _assert_decodes_alike(bytes(c), x, 1e-3)


@shared
def test_shared_path_refuses_what_the_device_does_not_run():
    x = _field((20, 20), np.float32)
    with pytest.raises(ValueError, match="lorenzo"):
        _device.shared_path_compress(x, 1e-3, predictor="auto")  # the sampling choice runs on the CPU driver
    with pytest.raises(ValueError, match="lorenzo"):
        _device.shared_path_compress(x, 0.0)
    exact = bytes(ebzip.compress(x, 0.0))
    assert not _device._shared_path.can_decode(exact)
    with pytest.raises(ValueError, match="lorenzo and interp"):
        _device.shared_path_decompress(exact)


def _rewrite_chunk(stream: bytes, edit) -> bytes:
    """Apply edit(payload) -> payload to the first chunk and fix every CRC, so
    only the device decoder's own checks can catch the damage."""
    info = ebzip.inspect(stream)
    assert info["pipeline"] == "lorenzo"
    pos = Layout(stream).header_len + 4
    cb_len = struct.unpack_from("<I", stream, pos)[0]
    table = pos + 8 + cb_len
    n_chunks = struct.unpack_from("<Q", stream, table)[0]
    lens = [struct.unpack_from("<QII", stream, table + 8 + 16 * i) for i in range(n_chunks)]
    payload_at = table + 8 + 16 * n_chunks + 4
    first_len, flags, _ = lens[0]
    assert flags == 0, "test needs a chunk stored without zstd"
    payload = edit(bytearray(stream[payload_at:payload_at + first_len]))
    assert len(payload) == first_len
    out = bytearray(stream)
    out[payload_at:payload_at + first_len] = payload
    struct.pack_into("<QII", out, table + 8, first_len, flags, zlib.crc32(payload))
    struct.pack_into("<I", out, table + 8 + 16 * n_chunks, zlib.crc32(out[table:table + 8 + 16 * n_chunks]))
    return bytes(out)


@shared
def test_shared_path_detects_forged_chunks_with_valid_crcs():
    rng = np.random.default_rng(1)
    x = rng.standard_normal(4000).astype(np.float32)  # ~10 bits per symbol: no zstd
    stream = bytes(ebzip.compress(x, 1e-3, predictor="lorenzo"))

    def more_bits(p):  # lane 0 claims one bit fewer than it holds
        nbits = struct.unpack_from("<Q", p, 0)[0]
        struct.pack_into("<Q", p, 0, nbits - 1)
        return p

    def one_more_outlier(p):  # claims an outlier its symbols never ask for
        n_out = struct.unpack_from("<I", p, 16)[0]
        struct.pack_into("<I", p, 16, n_out + 1)
        return p

    for edit in (more_bits, one_more_outlier):
        bad = _rewrite_chunk(stream, edit)
        with pytest.raises(ebzip.StreamError) as cpu_err:
            ebzip.decompress(bad)
        with pytest.raises(ebzip.StreamError) as dev_err:
            _device.shared_path_decompress(bad)
        assert "corrupted" in str(dev_err.value) and "corrupted" in str(cpu_err.value)


# ---------------------------------------------------------------- Python routing, with the shared path standing in for the GPU


@pytest.fixture
def fake_gpu(monkeypatch):
    """Route CPU torch tensors as if they were on a GPU, to ebzip._shared_path."""
    torch = pytest.importorskip("torch")
    if _device._shared_path is None:
        pytest.skip("ebzip._shared_path not built")
    calls = []

    class Spy:
        def __getattr__(self, name):
            fn = getattr(_device._shared_path, name)
            if name in ("compress", "decompress_into"):
                def wrapped(*a, **k):
                    calls.append(name)
                    return fn(*a, **k)
                return wrapped
            return fn

    monkeypatch.setattr(_device, "backend", lambda: Spy())
    monkeypatch.setattr(_device, "is_cuda_array", lambda x: isinstance(x, torch.Tensor))
    monkeypatch.setattr(_device, "stream_of", lambda arr: 0)
    monkeypatch.setattr(_device, "cuda_empty",
                        lambda shape, name, origin: torch.empty(tuple(shape), dtype=getattr(torch, name)))
    return calls


@pytest.mark.parametrize("mode,eb,predictor", [("abs", 1e-3, "lorenzo"), ("rel", 1e-4, "lorenzo"), ("abs", 1e-3, "interp")])
def test_routing_sends_device_arrays_to_the_device_driver(fake_gpu, mode, eb, predictor):
    import torch

    x = torch.from_numpy(_field((30, 31), np.float32))
    c = ebzip.compress(x, eb, mode, predictor=predictor)
    assert fake_gpu == ["compress"]
    assert bytes(c) == bytes(ebzip.compress(x.numpy(), eb, mode, predictor=predictor))
    y = ebzip.decompress(c, device="cuda")
    assert fake_gpu == ["compress", "decompress_into"]
    assert isinstance(y, torch.Tensor) and torch.equal(y, torch.from_numpy(ebzip.decompress(bytes(c))))


def test_routing_falls_back_to_the_cpu_driver(fake_gpu):
    import torch

    x = torch.from_numpy(_field((30, 31), np.float32))
    for kwargs in ({"predictor": "auto"}, {"eb": 0.0, "predictor": "lorenzo"}, {"mode": "psnr", "eb": 60.0}):
        args = {"eb": 1e-3, **kwargs}
        c = ebzip.compress(x, **args)
        assert bytes(c) == bytes(ebzip.compress(x.numpy(), **args))
    assert fake_gpu == []
    exact = ebzip.compress(x, 0.0)
    # Not decodable on the device: decompress(device="cuda") decodes on the host, then moves the result.
    origin = ebzip._arrays.Origin("torch", "cuda:0")
    assert _device.try_decompress_into_new(exact, exact.shape, "float32", origin) is None
    assert fake_gpu == []


def test_decompress_device_argument_is_checked():
    c = ebzip.compress(np.ones(10, np.float32), 1e-3)
    with pytest.raises(ValueError, match="device must be"):
        ebzip.decompress(c, device="gpu")
    y = ebzip.decompress(c, device="cpu")
    assert isinstance(y, np.ndarray)


def test_info_reports_the_backends():
    out = subprocess.run([sys.executable, "-m", "ebzip.info"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "CPU backend: built" in out.stdout
    if _device.cuda_built():
        assert "CUDA backend: built (ebzip._cuda, nvcc" in out.stdout
        assert ("can run here" in out.stdout) == _device.cuda_runnable()
        assert "compiled with CUDA" in out.stdout
    else:
        assert "CUDA backend: not built" in out.stdout
    from ebzip.info import backends

    b = backends()
    assert b["cuda"]["built"] == _device.cuda_built() and b["shared_path"]["built"] == (_device._shared_path is not None)


# ---------------------------------------------------------------- on a GPU (skipped without one)


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if not _device.cuda_runnable():
        pytest.skip("ebzip._cuda not built or cannot run here")
    return torch


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "bfloat16"])
def test_gpu_compress_matches_cpu_bytes_and_stays_on_device(dtype):
    torch = _torch_cuda()
    x = torch.from_numpy(_field((64, 65, 3), np.float32)).to(getattr(torch, dtype))
    xg = x.cuda()
    for predictor in ("interp", "lorenzo"):
        c = ebzip.compress(xg, 1e-2, predictor=predictor, block_elems=1000)
        assert bytes(c) == bytes(ebzip.compress(x, 1e-2, predictor=predictor, block_elems=1000))
    y = ebzip.decompress(c)
    assert y.is_cuda and y.dtype == x.dtype
    assert torch.equal(y.cpu(), ebzip.decompress(bytes(c), like="torch"))
    assert float((y.double() - xg.double()).abs().max()) <= 1e-2


def test_gpu_decodes_cpu_streams_and_the_reverse():
    torch = _torch_cuda()
    x = _field((200, 300), np.float64)
    cpu_stream = bytes(ebzip.compress(x, 1e-4, predictor="lorenzo"))
    y = ebzip.decompress(cpu_stream, device="cuda")
    assert y.is_cuda and np.array_equal(y.cpu().numpy(), ebzip.decompress(cpu_stream))
    gpu_stream = bytes(ebzip.compress(torch.from_numpy(x).cuda(), 1e-4, predictor="lorenzo"))
    assert gpu_stream == cpu_stream
    with pytest.raises(ebzip.StreamError):
        ebzip.decompress(gpu_stream[:-1], device="cuda")


def test_gpu_cupy_arrays():
    _torch_cuda()
    cupy = pytest.importorskip("cupy")
    x = _field((100, 101), np.float32)
    c = ebzip.compress(cupy.asarray(x), 1e-3, predictor="lorenzo")
    assert bytes(c) == bytes(ebzip.compress(x, 1e-3, predictor="lorenzo"))
    y = ebzip.decompress(c)
    assert isinstance(y, cupy.ndarray) and np.array_equal(cupy.asnumpy(y), ebzip.decompress(bytes(c)))


def test_gpu_large_array_bound():
    torch = _torch_cuda()
    x = torch.randn(2**26, device="cuda").cumsum(0)  # 256 MB
    c = ebzip.compress(x, 1e-2, predictor="lorenzo")
    y = ebzip.decompress(c)
    assert float((y - x).abs().max()) <= 1e-2 * (1 + 1e-6) and math.isfinite(c.ratio)
