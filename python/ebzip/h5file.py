"""Whole HDF5 files: compress, decompress, verify, estimate and describe.

The engine behind ``ebzip compress/decompress/verify/estimate/info`` on HDF5
files, usable from Python too. Every floating-point dataset (that the
patterns select) becomes an ebzip dataset (see :mod:`ebzip.h5`); everything
else is copied as it is: groups and their creation properties, attributes
(with their HDF5 types), integer, string, compound and reference datasets
(chunks copied raw, so their filters and chunking are kept bit for bit), soft
and external links, hard links, dimension scales and their attachments, the
user block.

Work goes chunk by chunk, so memory stays bounded by a few chunks whatever
the file's size. Chunks are compressed by a local thread pool, or by the
workers of a ``dask.distributed`` cluster (``scheduler=``), which read the
input file themselves (it must be on a file system they can see); the
compressed chunks come back to this process, the single writer of the output.
"""

from __future__ import annotations

import collections
import fnmatch
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

try:
    import h5py
    from h5py import h5a, h5d, h5g, h5p, h5s, h5t
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("HDF5 support needs h5py: pip install 'ebzip[hdf5]'") from e

from . import _arrays, api, h5
from ._io import HDF5_SIGNATURE as _HDF5_SIGNATURE, atomic_output, is_hdf5_file

HDF5_SIGNATURE = _HDF5_SIGNATURE
_SKIP_ATTRS = {"DIMENSION_LIST", "REFERENCE_LIST"}  # rebuilt by attaching the scales again


class PatternError(ValueError):
    """A dataset pattern is malformed or selects nothing."""


def is_hdf5(path: str) -> bool:
    """True for an HDF5 file (signature at 0, 512, 1024, ... as a user block allows)."""
    return is_hdf5_file(path)


# ------------------------------------------------------------------ selection


def _match(pattern: str, path: str) -> bool:
    """A pattern with a '/' matches the whole path (leading '/' optional), one without matches the name."""
    if "/" in pattern:
        return fnmatch.fnmatchcase(path, pattern if pattern.startswith("/") else "/" + pattern)
    return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)


def parse_eb_for(items) -> list[tuple[str, float, str | None]]:
    """``PATTERN=VALUE`` or ``PATTERN=VALUE:MODE`` -> (pattern, eb, mode or None)."""
    out = []
    for item in items or ():
        if "=" not in item:
            raise PatternError(f"--eb-for wants PATTERN=VALUE[:MODE]; got {item!r}")
        pattern, value = item.rsplit("=", 1)
        mode = None
        if ":" in value:
            value, mode = value.split(":", 1)
            mode = mode.lower()
            if mode not in api.MODES:
                raise PatternError(f"--eb-for {item!r}: mode must be one of {sorted(api.MODES)}")
        if not pattern:
            raise PatternError(f"--eb-for {item!r}: empty pattern")
        try:
            eb = float(value)
        except ValueError:
            raise PatternError(f"--eb-for {item!r}: {value!r} is not a number") from None
        if eb == 0:  # "=0 stores exactly" whatever the mode (0 dB PSNR would be no bound at all)
            mode = "abs"
        api.check_bound(eb, mode or "abs")
        out.append((pattern, eb, mode))
    return out


@dataclass
class Selection:
    """Which floating-point datasets get compressed, and with which bound."""

    eb: float
    mode: str = "rel"
    include: tuple = ()
    exclude: tuple = ()
    eb_for: list = field(default_factory=list)

    def spec(self, path: str) -> tuple[float, str] | None:
        if self.include and not any(_match(p, path) for p in self.include):
            return None
        if any(_match(p, path) for p in self.exclude):
            return None
        eb, mode = self.eb, self.mode
        for pattern, value, m in self.eb_for:
            if _match(pattern, path):
                eb, mode = value, (m or self.mode)
        return eb, mode

    def check(self, paths) -> None:
        """Every pattern must select at least one floating-point dataset (a typo is an error)."""
        paths = list(paths)
        for kind, patterns in (("--include", self.include), ("--exclude", self.exclude),
                               ("--eb-for", [p for p, _, _ in self.eb_for])):
            for p in patterns:
                if not p:
                    raise PatternError(f"{kind}: empty pattern")
                if not any(_match(p, x) for x in paths):
                    shown = ", ".join(paths[:6]) + (" ..." if len(paths) > 6 else "")
                    raise PatternError(f"{kind} {p!r} matches no floating-point dataset "
                                       f"(there are: {shown or 'none'})")


# ------------------------------------------------------------------ walking a file


def walk_datasets(group, prefix: str = ""):
    """Yield (path, dataset) for every dataset reachable by hard links, each object once."""
    seen = set()

    def visit(g, base):
        for name in g:
            link = g.get(name, getlink=True)
            if not isinstance(link, h5py.HardLink):
                continue
            obj = g[name]
            if obj.id in seen:
                continue
            seen.add(obj.id)
            path = f"{base}/{name}"
            if isinstance(obj, h5py.Dataset):
                yield path, obj
            elif isinstance(obj, h5py.Group):
                yield from visit(obj, path)

    yield from visit(group, prefix)


def compressible(dset) -> bool:
    """A dataset ebzip compresses: float16/32/64, at least 1-D, not empty, holding its own data,
    and not a dimension scale (coordinates are copied exactly)."""
    if not h5.is_float_dtype(dset.dtype) or dset.shape is None or len(dset.shape) == 0 or dset.size == 0:
        return False
    if h5py.h5ds.is_scale(dset.id):
        return False
    return dset.id.get_create_plist().get_layout() != h5d.VIRTUAL


def _has_object(dt: np.dtype) -> bool:
    if dt.kind == "O":
        return True
    if dt.names:
        return any(_has_object(dt.fields[n][0]) for n in dt.names)
    if dt.subdtype is not None:
        return _has_object(dt.subdtype[0])
    return False


def _is_ref_dtype(dt) -> bool:
    return h5py.check_ref_dtype(dt) is not None


def _untimed(plist):
    """No creation/modification times in the object header (h5py's default too): the same input
    gives the same output file, byte for byte, whenever and wherever it is written."""
    plist.set_obj_track_times(False)
    return plist


def _lcpl():
    lcpl = h5p.create(h5p.LINK_CREATE)
    lcpl.set_char_encoding(h5t.CSET_UTF8)
    return lcpl


def _slabs(shape, itemsize, target=4 << 20):
    chunks = h5.auto_chunks(shape, itemsize, target)
    for offset in h5.chunk_grid(shape, chunks):
        yield h5.chunk_region(offset, shape, chunks)


def read_region(dset, region):
    return h5.read(dset, region) if h5.is_ebzip(dset) else dset[region]


class _Copier:
    """Copies a file's structure, handing each dataset to ``transform`` first.

    ``transform(src_dset, dst_group, name, path)`` creates the dataset in the
    output and returns it, or returns None to have it copied as it is.
    """

    def __init__(self, src, dst, transform, warn):
        self.src, self.dst, self.transform, self.warn = src, dst, transform, warn
        self.done: dict = {}  # src object id -> dst path
        self.deferred: list = []

    def run(self):
        self.copy_attrs(self.src, self.dst)
        self.done[self.src.id] = "/"
        self.copy_group(self.src, self.dst, "")
        for fn in self.deferred:
            fn()

    # attributes
    def copy_attrs(self, src_obj, dst_obj):
        for name in src_obj.attrs:
            if name in _SKIP_ATTRS:
                continue
            try:
                aid = h5a.open(src_obj.id, name.encode("utf-8"))
                if _is_ref_dtype(aid.dtype):
                    self.deferred.append(lambda s=src_obj, d=dst_obj, n=name: self._copy_ref_attr(s, d, n))
                    continue
                tid, sid = aid.get_type(), aid.get_space()
                new = h5a.create(dst_obj.id, name.encode("utf-8"), tid, sid)
                if sid.get_simple_extent_type() != h5s.NULL:
                    buf = np.empty(aid.shape, dtype=aid.dtype)
                    aid.read(buf)
                    new.write(buf)
            except Exception as e:  # keep going: report what could not be copied
                self.warn(f"attribute {src_obj.name}@{name} not copied: {e}")

    def _map_ref(self, ref):
        if not ref:
            return h5py.Reference()
        target = self.src[ref]
        path = self.done.get(target.id)
        if path is None:
            raise KeyError(f"reference to {target.name}, which was not copied")
        return self.dst[path].ref

    def _copy_ref_attr(self, src_obj, dst_obj, name):
        try:
            if h5py.check_ref_dtype(src_obj.attrs.get_id(name).dtype) is not h5py.Reference:
                raise TypeError("region references are not copied")
            vals = np.asarray(src_obj.attrs[name], dtype=object)
            mapped = np.empty(vals.shape, dtype=h5py.ref_dtype)
            for i, r in np.ndenumerate(vals):
                mapped[i] = self._map_ref(r)
            dst_obj.attrs.create(name, mapped, dtype=h5py.ref_dtype)
        except Exception as e:
            self.warn(f"attribute {src_obj.name}@{name} not copied: {e}")

    # groups and links
    def copy_group(self, src_group, dst_group, base):
        for name in src_group:
            path = f"{base}/{name}"
            link = src_group.get(name, getlink=True)
            bname = name.encode("utf-8")
            if isinstance(link, h5py.SoftLink):
                dst_group.id.links.create_soft(bname, link.path.encode("utf-8"), lcpl=_lcpl())
                continue
            if isinstance(link, h5py.ExternalLink):
                dst_group.id.links.create_external(bname, link.filename.encode("utf-8"),
                                                   link.path.encode("utf-8"), lcpl=_lcpl())
                continue
            obj = src_group[name]
            if obj.id in self.done:  # a second hard link to an object already copied
                dst_group.id.links.create_hard(bname, self.dst.id, self.done[obj.id].encode("utf-8"), lcpl=_lcpl())
                continue
            if isinstance(obj, h5py.Group):
                gid = h5g.create(dst_group.id, bname, lcpl=_lcpl(), gcpl=_untimed(obj.id.get_create_plist()))
                new = h5py.Group(gid)
                self.done[obj.id] = path
                self.copy_attrs(obj, new)
                self.copy_group(obj, new, path)
            elif isinstance(obj, h5py.Dataset):
                new = self.transform(obj, dst_group, name, path)
                if new is None:
                    new = self.copy_dataset(obj, dst_group, name, path)
                self.done[obj.id] = path
                self.copy_attrs(obj, new)
                if "DIMENSION_LIST" in obj.attrs:
                    self.deferred.append(lambda s=obj, p=path: self._attach_scales(s, p))
            elif isinstance(obj, h5py.Datatype):
                h5py.h5o.copy(src_group.id, bname, dst_group.id, bname, lcpl=_lcpl())
                self.done[obj.id] = path
            else:  # pragma: no cover
                self.warn(f"{path}: object of unknown kind not copied")

    def _attach_scales(self, src, path):
        dst = self.dst[path]
        for i in range(len(src.dims)):
            try:
                for scale in src.dims[i].values():
                    target = self.done.get(scale.id)
                    if target is None:
                        self.warn(f"{path}: dimension scale {scale.name} was not copied")
                        continue
                    dst.dims[i].attach_scale(self.dst[target])
            except Exception as e:
                self.warn(f"{path}: dimension scales of axis {i} not attached: {e}")

    # datasets as they are
    def copy_dataset(self, src, dst_group, name, path):
        dcpl = src.id.get_create_plist()
        layout = dcpl.get_layout()
        if layout != h5d.VIRTUAL and dcpl.get_external_count() > 0:
            # data kept in outside raw files: copy it in, so the output never writes into them
            fresh = h5p.create(h5p.DATASET_CREATE)
            if dcpl.fill_value_defined() == h5d.FILL_VALUE_USER_DEFINED:
                fv = np.zeros((), dtype=src.dtype)
                dcpl.get_fill_value(fv)
                fresh.set_fill_value(fv)
            dcpl = fresh
        dsid = h5d.create(dst_group.id, name.encode("utf-8"), src.id.get_type(), src.id.get_space(),
                          dcpl=_untimed(dcpl), lcpl=_lcpl())
        dst = h5py.Dataset(dsid)
        if layout == h5d.VIRTUAL or dst.shape is None or dst.size == 0:
            return dst  # a virtual dataset keeps its mapping to the source files; nothing to write
        if _is_ref_dtype(src.dtype):
            self.deferred.append(lambda: self._copy_ref_dataset(src, path))
            return dst
        if dst.chunks is not None and not _has_object(src.dtype) and hasattr(src.id, "chunk_iter"):
            offsets = []
            src.id.chunk_iter(lambda info: offsets.append(info.chunk_offset))
            for off in offsets:  # stored chunks copied raw: same filters, same bytes
                mask, payload = src.id.read_direct_chunk(off)
                dst.id.write_direct_chunk(off, payload, mask)
            return dst
        if len(src.shape) == 0:
            dst[()] = src[()]
            return dst
        for region in _slabs(src.shape, max(src.dtype.itemsize, 8)):
            dst[region] = src[region]
        return dst

    def _copy_ref_dataset(self, src, path):
        try:
            if h5py.check_ref_dtype(src.dtype) is not h5py.Reference:
                raise TypeError("region references are not copied")
            vals = np.asarray(src[()], dtype=object)
            mapped = np.empty(vals.shape, dtype=h5py.ref_dtype)
            for i, r in np.ndenumerate(vals):
                mapped[i] = self._map_ref(r)
            self.dst[path][()] = mapped
        except Exception as e:
            self.warn(f"{path}: references not copied: {e}")


# ------------------------------------------------------------------ chunk encoders


class LocalEncoder:
    """Compresses chunks in a thread pool (the core releases the GIL); reads and writes stay here."""

    def __init__(self, threads: int | None = None):
        self.threads = max(1, threads or api.get_num_threads())
        self.pool = ThreadPoolExecutor(self.threads) if self.threads > 1 else None
        self.depth = 2 * self.threads

    def minmax(self, src_path, dset, dset_path, regions):
        lo, hi = math.inf, -math.inf
        for region in regions:
            a, b = h5.finite_minmax(read_region(dset, region))
            lo, hi = min(lo, a), max(hi, b)
        return lo, hi

    def encode(self, src_path, dset, dset_path, regions, chunks, params, vrange):
        fill = h5.growth_fill(dset)

        def job(block):
            return h5.encode_chunk(block, chunks, params, threads=1, value_range=vrange, fill=fill)

        pending = collections.deque()
        for region in regions:
            block = read_region(dset, region)
            if self.pool is None:
                yield region, job(block)
                continue
            pending.append((region, self.pool.submit(job, block)))
            if len(pending) >= self.depth:
                r, fut = pending.popleft()
                yield r, fut.result()
        while pending:
            r, fut = pending.popleft()
            yield r, fut.result()

    def close(self):
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)


_worker_files: dict = {}


def _worker_dataset(src_path, dset_path):
    """The dataset, from a file each dask worker opens once (read-only)."""
    key = (os.path.realpath(src_path), os.stat(src_path).st_mtime_ns)
    f = _worker_files.get(key)
    if f is None or not f.id.valid:
        f = h5py.File(src_path, "r")
        _worker_files[key] = f
    return f[dset_path]


def _dask_minmax(src_path, dset_path, regions):
    dset = _worker_dataset(src_path, dset_path)
    lo, hi = math.inf, -math.inf
    for region in regions:
        a, b = h5.finite_minmax(read_region(dset, region))
        lo, hi = min(lo, a), max(hi, b)
    return lo, hi


def _dask_encode(src_path, dset_path, region, chunks, params, vrange):
    dset = _worker_dataset(src_path, dset_path)
    return h5.encode_chunk(read_region(dset, region), chunks, params, threads=1, value_range=vrange,
                           fill=h5.growth_fill(dset))


class DaskEncoder:
    """Compresses chunks on a dask.distributed cluster; workers read the input file themselves."""

    def __init__(self, scheduler, in_flight: int | None = None):
        try:
            from distributed import Client
        except ImportError as e:
            raise ImportError("--dask-scheduler needs dask.distributed: pip install 'ebzip[dask]'") from e
        if isinstance(scheduler, str):
            self.client, self.own = Client(scheduler), True
        else:
            self.client, self.own = scheduler, False
        nthreads = sum(self.client.nthreads().values()) or 1
        self.depth = in_flight or 4 * nthreads

    def minmax(self, src_path, dset, dset_path, regions):
        regions = list(regions)
        step = max(1, len(regions) // (4 * self.depth) + 1)
        futs = [self.client.submit(_dask_minmax, src_path, dset_path, regions[i:i + step], pure=False)
                for i in range(0, len(regions), step)]
        lo, hi = math.inf, -math.inf
        for a, b in self.client.gather(futs):
            lo, hi = min(lo, a), max(hi, b)
        return lo, hi

    def encode(self, src_path, dset, dset_path, regions, chunks, params, vrange):
        pending = collections.deque()
        try:
            for region in regions:
                pending.append((region, self.client.submit(_dask_encode, src_path, dset_path, region, chunks,
                                                           params, vrange, pure=False)))
                if len(pending) >= self.depth:
                    r, fut = pending.popleft()
                    yield r, fut.result()
                    fut.release()
            while pending:
                r, fut = pending.popleft()
                yield r, fut.result()
                fut.release()
        finally:
            for _, fut in pending:
                fut.cancel()

    def close(self):
        if self.own:
            self.client.close()


# ------------------------------------------------------------------ compress / decompress


@dataclass
class DatasetReport:
    path: str
    shape: tuple
    dtype: str
    action: str  # "compressed", "decompressed", "copied"
    bound: str = ""
    original_nbytes: int = 0
    stored_nbytes: int = 0
    seconds: float = 0.0

    @property
    def ratio(self) -> float:
        return self.original_nbytes / self.stored_nbytes if self.stored_nbytes else math.inf


def _fillvalue(src):
    dcpl = src.id.get_create_plist()
    if dcpl.fill_value_defined() != h5d.FILL_VALUE_USER_DEFINED:
        return None
    fv = np.zeros((), dtype=src.dtype)
    dcpl.get_fill_value(fv)
    return fv


def _progress(total, enabled, desc):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, leave=False)


def _copy_userblock(src_path: str, dst_path: str, size: int) -> None:
    """The user block's bytes belong to the application, not HDF5, which writes zeros: copy them."""
    if not size:
        return
    with open(src_path, "rb") as src, open(dst_path, "r+b") as dst:
        dst.write(src.read(size))


def compress_file(src_path: str, dst_path: str, eb: float, mode: str = "rel", *, include=(), exclude=(),
                  eb_for=(), threads: int | None = None, scheduler=None, force: bool = False,
                  progress: bool = False, warn=None) -> list[DatasetReport]:
    """Write ``dst_path``: ``src_path`` with its floating-point datasets ebzip-compressed.

    ``eb``/``mode``: the default bound; ``eb_for``: ``PATTERN=VALUE[:MODE]``
    overrides; ``include``/``exclude``: glob patterns on dataset paths (with a
    '/') or names (without). ``scheduler``: a dask.distributed address or
    Client to compress the chunks on. The output is written to a temporary
    file and renamed into place; the input is never touched.
    """
    api.check_bound(eb, mode)
    sel = Selection(eb, mode, tuple(include), tuple(exclude), parse_eb_for(eb_for))
    warn = warn or (lambda msg: None)
    if not os.path.isfile(src_path):
        raise FileNotFoundError(f"no such file: {src_path}")
    if not is_hdf5(src_path):
        raise ValueError(f"{src_path} is not an HDF5 file")
    reports: list[DatasetReport] = []
    encoder = DaskEncoder(scheduler) if scheduler is not None else LocalEncoder(threads)
    try:
        with h5py.File(src_path, "r") as src:
            candidates = [(p, d) for p, d in walk_datasets(src) if compressible(d)]
            sel.check([p for p, _ in candidates])
            total = sum(d.size * d.dtype.itemsize for p, d in candidates if sel.spec(p) is not None)
            bar = _progress(total, progress, "compress")

            def transform(dset, dst_group, name, path):
                spec = sel.spec(path) if compressible(dset) else None
                if spec is None:
                    return None
                t0 = time.perf_counter()
                d_eb, d_mode = spec
                chunks = dset.chunks or h5.auto_chunks(dset.shape, dset.dtype.itemsize)
                regions = [h5.chunk_region(o, dset.shape, chunks) for o in h5.chunk_grid(dset.shape, chunks)]
                vrange = None
                if d_mode != "abs" and d_eb > 0:
                    lo, hi = encoder.minmax(src_path, dset, path, regions)
                    vrange = None if lo > hi else api._value_range(lo, hi)
                params = h5.resolve_params(d_mode, d_eb, vrange)
                out = h5.create_dataset(dst_group, name, dset.shape, dset.dtype, params, chunks,
                                        maxshape=dset.maxshape, fillvalue=_fillvalue(dset))
                stored = 0
                for region, payload in encoder.encode(src_path, dset, path, regions, chunks, params, vrange):
                    h5.write_chunk(out, tuple(r.start for r in region), payload)
                    stored += len(payload)
                    if bar is not None:
                        bar.update(math.prod(r.stop - r.start for r in region) * dset.dtype.itemsize)
                reports.append(DatasetReport(path, dset.shape, str(dset.dtype), "compressed", params.describe(),
                                             dset.size * dset.dtype.itemsize, stored, time.perf_counter() - t0))
                return out

            with atomic_output(dst_path, [src_path], force) as tmp:
                with h5py.File(tmp, "w", userblock_size=src.userblock_size or 0) as dst:
                    _Copier(src, dst, transform, warn).run()
                _copy_userblock(src_path, tmp, src.userblock_size)
            if bar is not None:
                bar.close()
    finally:
        encoder.close()
    return reports


def decompress_file(src_path: str, dst_path: str, *, force: bool = False, progress: bool = False,
                    threads: int | None = None, warn=None) -> list[DatasetReport]:
    """Write ``dst_path``: ``src_path`` with every ebzip dataset stored uncompressed (same chunks)."""
    warn = warn or (lambda msg: None)
    if not os.path.isfile(src_path):
        raise FileNotFoundError(f"no such file: {src_path}")
    if not is_hdf5(src_path):
        raise ValueError(f"{src_path} is not an HDF5 file")
    reports: list[DatasetReport] = []
    with h5py.File(src_path, "r") as src:
        total = sum(d.size * d.dtype.itemsize for _, d in walk_datasets(src) if h5.is_ebzip(d))
        bar = _progress(total, progress, "decompress")

        def transform(dset, dst_group, name, path):
            if not h5.is_ebzip(dset):
                return None
            t0 = time.perf_counter()
            dcpl = _untimed(h5p.create(h5p.DATASET_CREATE))
            dcpl.set_chunk(dset.chunks)
            fv = _fillvalue(dset)
            if fv is not None:
                dcpl.set_fill_value(fv)
            space = dset.id.get_space()
            dsid = h5d.create(dst_group.id, name.encode("utf-8"), dset.id.get_type(), space, dcpl=dcpl, lcpl=_lcpl())
            out = h5py.Dataset(dsid)
            for offset in h5.chunk_grid(dset.shape, dset.chunks):
                if not h5._chunk_allocated(dset, offset):
                    continue
                mask, payload = dset.id.read_direct_chunk(offset)
                if not mask & 1:  # (bit set: the optional filter was skipped, the bytes are raw already)
                    full = h5.decode_chunk(payload, dset.dtype, dset.chunks)
                    payload = np.ascontiguousarray(full, dtype=dset.dtype.newbyteorder("<")).tobytes()
                out.id.write_direct_chunk(offset, payload, 0)
                if bar is not None:
                    bar.update(math.prod(dset.chunks) * dset.dtype.itemsize)
            reports.append(DatasetReport(path, dset.shape, str(dset.dtype), "decompressed",
                                         h5.filter_params(dset).describe(), dset.size * dset.dtype.itemsize,
                                         dset.id.get_storage_size(), time.perf_counter() - t0))
            return out

        with atomic_output(dst_path, [src_path], force) as tmp:
            with h5py.File(tmp, "w", userblock_size=src.userblock_size or 0) as dst:
                _Copier(src, dst, transform, warn).run()
            _copy_userblock(src_path, tmp, src.userblock_size)
        if bar is not None:
            bar.close()
    return reports


# ------------------------------------------------------------------ verify


@dataclass
class VerifyReport:
    path: str
    shape: tuple
    dtype: str
    kind: str  # "float", "other", "missing", "mismatch"
    max_err: float = 0.0
    bound: float | None = None  # the absolute bound checked against (max over chunks if per chunk)
    err_over_bound: float | None = None
    psnr: float = math.inf
    nonfinite_mismatch: int = 0
    ok: bool = True
    note: str = ""


class _ErrStats:
    def __init__(self):
        self.max_err, self.max_ratio, self.sse, self.n = 0.0, 0.0, 0.0, 0
        self.lo, self.hi = math.inf, -math.inf
        self.bad_nonfinite = 0
        self.max_bound = 0.0

    def add(self, x, y, bound=None):
        x = np.asarray(x)
        y = np.asarray(y)
        xf = x.astype(np.float64).ravel()
        yf = y.astype(np.float64).ravel()
        fin = np.isfinite(xf)
        if not fin.all():
            ub = np.dtype(f"u{x.dtype.itemsize}")
            nf = ~fin
            xb = x.reshape(-1).view(ub)
            yb = np.ascontiguousarray(y, dtype=x.dtype).reshape(-1).view(ub)
            self.bad_nonfinite += int(np.count_nonzero(xb[nf] != yb[nf]))
            xf, yf = xf[fin], yf[fin]
        if not xf.size:
            return
        d = np.subtract(xf, yf)
        np.abs(d, out=d)
        m = float(d.max())
        if math.isnan(m):
            m = math.inf
        self.max_err = max(self.max_err, m)
        with np.errstate(over="ignore"):  # errors near float64's largest: the PSNR is then -inf
            self.sse += float(np.dot(d, d))
        self.n += d.size
        self.lo, self.hi = min(self.lo, float(xf.min())), max(self.hi, float(xf.max()))
        if bound is not None:
            self.max_bound = max(self.max_bound, bound)
            r = (0.0 if m == 0 else math.inf) if bound == 0 else m / bound
            self.max_ratio = max(self.max_ratio, r)

    @property
    def value_range(self):
        return api._value_range(self.lo, self.hi)

    @property
    def psnr(self):
        if self.n == 0 or self.sse == 0:
            return math.inf
        vr = self.value_range
        if vr == 0:
            return -math.inf
        return 20 * math.log10(vr) - 10 * math.log10(self.sse / self.n)


def _ebzip_chunks_with_bound(dset):
    for offset in h5.chunk_grid(dset.shape, dset.chunks):
        region = h5.chunk_region(offset, dset.shape, dset.chunks)
        shape = tuple(r.stop - r.start for r in region)
        crop = tuple(slice(0, s) for s in shape)
        if not h5._chunk_allocated(dset, offset):
            yield region, h5._fill_block(dset, shape), None
            continue
        mask, payload = dset.id.read_direct_chunk(offset)
        if mask & 1:
            yield region, np.frombuffer(payload, dtype=dset.dtype).reshape(dset.chunks)[crop], 0.0
            continue
        bound = api.inspect(payload)["eb_abs"]
        yield region, h5.decode_chunk(payload, dset.dtype, dset.chunks)[crop], bound


def verify_files(orig_path: str, comp_path: str, *, eb: float | None = None, mode: str = "rel",
                 progress: bool = False) -> list[VerifyReport]:
    """Compare every dataset of ``orig_path`` with the same path in ``comp_path``.

    Floating-point datasets: max error, the bound (recorded in each ebzip
    chunk, or ``eb``/``mode`` if given: ``rel`` is relative to the original's
    value range), max error / bound, PSNR, NaN/Inf kept bit-exactly; one
    that is not ebzip-compressed must be identical unless ``eb`` is given.
    Other datasets must be identical (references: pointing to the same
    objects). ``ok`` is False on any violation.
    """
    for p in (orig_path, comp_path):
        if not os.path.isfile(p):
            raise FileNotFoundError(f"no such file: {p}")
        if not is_hdf5(p):
            raise ValueError(f"{p} is not an HDF5 file")
    if eb is not None:
        api.check_bound(eb, mode)
    out: list[VerifyReport] = []
    with h5py.File(orig_path, "r") as orig, h5py.File(comp_path, "r") as comp:
        items = list(walk_datasets(orig))
        total = sum(d.size * d.dtype.itemsize for _, d in items if d.shape)
        bar = _progress(total, progress, "verify")
        for path, od in items:
            shape = od.shape
            rep = VerifyReport(path, shape, str(od.dtype), "float" if h5.is_float_dtype(od.dtype) else "other")
            out.append(rep)
            cd = comp.get(path)
            if not isinstance(cd, h5py.Dataset):
                rep.kind, rep.ok, rep.note = "missing", False, "missing in the compressed file"
                continue
            if cd.shape != shape or (cd.dtype != od.dtype and not (rep.kind == "float" and cd.dtype.kind == "f"
                                                                  and cd.dtype.itemsize == od.dtype.itemsize)):
                rep.kind, rep.ok = "mismatch", False
                rep.note = f"compressed file holds {cd.dtype}{cd.shape}"
                continue
            if rep.kind == "other" or shape is None or len(shape) == 0 or od.size == 0:
                equal = _same_values(od, cd)
                rep.ok = equal
                rep.note = "identical" if equal else "values differ"
                continue
            st = _ErrStats()
            if h5.is_ebzip(cd):
                for region, y, bound in _ebzip_chunks_with_bound(cd):
                    st.add(read_region(od, region), y, bound)
                    if bar is not None:
                        bar.update(y.size * od.dtype.itemsize)
                rep.note = h5.filter_params(cd).describe()
            else:
                identical = True
                for region in _slabs(shape, od.dtype.itemsize):
                    x, y = read_region(od, region), cd[region]
                    st.add(x, y, None)
                    identical = identical and _eq(x, y)
                    if bar is not None:
                        bar.update(x.size * od.dtype.itemsize)
                rep.note = "not ebzip-compressed"
                if eb is None and not identical:  # nothing to check it against: a copy must be exact
                    rep.ok = False
                    rep.note += "; values differ"
            rep.max_err, rep.psnr, rep.nonfinite_mismatch = st.max_err, st.psnr, st.bad_nonfinite
            if eb is not None:  # the user's bound, on the whole dataset
                if mode == "abs":
                    bound = eb
                elif mode == "rel":
                    bound = eb * st.value_range
                else:
                    bound = None
                if bound is not None:
                    rep.bound = bound
                    rep.err_over_bound = (0.0 if st.max_err == 0 else math.inf) if bound == 0 else st.max_err / bound
                else:
                    rep.err_over_bound = None
                    rep.ok = st.psnr >= eb
                rep.note = f"{mode} {eb:g} given"
            elif h5.is_ebzip(cd):
                rep.bound, rep.err_over_bound = st.max_bound, st.max_ratio
            if rep.err_over_bound is not None and rep.err_over_bound > 1:
                rep.ok = False
            if rep.nonfinite_mismatch:
                rep.ok = False
            if h5.is_ebzip(cd):
                params = h5.filter_params(cd)
                if params.mode == "psnr" and eb is None and st.psnr < params.eb:
                    rep.ok = False
                    rep.note += f"; PSNR below the {params.eb:g} dB target"
        if bar is not None:
            bar.close()
    return out


def _same_values(a, b) -> bool:
    if a.shape is None or b.shape is None:
        return a.shape == b.shape
    if _is_ref_dtype(a.dtype) or _is_ref_dtype(b.dtype):
        return _same_refs(a, b)
    if len(a.shape) == 0 or a.size == 0:
        x, y = a[()], b[()]
        return _eq(x, y)
    for region in _slabs(a.shape, max(a.dtype.itemsize, 8)):
        if not _eq(a[region], b[region]):
            return False
    return True


def _same_refs(a, b) -> bool:
    """Reference datasets: equal when each pair of references points to the same object (by path:
    a copy's references hold other addresses) and, for region references, the same selection."""
    if h5py.check_ref_dtype(a.dtype) is not h5py.check_ref_dtype(b.dtype):
        return False
    x, y = np.asarray(a[()], dtype=object), np.asarray(b[()], dtype=object)
    if x.shape != y.shape:
        return False
    return all(_same_target(a.file, r, b.file, s) for r, s in zip(x.flat, y.flat))


def _same_target(fa, r, fb, s) -> bool:
    if not r or not s:  # null references
        return not r and not s
    try:
        ta, tb = fa[r], fb[s]
        name = ta.name
        if not name or fb.get(name) != tb:
            return False
        if isinstance(r, h5py.RegionReference):
            return h5py.h5r.get_region(r, fa.id).encode() == h5py.h5r.get_region(s, fb.id).encode()
    except Exception:  # a dangling reference, or one HDF5 cannot resolve
        return False
    return True


def _eq(x, y) -> bool:
    """Identical values: floats bit for bit (NaN payloads and the sign of zero included, either byte
    order), complex numbers part by part, anything else by ``==`` or, failing that, its bytes."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        return False
    if x.dtype.kind == "c" and y.dtype.kind == "c":
        y = y.astype(x.dtype)
        return _eq(x.real, y.real) and _eq(x.imag, y.imag)
    if x.dtype.kind == "f" and y.dtype.kind == "f":
        y = np.ascontiguousarray(y, dtype=x.dtype)
        x = np.ascontiguousarray(x)
        if x.dtype.itemsize in (2, 4, 8):
            u = f"u{x.dtype.itemsize}"
            return bool(np.array_equal(x.view(u), y.view(u)))
        # long double: its storage has padding bytes that hold no value, so compare values
        return bool(np.array_equal(x, y, equal_nan=True)) and bool(np.array_equal(np.signbit(x), np.signbit(y)))
    try:
        return bool(np.array_equal(x, y))
    except Exception:
        return x.tobytes() == y.tobytes()


# ------------------------------------------------------------------ estimate and info


@dataclass
class EstimateReport:
    path: str
    shape: tuple
    dtype: str
    bound: str
    sampled_fraction: float
    sampled_nbytes: int
    predicted_ratio: float

    @property
    def original_nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize


def _sample_offsets(shape, chunks, fraction: float, max_chunks: int):
    grid = list(h5.chunk_grid(shape, chunks))
    k = max(1, min(len(grid), max_chunks, math.ceil(fraction * len(grid))))
    if k >= len(grid):
        return grid
    return [grid[i] for i in _arrays.spread_indices(len(grid), k)]


def estimate_file(src_path: str, eb: float, mode: str = "rel", *, include=(), exclude=(), eb_for=(),
                  sample: float = 0.05, max_chunks: int = 64, threads: int | None = None) -> list[EstimateReport]:
    """Predict each dataset's ratio from a sample of its chunks, writing nothing.

    The sample is spread evenly (the middle chunk of each of equal runs, so a
    small one does not take a volume's empty first and last chunks). In
    ``rel`` mode the range comes from the sample, which can only understate
    it (a tighter bound, a lower estimate); the sampled chunks may still
    compress better or worse than the rest.
    """
    api.check_bound(eb, mode)
    if not 0 < sample <= 1:
        raise ValueError(f"sample must be a fraction in (0, 1]; got {sample}")
    sel = Selection(eb, mode, tuple(include), tuple(exclude), parse_eb_for(eb_for))
    if not os.path.isfile(src_path):
        raise FileNotFoundError(f"no such file: {src_path}")
    if not is_hdf5(src_path):
        raise ValueError(f"{src_path} is not an HDF5 file")
    out = []
    with h5py.File(src_path, "r") as src:
        candidates = [(p, d) for p, d in walk_datasets(src) if compressible(d)]
        sel.check([p for p, _ in candidates])
        for path, dset in candidates:
            spec = sel.spec(path)
            if spec is None:
                continue
            d_eb, d_mode = spec
            chunks = dset.chunks or h5.auto_chunks(dset.shape, dset.dtype.itemsize)
            offsets = _sample_offsets(dset.shape, chunks, sample, max_chunks)
            blocks = [read_region(dset, h5.chunk_region(o, dset.shape, chunks)) for o in offsets]
            vr = h5.value_range(blocks) if d_mode != "abs" else None
            params = h5.resolve_params(d_mode, d_eb, vr)
            raw = stored = 0
            for b in blocks:
                payload = h5.encode_chunk(b, chunks, params, threads=h5.threads_for(math.prod(chunks), threads=threads),
                                          value_range=vr)
                raw += b.size * dset.dtype.itemsize  # the real elements (an edge chunk stores padding too)
                stored += len(payload)
            n_elems = sum(b.size for b in blocks)
            out.append(EstimateReport(path, dset.shape, str(dset.dtype), params.describe(),
                                      n_elems / dset.size, n_elems * dset.dtype.itemsize,
                                      raw / stored if stored else math.inf))
    return out


@dataclass
class InfoRow:
    path: str
    shape: tuple
    dtype: str
    filter: str
    bound: str
    stored_nbytes: int
    original_nbytes: int
    predictor: str
    chunks: tuple | None

    @property
    def ratio(self) -> float:
        return self.original_nbytes / self.stored_nbytes if self.stored_nbytes else math.inf


def _filter_names(dset) -> str:
    plist = dset.id.get_create_plist()
    names = []
    for i in range(plist.get_nfilters()):
        code, _flags, _values, name = plist.get_filter(i)
        if code == h5.FILTER_ID:
            names.append("ebzip")
        else:
            names.append(name.decode("utf-8", "replace") or f"filter {code}")
    return "+".join(names) or "none"


def file_info(path: str) -> list[InfoRow]:
    """One row per dataset: shape, dtype, filters, ebzip bound and predictor, storage and ratio."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file: {path}")
    if not is_hdf5(path):
        raise ValueError(f"{path} is not an HDF5 file")
    rows = []
    with h5py.File(path, "r") as f:
        for p, d in walk_datasets(f):
            shape = d.shape if d.shape is not None else ()
            params = h5.filter_params(d)
            predictor = bound = ""
            if params is not None:
                bound = params.describe()
                heads = h5.chunk_headers(d, limit=1)
                predictor = heads[0]["pipeline"] if heads else "-"
            try:
                stored = d.id.get_storage_size()
            except Exception:  # pragma: no cover
                stored = 0
            orig = (math.prod(shape) * d.dtype.itemsize) if d.shape is not None else 0
            rows.append(InfoRow(p, shape, str(d.dtype), _filter_names(d), bound, stored, orig, predictor, d.chunks))
    return rows
