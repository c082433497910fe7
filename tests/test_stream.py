"""Stream robustness: truncation, corruption, garbage, foreign and future streams.

Every byte of a stream is covered by a CRC (header, codebook, chunk table,
each chunk), so any single-byte change must raise ebzip.StreamError. Streams
forged with valid CRCs (a bad encoder, or an attacker) must raise StreamError
or decode to an array of the declared shape -- never crash, hang or raise
anything else.
"""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ebzip
from conftest import NUMPY_DTYPES, Layout, as_numpy, bits_of, from_float64, parse_header_v3, scaled, with_header

# ---------------------------------------------------------------- sample streams


def _data(shape, name, seed=0):
    rng = np.random.default_rng(seed)
    v = np.cumsum(rng.standard_normal(math.prod(shape)))
    if v.size > 20:
        v[3] = np.nan
        v[11] = -np.inf
        v[17] = 1e4 if name == "float16" else 1e30  # outliers and exactly stored values
        v[18] = -v[17]
    return as_numpy(from_float64(v.reshape(shape), name), name)


def small_streams():
    """Small streams covering both pipelines, several chunks, all dtypes, empty and 0-d."""
    out = {
        "f32-lorenzo-5chunks": ebzip.compress(_data((300,), "float32"), 1e-2, block_elems=64, predictor="lorenzo"),
        "f32-interp-3d-multichunk": ebzip.compress(_data((6, 7, 9), "float32"), 1e-2, block_elems=16,
                                                   predictor="interp"),
        "f16-interp-2d": ebzip.compress(_data((20, 13), "float16"), 1e-2, block_elems=32, predictor="interp"),
        "f64-2d-rel-3chunks": ebzip.compress(_data((12, 20), "float64"), 1e-3, "rel", block_elems=100),
        "f16-exact-multichunk": ebzip.compress(_data((7, 9, 4), "float16"), 0.0, block_elems=64),
        "f32-empty": ebzip.compress(np.zeros((0, 5), np.float32), 0.1),
        "f64-0d": ebzip.compress(np.float64(3.25), 0.1),
        "f32-0d-exact": ebzip.compress(np.float32(-2.5), 0.0),
    }
    if "bfloat16" in NUMPY_DTYPES:
        out["bf16-psnr-2chunks"] = ebzip.compress(_data((2, 3, 5, 7), "bfloat16"), 40.0, "psnr", block_elems=128)
    return {k: bytes(v) for k, v in out.items()}


SMALL = small_streams()


def decoded_bits(stream: bytes) -> np.ndarray:
    y = ebzip.decompress(stream, raw_bf16=True)
    return bits_of(y)


def assert_rejected(stream, what: str):
    """decompress(stream) must raise StreamError (and so must out= decoding)."""
    try:
        ebzip.decompress(stream, raw_bf16=True)
    except ebzip.StreamError:
        return
    except Exception as e:  # a crash-like error type is a bug too
        pytest.fail(f"{what}: raised {type(e).__name__}: {e} instead of StreamError")
    pytest.fail(f"{what}: was decoded without error")


def test_small_streams_are_multichunk():
    assert len(SMALL["f32-lorenzo-5chunks"]) > 100
    info = ebzip.inspect(SMALL["f32-lorenzo-5chunks"])
    assert info["pipeline"] == "lorenzo" and Layout(SMALL["f32-lorenzo-5chunks"]).n_chunks == 5
    assert ebzip.inspect(SMALL["f16-exact-multichunk"])["pipeline"] == "exact"
    assert Layout(SMALL["f16-exact-multichunk"]).n_chunks > 1
    assert Layout(SMALL["f32-empty"]).n_chunks == 0
    for label in ("f32-interp-3d-multichunk", "f16-interp-2d"):
        assert ebzip.inspect(SMALL[label])["pipeline"] == "interp"
        assert Layout(SMALL[label]).n_chunks > 1


# ---------------------------------------------------------------- truncation


@pytest.mark.parametrize("label", sorted(SMALL))
def test_every_prefix_rejected(label):
    s = SMALL[label]
    for n in range(len(s)):
        assert_rejected(s[:n], f"{label} cut to {n} of {len(s)} bytes")
        with pytest.raises(ebzip.StreamError):
            ebzip.inspect(s[:n])


def test_random_prefixes_of_large_stream():
    rng = np.random.default_rng(0)
    x = np.cumsum(rng.standard_normal((200, 500)), axis=1).astype(np.float32)
    s = bytes(ebzip.compress(x, 1e-3, block_elems=5000))
    assert len(s) > 50_000
    for n in sorted(set(rng.integers(0, len(s), 150).tolist()) | {len(s) - 1, len(s) - 4, 48, 100}):
        assert_rejected(s[:n], f"cut to {n} of {len(s)}")


# ---------------------------------------------------------------- corruption


@pytest.mark.parametrize("label", sorted(SMALL))
def test_every_single_byte_change_detected(label):
    s = SMALL[label]
    rng = np.random.default_rng(len(s))
    undetected = []
    for pos in range(len(s)):
        for xor in {0xFF, 0x01, 0x80, int(rng.integers(1, 256))}:
            b = bytearray(s)
            b[pos] ^= xor
            try:
                ebzip.decompress(bytes(b), raw_bf16=True)
            except ebzip.StreamError:
                continue
            except Exception as e:
                undetected.append((pos, xor, f"{type(e).__name__}: {e}"))
                continue
            undetected.append((pos, xor, "decoded"))
    assert not undetected, f"{len(undetected)} single-byte changes not reported as StreamError in {label} " \
                           f"({len(s)} bytes): (pos, xor, outcome) {undetected[:20]}"


def test_garbage_rejected():
    rng = np.random.default_rng(1)
    version = struct.pack("<H", ebzip.FORMAT_VERSION)
    for n in list(range(0, 80)) + rng.integers(80, 5000, 60).tolist():
        g = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert_rejected(g, f"{n} random bytes")
        assert_rejected(b"EBZP" + version + g, f"magic + version + {n} random bytes")
        with pytest.raises(ebzip.StreamError):
            ebzip.inspect(b"EBZP" + version + g)
    assert_rejected(b"\x00" * 4096, "zeros")
    assert_rejected(b"\xff" * 4096, "ones")


@pytest.mark.parametrize("magic", [b"EBZQ", b"ebzp", b"\x89HDF", b"PK\x03\x04", b"\x00\x00\x00\x00", b"ZPBE"])
def test_wrong_magic(magic):
    s = SMALL["f32-lorenzo-5chunks"]
    bad = magic + s[4:]
    with pytest.raises(ebzip.StreamError, match="magic"):
        ebzip.decompress(bad)
    with pytest.raises(ebzip.StreamError, match="magic"):
        ebzip.inspect(bad)


@pytest.mark.parametrize("version", [0, 4, 255, 256, 0xFFFF])
def test_other_format_version(version):
    assert version > ebzip.FORMAT_VERSION or version == 0
    for label in ("f32-lorenzo-5chunks", "f16-exact-multichunk", "f32-empty"):
        s = SMALL[label]
        assert struct.unpack_from("<H", s, 4)[0] == ebzip.FORMAT_VERSION
        bumped = s[:4] + struct.pack("<H", version) + s[6:]  # no CRC recomputed: the version is checked first
        with pytest.raises(ebzip.StreamError, match=f"version {version}"):
            ebzip.decompress(bumped)
        with pytest.raises(ebzip.StreamError, match="version"):
            ebzip.inspect(bumped)


@pytest.mark.parametrize("version", [1, 2])
def test_stream_relabelled_as_an_older_readable_version(version):
    """Versions 1 and 2 are still read, with their own header layout: a version 3
    stream labelled as one of them fails that layout's checks."""
    for label, s in MUTATION_STREAMS.items():
        assert_rejected(s[:4] + struct.pack("<H", version) + s[6:], f"{label} as version {version}")


def test_next_format_version_mentions_upgrade():
    s = SMALL["f32-lorenzo-5chunks"]
    bumped = s[:4] + struct.pack("<H", ebzip.FORMAT_VERSION + 1) + s[6:]
    with pytest.raises(ebzip.StreamError) as info:
        ebzip.decompress(bumped)
    msg = str(info.value)
    assert f"version {ebzip.FORMAT_VERSION + 1}" in msg and "upgrade" in msg and "corrupted" in msg


def test_format_version_zero_is_corruption():
    s = SMALL["f32-lorenzo-5chunks"]
    with pytest.raises(ebzip.StreamError, match="corrupted.*version 0"):
        ebzip.decompress(s[:4] + struct.pack("<H", 0) + s[6:])


@pytest.mark.parametrize("label", sorted(SMALL))
@pytest.mark.parametrize("tail", [b"\x00", b"\xff" * 7, b"EBZP", "self"])
def test_trailing_bytes_rejected(label, tail):
    s = SMALL[label]
    extra = s if tail == "self" else tail
    with pytest.raises(ebzip.StreamError, match="trailing"):
        ebzip.decompress(s + extra)
    with pytest.raises(ebzip.StreamError):
        ebzip.inspect(s + extra)


@pytest.mark.parametrize("label", sorted(SMALL))
def test_corrupt_stream_with_out(label):
    """out= decoding rejects a corrupt stream too."""
    s = bytearray(SMALL[label])
    s[-1] ^= 0x10
    info = ebzip.inspect(SMALL[label])
    out = np.empty(info["shape"], dtype=np.uint16 if info["dtype"] == "bfloat16" else info["dtype"])
    with pytest.raises(ebzip.StreamError):
        ebzip.decompress(bytes(s), out=out)


# ---------------------------------------------------------------- random mutations


def _mutation_streams():
    out = dict(SMALL)
    rng = np.random.default_rng(9)
    out["f64-smooth-1chunk"] = bytes(ebzip.compress(np.sin(np.linspace(0, 9, 700)).reshape(7, 100), 1e-5))
    out["f32-noise"] = bytes(ebzip.compress(rng.standard_normal(500).astype(np.float32), 1e-1, block_elems=200))
    out["f16-bits"] = bytes(ebzip.compress(rng.integers(0, 2**16, 300, dtype=np.uint16).view(np.float16), 1e-2,
                                           block_elems=128))
    return out


MUTATION_STREAMS = _mutation_streams()
REFERENCE = {k: decoded_bits(v) for k, v in MUTATION_STREAMS.items()}


@st.composite
def mutations(draw):
    label = draw(st.sampled_from(sorted(MUTATION_STREAMS)))
    s = bytearray(MUTATION_STREAMS[label])
    kind = draw(st.sampled_from(["set", "set", "xor", "insert", "delete", "swap"]))
    if kind in ("set", "xor"):
        for _ in range(draw(st.integers(1, 6))):
            pos = draw(st.integers(0, len(s) - 1))
            val = draw(st.integers(0, 255))
            s[pos] = val if kind == "set" else s[pos] ^ val
    elif kind == "insert":
        pos = draw(st.integers(0, len(s)))
        s[pos:pos] = draw(st.binary(min_size=1, max_size=16))
    elif kind == "delete":
        pos = draw(st.integers(0, len(s) - 1))
        s[pos:pos + draw(st.integers(1, 16))] = b""
    else:
        i, j = draw(st.integers(0, len(s) - 1)), draw(st.integers(0, len(s) - 1))
        s[i], s[j] = s[j], s[i]
    return label, bytes(s)


@given(mutations())
@settings(max_examples=scaled(400))
def test_random_mutations(mutation):
    label, s = mutation
    if s == MUTATION_STREAMS[label]:  # the mutation was a no-op: same array back
        np.testing.assert_array_equal(decoded_bits(s), REFERENCE[label])
        return
    assert_rejected(s, f"mutated {label}")


# ---------------------------------------------------------------- forged streams (valid CRCs)
# These rebuild the CRCs after changing a field, following the layout in
# csrc/include/ebzip/format.hpp (format version 3), to test that every value read
# from a stream is checked before use, not only protected by a checksum.


def reseal(s: bytearray) -> bytes:
    """Recompute every CRC of a (modified) stream whose section lengths are consistent."""
    L = Layout(bytes(s))
    struct.pack_into("<I", s, L.header_len, zlib.crc32(bytes(s[:L.header_len])))
    if L.codebook:
        off, ln = L.codebook
        struct.pack_into("<I", s, off + 4, zlib.crc32(bytes(s[off + 8: off + 8 + ln])))
    for k, (p, ln, _) in enumerate(L.chunks):
        struct.pack_into("<I", s, L.table + 8 + 16 * k + 12, zlib.crc32(bytes(s[p:p + ln])))
    struct.pack_into("<I", s, L.table_end, zlib.crc32(bytes(s[L.table:L.table_end])))
    return bytes(s)


def assert_rejected_or_shaped(s: bytes, what: str):
    """A CRC-valid forged stream: StreamError, or an array of the declared shape."""
    try:
        info = ebzip.inspect(s)
        y = ebzip.decompress(s, raw_bf16=True)
    except ebzip.StreamError:
        return
    except Exception as e:
        pytest.fail(f"{what}: raised {type(e).__name__}: {e} instead of StreamError")
    assert tuple(y.shape) == tuple(info["shape"]), what


def test_reseal_is_identity():
    for label, s in MUTATION_STREAMS.items():
        assert reseal(bytearray(s)) == s, label


# header fields and forged values
HEADER_FIELDS = {
    "dtype": [4, 5, 255],
    "mode": [3, 200],
    "pipeline": [0, 1, 2, 255],
    "grid_bits": [0, 8, 16, 33, 63, 65, 255],
    "radius": [0, 1, 2, 3, 100, 32769, 2**31, 2**32 - 1, 2**32, 2**64 - 1],
    "eb_abs": [0.0, -1.0, float("nan"), float("inf"), 5e-324, 1e300],
    "block_elems": [0, 1, 2, 63, 65, 2**32, 2**32 + 1, 2**63, 2**64 - 1],
    "shape0": [0, 1, 2**31, 2**40, 2**62, 2**64 - 1],
    "stencil": [3, 255],
    "fill": [1, 2, 255],
    "tile0": [0, 2**32 + 1, 2**64 - 1],
}


@pytest.mark.parametrize("field", sorted(HEADER_FIELDS))
def test_forged_header_fields(field):
    for label, s in MUTATION_STREAMS.items():
        h, _ = parse_header_v3(s)
        if (field == "shape0" and not h["shape"]) or (field in ("stencil", "tile0", "fill") and h["pipeline"] != 2):
            continue
        for v in HEADER_FIELDS[field]:
            if field == "shape0":
                changes = dict(shape=[v] + h["shape"][1:])
            elif field == "tile0":
                changes = dict(tile=[v] + h["tile"][1:])
            elif field == "fill":
                changes = dict(fill=v, fill_bits=0)  # a stream written without: its symbol 1 becomes the fill
            elif field == "pipeline" and v == 2 and h["pipeline"] != 2:
                changes = dict(pipeline=2, stencil=1, order=0b11100100, alpha=1.0, beta=1.0, tile=[1, 1, 1, 1],
                               fill=0, fill_bits=None)
            else:
                changes = {field: v}
            forged = with_header(s, **changes)
            if field != "pipeline":  # the other sections keep their layout: reseal them too
                forged = reseal(bytearray(forged))
            assert_rejected_or_shaped(forged, f"{label} with {field}={v!r}")


def test_forged_header_varints():
    """Varints that never end, or overflow 64 bits, are refused."""
    s = SMALL["f32-lorenzo-5chunks"]
    for bad in (b"\xff" * 11, b"\xff" * 9 + b"\x02", b"\x80" * 10 + b"\x01"):
        with pytest.raises(ebzip.StreamError, match="bad varint"):
            ebzip.decompress(s[:13] + bad + s[13:])  # read as the radius


def test_forged_shape_too_large_fails_before_allocating():
    s = MUTATION_STREAMS["f64-smooth-1chunk"]  # shape (7, 100)
    forged = with_header(s, shape=[2**31, 2**31], pred_shape=[2**31, 2**31])
    with pytest.raises(ebzip.StreamError):
        ebzip.decompress(reseal(bytearray(forged)))


def test_forged_symbol_count_fails_before_decoding():
    """One chunk whose header claims 2**31 float16 elements, with the payload of 1000.

    Every Huffman code is at least one bit, so the lane bit counts alone prove
    the claim false: the error must come from that check ("chunk counts"),
    before 4 GiB of codes are allocated and decoded (it once took 30 s and
    4 GiB to reach "Huffman length mismatch").
    """
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float16)
    s = bytes(ebzip.compress(x, 0.01, predictor="lorenzo"))
    h, _ = parse_header_v3(s)
    assert h["shape"] == [1000]
    # block_elems 2**32: still one chunk; shape and prediction shape 2**31
    forged = with_header(s, block_elems=2**32, shape=[2**31], pred_shape=[2**31])
    with pytest.raises(ebzip.StreamError, match="chunk counts"):
        ebzip.decompress(forged)


def test_forged_chunk_table():
    s = SMALL["f32-lorenzo-5chunks"]
    L = Layout(s)
    assert L.n_chunks == 5
    # move a byte from one chunk to the next: lengths still add up, payloads do not
    b = bytearray(s)
    ln0, ln1 = L.chunks[0][1], L.chunks[1][1]
    struct.pack_into("<Q", b, L.table + 8, ln0 + 1)
    struct.pack_into("<Q", b, L.table + 8 + 16, ln1 - 1)
    assert_rejected(reseal(b), "chunk boundary moved")
    # a chunk count that does not match the shape
    for n in (0, 4, 6, 2**40):
        b = bytearray(s)
        struct.pack_into("<Q", b, L.table, n)
        struct.pack_into("<I", b, L.table_end, zlib.crc32(bytes(b[L.table:L.table_end])))
        assert_rejected(bytes(b), f"chunk count {n}")
    # chunk flags toggled (zstd on/off) or unknown
    for k in range(L.n_chunks):
        for flags in (0, 1, 2, 3, 0xFFFFFFFF):
            b = bytearray(s)
            struct.pack_into("<I", b, L.table + 8 + 16 * k + 8, flags)
            assert_rejected_or_shaped(reseal(b), f"chunk {k} flags {flags:#x}")


@given(data=st.data())
@settings(max_examples=scaled(300))
def test_forged_payloads(data):
    """Random changes inside one section, CRCs recomputed: the decoder itself must cope."""
    label = data.draw(st.sampled_from(sorted(MUTATION_STREAMS)))
    s = MUTATION_STREAMS[label]
    L = Layout(s)
    sections = [(p, ln) for p, ln, _ in L.chunks if ln > 0]
    if L.codebook:
        off, ln = L.codebook
        sections.append((off + 8, ln))
    if not sections:
        return
    p, ln = data.draw(st.sampled_from(sections))
    b = bytearray(s)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(p, p + ln - 1))
        b[i] = data.draw(st.integers(0, 255))
    assert_rejected_or_shaped(reseal(b), f"{label} forged at section {p}+{ln}")


def test_decompress_valid_streams_still_work():
    """The sample streams themselves decode (guards the tests above against vacuous passes)."""
    for label, s in MUTATION_STREAMS.items():
        info = ebzip.inspect(s)
        y = ebzip.decompress(s, raw_bf16=True)
        assert tuple(y.shape) == tuple(info["shape"]), label
