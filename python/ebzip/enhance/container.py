"""The enhancer container: base ebzip streams plus, per field, a learned enhancer.

Pure Python (no torch): the plain reconstructions can be read without it.
Layout (all integers little-endian; docs/format.md, "Enhancer container"):

    "EBZN"  u16 container version  u16 reserved (0)  u32 n sections
    n x (u8 kind, u8 reserved[3], u32 field index, u64 length, u32 CRC-32 of the payload)
    u32 CRC-32 of everything above
    the sections' payloads back to back, to the end of the container

Every section (kinds in ``KINDS``) has its own CRC-32; the total length must
match the table. Anything wrong raises ``ebzip.StreamError``.
"""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np

from ..api import StreamError

MAGIC = b"EBZN"
VERSION = 1
_HEAD = struct.Struct("<4sHHI")
_ENTRY = struct.Struct("<B3xIQI")

# section kinds
META, BASE, WEIGHTS, NORM, FALLBACK = 1, 2, 3, 4, 5
KINDS = {META: "meta", BASE: "base", WEIGHTS: "weights", NORM: "norm", FALLBACK: "fallback"}
MAX_SECTIONS = 1 << 16
MAX_META = 1 << 24

# fallback position encodings (first byte of a FALLBACK section)
FB_NONE, FB_BITMASK, FB_DELTAS = 0, 1, 2


def is_container(data) -> bool:
    try:
        return bytes(memoryview(data)[:4]) == MAGIC
    except TypeError:
        return False


def pack(sections: list[tuple[int, int, bytes]]) -> bytes:
    """sections: (kind, field index, payload) in order."""
    head = _HEAD.pack(MAGIC, VERSION, 0, len(sections))
    table = b"".join(_ENTRY.pack(k, f, len(p), zlib.crc32(p)) for k, f, p in sections)
    prefix = head + table
    return prefix + struct.pack("<I", zlib.crc32(prefix)) + b"".join(p for _, _, p in sections)


def unpack(data) -> list[tuple[int, int, memoryview]]:
    """The sections of a container, every length and CRC checked."""
    buf = memoryview(data).cast("B")
    if len(buf) < _HEAD.size + 4:
        raise StreamError("enhancer container truncated: shorter than its header")
    magic, version, reserved, n = _HEAD.unpack_from(buf, 0)
    if magic != MAGIC:
        raise StreamError("not an ebzip enhancer container (bad magic)")
    if version != VERSION:
        raise StreamError(f"enhancer container version {version} is not supported (this ebzip reads {VERSION}); "
                          "a newer ebzip wrote it" if version > VERSION else f"unknown enhancer container version {version}")
    if n > MAX_SECTIONS:
        raise StreamError(f"enhancer container claims {n} sections (corrupted)")
    table_end = _HEAD.size + n * _ENTRY.size
    if len(buf) < table_end + 4:
        raise StreamError("enhancer container truncated inside its section table")
    (crc,) = struct.unpack_from("<I", buf, table_end)
    if zlib.crc32(buf[:table_end]) != crc or reserved != 0:
        raise StreamError("enhancer container header/section table corrupted (CRC mismatch)")
    pos = table_end + 4
    out = []
    for i in range(n):
        kind, field, length, crc = _ENTRY.unpack_from(buf, _HEAD.size + i * _ENTRY.size)
        if kind not in KINDS:
            raise StreamError(f"enhancer container section {i} has unknown kind {kind}")
        if length > len(buf) - pos:
            raise StreamError(f"enhancer container truncated in section {i} ({KINDS[kind]})")
        payload = buf[pos:pos + length]
        if zlib.crc32(payload) != crc:
            raise StreamError(f"enhancer container section {i} ({KINDS[kind]}, field {field}) corrupted (CRC mismatch)")
        out.append((kind, field, payload))
        pos += length
    if pos != len(buf):
        raise StreamError(f"enhancer container has {len(buf) - pos} trailing bytes after its last section")
    return out


def meta_payload(meta: dict) -> bytes:
    """The meta section: compact JSON, zlib-compressed (it is a few hundred bytes per field)."""
    return zlib.compress(json.dumps(meta, separators=(",", ":")).encode(), 9)


def read(data) -> tuple[dict, dict]:
    """(meta JSON, {(kind, field): payload}) with the structure checked."""
    sections = unpack(data)
    if not sections or sections[0][0] != META:
        raise StreamError("enhancer container: the first section must be the meta section")
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(bytes(sections[0][2]), MAX_META)
        if inflater.unconsumed_tail or not inflater.eof:
            raise ValueError("meta larger than 16 MiB or incomplete")
        meta = json.loads(text.decode("utf-8"))
        fields = meta["fields"]
        if not isinstance(fields, list) or not fields:
            raise ValueError("no fields")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, zlib.error) as e:
        raise StreamError(f"enhancer container: meta section unreadable ({e})") from None
    by_key = {}
    for kind, field, payload in sections[1:]:
        if kind == META or field >= len(fields) or (kind, field) in by_key:
            raise StreamError(f"enhancer container: unexpected {KINDS[kind]} section for field {field}")
        by_key[(kind, field)] = payload
    for i in range(len(fields)):
        if (BASE, i) not in by_key:
            raise StreamError(f"enhancer container: field {i} has no base stream")
    return meta, by_key


# ---------------------------------------------------------------- fallback positions

def encode_positions(mask: np.ndarray) -> bytes:
    """The flat positions where mask is True, in whichever of two encodings is smaller.

    FB_BITMASK: np.packbits of the mask; FB_DELTAS: gaps between positions as
    LEB128 varints. Either then zstd-compressed (level 19). Byte 0 says which.
    """
    import zstandard

    flat = np.ascontiguousarray(mask.reshape(-1), dtype=bool)
    idx = np.flatnonzero(flat)
    if idx.size == 0:
        return bytes([FB_NONE])
    z = zstandard.ZstdCompressor(level=19)
    bitmask = z.compress(np.packbits(flat).tobytes())
    deltas = z.compress(_varints(np.diff(idx, prepend=-1) - 1))
    return bytes([FB_BITMASK]) + bitmask if len(bitmask) <= len(deltas) else bytes([FB_DELTAS]) + deltas


def decode_positions(payload, n: int) -> np.ndarray:
    """Boolean mask of n elements from :func:`encode_positions` bytes (StreamError if malformed)."""
    import zstandard

    payload = bytes(payload)
    if not payload:
        raise StreamError("enhancer container: empty fallback section")
    kind = payload[0]
    if kind == FB_NONE:
        if len(payload) != 1:
            raise StreamError("enhancer container: malformed fallback section")
        return np.zeros(n, dtype=bool)
    limit = (n + 7) // 8 if kind == FB_BITMASK else 10 * n
    try:
        raw = zstandard.ZstdDecompressor().decompress(payload[1:], max_output_size=limit)
    except zstandard.ZstdError as e:
        raise StreamError(f"enhancer container: fallback positions unreadable ({e})") from None
    if kind == FB_BITMASK:
        if len(raw) != (n + 7) // 8:
            raise StreamError("enhancer container: fallback bitmask has the wrong length")
        return np.unpackbits(np.frombuffer(raw, dtype=np.uint8), count=n).astype(bool)
    if kind == FB_DELTAS:
        gaps = _from_varints(raw)
        # (each gap below n and at most n of them: the running sum cannot wrap int64 before the check)
        if gaps.size > n or (gaps.size and (gaps.min() < 0 or gaps.max() >= n)):
            raise StreamError("enhancer container: fallback position out of range")
        idx = np.cumsum(gaps + 1) - 1
        if idx.size and idx[-1] >= n:
            raise StreamError("enhancer container: fallback position out of range")
        out = np.zeros(n, dtype=bool)
        out[idx] = True
        return out
    raise StreamError(f"enhancer container: unknown fallback encoding {kind}")


def _varints(values: np.ndarray) -> bytes:
    """Unsigned LEB128 of each value (non-negative int64), vectorised by byte position."""
    v = values.astype(np.uint64)
    nbytes = np.ones(v.size, dtype=np.int64)
    t = v >> np.uint64(7)
    while t.any():
        nbytes += t > 0
        t >>= np.uint64(7)
    out = np.empty(int(nbytes.sum()), dtype=np.uint8)
    starts = np.cumsum(nbytes) - nbytes
    for k in range(int(nbytes.max()) if v.size else 0):
        has = nbytes > k
        byte = ((v[has] >> np.uint64(7 * k)) & np.uint64(0x7F)).astype(np.uint8)
        byte |= np.where(nbytes[has] > k + 1, 0x80, 0).astype(np.uint8)
        out[starts[has] + k] = byte
    return out.tobytes()


def _from_varints(raw: bytes) -> np.ndarray:
    b = np.frombuffer(raw, dtype=np.uint8)
    if b.size == 0:
        return np.zeros(0, dtype=np.int64)
    if b[-1] & 0x80:
        raise StreamError("enhancer container: fallback positions end inside a varint")
    ends = np.flatnonzero((b & 0x80) == 0)
    starts = np.concatenate([[0], ends[:-1] + 1])
    if int((ends - starts).max()) > 8:
        raise StreamError("enhancer container: fallback position varint too long")
    values = np.zeros(ends.size, dtype=np.uint64)
    for k in range(int((ends - starts).max()) + 1):
        pos = starts + k
        has = pos <= ends
        values[has] |= (b[pos[has]] & np.uint64(0x7F)).astype(np.uint64) << np.uint64(7 * k)
    return values.astype(np.int64)
