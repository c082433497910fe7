"""numcodecs and zarr codecs: ebzip for zarr, xarray and anything that speaks numcodecs.

* :class:`EBZip` — a ``numcodecs`` codec (id ``"ebzip"``, registered under the
  ``numcodecs.codecs`` entry point, so ``numcodecs.get_codec({"id": "ebzip",
  ...})`` finds it without an import). For zarr format 2 arrays it is the
  ``compressor`` (zarr-python 2) or ``compressors=`` (zarr-python 3)::

      z = zarr.create_array(store, shape=..., chunks=..., dtype="f4", zarr_format=2,
                            compressors=EBZip(eb=1e-3, mode="rel"))

* :class:`EBZipCodec` — the zarr format 3 array-to-bytes codec (name
  ``"ebzip"``, registered under the ``zarr.codecs`` entry point)::

      z = zarr.create_array(store, shape=..., chunks=..., dtype="f4",
                            serializer=EBZipCodec(eb=1e-3, mode="rel"), compressors=None)

Every chunk becomes one ebzip stream. ``rel`` and ``psnr`` bounds apply per
stored chunk: relative to that chunk's value range, which for a partial edge
chunk includes the ``fill_value`` zarr pads it with. For a bound relative to
the whole array give ``eb_abs``, one absolute bound for every chunk, as
:func:`ebzip.dask.to_zarr` does after measuring the array's range (the
recommended way to write a zarr array with a relative bound).

Streams are little-endian. :class:`EBZipCodec` converts to and from either
byte order; :class:`EBZip` refuses big-endian chunks, since zarr format 2
views the bytes it returns in the array's byte order without telling it.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np

try:
    from numcodecs import register_codec
    from numcodecs.abc import Codec
    from numcodecs.compat import ensure_contiguous_ndarray, ensure_ndarray_like, ndarray_copy
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError("ebzip.codecs needs numcodecs: pip install 'ebzip[zarr]'") from e

from . import api


def _check(eb, mode, eb_abs):
    if mode not in api.MODES:
        raise ValueError(f"mode must be one of {sorted(api.MODES)}; got {mode!r}")
    for name, v in (("eb", eb), ("eb_abs", eb_abs)):
        if v is None and name == "eb_abs":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise TypeError(f"{name} must be a real number; got {type(v).__name__}")
        if not math.isfinite(float(v)) or float(v) < 0:
            raise ValueError(f"{name} must be finite and >= 0; got {v!r}")
    if mode == "psnr" and float(eb) <= 0:
        raise ValueError("a PSNR target must be > 0 dB")
    return float(eb), mode, (None if eb_abs is None else float(eb_abs))


def _encode(arr: np.ndarray, eb: float, mode: str, eb_abs: float | None) -> bytes:
    arr = np.ascontiguousarray(arr)
    if eb_abs is not None:
        return bytes(api.compress(arr, eb_abs, "abs", threads=1))
    return bytes(api.compress(arr, eb, mode, threads=1))


class EBZip(Codec):
    """numcodecs codec: error-bounded lossy compression of a float chunk.

    Args:
        eb: the bound; ``mode``: ``"abs"``, ``"rel"`` (fraction of the chunk's
            value range) or ``"psnr"`` (dB).
        eb_abs: if given, the absolute bound used for every chunk (``eb`` and
            ``mode`` then only record what it was derived from).
    """

    codec_id = "ebzip"

    def __init__(self, eb: float = 1e-3, mode: str = "rel", eb_abs: float | None = None):
        self.eb, self.mode, self.eb_abs = _check(eb, mode, eb_abs)

    def encode(self, buf):
        arr = np.asarray(ensure_ndarray_like(buf))
        if arr.dtype.kind != "f":
            raise TypeError(f"the ebzip codec compresses floating-point chunks; got {arr.dtype}")
        if arr.dtype != arr.dtype.newbyteorder("<"):
            # the stream decodes to little-endian values, and zarr format 2 views what decode returns
            # in the array's own byte order (nothing tells decode which): big-endian would read back
            # as garbage, so it is refused rather than written
            raise TypeError(f"the ebzip numcodecs codec stores little-endian chunks and cannot give big-endian "
                            f"ones back; got {arr.dtype.str}: use a little-endian dtype "
                            f"({arr.dtype.newbyteorder('<').str!r}; ebzip.dask.to_zarr does), or zarr format 3 "
                            "with EBZipCodec, which converts")
        return _encode(arr, self.eb, self.mode, self.eb_abs)

    def decode(self, buf, out=None):
        data = ensure_contiguous_ndarray(buf)
        y = api.decompress(data)
        if out is not None:
            dt = getattr(out, "dtype", None)
            if dt is not None and dt.kind == "f" and dt.itemsize == y.dtype.itemsize:
                y = y.astype(dt, copy=False)  # values into out's byte order (ndarray_copy views bytes)
            return ndarray_copy(y, out)
        return y

    def get_config(self) -> dict:
        cfg = {"id": self.codec_id, "eb": self.eb, "mode": self.mode}
        if self.eb_abs is not None:
            cfg["eb_abs"] = self.eb_abs
        return cfg

    def __repr__(self) -> str:
        extra = "" if self.eb_abs is None else f", eb_abs={self.eb_abs!r}"
        return f"EBZip(eb={self.eb!r}, mode={self.mode!r}{extra})"


register_codec(EBZip)


try:  # the zarr format 3 codec, where zarr-python 3 is installed
    from dataclasses import dataclass

    from zarr.abc.codec import ArrayBytesCodec
    from zarr.core.common import parse_named_configuration
    from zarr.registry import register_codec as _zarr_register
except ImportError:  # pragma: no cover - depends on the environment
    EBZipCodec = None
else:

    @dataclass(frozen=True)
    class EBZipCodec(ArrayBytesCodec):
        """zarr v3 array-to-bytes codec ``"ebzip"``: each chunk one ebzip stream."""

        is_fixed_size = False

        eb: float = 1e-3
        mode: str = "rel"
        eb_abs: float | None = None

        def __init__(self, *, eb: float = 1e-3, mode: str = "rel", eb_abs: float | None = None):
            eb, mode, eb_abs = _check(eb, mode, eb_abs)
            object.__setattr__(self, "eb", eb)
            object.__setattr__(self, "mode", mode)
            object.__setattr__(self, "eb_abs", eb_abs)

        @classmethod
        def from_dict(cls, data):
            _, cfg = parse_named_configuration(data, "ebzip", require_configuration=False)
            return cls(**(cfg or {}))

        def to_dict(self):
            cfg = {"eb": self.eb, "mode": self.mode}
            if self.eb_abs is not None:
                cfg["eb_abs"] = self.eb_abs
            return {"name": "ebzip", "configuration": cfg}

        def validate(self, *, shape, dtype, chunk_grid):
            native = dtype.to_native_dtype()
            if np.dtype(native).kind != "f":
                raise TypeError(f"the ebzip codec compresses floating-point arrays; got {native}")

        def _decode_sync(self, chunk_bytes, chunk_spec):
            y = api.decompress(chunk_bytes.as_numpy_array())
            y = y.reshape(chunk_spec.shape)
            native = np.dtype(chunk_spec.dtype.to_native_dtype())
            if y.dtype != native:
                y = y.astype(native)  # byte order only: the stream is little-endian
            return chunk_spec.prototype.nd_buffer.from_ndarray_like(y)

        def _encode_sync(self, chunk_array, chunk_spec):
            arr = np.asarray(chunk_array.as_numpy_array())
            return chunk_spec.prototype.buffer.from_bytes(_encode(arr, self.eb, self.mode, self.eb_abs))

        async def _decode_single(self, chunk_bytes, chunk_spec):
            return await asyncio.to_thread(self._decode_sync, chunk_bytes, chunk_spec)

        async def _encode_single(self, chunk_array, chunk_spec):
            return await asyncio.to_thread(self._encode_sync, chunk_array, chunk_spec)

        def compute_encoded_size(self, input_byte_length, chunk_spec):
            raise NotImplementedError

    _zarr_register("ebzip", EBZipCodec)


__all__ = ["EBZip", "EBZipCodec"]
