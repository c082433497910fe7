"""Fixture streams written by an earlier build must decode bit-exactly today.

The fixtures are made by tests/make_fixtures.py (run by hand, on deliberate
format changes only) and described by tests/fixtures/manifest.json.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

import ebzip
from conftest import bf16_bits_to_f64

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MANIFEST = FIXTURES / "manifest.json"
REQUIRED = {"f32_2d_lorenzo_abs", "f64_3d_rel", "f16_1d_nan_inf", "bf16_4d", "f32_exact_eb0", "f32_empty", "f64_0d",
            "f32_3d_interp_cubic_v2", "f64_3d_interp_linear_v2", "f16_2d_interp_v2", "f32_4d_lorenzo_2axes_v2",
            "f32_3d_interp_cubic_tiles_v2", "f32_2d_lorenzo_abs_v3", "f32_3d_interp_quad_v3", "bf16_4d_v3",
            "f32_2d_psnr_v3", "f16_1d_nan_inf_v3", "f32_3d_interp_fill_masked_v3", "f32_3d_interp_fill_linear_v3"}
UINT = {"float16": np.uint16, "bfloat16": np.uint16, "float32": np.uint32, "float64": np.uint64}

# The fixtures are committed: a missing manifest is a failure, not a skip.
ENTRIES = json.loads(MANIFEST.read_text())["fixtures"]


def _as_float64(bits: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        return bf16_bits_to_f64(bits)
    with np.errstate(invalid="ignore"):
        return bits.view(dtype).astype(np.float64)


def test_manifest_covers_required_fixtures():
    names = {e["name"] for e in ENTRIES}
    assert REQUIRED <= names, f"missing fixtures: {sorted(REQUIRED - names)}"
    for e in ENTRIES:
        for key in ("stream", "expected", "input"):
            assert (FIXTURES / e[key]).exists(), e[key]
    pipelines = {e["pipeline"] for e in ENTRIES}
    assert pipelines == {"exact", "lorenzo", "interp"}
    assert {e["format_version"] for e in ENTRIES} == {1, 2, 3}, "streams of every format version stay readable"


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_fixture_decodes_bit_exactly(entry):
    stream = (FIXTURES / entry["stream"]).read_bytes()
    assert hashlib.sha256(stream).hexdigest() == entry["sha256"], "the fixture stream file itself has changed"
    assert len(stream) == entry["nbytes"]

    info = ebzip.inspect(stream)
    assert list(info["shape"]) == entry["shape"]
    assert info["dtype"] == entry["dtype"]
    assert info["mode"] == entry["mode"]
    assert info["eb_param"] == entry["eb"]
    assert info["eb_abs"] == entry["eb_abs"]
    assert info["pipeline"] == entry["pipeline"]
    assert info["block_elems"] == entry["block_elems"]
    assert entry["format_version"] <= ebzip.FORMAT_VERSION

    expected = np.load(FIXTURES / entry["expected"])
    assert expected.dtype == UINT[entry["dtype"]] and list(expected.shape) == entry["shape"]

    for source in (stream, bytearray(stream), ebzip.Compressed(stream)):
        y = ebzip.decompress(source, raw_bf16=True)
        assert list(y.shape) == entry["shape"]
        bits = y.view(UINT[entry["dtype"]])
        np.testing.assert_array_equal(bits, expected, err_msg=f"{entry['name']}: decoded bits differ from the fixture")

    # threads do not matter
    y1 = ebzip.decompress(stream, raw_bf16=True, threads=1)
    np.testing.assert_array_equal(y1.view(UINT[entry["dtype"]]), expected)

    # and the fixture itself honours the bound against the array it was made from
    x = _as_float64(np.load(FIXTURES / entry["input"]), entry["dtype"])
    e = _as_float64(expected, entry["dtype"])
    finite = np.isfinite(x)
    assert np.all(np.abs(x[finite] - e[finite]) <= entry["eb_abs"])
    np.testing.assert_array_equal(np.load(FIXTURES / entry["input"])[~finite], expected[~finite])


@pytest.mark.parametrize("entry", ENTRIES, ids=[e["name"] for e in ENTRIES])
def test_fixture_decodes_with_dtype(entry):
    """The typed result (numpy float / ml_dtypes bfloat16) carries the same bits."""
    if entry["dtype"] == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        want = np.dtype(ml_dtypes.bfloat16)
    else:
        want = np.dtype(entry["dtype"])
    stream = (FIXTURES / entry["stream"]).read_bytes()
    y = ebzip.decompress(stream)
    assert y.dtype == want
    np.testing.assert_array_equal(y.view(UINT[entry["dtype"]]), np.load(FIXTURES / entry["expected"]))


CURRENT_FORMAT = [e for e in ENTRIES if e["format_version"] == ebzip.FORMAT_VERSION and "encoder_superseded" not in e]


@pytest.mark.parametrize("entry", CURRENT_FORMAT, ids=lambda e: e["name"])
def test_encoder_still_writes_fixture_bytes(entry):
    """Fixtures of the current format pin the encoder too: the same input and
    settings must give the same bytes (a change here is a format change, or a
    change of what a CUDA build would have to match)."""
    import make_fixtures

    made = {name: (arr, eb, mode, kw) for name, arr, eb, mode, kw in make_fixtures.fixtures()}
    arr, eb, mode, kw = made[entry["name"]]
    if isinstance(arr, tuple):
        bits, dtype = arr
        c = ebzip.compress(bits, eb, mode, dtype=dtype, **kw)
    else:
        c = make_fixtures.compress(arr, eb, mode, kw)
    assert bytes(c) == (FIXTURES / entry["stream"]).read_bytes()
