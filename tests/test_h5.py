"""ebzip.h5: the filter id and parameters, direct chunk I/O, and the compiled plugin where built."""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import subprocess

import numpy as np
import pytest

h5py = pytest.importorskip("h5py")

import ebzip  # noqa: E402
import ebzip.h5 as eh  # noqa: E402
from h5_helpers import smooth_field  # noqa: E402

needs_plugin = pytest.mark.skipif(eh.PLUGIN_FILE is None, reason="the HDF5 filter plugin is not installed "
                                  "(built only where CMake finds HDF5 headers: csrc/h5/plugin.cmake)")


def test_filter_id_is_in_the_unregistered_range():
    assert 256 <= eh.FILTER_ID <= 511
    assert eh.EBZip(1e-3, "rel").filter_id == eh.FILTER_ID


@pytest.mark.parametrize("mode,eb,eb_abs", [("abs", 0.5, None), ("rel", 1e-3, 0.0123), ("psnr", 60.0, None),
                                            ("rel", 0.0, 0.0)])
def test_filter_params_round_trip(mode, eb, eb_abs):
    p = eh.FilterParams(mode, eb, eb_abs, "float32", (4, 5, 6))
    cd = p.cd_values()
    assert all(isinstance(v, int) and 0 <= v < 2**32 for v in cd)
    assert eh.FilterParams.from_cd_values(cd) == p
    ref = eh.EBZip(eb, mode, eb_abs)
    assert ref.filter_options == cd[:6]
    assert dict(ref) == {"compression": eh.FILTER_ID, "compression_opts": cd[:6]}


@pytest.mark.parametrize("bad", [dict(eb=-1.0), dict(eb=math.nan), dict(eb=1e-3, mode="nope"),
                                 dict(eb=0.0, mode="psnr")])
def test_filter_refuses_bad_bounds(bad):
    with pytest.raises((ValueError, TypeError)):
        eh.EBZip(**bad)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16"])
def test_write_read_direct_without_plugin(tmp_path, dtype):
    x = smooth_field((13, 21, 17), 1, np.float64)
    x = (x / np.abs(x).max() * 100).astype(dtype)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        d = eh.write(f, "g/x", x, eb=1e-3, mode="rel", chunks=(5, 8, 17))  # edge chunks on two axes
        assert eh.is_ebzip(d) and d.chunks == (5, 8, 17)
        params = eh.filter_params(d)
        assert params.mode == "rel" and params.dtype == dtype and params.chunks == (5, 8, 17)
        vr = float(x.astype(np.float64).max() - x.astype(np.float64).min())
        assert params.eb_abs == pytest.approx(1e-3 * vr)
    with h5py.File(tmp_path / "a.h5", "r") as f:
        d = f["g/x"]
        y = eh.read(d)
        assert y.dtype == x.dtype and y.shape == x.shape
        assert np.abs(x.astype(np.float64) - y.astype(np.float64)).max() <= params.eb_abs
        # every stored chunk is one ebzip stream of the full chunk shape
        mask, payload = d.id.read_direct_chunk((10, 16, 0))
        assert mask == 0 and ebzip.inspect(payload)["shape"] == (5, 8, 17)
        # selections
        np.testing.assert_array_equal(eh.read(d, (slice(3, 11), slice(None), 4)), y[3:11, :, 4])
        np.testing.assert_array_equal(eh.read(d, (-1,)), y[-1])
        blocks = list(eh.iter_chunks(d))
        assert len(blocks) == 3 * 3 * 1
        for region, block in blocks:
            np.testing.assert_array_equal(block, y[region])


def test_nan_inf_and_unwritten_chunks(tmp_path):
    x = smooth_field((40, 30), 2)
    x[0, :3] = [np.nan, np.inf, -np.inf]
    with h5py.File(tmp_path / "a.h5", "w") as f:
        params = eh.resolve_params("abs", 0.01, None)
        d = eh.create_dataset(f, "x", x.shape, x.dtype, params, (10, 30), fillvalue=-7.0)
        for off in eh.chunk_grid(x.shape, d.chunks):
            if off[0] == 20:
                continue  # leave one chunk unwritten: it reads as the fill value
            reg = eh.chunk_region(off, x.shape, d.chunks)
            eh.write_chunk(d, off, eh.encode_chunk(x[reg], d.chunks, params))
        y = eh.read(d)
    assert np.array_equal(y[0, :3].view(np.uint32), x[0, :3].view(np.uint32))
    assert (y[20:30] == -7.0).all()
    keep = np.ones(40, bool)
    keep[20:30] = False
    fin = np.isfinite(x[keep])
    assert np.abs(x[keep][fin] - y[keep][fin]).max() <= 0.01


def test_psnr_mode_holds_on_the_dataset(tmp_path):
    x = smooth_field((30, 50), 3)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        d = eh.write(f, "x", x, eb=50.0, mode="psnr", chunks=(7, 16))
        y = eh.read(d)
        assert eh.filter_params(d).eb_abs is None  # per chunk
    vr = float(x.max() - x.min())
    mse = float(np.mean((x.astype(np.float64) - y) ** 2))
    assert 20 * math.log10(vr) - 10 * math.log10(mse) >= 50.0


def test_refuses_non_float_and_scalar(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        with pytest.raises(TypeError):
            eh.create_dataset(f, "i", (4,), np.int32, eh.resolve_params("abs", 1, None))
        with pytest.raises(ValueError):
            eh.create_dataset(f, "s", (), np.float32, eh.resolve_params("abs", 1, None))


def test_chunk_of_another_shape_or_dtype_is_refused_before_decoding(tmp_path, monkeypatch):
    """A stored chunk's header is checked first: a forged chunk claiming 2**28 elements was decoded (1 GiB)
    before being refused."""
    big = ebzip.compress(np.zeros(2**20, np.float32), 1e-3)
    f64 = ebzip.compress(np.zeros(10, np.float64), 1e-3)
    decoded = []
    real = ebzip.api.decompress
    monkeypatch.setattr(ebzip.api, "decompress", lambda *a, **k: decoded.append(1) or real(*a, **k))
    with h5py.File(tmp_path / "a.h5", "w") as f:
        d = eh.create_dataset(f, "x", (10,), np.float32, eh.resolve_params("abs", 1e-3, None), (10,))
        for stream, what in ((big, "shape"), (f64, "float64")):
            eh.write_chunk(d, (0,), bytes(stream))
            with pytest.raises(ebzip.StreamError, match=what):
                eh.read(d)
    assert not decoded


def test_a_resizable_dataset_grows_into_its_fill_value(tmp_path):
    """Edge chunks were padded with repeated edge values, which showed up as data once the dataset grew."""
    x = np.arange(60, dtype="f8").reshape(20, 3) + 1
    with h5py.File(tmp_path / "a.h5", "w") as f:
        d = eh.write(f, "x", x, eb=1e-3, mode="abs", chunks=(7, 3), maxshape=(None, 3), fillvalue=np.nan)
        d.resize((25, 3))
        y = eh.read(d)
        fixed = eh.write(f, "fixed", x, eb=1e-3, mode="abs", chunks=(7, 3))
        assert eh.growth_fill(fixed) is None and eh.growth_fill(d) != eh.growth_fill(d)  # (NaN)
    assert np.isnan(y[20:]).all() and np.abs(y[:20] - x).max() <= 1e-3


def test_read_into_out(tmp_path):
    x = smooth_field((12, 10), 5)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        d = eh.write(f, "x", x, eb=1e-2, mode="rel", chunks=(5, 10))
        plain = f.create_dataset("plain", data=x)
        for dset in (d, plain):
            out = np.zeros((12, 10), x.dtype)
            assert eh.read(dset, out=out) is out and np.array_equal(out, eh.read(dset))
            out = np.zeros(10, x.dtype)
            assert eh.read(dset, (3,), out=out) is out and np.array_equal(out, eh.read(dset)[3])
            for bad in (np.zeros((10, 12), x.dtype), np.zeros((12, 10), np.float64), np.zeros((12, 20), x.dtype)[:, ::2]):
                with pytest.raises(ValueError, match="out"):
                    eh.read(dset, out=bad)


def test_corrupt_chunk_raises_stream_error(tmp_path):
    x = smooth_field((16, 16), 4)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        d = eh.write(f, "x", x, eb=1e-2, mode="rel", chunks=(8, 16))
        mask, payload = d.id.read_direct_chunk((0, 0))
        bad = bytearray(payload)
        bad[len(bad) // 2] ^= 0xFF
        d.id.write_direct_chunk((0, 0), bytes(bad), 0)
        with pytest.raises(ebzip.StreamError):
            eh.read(d)


@pytest.mark.skipif(eh.PLUGIN_FILE is not None, reason="the plugin is built here: plain reads work")
def test_plain_h5py_read_without_plugin_fails_clearly(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        eh.write(f, "x", smooth_field((8, 8)), eb=1e-2)
    with h5py.File(tmp_path / "a.h5", "r") as f:
        with pytest.raises(OSError):
            f["x"][...]
        assert eh.read(f["x"]).shape == (8, 8)  # the way that always works


@needs_plugin
def test_plugin_id_matches_and_is_registered():
    lib = ctypes.CDLL(eh.PLUGIN_FILE)
    assert lib.ebzip_h5filter_id() == eh.FILTER_ID
    assert eh.plugin_available()
    assert os.path.dirname(eh.PLUGIN_FILE) == eh.PLUGIN_PATH


@needs_plugin
@pytest.mark.parametrize("mode,eb", [("abs", 0.05), ("rel", 1e-3), ("psnr", 60.0)])
def test_plain_h5py_reads_and_writes_with_plugin(tmp_path, mode, eb):
    x = smooth_field((20, 33, 40), 5)
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("x", data=x, chunks=(5, 16, 40), compression=eh.EBZip(eb=eb, mode=mode))
        direct = eh.write(f, "y", x, eb=1e-3, mode="rel", chunks=(5, 16, 40))
        assert direct is not None
    with h5py.File(tmp_path / "a.h5", "r") as f:
        d = f["x"]
        p = eh.filter_params(d)
        assert p.mode == mode and p.dtype == "float32" and p.chunks == (5, 16, 40)  # set_local filled them
        y = d[...]  # plain h5py: the plugin decodes
        np.testing.assert_array_equal(y, eh.read(d))
        err = np.abs(x.astype(np.float64) - y)
        for off in eh.chunk_grid(x.shape, d.chunks):  # each chunk within its own bound
            reg = eh.chunk_region(off, x.shape, d.chunks)
            _, payload = d.id.read_direct_chunk(off)
            assert err[reg].max() <= ebzip.inspect(payload)["eb_abs"]
        if mode == "abs":  # the plugin writes exactly the bytes ebzip.compress does
            _, payload = d.id.read_direct_chunk((0, 0, 0))
            assert payload == bytes(ebzip.compress(np.ascontiguousarray(x[:5, :16, :40]), eb, "abs"))
        np.testing.assert_array_equal(f["y"][...], eh.read(f["y"]))


@needs_plugin
def test_h5dump_reads_through_plugin_path(tmp_path):
    h5dump = shutil.which("h5dump")
    if h5dump is None:
        pytest.skip("h5dump not installed")
    x = np.arange(24, dtype=np.float32).reshape(4, 6) * 0.5
    with h5py.File(tmp_path / "a.h5", "w") as f:
        eh.write(f, "x", x, eb=0.0, mode="abs", chunks=(2, 6))  # exact, so the dump is predictable
    env = dict(os.environ, HDF5_PLUGIN_PATH=eh.PLUGIN_PATH)
    out = subprocess.run([h5dump, "-d", "/x", str(tmp_path / "a.h5")], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert "USER_DEFINED_FILTER" in subprocess.run([h5dump, "-p", "-H", str(tmp_path / "a.h5")],
                                                   capture_output=True, text=True, env=env).stdout
    assert "(3,0): 9, 9.5, 10, 10.5, 11, 11.5" in out.stdout
    # without the plugin path h5dump cannot decode
    bare = dict(os.environ, HDF5_PLUGIN_PATH=str(tmp_path))
    out = subprocess.run([h5dump, "-d", "/x", str(tmp_path / "a.h5")], capture_output=True, text=True, env=bare,
                         timeout=60)
    assert "9.5" not in out.stdout
