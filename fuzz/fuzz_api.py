"""Coverage-guided fuzzing of the Python entry points with atheris.

    pip install atheris
    python fuzz/fuzz_api.py fuzz/corpus -runs=20000            # bounded run
    python fuzz/fuzz_api.py fuzz/corpus -max_total_time=3600   # a long run
    python fuzz/fuzz_api.py CRASH_FILE                         # replay one input

Input format (the same as the C++ target fuzz/codec_fuzz.cpp, so that one
corpus serves both):

    'E' ...      the whole input is a stream: ebzip.decompress it
    'F' stream   recompute every CRC of ``stream`` (where its layout parses),
                 then decompress: gets behind the checksums to the decoder's
                 own checks
    other        build an array (dtype, shape, layout, values) and arguments
                 (eb, mode, threads, block size) from the bytes: compress, then
                 decompress and check the bound

What counts as a failure (an uncaught exception, so atheris keeps the input):
decompress raising anything but ``ebzip.StreamError``; compress raising
anything but ``ValueError``/``TypeError`` for arguments it refuses; a round
trip outside the bound or with NaN/Inf not bit-exact; a one-byte corruption
of a fresh stream that decodes silently. Crashes and hangs are found by
atheris/libFuzzer itself.
"""

from __future__ import annotations

import math
import struct
import sys
import zlib

import numpy as np

try:
    import atheris
except ImportError:  # replaying a corpus needs no atheris
    atheris = None

if atheris is not None and __name__ == "__main__":
    with atheris.instrument_imports():
        import ebzip
else:
    import ebzip
from ebzip import _core

MAX_ARRAY_ELEMS = 4096
MAX_DECODE_ELEMS = 1 << 16  # a forged header may declare up to 2**32 elements: a real, huge allocation
DTYPES = ("float32", "float64", "float16", "bfloat16")
MODES = ("abs", "rel", "psnr")


class FuzzFailure(AssertionError):
    pass


# ---------------------------------------------------------------- CRC fix-up


def fix_crcs(s: bytearray) -> None:
    """Recompute the header, codebook, table and chunk CRCs, as far as the layout parses."""
    n = len(s)
    hlen = _core.header_extent(bytes(s))
    if hlen == 0 or n < hlen + 4:
        return
    struct.pack_into("<I", s, hlen, zlib.crc32(s[:hlen]))
    pos = hlen + 4
    pipeline = s[8] if (s[4] | s[5] << 8) >= 3 else s[9]  # byte 9 in versions 1-2, 8 since 3
    if pipeline in (1, 2):
        if n < pos + 8:
            return
        (cb,) = struct.unpack_from("<I", s, pos)
        if n - pos - 8 < cb:
            return
        struct.pack_into("<I", s, pos + 4, zlib.crc32(s[pos + 8:pos + 8 + cb]))
        pos += 8 + cb
    if n < pos + 8:
        return
    (nc,) = struct.unpack_from("<Q", s, pos)
    if nc > (n - pos - 8) // 16 or n - pos - 8 - 16 * nc < 4:
        return
    table, table_end = pos, pos + 8 + 16 * nc
    p = table_end + 4
    for k in range(nc):
        (ln,) = struct.unpack_from("<Q", s, table + 8 + 16 * k)
        if ln > n - p:
            break
        struct.pack_into("<I", s, table + 8 + 16 * k + 12, zlib.crc32(s[p:p + ln]))
        p += ln
    struct.pack_into("<I", s, table_end, zlib.crc32(s[table:table_end]))


# ---------------------------------------------------------------- decode


def try_decompress(stream: bytes, max_elems: int | None = MAX_DECODE_ELEMS):
    """Decompress; returns the array, or None for StreamError (the only error allowed)."""
    try:
        info = ebzip.inspect(stream)
    except ebzip.StreamError:
        return None
    except Exception as e:  # noqa: BLE001
        raise FuzzFailure(f"inspect raised {type(e).__name__}: {e}") from e
    if max_elems is not None and math.prod(info["shape"]) > max_elems:
        return None
    try:
        return ebzip.decompress(stream, raw_bf16=True, threads=2)
    except ebzip.StreamError:
        return None
    except Exception as e:  # noqa: BLE001
        raise FuzzFailure(f"decompress raised {type(e).__name__}: {e}") from e


# ---------------------------------------------------------------- compress


def build_case(data: bytes):
    """(array, eb, mode, kwargs) from fuzz bytes; layout: see fuzz/codec_fuzz.cpp parse_array, plus
    byte 10 bits 3-4: predictor; byte 11: mode (low 2 bits), layout (bits 2-3: C order, transposed, strided, byte-swapped), threads (bits 4-5)."""
    if len(data) < 12:
        return None
    name = DTYPES[data[0] & 3]
    eb_kind = (data[0] >> 2) & 7
    ndim = data[1] % 6
    (ebp,) = struct.unpack_from("<d", data, 2)
    block = (1, 2, 7, 16, 64, 333, 4096, None)[data[10] & 7]
    mode = MODES[(data[11] & 3) % 3]
    layout = (data[11] >> 2) & 3
    threads = 1 + ((data[11] >> 4) & 3)
    pos = 12
    shape = []
    for _ in range(ndim):
        shape.append(data[pos] % 17 if pos < len(data) else 3)
        pos += 1
    while math.prod(shape) > MAX_ARRAY_ELEMS:  # as codec_fuzz.cpp: halve the largest axis
        k = shape.index(max(shape))
        shape[k] //= 2
    itemsize = 8 if name == "float64" else 4 if name == "float32" else 2
    count = math.prod(shape)
    body = data[pos:]
    raw = (body * (count * itemsize // max(1, len(body)) + 1))[: count * itemsize] if body else bytes(count * itemsize)
    storage = np.frombuffer(raw, dtype={2: np.uint16, 4: np.float32, 8: np.float64}[itemsize]).reshape(shape)
    if name == "float16":
        storage = storage.view(np.float16)
    eb = {0: ebp, 1: 0.0, 2: 5e-324, 3: 1e-3, 4: 0.5, 5: 1.7976931348623157e308,
          6: math.ldexp(1.0, data[2] % 64 - 40), 7: 1e-30}[eb_kind]
    if mode == "psnr" and eb_kind != 0:
        eb = float(data[3] % 200) + 0.5
    x = storage.copy()
    if layout == 1 and x.ndim >= 2:
        x = x.T
    elif layout == 2 and x.ndim >= 1:
        x = np.repeat(x, 2, axis=0)[::2]
    elif layout == 3 and name != "bfloat16":
        x = x.astype(x.dtype.newbyteorder(">"))
    kwargs = {"threads": threads, "block_elems": block, "predictor": ("auto", "lorenzo", "interp")[(data[10] >> 3) % 3]}
    if name == "bfloat16":
        kwargs["dtype"] = "bfloat16"
    return x, eb, mode, kwargs, name


def _as_f64(a: np.ndarray, name: str) -> np.ndarray:
    if name == "bfloat16":
        return (np.ascontiguousarray(a).astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return np.asarray(a, dtype=np.float64)


def _bits(a: np.ndarray) -> np.ndarray:
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def check_compress(data: bytes) -> None:
    case = build_case(data)
    if case is None:
        if try_decompress(data) is not None and len(data) < 48:
            raise FuzzFailure("a short foreign input decoded")
        return
    x, eb, mode, kwargs, name = case
    try:
        c = ebzip.compress(x, eb, mode, **kwargs)
    except (ValueError, TypeError) as e:
        # refused arguments must be the ones the API documents as refused
        if math.isfinite(eb) and eb >= 0 and not (mode == "psnr" and eb == 0):
            raise FuzzFailure(f"compress refused valid arguments eb={eb!r} mode={mode}: {e}") from e
        return
    s = bytes(c)
    y = ebzip.decompress(s, raw_bf16=True, threads=kwargs["threads"])
    if y.shape != x.shape:
        raise FuzzFailure(f"shape {x.shape} -> {y.shape}")
    x64, y64 = _as_f64(x, name).reshape(-1), _as_f64(y, name).reshape(-1)
    xb, yb = _bits(x.astype(x.dtype.newbyteorder("="))).reshape(-1), _bits(y).reshape(-1)
    finite = np.isfinite(x64)
    if c.eb_abs == 0:
        if not np.array_equal(xb, yb):
            raise FuzzFailure("eb_abs 0 but not lossless")
    else:
        if not np.array_equal(xb[~finite], yb[~finite]):
            raise FuzzFailure("NaN/Inf not bit-exact")
        with np.errstate(over="ignore", invalid="ignore"):
            err = np.abs(x64[finite] - y64[finite])
        if err.size and not (err <= c.eb_abs).all():
            i = int(np.argmax(~(err <= c.eb_abs)))
            raise FuzzFailure(f"bound violated: {x64[finite][i]!r} -> {y64[finite][i]!r}, eb_abs {c.eb_abs!r}")
    # one-byte damage to the fresh stream is always detected
    b = bytearray(s)
    b[(data[-1] * 2654435761 + len(data)) % len(b)] ^= data[-2] | 1
    if try_decompress(bytes(b), max_elems=None) is not None:
        raise FuzzFailure("a one-byte corruption was not detected")


def one_input(data: bytes) -> None:
    if data[:1] == b"E":
        try_decompress(bytes(data))
    elif data[:1] == b"F":
        s = bytearray(data[1:])
        fix_crcs(s)
        try_decompress(bytes(s))
    else:
        check_compress(bytes(data))


def main() -> None:
    if atheris is None:
        sys.exit("atheris is not installed: pip install atheris")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
