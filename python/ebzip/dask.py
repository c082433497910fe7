"""Scale-out with Dask: compress a dask array chunk-parallel into zarr, or an HDF5 file on a cluster.

::

    import dask.array as da, ebzip.dask
    x = da.from_zarr("big_input.zarr")              # or from HDF5, netCDF, ...
    ebzip.dask.to_zarr(x, "big_output.zarr", eb=1e-3, mode="rel")
    y = ebzip.dask.from_zarr("big_output.zarr")     # a dask array, decompressed lazily

Each dask chunk becomes one zarr chunk and one ebzip stream, compressed by
whichever worker holds it; no chunk ever meets another, so memory stays a
few chunks per worker. In ``rel`` mode one pass first measures the whole
array's value range, so every chunk gets the same absolute bound (what
``ebzip.compress`` would give the whole array). Runs on the default
scheduler, or on a ``dask.distributed`` cluster when a ``Client`` is active.

For HDF5 files: :func:`compress_hdf5` (``ebzip compress --dask-scheduler``).
"""

from __future__ import annotations

import math

import numpy as np

try:
    import dask.array as da
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("ebzip.dask needs dask: pip install 'ebzip[dask]'") from e

from . import api


def value_range(x) -> float | None:
    """max - min over the finite values of a dask array (one pass); None if none is finite."""
    if x.size == 0:  # (numpy's min/max refuse an empty array)
        return None
    finite = da.isfinite(x)
    lo = da.where(finite, x, np.inf).min()
    hi = da.where(finite, x, -np.inf).max()
    lo, hi = da.compute(lo, hi)
    lo, hi = float(lo), float(hi)
    if lo > hi:
        return None
    r = hi - lo
    return r if math.isfinite(r) else float(np.finfo(np.float64).max)


def _regular(x):
    """zarr needs regular chunks (all equal but the last along each axis)."""
    for axis, c in enumerate(x.chunks):
        if len(c) > 1 and (len(set(c[:-1])) > 1 or c[-1] > c[0]):
            return x.rechunk(x.chunksize)
    return x


def to_zarr(x, store, eb: float, mode: str = "rel", *, chunks=None, zarr_format: int = 3, overwrite: bool = False,
            compute: bool = True, name: str | None = None, **kwargs):
    """Compress a dask (or numpy) array chunk by chunk into a zarr array.

    Args:
        x: dask array (numpy arrays are wrapped with ``chunks``), float16/32/64.
        store: a zarr store or path.
        eb, mode: the bound; ``rel`` is relative to the whole array's range; ``psnr`` holds
            for the whole array (stored with the absolute bound range x 10^(-psnr/20), which
            guarantees it whatever the errors' distribution; typically ~5 dB above the target).
        chunks: rechunk to these first (default: the dask chunks).
        zarr_format: 3 (codec :class:`ebzip.codecs.EBZipCodec`) or 2
            (compressor :class:`ebzip.codecs.EBZip`; the array is stored
            little-endian whatever ``x``'s byte order).
        overwrite: replace an existing array at ``store``. Not with ``x`` read from that same
            array: it is deleted before its chunks are read (they would be stored as zeros).
        compute: False returns the dask object that does the work.
        name: the array's path inside the store (a group) if given.
    Returns the zarr array (``compute=True``) or the delayed store.
    """
    import zarr

    from .codecs import EBZip, EBZipCodec

    x = da.asarray(x) if chunks is None or hasattr(x, "dask") else da.from_array(x, chunks=chunks)
    if chunks is not None:
        x = x.rechunk(chunks)
    if any(math.isnan(c) for axis in x.chunks for c in axis):
        raise ValueError("the dask array has unknown chunk sizes (after boolean indexing, say): "
                         "call x.compute_chunk_sizes() first")
    x = _regular(x)
    if np.dtype(x.dtype).kind != "f":
        raise TypeError(f"ebzip compresses floating-point arrays; got {x.dtype}")
    eb = float(eb)
    if mode not in api.MODES:
        raise ValueError(f"mode must be one of {sorted(api.MODES)}; got {mode!r}")
    eb_abs = None
    if mode == "abs":
        eb_abs = eb
    elif mode == "rel":
        vr = value_range(x) if eb > 0 else 0.0
        eb_abs = eb * (vr or 0.0)
    else:  # psnr over the whole array: per chunk, zarr's padding of edge chunks would skew each chunk's
        # range (a 60 dB target gave 2 dB); an absolute bound of range * 10^(-psnr/20) guarantees it
        vr = value_range(x)
        eb_abs = (vr or 0.0) * 10 ** (-eb / 20)
    codec_args = dict(eb=eb, mode=mode, eb_abs=eb_abs)
    dtype = np.dtype(x.dtype)
    if zarr_format == 3:
        codecs = dict(serializer=EBZipCodec(**codec_args), compressors=None)
    elif zarr_format == 2:
        codecs = dict(compressors=EBZip(**codec_args), filters=None)
        dtype = dtype.newbyteorder("<")  # the numcodecs codec gives chunks back little-endian only
    else:
        raise ValueError("zarr_format must be 2 or 3")
    z = zarr.create_array(store, name=name, shape=x.shape, chunks=x.chunksize, dtype=dtype,
                          zarr_format=zarr_format, overwrite=overwrite, **codecs, **kwargs)
    if getattr(z, "shards", None):  # one task per shard: tasks sharing a shard overwrote each other's chunks
        x = x.rechunk(z.shards)
    stored = da.store(x, z, lock=False, compute=compute)
    return z if compute else stored


def from_zarr(store, name: str | None = None, **kwargs):
    """A dask array reading (and decompressing) an ebzip-compressed zarr array lazily."""
    from . import codecs  # noqa: F401  (registers the codecs)

    return da.from_zarr(store, component=name, **kwargs)


def compress_hdf5(src: str, dst: str, eb: float, mode: str = "rel", *, scheduler=None, **kwargs):
    """``ebzip compress`` of an HDF5 file with its chunks compressed on a dask.distributed cluster.

    ``scheduler``: an address (``"tcp://host:8786"``) or a ``distributed.Client``;
    the workers open ``src`` themselves, so it must be on a file system they
    share. This process writes ``dst`` as compressed chunks come back, a
    bounded number in flight. Returns the per-dataset reports.
    """
    from .h5file import compress_file

    if scheduler is None:
        from distributed import get_client

        scheduler = get_client()
    return compress_file(src, dst, eb, mode, scheduler=scheduler, **kwargs)


__all__ = ["to_zarr", "from_zarr", "compress_hdf5", "value_range"]
