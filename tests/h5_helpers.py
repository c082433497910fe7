"""Helpers shared by test_cli.py, test_h5.py and test_dask.py (HDF5 files with everything in them)."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np

# the real fields live in ../shared/data beside the repository (or $EBZIP_DATA), never in it
SHARED_DATA = pathlib.Path(os.environ.get("EBZIP_DATA") or pathlib.Path(__file__).resolve().parents[2] / "shared" / "data")


def smooth_field(shape, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    for axis in range(len(shape)):
        x = np.cumsum(x, axis=axis)
    return x.astype(dtype)


def make_rich_file(path, seed=0):
    """An HDF5 file with groups, attributes of many types, mixed dtypes, chunking, filters,
    dimension scales, soft/external/hard links, NaN/Inf, fill values, scalars and empties."""
    import h5py

    field = smooth_field((20, 48, 64), seed)
    with h5py.File(path, "w") as f:
        f.attrs["title"] = "test file"
        f.attrs["version"] = np.int32(3)
        f.attrs.create("fixed", np.bytes_("abc"))
        f.attrs["floats"] = np.array([1.5, 2.5])
        f.attrs["names"] = np.array(["a", "bc"], dtype=h5py.string_dtype())
        g = f.create_group("grid/coords")
        g.attrs["note"] = "coordinates"
        x = g.create_dataset("x", data=np.linspace(0, 1, 64))
        x.make_scale("x")
        t = f.create_dataset("time", data=np.arange(20, dtype=np.int64))
        t.make_scale("time")
        d = f.create_dataset("data/temp", data=field, chunks=(5, 16, 64), compression="gzip")
        d.attrs["units"] = "K"
        d.attrs["scale"] = 1.5
        d.dims[0].attach_scale(t)
        d.dims[2].attach_scale(x)
        d.dims[0].label = "t"
        f.create_dataset("data/pres64", data=field.astype(np.float64) * 100)  # contiguous
        f.create_dataset("data/h16", data=(field[:3] / 10).astype(np.float16), chunks=(1, 48, 64))
        w = field.copy()
        w[0, 0, :5] = np.nan
        w[1, 1, 1] = np.inf
        w[2, 2, 2] = -np.inf
        f.create_dataset("data/withnan", data=w, chunks=(7, 20, 30), fillvalue=-999.0)
        f.create_dataset("labels", data=np.random.default_rng(seed).integers(0, 10, 1000).astype(np.int16),
                         chunks=(100,), compression="gzip", shuffle=True)
        f.create_dataset("names", data=["alpha", "beta"], dtype=h5py.string_dtype())
        f.create_dataset("scalar", data=3.5)
        f.create_dataset("empty", shape=(0, 4), dtype="f4")
        f.create_dataset("resizable", data=field[0], chunks=(16, 16), maxshape=(None, 64))
        f["link_soft"] = h5py.SoftLink("/data/temp")
        f["data/hard"] = f["labels"]
        f["ext"] = h5py.ExternalLink("other.h5", "/x")
        f.attrs["ref"] = f["labels"].ref
    return path


FLOAT_PATHS = ["/data/h16", "/data/pres64", "/data/temp", "/data/withnan", "/resizable"]


def shared_fields():
    """(name, array) of every kind=field entry of the shared data, read in place; [] when absent."""
    manifest = SHARED_DATA / "manifest.json"
    if not manifest.is_file():
        return []
    out = []
    for e in json.loads(manifest.read_text())["entries"]:
        if e.get("kind") != "field":
            continue
        path = SHARED_DATA / e["file"]
        if path.is_file():
            out.append((e["name"], np.fromfile(path, dtype=e["dtype"]).reshape(e["shape"])))
    return out


def attrs_equal(a, b) -> bool:
    """Attribute sets equal by name and value (reference attributes compared by target name)."""
    import h5py

    skip = {"DIMENSION_LIST", "REFERENCE_LIST"}
    if set(a.attrs) - skip != set(b.attrs) - skip:
        return False
    for k in a.attrs:
        if k in skip:
            continue
        va, vb = a.attrs[k], b.attrs[k]
        if isinstance(va, h5py.Reference):
            if a.file[va].name != b.file[vb].name:
                return False
        elif not np.array_equal(np.asarray(va), np.asarray(vb)):
            return False
        if a.attrs.get_id(k).dtype != b.attrs.get_id(k).dtype:
            return False
    return True
