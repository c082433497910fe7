"""HDF5 support: the ebzip filter, its h5py class, and chunk I/O that needs no plugin.

An ebzip-compressed HDF5 dataset is a chunked dataset whose filter pipeline
holds the ebzip filter, id :data:`FILTER_ID`, and each of whose chunks is
exactly one ebzip stream of that chunk (the full chunk shape, edge chunks
padded), so every chunk decodes on its own.

Two ways to read and write such datasets:

* **Direct chunk I/O** (always works, needs only h5py): :func:`write`,
  :func:`read`, :func:`iter_chunks`. The compression happens in ebzip and the
  stream goes to the file through ``write_direct_chunk`` /
  ``read_direct_chunk``. This is what the ``ebzip`` command line uses.
* **The filter plugin** (when it was built: HDF5 headers at build time): with
  it, plain h5py reads ebzip datasets transparently and writes them with
  ``compression=ebzip.h5.EBZip(eb=..., mode=...)``; ``import ebzip.h5``
  registers it with h5py, and :data:`PLUGIN_PATH` is the folder to put in
  ``HDF5_PLUGIN_PATH`` for ``h5dump``, ``h5repack`` and other HDF5 programs.
  h5py cannot run a filter written in Python, so without the plugin plain
  ``dset[...]`` reads of ebzip datasets fail with HDF5's "filter not
  available" error; use :func:`read`.

Filter parameters (``cd_values``, 32-bit unsigned integers):

====== ==========================================================
index  meaning
====== ==========================================================
0      layout version of these values (1)
1      mode: 0 abs, 1 rel, 2 psnr (as in the stream header)
2, 3   the bound as given, float64 (low word, high word)
4, 5   the absolute bound applied to every chunk, float64; negative
       when each chunk was compressed with its own bound (``mode``
       applied per chunk, as plain h5py writes through the plugin do)
6      dtype code (0 f32, 1 f64, 2 f16, 3 bf16)  } filled in by the plugin's
7      number of chunk dimensions               } set_local, or by
8...   chunk dimensions                          } :func:`create_dataset`
====== ==========================================================
"""

from __future__ import annotations

import ctypes
import itertools
import math
import os
import struct
from dataclasses import dataclass

import numpy as np

try:
    import h5py
    from h5py import h5z
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("ebzip.h5 needs h5py: pip install 'ebzip[hdf5]'") from e

from . import api

#: The ebzip HDF5 filter id. HDF5 leaves 256-511 to filters used for testing or
#: not (yet) registered with The HDF Group; this is the one place it is set
#: (csrc/h5/ reads it from this line at build time).
FILTER_ID = 491
FILTER_NAME = "ebzip"
CD_LAYOUT_VERSION = 1
_N_FIXED_CD = 6

DTYPE_CODES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}

_HERE = os.path.dirname(os.path.abspath(__file__))
#: Folder holding the compiled filter plugin (``HDF5_PLUGIN_PATH`` for HDF5
#: programs); None when the plugin was not built.
PLUGIN_PATH: str | None = None
#: The plugin library itself, or None.
PLUGIN_FILE: str | None = None
for _name in ("libebzip_h5filter.so", "libebzip_h5filter.dylib", "ebzip_h5filter.dll"):
    _cand = os.path.join(_HERE, "h5plugin", _name)
    if os.path.isfile(_cand):
        PLUGIN_PATH, PLUGIN_FILE = os.path.dirname(_cand), _cand
        break

_registered = False
_plugin_lib = None


def register(force: bool = False) -> bool:
    """Register the compiled filter with h5py's HDF5 (done at import). False if not built."""
    global _registered, _plugin_lib
    if _registered and not force:
        return True
    if PLUGIN_FILE is None:
        return False
    if h5z.filter_avail(FILTER_ID) and not force:
        _registered = True  # already there (e.g. loaded through HDF5_PLUGIN_PATH)
        return True
    lib = ctypes.CDLL(PLUGIN_FILE)
    lib.H5PLget_plugin_info.restype = ctypes.c_void_p
    h5z.register_filter(lib.H5PLget_plugin_info())
    _plugin_lib = lib
    _registered = True
    return True


def plugin_available() -> bool:
    """True when HDF5 in this process can run the ebzip filter (plain h5py reads/writes work)."""
    return bool(h5z.filter_avail(FILTER_ID))


# ------------------------------------------------------------------ parameters


def _f64_words(x: float) -> tuple[int, int]:
    lo, hi = struct.unpack("<II", struct.pack("<d", float(x)))
    return lo, hi


def _words_f64(lo: int, hi: int) -> float:
    return struct.unpack("<d", struct.pack("<II", int(lo) & 0xFFFFFFFF, int(hi) & 0xFFFFFFFF))[0]


@dataclass(frozen=True)
class FilterParams:
    """What the ebzip filter of a dataset says (decoded ``cd_values``)."""

    mode: str
    eb: float
    eb_abs: float | None  # None: each chunk carries its own bound
    dtype: str | None = None
    chunks: tuple | None = None

    def cd_values(self) -> tuple:
        lo, hi = _f64_words(self.eb)
        alo, ahi = _f64_words(-1.0 if self.eb_abs is None else self.eb_abs)
        values = [CD_LAYOUT_VERSION, api.MODES[self.mode], lo, hi, alo, ahi]
        if self.dtype is not None and self.chunks is not None:
            values += [DTYPE_CODES[self.dtype], len(self.chunks), *self.chunks]
        return tuple(values)

    @classmethod
    def from_cd_values(cls, values) -> "FilterParams":
        v = [int(x) for x in values]
        if len(v) < _N_FIXED_CD or v[0] != CD_LAYOUT_VERSION:
            raise ValueError(f"unknown ebzip filter parameters {tuple(v)}")
        eb_abs = _words_f64(v[4], v[5])
        dtype = chunks = None
        if len(v) >= _N_FIXED_CD + 2:
            names = {c: n for n, c in DTYPE_CODES.items()}
            dtype = names.get(v[6])
            chunks = tuple(v[8:8 + v[7]])
        return cls(api.MODE_NAMES.get(v[1], "?"), _words_f64(v[2], v[3]), None if eb_abs < 0 else eb_abs,
                   dtype, chunks)

    def describe(self) -> str:
        if self.mode == "abs":
            return f"abs {self.eb:g}"
        if self.eb_abs is None:
            return f"{self.mode} {self.eb:g} (per chunk)"
        return f"{self.mode} {self.eb:g} (abs {self.eb_abs:.4g})"


class EBZip(h5py.filters.FilterRefBase):
    """The ebzip filter for h5py's ``create_dataset(..., compression=EBZip(eb=1e-3, mode="rel"))``.

    Plain h5py writes need the compiled plugin (:func:`plugin_available`);
    each chunk is then compressed on its own, so ``rel`` and ``psnr`` bounds
    are relative to each stored chunk's value range (for a partial edge chunk
    that includes the fill value HDF5 pads it with). For a bound relative to
    the whole dataset, write with :func:`write` (or ``ebzip compress``), which
    needs no plugin, or give ``eb_abs``.
    ``eb_abs`` fixes the absolute bound for every chunk (``mode`` and ``eb``
    are then recorded for reference).
    """

    filter_id = FILTER_ID

    def __init__(self, eb: float = 1e-3, mode: str = "rel", eb_abs: float | None = None):
        eb = api.check_bound(eb, mode)
        if eb_abs is not None:
            eb_abs = api.check_bound(eb_abs, "abs")
        self.params = FilterParams(mode, eb, eb_abs)
        self.filter_options = self.params.cd_values()

    def __repr__(self) -> str:
        return f"EBZip({self.params.describe()})"


def filter_params(dset) -> FilterParams | None:
    """The ebzip filter parameters of a dataset, or None if it has no ebzip filter."""
    if dset.chunks is None:
        return None
    plist = dset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code, _flags, values, _name = plist.get_filter(i)
        if code == FILTER_ID:
            return FilterParams.from_cd_values(values)
    return None


def is_ebzip(dset) -> bool:
    return filter_params(dset) is not None


def is_float_dtype(dt) -> bool:
    dt = np.dtype(dt)
    return dt.kind == "f" and dt.itemsize in (2, 4, 8) and dt.names is None


# ------------------------------------------------------------------ chunks


def chunk_grid(shape, chunks):
    """Offsets of every chunk of a dataset of this shape (C order)."""
    return itertools.product(*(range(0, s, c) for s, c in zip(shape, chunks)))


def chunk_region(offset, shape, chunks) -> tuple:
    return tuple(slice(o, min(o + c, s)) for o, c, s in zip(offset, chunks, shape))


def auto_chunks(shape, itemsize: int, target_bytes: int = 2 << 20) -> tuple:
    """A chunk shape for a contiguous dataset: about ``target_bytes``, trailing axes whole when they fit."""
    chunks = [max(1, int(s)) for s in shape]
    target = max(1, target_bytes // itemsize)
    for axis in range(len(chunks)):
        inner = math.prod(chunks[axis + 1:])
        if math.prod(chunks) <= target:
            break
        chunks[axis] = max(1, min(chunks[axis], target // max(inner, 1)))
    return tuple(chunks)


def pad_chunk(block: np.ndarray, chunks, fill=None) -> np.ndarray:
    """Pad an edge chunk to the full chunk shape: with ``fill`` when given (see :func:`growth_fill`),
    else by repeating its last values (cheap to compress)."""
    if tuple(block.shape) == tuple(chunks):
        return np.ascontiguousarray(block)
    pad = [(0, c - s) for s, c in zip(block.shape, chunks)]
    if fill is not None:
        return np.pad(block, pad, mode="constant", constant_values=np.asarray(fill, dtype=block.dtype))
    if block.size == 0:
        return np.zeros(chunks, dtype=block.dtype)
    return np.pad(block, pad, mode="edge")


def growth_fill(dset):
    """What edge-chunk padding must hold for ``dset``: once a resizable dataset grows, HDF5 shows the
    padding as data, so it must be the fill value there; None (edge values) for one that cannot grow."""
    maxshape = dset.maxshape or dset.shape
    if all(m == s for m, s in zip(maxshape, dset.shape)):
        return None
    return 0 if dset.fillvalue is None else dset.fillvalue


def encode_chunk(block: np.ndarray, chunks, params: FilterParams, *, threads: int = 1,
                 value_range: float | None = None, fill=None) -> bytes:
    """The stored bytes of one chunk: an ebzip stream of the (padded) chunk.

    ``params.eb_abs`` set: that absolute bound. Otherwise ``mode``/``eb``
    per chunk; for ``psnr`` with ``value_range`` (of the whole dataset) the
    PSNR over the chunk's real elements is measured against that range and
    the bound tightened until it holds, so the dataset's PSNR holds too.
    """
    full = pad_chunk(block, chunks, fill)
    if params.eb_abs is not None:
        return bytes(api.compress(full, params.eb_abs, "abs", threads=threads))
    c = api.compress(full, params.eb, params.mode, threads=threads)
    if params.mode == "psnr" and value_range and block.size:
        region = tuple(slice(0, s) for s in block.shape)
        x = block.astype(np.float64)
        fin = np.isfinite(x)
        eb_abs = c.eb_abs
        for _ in range(8):
            y = api.decompress(c, threads=threads)[region].astype(np.float64)
            d = (x - y)[fin]
            mse = float(np.mean(d * d)) if d.size else 0.0
            if mse == 0 or 20 * math.log10(value_range) - 10 * math.log10(mse) >= params.eb:
                break
            eb_abs *= 0.5
            c = api.compress(full, eb_abs, "abs", threads=threads)
    return bytes(c)


def threads_for(n_elems: int, block_elems: int = 1 << 18, threads: int | None = None) -> int:
    """Threads worth using on one stream: no more than its independent blocks (a thread
    team costs more than it gives on a one-block chunk, the more so on a busy machine)."""
    want = threads or api.get_num_threads()
    return max(1, min(want, -(-int(n_elems) // max(1, int(block_elems)))))


def decode_chunk(payload, dset_dtype, chunks, threads: int | None = None) -> np.ndarray:
    """Decode one stored chunk and check it is what the dataset says it is."""
    head = api.inspect(payload)
    # checked from the header, before decoding: a forged chunk could claim 2**32 elements
    if tuple(head["shape"]) != tuple(chunks):
        raise api.StreamError(f"chunk holds shape {tuple(head['shape'])}, the dataset's chunks are {tuple(chunks)}")
    if np.dtype(dset_dtype).kind != "f" or head["dtype"] != f"float{8 * np.dtype(dset_dtype).itemsize}":
        raise api.StreamError(f"chunk holds {head['dtype']}, the dataset is {dset_dtype}")
    return api.decompress(payload, threads=threads_for(math.prod(head["shape"]), head["block_elems"], threads))


def _chunk_allocated(dset, offset) -> bool:
    try:
        info = dset.id.get_chunk_info_by_coord(tuple(offset))
    except Exception:  # pragma: no cover - old HDF5
        return True
    return info.byte_offset is not None


def _fill_block(dset, shape) -> np.ndarray:
    fv = dset.fillvalue
    return np.full(shape, fv if fv is not None else 0, dtype=dset.dtype)


def read_chunk(dset, offset) -> np.ndarray:
    """One chunk of an ebzip dataset, decoded and cropped to the dataset's extent."""
    region = chunk_region(offset, dset.shape, dset.chunks)
    shape = tuple(r.stop - r.start for r in region)
    if not _chunk_allocated(dset, offset):
        return _fill_block(dset, shape)
    mask, payload = dset.id.read_direct_chunk(tuple(offset))
    if mask & 1:  # the filter was skipped for this chunk (optional filter that failed): raw bytes
        full = np.frombuffer(payload, dtype=dset.dtype).reshape(dset.chunks)
    else:
        full = decode_chunk(payload, dset.dtype, dset.chunks)
    return np.asarray(full[tuple(slice(0, s) for s in shape)], dtype=dset.dtype)


def iter_chunks(dset):
    """Yield ``(region, block)`` for every chunk of a dataset, decoded (ebzip datasets
    through direct chunk reads; any other dataset through h5py)."""
    if dset.shape is None or dset.size == 0:
        return
    ebz = is_ebzip(dset)
    chunks = dset.chunks or auto_chunks(dset.shape, dset.dtype.itemsize)
    for offset in chunk_grid(dset.shape, chunks):
        region = chunk_region(offset, dset.shape, chunks)
        yield region, (read_chunk(dset, offset) if ebz else dset[region])


def read(dset, selection=None, out: np.ndarray | None = None) -> np.ndarray:
    """Read an ebzip dataset (or any dataset) without the filter plugin.

    ``selection``: None for everything, or a tuple of slices with step 1 (an
    int picks one index and drops that axis). ``out``: a writable C-contiguous
    array of the result's shape and the dataset's dtype, filled and returned.
    """
    if not is_ebzip(dset):
        data = dset[()] if selection is None else dset[selection]
        if out is None:
            return data
        _check_out(out, np.shape(data), dset.dtype)
        out[...] = data
        return out
    shape = dset.shape
    if selection is None:
        selection = ()
    if not isinstance(selection, tuple):
        selection = (selection,)
    if len(selection) > len(shape):
        raise IndexError(f"too many indices for a dataset of {len(shape)} dimensions")
    sel, drop = [], []
    for axis, n in enumerate(shape):
        s = selection[axis] if axis < len(selection) else slice(None)
        if isinstance(s, (int, np.integer)):
            i = int(s) + (n if s < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {s} out of range for axis {axis} of size {n}")
            sel.append((i, i + 1))
            drop.append(axis)
        elif isinstance(s, slice):
            start, stop, step = s.indices(n)
            if step != 1:
                raise ValueError("ebzip.h5.read supports slices with step 1; slice the result for more")
            sel.append((start, max(start, stop)))
        else:
            raise TypeError(f"unsupported selection {s!r}: use ints and slices")
    out_shape = tuple(b - a for a, b in sel)
    if out is not None:
        _check_out(out, tuple(n for axis, n in enumerate(out_shape) if axis not in drop), dset.dtype)
    result = np.empty(out_shape, dtype=dset.dtype) if out is None else out.reshape(out_shape)  # (a view)
    if result.size:
        chunks = dset.chunks
        ranges = [range((a // c) * c, b, c) for (a, b), c in zip(sel, chunks)]
        for offset in itertools.product(*ranges):
            block = read_chunk(dset, offset)
            src, dst = [], []
            for o, (a, b), n in zip(offset, sel, block.shape):
                lo, hi = max(a, o), min(b, o + n)
                src.append(slice(lo - o, hi - o))
                dst.append(slice(lo - a, hi - a))
            result[tuple(dst)] = block[tuple(src)]
    if out is not None:
        return out
    keep = tuple(0 if i in drop else slice(None) for i in range(len(shape)))
    return result[keep] if drop else result


def _check_out(out, shape: tuple, dtype) -> None:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array; got {type(out).__name__}")
    if out.shape != tuple(shape) or out.dtype != dtype:
        raise ValueError(f"out has shape {out.shape} / {out.dtype}; the selection is {tuple(shape)} / {dtype}")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("out must be a writable C-contiguous array")


# ------------------------------------------------------------------ writing


def create_dataset(group, name: str, shape, dtype, params: FilterParams, chunks=None, *, maxshape=None,
                   fillvalue=None):
    """Create an empty ebzip dataset (no plugin needed); fill it with :func:`write_chunk`."""
    dtype = np.dtype(dtype)
    if not is_float_dtype(dtype):
        raise TypeError(f"ebzip compresses float16/32/64 datasets; got {dtype}")
    dtype = dtype.newbyteorder("<")
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        raise ValueError("a scalar dataset cannot be chunked; store it as it is")
    chunks = tuple(int(c) for c in (chunks or auto_chunks(shape, dtype.itemsize)))
    name_dtype = {2: "float16", 4: "float32", 8: "float64"}[dtype.itemsize]
    full = FilterParams(params.mode, params.eb, params.eb_abs, name_dtype, chunks)
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_obj_track_times(False)  # no timestamps: the same data gives the same file (h5py's default too)
    dcpl.set_chunk(chunks)
    if fillvalue is not None:
        dcpl.set_fill_value(np.array(fillvalue, dtype=dtype))
    dcpl.set_filter(FILTER_ID, h5z.FLAG_OPTIONAL, full.cd_values())
    if maxshape is None:
        maxshape = shape
    space = h5py.h5s.create_simple(shape, tuple(h5py.h5s.UNLIMITED if m is None else m for m in maxshape))
    tid = h5py.h5t.py_create(dtype)
    lcpl = h5py.h5p.create(h5py.h5p.LINK_CREATE)
    lcpl.set_create_intermediate_group(True)
    dsid = h5py.h5d.create(group.id, name.encode("utf-8"), tid, space, dcpl=dcpl, lcpl=lcpl)
    return h5py.Dataset(dsid)


def write_chunk(dset, offset, payload: bytes) -> None:
    dset.id.write_direct_chunk(tuple(int(o) for o in offset), payload, 0)


def value_range(blocks) -> float | None:
    """Range (max - min) of the finite values over an iterable of blocks; None if none is finite."""
    lo, hi = math.inf, -math.inf
    for b in blocks:
        lo_b, hi_b = finite_minmax(b)
        lo, hi = min(lo, lo_b), max(hi, hi_b)
    if lo > hi:
        return None
    r = hi - lo
    return r if math.isfinite(r) else float(np.finfo(np.float64).max)


def finite_minmax(block) -> tuple[float, float]:
    """(min, max) of the finite values of a block; (inf, -inf) when there are none."""
    b = np.asarray(block)
    if b.size == 0:
        return math.inf, -math.inf
    fin = np.isfinite(b)
    if not fin.all():
        b = b[fin]
        if b.size == 0:
            return math.inf, -math.inf
    return float(b.min()), float(b.max())


def resolve_params(mode: str, eb: float, vrange: float | None) -> FilterParams:
    """The filter parameters for a whole dataset whose finite values span ``vrange``.

    ``rel`` becomes one absolute bound for every chunk (relative to the whole
    dataset, as ``ebzip.compress`` would give the whole array); ``abs`` is
    itself; ``psnr`` is resolved per chunk (see :func:`encode_chunk`).
    """
    eb = api.check_bound(eb, mode)
    if mode == "abs":
        return FilterParams("abs", eb, eb)
    if mode == "rel":
        return FilterParams("rel", eb, eb * (vrange or 0.0))
    return FilterParams("psnr", eb, None)


def write(group, name: str, data, eb: float, mode: str = "rel", chunks=None, *, threads: int | None = None,
          **kwargs):
    """Create ``group[name]`` as an ebzip dataset holding ``data`` (no plugin needed).

    The bound is relative to the whole array in ``rel`` mode. Returns the dataset.
    """
    arr = np.asarray(data)
    vr = value_range([arr]) if mode != "abs" else None
    params = resolve_params(mode, eb, vr)
    dset = create_dataset(group, name, arr.shape, arr.dtype, params, chunks, **kwargs)
    fill = growth_fill(dset)
    for offset in chunk_grid(arr.shape, dset.chunks):
        region = chunk_region(offset, arr.shape, dset.chunks)
        write_chunk(dset, offset, encode_chunk(arr[region], dset.chunks, params,
                                               threads=threads_for(math.prod(dset.chunks), threads=threads),
                                               value_range=vr, fill=fill))
    return dset


def chunk_headers(dset, limit: int | None = None):
    """Headers (``ebzip.inspect`` dicts) of the stored chunks of an ebzip dataset, up to ``limit``."""
    out = []
    for offset in chunk_grid(dset.shape, dset.chunks):
        if limit is not None and len(out) >= limit:
            break
        if not _chunk_allocated(dset, offset):
            continue
        mask, payload = dset.id.read_direct_chunk(tuple(offset))
        if not mask & 1:
            out.append(api.inspect(payload))
    return out


register()
