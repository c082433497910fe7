"""Generates docs/errors.md: every bad input we tried and exactly what the user gets.

    python docs/make_errors_table.py            # rewrite docs/errors.md
    python docs/make_errors_table.py --check    # exit 1 if docs/errors.md is stale (tests do this)

Each row runs the call for real and records the exception type and message
(or the result, for edge inputs that are accepted). Nothing here is typed by
hand, so the table cannot drift from the code.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

import ebzip
from ebzip import _core

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests"))
from conftest import with_header  # noqa: E402  (the version 3 header writer the tests use)

HERE = os.path.dirname(os.path.abspath(__file__))
DOC = os.path.join(HERE, "errors.md")

X = np.linspace(0, 1, 1000, dtype=np.float32).reshape(10, 100)
S = bytes(ebzip.compress(X, 1e-3, block_elems=300))  # a valid stream: 4 chunks


def _layout(s: bytes) -> dict:
    hlen = _core.header_extent(s)
    cb_len = struct.unpack_from("<I", s, hlen + 4)[0]
    table = hlen + 4 + 8 + cb_len
    (n,) = struct.unpack_from("<Q", s, table)
    return {"header_len": hlen, "codebook": hlen + 4 + 8, "table": table, "payload": table + 8 + 16 * n + 4}


L = _layout(S)


def flip(s: bytes, at: int, mask: int = 0x01) -> bytes:
    b = bytearray(s)
    b[at] ^= mask
    return bytes(b)


def forge_header(s: bytes, **fields) -> bytes:
    """Change header fields and recompute the header CRC (a forged, not a corrupted, stream)."""
    if "version" in fields:  # checked before anything else is parsed
        return s[:4] + struct.pack("<H", fields["version"]) + s[6:]
    return with_header(s, **fields)


def forged_huge_shape() -> bytes:
    """A 1-D stream of 100 values whose header claims 2**40 elements (header CRC recomputed)."""
    s = bytes(ebzip.compress(np.arange(100, dtype=np.float32), 1e-3, predictor="lorenzo"))
    return with_header(s, shape=[2**40], pred_shape=[2**40])


def forged_big_shape_one_chunk() -> bytes:
    """A 100-value stream whose header claims 2**22 elements in one chunk (all CRCs valid)."""
    s = bytes(ebzip.compress(np.arange(100, dtype=np.float32), 1e-3, predictor="lorenzo"))
    return with_header(s, block_elems=2**32, shape=[2**22], pred_shape=[2**22])


def strided_stream():
    a = np.frombuffer(S + S, dtype=np.uint8)[::2]
    return memoryview(a)


# (group, what, code) rows; code is evaluated with ebzip, np, X, S in scope
CASES = [
    ("compress: array", "integer array", "ebzip.compress(np.arange(10), 1e-3)"),
    ("compress: array", "bool array", "ebzip.compress(np.zeros(4, bool), 1e-3)"),
    ("compress: array", "complex array", "ebzip.compress(np.zeros(4, np.complex64), 1e-3)"),
    ("compress: array", "object array", "ebzip.compress(np.array(['a', None], dtype=object), 1e-3)"),
    ("compress: array", "a str", "ebzip.compress('1.0 2.0', 1e-3)"),
    ("compress: array", "a Python list of floats", "ebzip.compress([1.0, 2.0, 3.0], 1e-3)"),
    ("compress: array", "None", "ebzip.compress(None, 1e-3)"),
    ("compress: array", "dtype='bfloat16' on a float32 array", "ebzip.compress(X, 1e-3, dtype='bfloat16')"),
    ("compress: array", "dtype='int8'", "ebzip.compress(X, 1e-3, dtype='int8')"),
    ("compress: array", "more than 32 dimensions", "ebzip.compress(np.zeros((1,) * 33, np.float32), 1e-3)"),
    ("compress: bound", "negative eb", "ebzip.compress(X, -1e-3)"),
    ("compress: bound", "eb = NaN", "ebzip.compress(X, float('nan'))"),
    ("compress: bound", "eb = inf", "ebzip.compress(X, float('inf'))"),
    ("compress: bound", "eb as a str", "ebzip.compress(X, '1e-3')"),
    ("compress: bound", "eb = True", "ebzip.compress(X, True)"),
    ("compress: bound", "eb = None", "ebzip.compress(X, None)"),
    ("compress: bound", "PSNR target 0 dB", "ebzip.compress(X, 0, 'psnr')"),
    ("compress: bound", "unknown mode", "ebzip.compress(X, 1e-3, 'relative')"),
    ("compress: bound", "mode in capitals", "ebzip.compress(X, 1e-3, 'ABS')"),
    ("compress: options", "unknown predictor", "ebzip.compress(X, 1e-3, predictor='cubic')"),
    ("compress: options", "threads=0", "ebzip.compress(X, 1e-3, threads=0)"),
    ("compress: options", "threads=1.5", "ebzip.compress(X, 1e-3, threads=1.5)"),
    ("compress: options", "block_elems=0", "ebzip.compress(X, 1e-3, block_elems=0)"),
    ("compress: options", "block_elems=2**33", "ebzip.compress(X, 1e-3, block_elems=2**33)"),
    ("compress: options", "set_num_threads(0)", "ebzip.set_num_threads(0)"),
    ("compress: accepted edge cases", "eb = 0 (lossless)", "ebzip.compress(X, 0.0)"),
    ("compress: accepted edge cases", "eb = 1e308 (anything goes)", "ebzip.compress(X, 1e308)"),
    ("compress: accepted edge cases", "eb = 5e-324 (smaller than any float32 step)", "ebzip.compress(X, 5e-324)"),
    ("compress: accepted edge cases", "all-NaN array, rel mode", "ebzip.compress(np.full(8, np.nan), 1e-3, 'rel')"),
    ("compress: accepted edge cases", "constant array, rel mode", "ebzip.compress(np.ones(8), 1e-3, 'rel')"),
    ("compress: accepted edge cases", "-1e308..1e308 range, rel mode",
     "ebzip.compress(np.array([-1e308, 1e308]), 1e-3, 'rel')"),
    ("compress: accepted edge cases", "empty array", "ebzip.compress(np.zeros((0, 5), np.float32), 1e-3)"),
    ("compress: accepted edge cases", "0-d array", "ebzip.compress(np.float64(2.5), 1e-3)"),
    ("compress: accepted edge cases", "non-contiguous view (copied)", "ebzip.compress(X.T[::2], 1e-3)"),
    ("compress: accepted edge cases", "big-endian array", "ebzip.compress(X.astype('>f4'), 1e-3)"),
    ("decompress: argument", "a str", "ebzip.decompress('EBZP...')"),
    ("decompress: argument", "an int", "ebzip.decompress(123)"),
    ("decompress: argument", "None", "ebzip.decompress(None)"),
    ("decompress: argument", "a non-contiguous buffer", "ebzip.decompress(strided_stream())"),
    ("decompress: argument", "threads=-1", "ebzip.decompress(S, threads=-1)"),
    ("decompress: stream", "empty bytes", "ebzip.decompress(b'')"),
    ("decompress: stream", "foreign bytes (PNG header)", "ebzip.decompress(b'\\x89PNG\\r\\n\\x1a\\n' + bytes(100))"),
    ("decompress: stream", "foreign bytes (random)", "ebzip.decompress(np.random.default_rng(0).bytes(200))"),
    ("decompress: stream", "magic only", "ebzip.decompress(b'EBZP')"),
    ("decompress: stream", "truncated to half", "ebzip.decompress(S[: len(S) // 2])"),
    ("decompress: stream", "truncated by one byte", "ebzip.decompress(S[:-1])"),
    ("decompress: stream", "one trailing byte", "ebzip.decompress(S + b'\\0')"),
    ("decompress: stream", "two streams concatenated", "ebzip.decompress(S + S)"),
    ("decompress: stream", "one bit flipped in the version field", "ebzip.decompress(flip(S, 4))"),
    ("decompress: stream", "one bit flipped in the header (the bound)", "ebzip.decompress(flip(S, 20))"),
    ("decompress: stream", "one bit flipped in the header (its last field)", "ebzip.decompress(flip(S, L['header_len'] - 2))"),
    ("decompress: stream", "one bit flipped in the header CRC", "ebzip.decompress(flip(S, L['header_len']))"),
    ("decompress: stream", "one bit flipped in the codebook", "ebzip.decompress(flip(S, L['codebook'] + 3))"),
    ("decompress: stream", "one bit flipped in the chunk table", "ebzip.decompress(flip(S, L['table'] + 9))"),
    ("decompress: stream", "one bit flipped in a chunk", "ebzip.decompress(flip(S, L['payload'] + 5))"),
    ("decompress: stream", "one bit flipped in the last byte", "ebzip.decompress(flip(S, len(S) - 1))"),
    ("decompress: forged (valid CRCs)", "newer format version (this build's + 1)",
     "ebzip.decompress(forge_header(S, version=ebzip.FORMAT_VERSION + 1))"),
    ("decompress: forged (valid CRCs)", "unknown dtype code", "ebzip.decompress(forge_header(S, dtype=9))"),
    ("decompress: forged (valid CRCs)", "unknown mode code", "ebzip.decompress(forge_header(S, mode=7))"),
    ("decompress: forged (valid CRCs)", "bound = 0 in a lossy stream", "ebzip.decompress(forge_header(S, eb_abs=0.0))"),
    ("decompress: forged (valid CRCs)", "radius 0", "ebzip.decompress(forge_header(S, radius=0))"),
    ("decompress: forged (valid CRCs)", "block size changed", "ebzip.decompress(forge_header(S, block_elems=7))"),
    ("decompress: forged (valid CRCs)", "shape 2**40 (a 100-value stream)", "ebzip.decompress(forged_huge_shape())"),
    ("decompress: forged (valid CRCs)", "shape 2**22 in one chunk (a 100-value stream)",
     "ebzip.decompress(forged_big_shape_one_chunk())"),
    ("decompress: out=", "wrong shape", "ebzip.decompress(S, out=np.empty(999, np.float32))"),
    ("decompress: out=", "wrong dtype", "ebzip.decompress(S, out=np.empty((10, 100), np.float64))"),
    ("decompress: out=", "non-contiguous", "ebzip.decompress(S, out=np.empty((100, 10), np.float32).T)"),
    ("decompress: out=", "read-only", "ebzip.decompress(S, out=np.frombuffer(bytes(4000), np.float32).reshape(10, 100))"),
    ("decompress: out=", "a list", "ebzip.decompress(S, out=[0.0] * 1000)"),
    ("inspect", "one bit flipped in a chunk (inspect reads the header and table only)",
     "ebzip.inspect(flip(S, L['payload'] + 5))['shape']"),
]


def _result(value) -> str:
    if isinstance(value, ebzip.Compressed):
        return f"ok: {value.pipeline} stream of {value.nbytes} bytes, eb_abs {value.eb_abs:.6g}"
    if isinstance(value, np.ndarray):
        return f"ok: {value.dtype} array of shape {value.shape}"
    return f"ok: {value!r}"


def run_case(code: str) -> tuple[str, str]:
    env = dict(globals())
    try:
        value = eval(code, env)  # noqa: S307 - our own table of calls
    except Exception as e:  # noqa: BLE001 - recorded
        t = type(e)
        name = "ebzip.StreamError" if t is ebzip.StreamError else t.__name__
        return name, str(e)
    return "(none)", _result(value)


def cli_rows() -> list[tuple[str, str, str, str]]:
    """`ebzip verify` / `ebzip decompress` on damaged and mismatched files (exit code and last line)."""
    rows = []
    with tempfile.TemporaryDirectory() as d:
        orig = os.path.join(d, "x.f32")
        X.tofile(orig)
        good = os.path.join(d, "x.ebz")
        with open(good, "wb") as f:
            f.write(S)
        bad = os.path.join(d, "bad.ebz")
        with open(bad, "wb") as f:
            f.write(flip(S, L["payload"] + 5))
        other = os.path.join(d, "other.f32")
        (X + np.float32(0.01)).tofile(other)
        trunc = os.path.join(d, "trunc.ebz")
        with open(trunc, "wb") as f:
            f.write(S[:-10])
        cases = [
            ("stream intact", ["verify", "x.f32", "x.ebz"]),
            ("one bit flipped in a chunk", ["verify", "x.f32", "bad.ebz"]),
            ("truncated file", ["verify", "x.f32", "trunc.ebz"]),
            ("stream of a different array", ["verify", "other.f32", "x.ebz"]),
            ("decompress a damaged file", ["decompress", "-z", "bad.ebz", "-o", "out.f32"]),
        ]
        for what, args in cases:
            p = subprocess.run([sys.executable, "-m", "ebzip", *args], cwd=d, capture_output=True, text=True,
                               timeout=120)
            lines = [ln for ln in (p.stdout + p.stderr).strip().splitlines() if ln.strip()]
            rows.append(("CLI", what, "`ebzip " + " ".join(args) + "`", f"exit {p.returncode}",
                         lines[-1] if lines else ""))
    return rows


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render() -> str:
    out = io.StringIO()
    out.write("# What you get for bad input\n\n"
              "Generated by `python docs/make_errors_table.py` (do not edit by hand; "
              "`tests/test_reliability.py` fails when this file is stale). Every row is a real call; "
              "the last column is the exact exception message, or the result for inputs that are accepted.\n\n"
              "Rules the table shows:\n\n"
              "- A bad **stream** (truncated, corrupted, foreign, forged, newer format) raises `ebzip.StreamError`, "
              "a subclass of `ValueError`. Every byte of a stream is covered by a CRC-32, so any damage to up to "
              "32 consecutive bits is detected (`bench/bitflip.py`: 100% of random single-byte corruptions). "
              "A version field that was damaged reads as a newer format (the version is checked before the "
              "header CRC, since a newer header may be laid out differently).\n"
              "- A bad **argument** raises `ValueError` (a value out of range) or `TypeError` (a wrong kind), "
              "saying what to change.\n"
              "- `ebzip.inspect` checks the header and chunk table CRCs, not the chunks: it is cheap, and a damaged "
              "chunk is found by `decompress`.\n"
              "- A forged header (valid CRCs) that declares a large shape makes `decompress` allocate that output "
              "before the chunks are found inconsistent. For untrusted input, check `ebzip.inspect(s)['shape']` "
              "before decompressing.\n"
              "- `ebzip verify ORIG STREAM` is the safety net after any compression: it decodes the stream, checks "
              "every element against the recorded bound and exits 1 on any violation or damage.\n\n")
    rows = [(g, what, f"`{code}`", *run_case(code)) for g, what, code in CASES]
    rows += cli_rows()
    group = None
    for g, what, code, exc, msg in rows:
        if g != group:
            out.write(f"\n## {g}\n\n| input | call | raises | message / result |\n|---|---|---|---|\n")
            group = g
        out.write(f"| {_md(what)} | {_md(code)} | {_md(exc)} | {_md(msg)} |\n")
    return out.getvalue()


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        with open(DOC) as f:
            if f.read() != text:
                print("docs/errors.md is stale: run python docs/make_errors_table.py", file=sys.stderr)
                return 1
        return 0
    with open(DOC, "w") as f:
        f.write(text)
    print(f"wrote {DOC} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
