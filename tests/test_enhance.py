"""ebzip.enhance: learned enhancers keep the bound, and their container round-trips and rejects damage.

Generated smooth fields (a few thousand points) and short training (tens of steps): seconds in all.
"""

from __future__ import annotations

import builtins
import struct
import sys

import numpy as np
import pytest

import ebzip

torch = pytest.importorskip("torch")
ee = pytest.importorskip("ebzip.enhance")
from ebzip.enhance import container  # noqa: E402

FAST = dict(steps=30, keep="always", threads=1)


def smooth(shape, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 4, n) for n in shape], indexing="ij")
    v = sum(np.sin((k + 1.1) * g + rng.random()) for k, g in enumerate(grids))
    return (v + 0.05 * rng.standard_normal(shape)).astype(dtype)


def check_bound(x, y, bound):
    """Every element within bound, in float64 and in the element type."""
    assert y.shape == x.shape and y.dtype == x.dtype
    err64 = np.abs(x.astype(np.float64) - y.astype(np.float64))
    assert err64.max() <= bound, (err64.max(), bound)
    assert (np.abs(x - y) <= x.dtype.type(bound)).all()


@pytest.fixture(scope="module")
def fields():
    return {"a": smooth((48, 64), 1), "b": smooth((48, 64), 2) * 3 + 1, "c": smooth((48, 64), 3, np.float64)}


@pytest.fixture(scope="module")
def single(fields):
    return ee.compress(fields["a"], 1e-2, "rel", **FAST)


def test_import_ebzip_does_not_import_torch():
    import subprocess
    code = "import sys, ebzip, ebzip.enhance; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_1x_strict_bound_every_element(dtype):
    x = smooth((40, 50), 5, dtype)
    c = ee.compress(x, 1e-2, "rel", **FAST)
    eb_abs = c.stats["x"]["eb_abs"]
    y = ee.decompress(c)
    check_bound(x, y, eb_abs)
    assert c.stats["x"]["max_err_over_eb"] <= 1.0
    # the enhancer did something: the output is not the plain reconstruction
    plain = ebzip.decompress(bytes(c), enhance=False)
    check_bound(x, plain, eb_abs)
    assert not np.array_equal(y, plain)


def test_2x_mode_within_twice_the_bound():
    x = smooth((40, 50), 6)
    c = ee.compress(x, 1e-2, "rel", regulation="2x", **FAST)
    eb_abs = c.stats["x"]["eb_abs"]
    y = ee.decompress(c)
    check_bound(x, y, 2 * eb_abs)
    plain = ee.decompress(c, enhance=False)
    check_bound(plain, y, eb_abs * (1 + 1e-6))  # the correction is clamped to plain +- eb


def test_1x_half_mode_strict_bound_without_positions():
    x = smooth((40, 50), 9)
    c = ee.compress(x, 1e-2, "rel", regulation="1x-half", **FAST)
    st = c.stats["x"]
    assert st["base_eb_abs"] == st["eb_abs"] / 2 and st["bound_abs"] == st["eb_abs"]
    y = ee.decompress(c)
    check_bound(x, y, st["eb_abs"])
    plain = ee.decompress(c, enhance=False)
    check_bound(x, plain, st["eb_abs"] / 2)
    assert not np.array_equal(y, plain)


def test_container_round_trip_and_ebzip_decompress(single, fields):
    blob = bytes(single)
    assert blob[:4] == b"EBZN" and ee.is_container(blob)
    y1 = ee.decompress(blob)
    y2 = ebzip.decompress(blob)  # the core API recognises the container
    y3 = ebzip.decompress(single)
    assert np.array_equal(y1, y2) and np.array_equal(y1, y3)
    # threads= reaches the networks; another thread count may round the convolutions differently in the last bits
    eb = single.stats["x"]["eb_abs"]
    assert np.max(np.abs(ebzip.decompress(blob, threads=1).astype(np.float64) - y1)) <= 1e-3 * eb
    for bad in (dict(device="cpu"), dict(like="torch"), dict(out=np.empty_like(y1))):
        with pytest.raises(ValueError, match="not supported for enhancer containers"):
            ebzip.decompress(blob, **bad)  # refused, not silently ignored
    meta = ee.inspect(blob)
    assert meta["single"] and meta["fields"][0]["shape"] == [48, 64]
    assert single.nbytes == len(blob) == round(single.stats["x"]["nbytes"])
    # the base stream inside is an ordinary ebzip stream
    (kind, _, payload), = [s for s in container.unpack(blob) if s[0] == container.BASE]
    assert tuple(ebzip.inspect(payload)["shape"]) == (48, 64)


def test_deterministic_for_a_seed(fields):
    a = ee.compress(fields["a"], 1e-2, "rel", seed=3, **FAST)
    b = ee.compress(fields["a"], 1e-2, "rel", seed=3, **FAST)
    c = ee.compress(fields["a"], 1e-2, "rel", seed=4, **FAST)
    assert bytes(a) == bytes(b)
    assert bytes(a) != bytes(c)


def test_torch_global_rng_left_alone(fields):
    # model.build called torch.manual_seed: after compress the user's own seed no longer determined
    # torch's draws (and decoding, which builds networks too, advanced the user's generator)
    x = fields["a"][:24, :24]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    c = ee.compress(x, 1e-2, "rel", **FAST)
    ee.decompress(c)
    assert torch.equal(torch.rand(3), expected)
    torch.manual_seed(7)  # the container still depends on seed= alone
    assert bytes(ee.compress(x, 1e-2, "rel", **FAST)) == bytes(c)


def test_cross_field_api(fields):
    c = ee.compress_fields(fields, 1e-2, "rel", **FAST)
    out = ee.decompress(c)
    assert list(out) == ["a", "b", "c"]
    for n, x in fields.items():
        check_bound(x, out[n], c.stats[n]["eb_abs"])
    meta = ee.inspect(c)
    assert [f["enhancer"]["inputs"] for f in meta["fields"]] == [[0, 1, 2], [1, 0, 2], [2, 0, 1]]
    solo = ee.compress_fields(fields, 1e-2, "rel", cross_field=False, **FAST)
    assert [f["enhancer"]["inputs"] for f in ee.inspect(solo)["fields"]] == [[0], [1], [2]]
    with pytest.raises(ValueError, match="same shape"):
        ee.compress_fields({"a": fields["a"], "z": np.zeros((3, 3), np.float32)}, 1e-2, **FAST)


def test_gwlz_groups():
    x = smooth((40, 50), 7)
    c = ee.compress(x, 1e-2, "rel", groups=3, **FAST)
    e = ee.inspect(c)["fields"][0]["enhancer"]
    assert e["groups"] == 3 and len(e["group_edges"]) == 2
    assert c.stats["x"]["params"] == 3 * ee.model.n_params(e["in_channels"], e["channels"], e["blocks"], e["dims"])
    check_bound(x, ee.decompress(c), c.stats["x"]["eb_abs"])


def test_3d_convolutions_and_nonfinite_values():
    x = smooth((18, 20, 22), 8)
    x[3, 4, 5], x[10, 0, 1], x[0, 0, 0] = np.nan, np.inf, -np.inf
    c = ee.compress(x, 1e-2, "rel", **FAST)
    assert ee.inspect(c)["fields"][0]["enhancer"]["dims"] == 3
    y = ee.decompress(c)
    f = np.isfinite(x)
    assert np.array_equal(x[~f], y[~f], equal_nan=True)
    check_bound(x[f], y[f], c.stats["x"]["eb_abs"])


def test_keep_auto_drops_an_enhancer_that_does_not_pay():
    # pure noise: nothing to learn, so the enhancer's bytes cannot pay for themselves
    x = np.random.default_rng(0).standard_normal((40, 50)).astype(np.float32)
    c = ee.compress(x, 1e-2, "rel", steps=20, threads=1)
    assert not c.stats["x"]["enhanced"] and ee.inspect(c)["fields"][0]["enhancer"] is None
    check_bound(x, ee.decompress(c), c.stats["x"]["eb_abs"])


def test_fallback_positions_both_encodings():
    n = 10_000
    for positions in ([5, 17, 9000], list(range(0, n, 3))):
        mask = np.zeros(n, dtype=bool)
        mask[positions] = True
        blob = container.encode_positions(mask)
        assert np.array_equal(container.decode_positions(blob, n), mask)
    assert {container.encode_positions(np.isin(np.arange(n), p))[0] for p in ([5, 17, 9000], range(0, n, 2))} == \
        {container.FB_DELTAS, container.FB_BITMASK}
    assert np.array_equal(container.decode_positions(container.encode_positions(np.zeros(n, bool)), n),
                          np.zeros(n, bool))
    with pytest.raises(ebzip.StreamError):
        container.decode_positions(bytes([container.FB_DELTAS]) + container.encode_positions(mask)[1:], 10)


def test_0d_array_keeps_its_shape():
    # np.ascontiguousarray made a 0-d array 1-d: it came back with shape (1,) (plain ebzip keeps ())
    x = np.array(3.25, np.float32)
    c = ee.compress(x, 1e-3, "abs", **FAST)
    assert ee.inspect(c)["fields"][0]["shape"] == []
    for y in (ee.decompress(c), ebzip.decompress(bytes(c)), ebzip.decompress(bytes(c), enhance=False)):
        assert y.shape == () and y.dtype == np.float32 and abs(float(y) - 3.25) <= 1e-3
    assert ee.decompress(ee.compress(torch.tensor(3.25), 1e-3, "abs", **FAST)).shape == ()


@pytest.mark.parametrize("dtype", [">f4", ">f8"])
def test_big_endian_input(dtype):
    # was refused: "compresses float32/float64 arrays; field 'x' is >f4" (plain ebzip takes either byte order)
    native = np.dtype(dtype).newbyteorder("=")
    x = smooth((24, 30), 4, native)
    c = ee.compress(x.astype(dtype), 1e-2, "rel", **FAST)
    y = ee.decompress(c)
    assert y.dtype == native and y.dtype.isnative
    check_bound(x, y, c.stats["x"]["eb_abs"])
    assert bytes(c) == bytes(ee.compress(x, 1e-2, "rel", **FAST))  # the same container as the native array's




def _section_offsets(blob):
    """(kind, payload start, length) per section."""
    n = struct.unpack_from("<I", blob, 8)[0]
    pos = 12 + 20 * n + 4
    out = []
    for i in range(n):
        kind, _, length, _ = struct.unpack_from("<B3xIQI", blob, 12 + 20 * i)
        out.append((kind, pos, length))
        pos += length
    return out


@pytest.mark.parametrize("kind", [container.META, container.WEIGHTS, container.NORM, container.FALLBACK,
                                  container.BASE])
def test_corrupted_section_detected(single, kind):
    blob = bytearray(bytes(single))
    (_, start, length), = [s for s in _section_offsets(bytes(blob)) if s[0] == kind]
    blob[start + length // 2] ^= 0x10
    with pytest.raises(ebzip.StreamError, match="corrupted"):
        ee.decompress(bytes(blob))
    with pytest.raises(ebzip.StreamError):
        ebzip.decompress(bytes(blob), enhance=False)  # even the plain path checks every section


def test_truncated_header_version_and_trailing_bytes(single):
    blob = bytes(single)
    for cut in (3, 10, 30, len(blob) // 2, len(blob) - 1):
        with pytest.raises(ebzip.StreamError, match="truncated"):
            ee.decompress(blob[:cut])
    with pytest.raises(ebzip.StreamError, match="trailing"):
        ee.decompress(blob + b"\0")
    newer = bytearray(blob)
    newer[4:6] = struct.pack("<H", container.VERSION + 1)
    with pytest.raises(ebzip.StreamError, match="version"):
        ee.decompress(bytes(newer))
    table = bytearray(blob)
    table[12 + 20 + 4] ^= 1  # a section length in the table
    with pytest.raises(ebzip.StreamError, match="CRC"):
        ee.decompress(bytes(table))


def test_forged_config_with_valid_crcs_is_refused(single):
    meta, by_key = container.read(bytes(single))
    meta["fields"][0]["enhancer"]["channels"] = 10**6
    sections = [(container.META, 0, container.meta_payload(meta))] + [(k, f, bytes(p)) for (k, f), p in by_key.items()]
    with pytest.raises(ebzip.StreamError, match="out of range"):
        ee.decompress(container.pack(sections))
    meta["fields"][0]["enhancer"]["channels"] = 5  # in range, but the weights do not match it
    sections[0] = (container.META, 0, container.meta_payload(meta))
    with pytest.raises(ebzip.StreamError, match="weight bytes"):
        ee.decompress(container.pack(sections))


def _replace_sections(blob, replace: dict, extra=()):
    """The container with some sections' payloads replaced ({kind: bytes}) and extra sections added,
    CRCs recomputed."""
    meta, by_key = container.read(blob)
    secs = [(k, f, replace.get(k, bytes(p))) for (k, f), p in by_key.items()]
    return container.pack([(container.META, 0, container.meta_payload(meta))] + secs + list(extra))


@pytest.mark.parametrize("gaps", [[2**63 - 1, 0], [2**62] * 4, [5, 2**63 - 3]])
def test_forged_fallback_gaps_that_wrap_are_refused(single, gaps):
    """Gaps summing past int64 wrapped to indices that escaped the range check (raw IndexError)."""
    z = __import__("zstandard").ZstdCompressor().compress(container._varints(np.array(gaps, dtype=np.uint64)))
    blob = _replace_sections(bytes(single), {container.FALLBACK: bytes([container.FB_DELTAS]) + z})
    with pytest.raises(ebzip.StreamError, match="out of range"):
        ee.decompress(blob)


@pytest.mark.parametrize("regulation", ["1x", "2x", "1x-half"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_never_leave_the_bound(fields, regulation, bad):
    """A NaN passed the clamp of the network's output: every value came back NaN."""
    x = fields["a"]
    c = ee.compress(x, 1e-2, "rel", regulation=regulation, **FAST)
    n = len(container.read(bytes(c))[1][(container.WEIGHTS, 0)]) // 2
    blob = _replace_sections(bytes(c), {container.WEIGHTS: np.full(n, bad, "<f2").tobytes()})
    y = ee.decompress(blob)
    check_bound(x, y, c.stats["x"]["bound_abs"])


def test_enhancer_sections_for_a_field_without_one_are_refused(fields):
    c = ee.compress(fields["a"], 1e-2, "rel", steps=0, keep="auto", threads=1)
    assert not c.stats["x"]["enhanced"]
    extra = [(container.WEIGHTS, 0, b"\0\0"), (container.NORM, 0, b"\0" * 16), (container.FALLBACK, 0, b"\0")]
    with pytest.raises(ebzip.StreamError, match="no enhancer"):
        ee.decompress(_replace_sections(bytes(c), {}, extra))


def test_is_container_and_seed_checks(single, fields):
    assert ee.is_container(single) and ee.is_container(bytes(single)) and not ee.is_container(b"EBZP")
    for seed in (-1, 1.5, 2**64, "0"):
        with pytest.raises(ValueError, match="seed"):
            ee.compress(fields["a"], 1e-2, seed=seed, **FAST)
    assert ee.compress(fields["a"], 1e-2, seed=np.int64(3), **FAST).stats["x"]["enhanced"]


def _forge(blob, edit, weights=None):
    """The container with its meta JSON edited (and its weights replaced if given), CRCs recomputed:
    only the decoder's checks of the meta can catch it."""
    meta, by_key = container.read(blob)
    edit(meta)
    secs = [(k, f, weights if weights is not None and k == container.WEIGHTS else bytes(p)) for (k, f), p in by_key.items()]
    return container.pack([(container.META, 0, container.meta_payload(meta))] + secs)


def _field(edit):
    return lambda meta: edit(meta["fields"][0])


def _enhancer(edit):
    return lambda meta: edit(meta["fields"][0]["enhancer"])


FORGED_FIELD = {  # the field's description; the base stream's header is authoritative
    "eb_abs x1000": lambda f: f.update(eb_abs=f["eb_abs"] * 1000),  # decoded silently, 8x the bound
    "eb_abs 1 ulp up": lambda f: f.update(eb_abs=float(np.nextafter(f["eb_abs"], np.inf))),
    "eb_abs -1e30": lambda f: f.update(eb_abs=-1e30),  # decoded silently, 1e28 x the bound
    "eb_abs NaN": lambda f: f.update(eb_abs=float("nan")),
    "eb_abs inf": lambda f: f.update(eb_abs=float("inf")),
    "eb_abs str": lambda f: f.update(eb_abs="abc"),  # raw ValueError
    "eb_abs bool": lambda f: f.update(eb_abs=True),
    "eb_abs missing": lambda f: f.pop("eb_abs"),  # raw KeyError
    "name missing": lambda f: f.pop("name"),
    "name list": lambda f: f.update(name=[1]),
    "shape floats": lambda f: f.update(shape=[float(n) for n in f["shape"]]),
    "dtype list": lambda f: f.update(dtype=["float32"]),
    "entry empty": lambda f: f.clear(),
}
FORGED_ENHANCER = {
    "regulation list": lambda e: e.update(regulation=["1x"]),  # raw TypeError (unhashable)
    "dims str": lambda e: e.update(dims="2"),
    "dims float": lambda e: e.update(dims=2.7),
    "inputs float": lambda e: e.update(inputs=[0.5]),
    "inputs str": lambda e: e.update(inputs="0"),
    "scale str": lambda e: e.update(scale="0.5"),
}


@pytest.mark.parametrize("label", list(FORGED_FIELD) + list(FORGED_ENHANCER))
def test_forged_meta_field_is_refused(single, label):
    blob = bytes(single)
    plain_too = label in FORGED_FIELD
    edit = _field(FORGED_FIELD[label]) if plain_too else _enhancer(FORGED_ENHANCER[label])
    forged = _forge(blob, edit)
    with pytest.raises(ebzip.StreamError):
        ee.decompress(forged)
    if plain_too:  # the field's description is checked on the plain path too
        with pytest.raises(ebzip.StreamError):
            ebzip.decompress(forged, enhance=False)


def test_forged_conv_dims_beyond_the_field_is_refused(single):
    # 3-D convolutions on a 2-D field, with weights of the right length: was a raw RuntimeError from torch
    e = ee.inspect(single)["fields"][0]["enhancer"]
    w3 = bytes(2 * ee.model.n_params(e["in_channels"], e["channels"], e["blocks"], 3))
    with pytest.raises(ebzip.StreamError, match="out of range"):
        ee.decompress(_forge(bytes(single), _enhancer(lambda e: e.update(dims=3)), weights=w3))


@pytest.mark.parametrize("value", ["yes", None])
def test_forged_single_flag_is_refused(single, value):
    with pytest.raises(ebzip.StreamError, match="single"):
        ee.decompress(_forge(bytes(single), lambda m: m.update(single=value)))


def test_integer_field_name_still_decodes(single):
    # earlier versions wrote integer dict keys as JSON numbers (with verify=False): still read, as str
    out = ebzip.decompress(_forge(bytes(single), lambda m: (m["fields"][0].update(name=7), m.update(single=False))))
    assert list(out) == ["7"] and np.array_equal(out["7"], ee.decompress(single))


# ---------------------------------------------------------------- without torch


@pytest.fixture
def no_torch(monkeypatch):
    """Simulate an environment without torch: importing it (or the model module) fails."""
    real_import = builtins.__import__

    def fake_import(name, globals=None, locals=None, fromlist=(), level=0):
        if name == "torch" or name.startswith("torch.") or (level and "model" in (fromlist or ())):
            raise ImportError(f"No module named {name!r} (simulated)")
        return real_import(name, globals, locals, fromlist, level)

    monkeypatch.delitem(sys.modules, "ebzip.enhance.model", raising=False)
    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_decode_without_torch(single, fields, no_torch):
    blob = bytes(single)
    with pytest.raises(ImportError, match=r"ebzip\[torch\].*enhance=False"):
        ee.decompress(blob)
    with pytest.raises(ImportError, match="torch"):
        ebzip.decompress(blob)
    plain = ebzip.decompress(blob, enhance=False)
    check_bound(fields["a"], plain, single.stats["x"]["eb_abs"])
    with pytest.raises(ImportError, match="torch"):
        ee.compress(fields["a"], 1e-2)


@pytest.mark.parametrize("names", [(1, 2), (1, "1"), (("a",), "b")])
def test_field_names_must_be_strings(fields, names):
    # were: KeyError in compress's own verify step, StreamError "duplicate names", or (verify=False)
    # a container whose names came back as strings
    for verify in (True, False):
        with pytest.raises(TypeError, match="field names must be str"):
            ee.compress_fields(dict(zip(names, (fields["a"], fields["b"]))), 1e-2, verify=verify, **FAST)


def test_bad_arguments(fields):
    with pytest.raises(ValueError, match="regulation"):
        ee.compress(fields["a"], 1e-2, regulation="3x")
    with pytest.raises(ValueError, match="mode"):
        ee.compress(fields["a"], 40, mode="psnr")
    with pytest.raises(TypeError, match="float32/float64"):
        ee.compress(np.arange(100, dtype=np.int32).reshape(10, 10), 1.0)
    with pytest.raises(ValueError, match="groups"):
        ee.compress(fields["a"], 1e-2, groups=0)
