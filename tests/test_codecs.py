"""numcodecs codec ``ebzip`` (entry point, JSON config) and the zarr v2/v3 codecs."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import entry_points

import numpy as np
import pytest

numcodecs = pytest.importorskip("numcodecs")

import ebzip  # noqa: E402
from ebzip.codecs import EBZip, EBZipCodec  # noqa: E402


def field(shape=(40, 50), seed=0, dtype=np.float32):
    x = np.random.default_rng(seed).standard_normal(shape).cumsum(0).cumsum(1)
    return x.astype(dtype)


def test_entry_points_are_declared():
    assert "ebzip" in {e.name for e in entry_points(group="numcodecs.codecs")}
    assert "ebzip" in {e.name for e in entry_points(group="zarr.codecs")}


@pytest.mark.parametrize("cfg", [dict(eb=1e-3, mode="rel"), dict(eb=0.5, mode="abs"), dict(eb=60.0, mode="psnr"),
                                 dict(eb=1e-3, mode="rel", eb_abs=0.02)])
def test_config_round_trips_through_json(cfg):
    c = EBZip(**cfg)
    conf = c.get_config()
    assert conf["id"] == "ebzip"
    again = numcodecs.get_codec(json.loads(json.dumps(conf)))
    assert isinstance(again, EBZip) and again == c and again.get_config() == conf
    assert eval(repr(c), {"EBZip": EBZip}) == c


def test_get_codec_finds_it_in_a_fresh_process():
    # no `import ebzip`: numcodecs finds the codec through the entry point
    code = ("import numcodecs, numpy as np; c = numcodecs.get_codec({'id': 'ebzip', 'eb': 0.01, 'mode': 'abs'}); "
            "x = np.linspace(0, 1, 100, dtype='f4'); print(float(np.abs(c.decode(c.encode(x)) - x).max()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) <= 0.01


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("mode,eb", [("abs", 0.05), ("rel", 1e-3)])
def test_encode_decode_within_bound(dtype, mode, eb):
    x = field(dtype=dtype)
    c = EBZip(eb=eb, mode=mode)
    blob = c.encode(x)
    assert ebzip.inspect(blob)["shape"] == x.shape
    y = c.decode(blob)
    bound = eb if mode == "abs" else eb * float(x.astype(np.float64).max() - x.astype(np.float64).min())
    assert y.dtype == x.dtype and np.abs(x.astype(np.float64) - y).max() <= bound
    out = np.empty_like(x)
    assert c.decode(blob, out=out) is out and np.array_equal(out, y)
    assert np.array_equal(c.decode(memoryview(blob)), y)


def test_eb_abs_overrides_per_chunk_mode():
    x = field()
    c = EBZip(eb=1e-3, mode="rel", eb_abs=0.25)
    assert ebzip.inspect(c.encode(x))["eb_abs"] == 0.25


def test_refuses_integers_and_bad_bounds():
    with pytest.raises(TypeError):
        EBZip().encode(np.arange(10))
    for bad in (dict(eb=-1), dict(eb=float("nan")), dict(mode="x"), dict(eb=0, mode="psnr"), dict(eb_abs=-2)):
        with pytest.raises((ValueError, TypeError)):
            EBZip(**bad)


@pytest.mark.parametrize("dtype", [">f4", ">f8", ">f2"])
def test_big_endian_is_refused_not_corrupted(dtype):
    # decode cannot know a chunk was big-endian (zarr format 2 views its bytes in the array's order):
    # refused, where it used to come back as byte-swapped garbage
    x = field(dtype=np.dtype(dtype).newbyteorder("="))
    c = EBZip(eb=0.01, mode="abs")
    with pytest.raises(TypeError, match="little-endian"):
        c.encode(x.astype(dtype))
    blob = c.encode(x.astype(np.dtype(dtype).newbyteorder("<")))
    out = np.empty(x.shape, dtype)  # a big-endian out= gets the values, not the bytes
    assert c.decode(blob, out=out) is out
    assert np.abs(out.astype(np.float64) - x).max() <= 0.01


zarr = pytest.importorskip("zarr")


def test_zarr_v2_big_endian_array_is_refused_v3_converts(tmp_path):
    x = np.linspace(270, 305, 1000, dtype=">f4")
    z = zarr.create_array(str(tmp_path / "be2.zarr"), shape=x.shape, chunks=(250,), dtype=">f4", zarr_format=2,
                          compressors=EBZip(eb=1e-3, mode="abs"), filters=None)
    with pytest.raises(TypeError, match="little-endian"):
        z[...] = x
    z = zarr.create_array(str(tmp_path / "be3.zarr"), shape=x.shape, chunks=(250,), dtype=">f4",
                          serializer=EBZipCodec(eb=1e-3, mode="abs"), compressors=None)
    z[...] = x
    y = zarr.open_array(str(tmp_path / "be3.zarr"), mode="r")[...]
    assert np.abs(y.astype(np.float64) - x.astype(np.float64)).max() <= 1e-3


def test_zarr_v3_write_read(tmp_path):
    x = field((64, 96), 1)
    z = zarr.create_array(str(tmp_path / "a.zarr"), shape=x.shape, chunks=(16, 40), dtype="f4",
                          serializer=EBZipCodec(eb=1e-3, mode="rel"), compressors=None)
    z[:] = x
    meta = json.loads((tmp_path / "a.zarr" / "zarr.json").read_text())
    assert meta["codecs"] == [{"name": "ebzip", "configuration": {"eb": 1e-3, "mode": "rel"}}]
    r = zarr.open_array(str(tmp_path / "a.zarr"), mode="r")
    y = r[:]
    # rel applies per stored chunk: within 1e-3 of its range (edge chunks: zarr pads them with fill_value 0)
    for i in range(0, 64, 16):
        for j in range(0, 96, 40):
            blk = x[i:i + 16, j:j + 40].astype(np.float64)
            padded = np.pad(blk, [(0, 16 - blk.shape[0]), (0, 40 - blk.shape[1])])
            assert np.abs(blk - y[i:i + 16, j:j + 40]).max() <= 1e-3 * (padded.max() - padded.min())
    assert np.array_equal(r[5:20, 33:70], y[5:20, 33:70])
    assert EBZipCodec.from_dict(EBZipCodec(eb=2.0, mode="abs", eb_abs=2.0).to_dict()) == \
        EBZipCodec(eb=2.0, mode="abs", eb_abs=2.0)


def test_zarr_v3_refuses_integer_arrays(tmp_path):
    with pytest.raises(TypeError):
        zarr.create_array(str(tmp_path / "i.zarr"), shape=(4,), chunks=(2,), dtype="i4",
                          serializer=EBZipCodec(), compressors=None)


def test_zarr_v2_compressor(tmp_path):
    x = field((50, 30), 2, np.float64)
    z = zarr.create_array(str(tmp_path / "b.zarr"), shape=x.shape, chunks=(20, 30), dtype="f8", zarr_format=2,
                          compressors=EBZip(eb=0.01, mode="abs"), filters=None)
    z[:] = x
    meta = json.loads((tmp_path / "b.zarr" / ".zarray").read_text())
    assert meta["compressor"] == {"id": "ebzip", "eb": 0.01, "mode": "abs"}
    y = zarr.open_array(str(tmp_path / "b.zarr"), mode="r")[:]
    assert np.abs(x - y).max() <= 0.01


def test_zarr_v3_reads_in_a_fresh_process(tmp_path):
    x = field((30, 30), 3)
    z = zarr.create_array(str(tmp_path / "c.zarr"), shape=x.shape, chunks=(15, 15), dtype="f4",
                          serializer=EBZipCodec(eb=0.1, mode="abs"), compressors=None)
    z[:] = x
    np.save(tmp_path / "x.npy", x)
    code = (f"import zarr, numpy as np; y = zarr.open_array({str(tmp_path / 'c.zarr')!r}, mode='r')[:]; "
            f"x = np.load({str(tmp_path / 'x.npy')!r}); print(float(np.abs(x - y).max()))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout) <= 0.1
