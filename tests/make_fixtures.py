"""Write the fixture streams that pin the ebzip stream format (run by hand).

    python tests/make_fixtures.py

writes into tests/fixtures/, for each fixture NAME:

    NAME.ebz            the compressed stream
    NAME.input.npy      the array that was compressed (raw bit patterns, uint16/32/64)
    NAME.expected.npy   what today's decoder returns for it (raw bit patterns)

and manifest.json describing them (name, files, shape, dtype, mode, eb, eb_abs,
pipeline, format version, sha256 of the stream). tests/test_fixtures.py checks
that the current decoder still reproduces every expected array bit-exactly.

Only regenerate on a deliberate format change (with a FORMAT_VERSION bump, and
keep the old fixtures under a versioned name so old streams stay readable);
never to make a failing fixture test pass.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

import ebzip

HERE = Path(__file__).resolve().parent
OUT = HERE / "fixtures"
UINT = {2: np.uint16, 4: np.uint32, 8: np.uint64}


def bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, round to nearest even (no ml_dtypes needed)."""
    b = np.asarray(a, dtype=np.float32).copy(order="C").view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def smooth(shape, seed):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 4, n) for n in shape], indexing="ij")
    v = sum(np.sin((k + 1.5) * g + k) for k, g in enumerate(grids))
    return v + 0.01 * rng.standard_normal(shape)


def fixtures():
    """(name, array or (uint16 bits, 'bfloat16'), eb, mode, compress kwargs)"""
    rng = np.random.default_rng(2024)

    f32 = smooth((24, 31), 1).astype(np.float32)
    f32[5, 7] = np.nan
    f32[20, 1] = 3.0e38  # stored exactly (an outlier far off the grid)
    yield "f32_2d_lorenzo_abs", f32, 1e-3, "abs", dict(block_elems=256)  # 3 chunks

    f64 = smooth((6, 7, 9), 2) * 1e5
    yield "f64_3d_rel", f64, 1e-4, "rel", {}

    f16_1d = np.cumsum(rng.standard_normal(257)).astype(np.float16)
    f16_1d[[3, 50, 51, 200]] = [np.nan, np.inf, -np.inf, np.nan]
    f16_1d[100] = 65504.0
    f16_1d[101] = 6e-8  # subnormal
    yield "f16_1d_nan_inf", f16_1d, 1e-2, "abs", {}

    bf16 = bf16_bits(smooth((2, 3, 4, 5), 3).astype(np.float32))
    bf16[1, 2, 3, 4] = 0x7FC0  # NaN
    yield "bf16_4d", (bf16, "bfloat16"), 0.05, "abs", {}

    exact = np.cumsum(rng.standard_normal((10, 13)), axis=1).astype(np.float32)
    exact[0, 0] = -0.0
    exact[9, 12] = np.float32(1e-45)
    yield "f32_exact_eb0", exact, 0.0, "abs", dict(block_elems=50)  # 3 chunks

    yield "f32_empty", np.zeros((0, 4), np.float32), 0.1, "abs", {}

    yield "f64_0d", np.array(2.718281828459045), 0.5, "abs", {}

    psnr = smooth((40, 50), 4).astype(np.float32)
    yield "f32_2d_psnr", psnr, 60.0, "psnr", {}

    # Format version 2: the interpolation pipeline, and Lorenzo over merged axes.
    cube = smooth((9, 17, 12), 5).astype(np.float32)
    cube[4, 8, 6] = np.nan
    cube[0, 0, 11] = -np.inf
    yield "f32_3d_interp_cubic_v2", cube, 1e-3, "abs", dict(predictor="interp", block_elems=300)
    yield "f64_3d_interp_linear_v2", smooth((5, 6, 33), 6), 1e-4, "rel", dict(_core=dict(predictor=2, interp_cubic=0))
    f16 = smooth((30, 20), 7).astype(np.float16)
    f16[3, 3] = 65504.0
    yield "f16_2d_interp_v2", f16, 1e-2, "abs", dict(predictor="interp")
    yield "f32_4d_lorenzo_2axes_v2", smooth((3, 4, 5, 6), 8).astype(np.float32), 1e-3, "abs", \
        dict(_core=dict(predictor=1, pred_dims=2))
    # the same cube under today's tile policy (4 x block_elems, at least ~4 tiles): the
    # f32_3d_interp_cubic_v2 stream predates it, so it pins decoding only
    yield "f32_3d_interp_cubic_tiles_v2", cube, 1e-3, "abs", dict(predictor="interp", block_elems=300)
    # balanced tiles (an axis cut into equal tiles, no thin remainder): pins encoding since
    # f32_3d_interp_cubic_tiles_v2 was superseded
    yield "f32_3d_interp_balanced_tiles_v2", cube, 1e-3, "abs", dict(predictor="interp", block_elems=300)
    # what "auto" now writes for interpolation: QoZ level bounds, axis order reversed
    yield "f32_3d_interp_reversed_qoz_v2", smooth((9, 17, 20), 9).astype(np.float32), 1e-3, "rel", \
        dict(_core=dict(predictor=2, interp_cubic=1, interp_alpha=1.25, interp_beta=2.0, interp_order=[3, 2, 1, 0]))

    # Format version 3: the compact header (varints; eb_param only where it is not eb_abs)
    # and the cubic stencil with quadratic edges. These pin the encoder of today.
    yield "f32_2d_lorenzo_abs_v3", f32, 1e-3, "abs", dict(predictor="lorenzo", block_elems=256)
    yield "f64_3d_rel_v3", f64, 1e-4, "rel", dict(predictor="lorenzo")
    yield "f16_1d_nan_inf_v3", f16_1d, 1e-2, "abs", dict(predictor="lorenzo")
    yield "bf16_4d_v3", (bf16, "bfloat16"), 0.05, "abs", dict(predictor="lorenzo")
    yield "f32_exact_eb0_v3", exact, 0.0, "abs", dict(block_elems=50)
    yield "f32_2d_psnr_v3", psnr, 60.0, "psnr", {}
    yield "f32_3d_interp_quad_v3", cube, 1e-3, "abs", dict(predictor="interp", block_elems=300)
    yield "f64_3d_interp_linear_v3", smooth((5, 6, 33), 6), 1e-4, "rel", dict(_core=dict(predictor=2, interp_cubic=0))
    yield "f16_2d_interp_quad_v3", f16, 1e-2, "abs", dict(predictor="interp")
    yield "f32_3d_interp_reversed_qoz_v3", smooth((9, 17, 20), 9).astype(np.float32), 1e-3, "rel", \
        dict(_core=dict(predictor=2, interp_cubic=2, interp_alpha=1.25, interp_beta=2.0, interp_order=[3, 2, 1, 0]))
    # a fill value: land of a masked field (fill points read their own prediction)
    land = smooth((6, 20, 24), 10).astype(np.float32) * 3 + 290
    land[:, :8, :10] = np.float32(286.5)
    land[2, 15, 20] = np.nan
    fill = int(np.float32(286.5).view(np.uint32))
    yield "f32_3d_interp_fill_masked_v3", land, 1e-3, "abs", \
        dict(_core=dict(predictor=2, interp_cubic=2, interp_fill=1, interp_fill_bits=fill))
    yield "f32_3d_interp_fill_linear_v3", land, 1e-2, "abs", \
        dict(_core=dict(predictor=2, interp_cubic=0, interp_alpha=2.0, interp_beta=4.0, interp_fill=1, interp_fill_bits=fill))


def compress(arr, eb, mode, kw):
    """ebzip.compress, or the core directly for settings the public API chooses itself."""
    if "_core" not in kw:
        return ebzip.compress(arr, eb, mode, **kw)
    from ebzip import _core
    from ebzip.api import MODES, Compressed

    assert mode == "abs" or mode == "rel"
    value_range = float(np.nanmax(arr)) - float(np.nanmin(arr)) if mode == "rel" else 1.0
    code = {"float32": 0, "float64": 1, "float16": 2}[arr.dtype.name]
    c = Compressed()
    _core.compress(arr, code, MODES[mode], eb, eb * value_range, c, **kw["_core"])
    return c


def main() -> int:
    """Writes the fixtures not yet in the manifest; existing ones are never rewritten."""
    OUT.mkdir(exist_ok=True)
    path = OUT / "manifest.json"
    manifest = json.loads(path.read_text()) if path.exists() else {"fixtures": []}
    have = {e["name"] for e in manifest["fixtures"]}
    for name, arr, eb, mode, kw in fixtures():
        if name in have:
            continue
        if isinstance(arr, tuple):
            bits, dtype = arr
            c = ebzip.compress(bits, eb, mode, dtype=dtype, **kw)
            input_bits = bits
        else:
            c = compress(arr, eb, mode, kw)
            input_bits = arr.view(UINT[arr.dtype.itemsize])
        stream = bytes(c)
        y = ebzip.decompress(stream, raw_bf16=True)
        expected = y.view(UINT[y.dtype.itemsize])
        (OUT / f"{name}.ebz").write_bytes(stream)
        np.save(OUT / f"{name}.input.npy", input_bits)
        np.save(OUT / f"{name}.expected.npy", expected)
        info = ebzip.inspect(stream)
        manifest["fixtures"].append(dict(
            name=name,
            stream=f"{name}.ebz",
            input=f"{name}.input.npy",
            expected=f"{name}.expected.npy",
            shape=list(c.shape),
            dtype=c.dtype_name,
            mode=mode,
            eb=eb,
            eb_abs=c.eb_abs,
            pipeline=c.pipeline,
            block_elems=info["block_elems"],
            format_version=info["format_version"],
            nbytes=len(stream),
            sha256=hashlib.sha256(stream).hexdigest(),
        ))
        print(f"{name:22s} {c.dtype_name:9s} {str(list(c.shape)):16s} {mode:4s} eb={eb:<8g} {c.pipeline:8s} "
              f"{len(stream):6d} bytes")
    manifest["ebzip_version"] = ebzip.__version__
    manifest["format_version"] = ebzip.FORMAT_VERSION
    path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {len(manifest['fixtures'])} fixtures and manifest.json to {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
