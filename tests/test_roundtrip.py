"""Round-trip properties: the error bound holds on every finite element, always.

Checked by conftest.assert_within_bound in float64 and in the element's own
type; NaN/Inf bit-exact; eb=0 lossless; PSNR mode reaches its target.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ebzip
from conftest import (
    scaled,
    ALL_DTYPES,
    FMAX,
    MODES,
    NUMPY_DTYPES,
    TINY,
    arrays,
    as_numpy,
    as_torch,
    assert_within_bound,
    bits_of,
    bounds,
    check_roundtrip,
    from_float64,
    psnr,
    shapes,
)

# ---------------------------------------------------------------- properties


PREDICTORS = ["auto", "lorenzo", "interp"]


@pytest.mark.parametrize("name", NUMPY_DTYPES)
@given(data=st.data())
def test_roundtrip_numpy(name, data):
    storage = data.draw(arrays(name), label="array")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    eb = data.draw(bounds(mode, storage, name), label="eb")
    predictor = data.draw(st.sampled_from(PREDICTORS), label="predictor")
    x = as_numpy(storage, name)
    c, _ = check_roundtrip(x, eb, mode, predictor=predictor)
    if predictor != "auto" and c.eb_abs > 0 and x.size:
        assert c.pipeline == predictor


@pytest.mark.parametrize("name", ALL_DTYPES)
@given(data=st.data())
@settings(max_examples=scaled(100))
def test_roundtrip_torch(name, data):
    torch = pytest.importorskip("torch")
    storage = data.draw(arrays(name), label="array")
    mode = data.draw(st.sampled_from(MODES), label="mode")
    eb = data.draw(bounds(mode, storage, name), label="eb")
    x = as_torch(storage, name)
    c, y = check_roundtrip(x, eb, mode)
    assert isinstance(y, torch.Tensor) and y.dtype == x.dtype and y.device == x.device


@pytest.mark.parametrize("name", NUMPY_DTYPES)
@given(data=st.data())
def test_eb_zero_is_lossless(name, data):
    storage = data.draw(arrays(name), label="array")
    mode = data.draw(st.sampled_from(["abs", "rel"]), label="mode")
    x = as_numpy(storage, name)
    c = ebzip.compress(x, 0.0, mode)
    assert c.eb_abs == 0.0
    y = ebzip.decompress(c)
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_array_equal(bits_of(y), bits_of(x))


@pytest.mark.parametrize("name", NUMPY_DTYPES)
@given(data=st.data())
@settings(max_examples=scaled(100))
def test_psnr_target_reached(name, data):
    storage = data.draw(arrays(name, kinds=("noise", "walk", "smooth", "steps", "mixed", "denormal")), label="array")
    target = data.draw(st.floats(1.0, 160.0), label="target dB")
    x = as_numpy(storage, name)
    c, y = check_roundtrip(x, target, "psnr")
    assert psnr(x, y) >= target - 1e-9


@pytest.mark.parametrize("name", NUMPY_DTYPES)
@given(data=st.data())
@settings(max_examples=scaled(60))
def test_multichunk_roundtrip(name, data):
    """Many small chunks (block_elems tiny) behave like one big one."""
    storage = data.draw(arrays(name, shape=data.draw(shapes(max_elems=3000)), kinds=("walk", "smooth", "mixed", "noise")))
    mode = data.draw(st.sampled_from(MODES))
    eb = data.draw(bounds(mode, storage, name))
    block = data.draw(st.sampled_from([1, 2, 7, 64, 1000]))
    predictor = data.draw(st.sampled_from(PREDICTORS))
    x = as_numpy(storage, name)
    c, y = check_roundtrip(x, eb, mode, block_elems=block, predictor=predictor)
    assert ebzip.inspect(c)["block_elems"] == block


@given(data=st.data())
@settings(max_examples=scaled(60))
def test_rel_bound_is_fraction_of_range(data):
    name = data.draw(st.sampled_from(NUMPY_DTYPES))
    storage = data.draw(arrays(name, kinds=("noise", "walk", "smooth")))
    x = as_numpy(storage, name)
    eb = data.draw(st.floats(1e-6, 0.5))
    c, y = check_roundtrip(x, eb, "rel")
    x64 = x.astype(np.float64)
    x64 = x64[np.isfinite(x64)]
    expected = float(x64.max() - x64.min()) * eb if x64.size else 0.0
    assert c.eb_abs == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------- targeted cases

EXTREME_EBS = [0.0, 5e-324, 1e-30, 1e-3, 0.5, 1.0, 8.0, 16.0, 17.0, 31.0, 32.0, 33.0, 1000.0, 1e5, 1e30,
               3.4028234663852886e38, 1e300, 1.7976931348623157e308]


@pytest.mark.parametrize("name", NUMPY_DTYPES)
@pytest.mark.parametrize("eb", EXTREME_EBS)
def test_values_near_dtype_max(name, eb):
    m = FMAX[name]
    v = np.array([m, -m, m * 0.999, -m * 0.999, m / 2, -m / 2, 0.0, m, m * 0.75, -m * 0.5, m, -m, 1.0, m])
    x = as_numpy(from_float64(v, name), name)
    for shape in [(14,), (2, 7), (7, 2)]:
        check_roundtrip(x.reshape(shape), eb, "abs")
    check_roundtrip(x, min(eb, 1.0), "rel")  # (larger rel bounds overflow float64: see test_huge_derived_bound_is_accepted)


@pytest.mark.parametrize("name", NUMPY_DTYPES)
@pytest.mark.parametrize("eb_in_tiny", [0.0, 0.25, 0.5, 1.0, 1.5, 3.0, 100.0])
def test_denormals(name, eb_in_tiny):
    t = TINY[name]
    rng = np.random.default_rng(7)
    v = rng.integers(-50, 51, 500) * t
    x = as_numpy(from_float64(v, name), name).reshape(20, 25)
    check_roundtrip(x, eb_in_tiny * t, "abs")
    check_roundtrip(x, eb_in_tiny / 100, "rel")


@pytest.mark.parametrize("name", NUMPY_DTYPES)
@pytest.mark.parametrize("eb", [0.0, 1e-3, 1.0, 1e30])
@pytest.mark.parametrize("mode", MODES)
def test_nan_inf_bit_exact(name, eb, mode):
    """NaN (with payloads and sign), +Inf and -Inf come back bit-exactly."""
    nbits = {"float16": 16, "bfloat16": 16, "float32": 32, "float64": 64}[name]
    mant = {"float16": 10, "bfloat16": 7, "float32": 23, "float64": 52}[name]
    ut = {16: np.uint16, 32: np.uint32, 64: np.uint64}[nbits]
    exp_all = ((1 << (nbits - 1 - mant)) - 1) << mant
    sign = 1 << (nbits - 1)
    specials = [exp_all, exp_all | sign,  # +inf, -inf
                exp_all | 1, exp_all | (1 << (mant - 1)), exp_all | ((1 << mant) - 1),  # NaNs (signalling, quiet, all ones)
                sign | exp_all | 5, sign | exp_all | (1 << (mant - 1)) | 3]  # negative NaNs with payloads
    rng = np.random.default_rng(3)
    v = from_float64(rng.standard_normal(300), name)
    bits = v.view(ut).copy()
    idx = rng.permutation(300)[: 3 * len(specials)]
    bits[idx] = np.array(specials * 3, dtype=ut)
    storage = bits if name == "bfloat16" else bits.view(name)
    x = as_numpy(storage, name).reshape(3, 100)
    c, y = check_roundtrip(x, eb if mode != "psnr" else 40.0, mode)
    np.testing.assert_array_equal(bits_of(y).reshape(-1)[idx], bits_of(x).reshape(-1)[idx])


@pytest.mark.parametrize("name", NUMPY_DTYPES)
@pytest.mark.parametrize("fill", [0.0, -0.0, 1.0, -3.5, "max", "tiny", "nan", "inf"])
@pytest.mark.parametrize("mode,eb", [("abs", 0.0), ("abs", 0.1), ("rel", 0.0), ("rel", 0.01), ("psnr", 40.0)])
def test_constant_arrays(name, fill, mode, eb):
    val = {"max": FMAX[name], "tiny": TINY[name], "nan": np.nan, "inf": np.inf}.get(fill, fill)
    x = as_numpy(from_float64(np.full((9, 11), val), name), name)
    c, y = check_roundtrip(x, eb, mode)
    if mode != "abs":  # value range 0: stored exactly
        assert c.eb_abs == 0.0
        np.testing.assert_array_equal(bits_of(y), bits_of(x))


@pytest.mark.parametrize("name", NUMPY_DTYPES)
@pytest.mark.parametrize("mode,eb", [("abs", 1e-2), ("rel", 1e-3), ("psnr", 60.0)])
def test_smooth_data_compresses(name, mode, eb):
    """A random walk at a moderate bound must actually be compressed (not just stored)."""
    rng = np.random.default_rng(11)
    walk = np.cumsum(np.cumsum(rng.standard_normal((64, 64)), axis=0), axis=1) * 0.01
    x = as_numpy(from_float64(walk, name), name)
    c, y = check_roundtrip(x, eb, mode)
    assert c.ratio > 1.5, c


def test_white_noise_huge_range_float64():
    rng = np.random.default_rng(5)
    x = rng.standard_normal(4000) * 10.0 ** rng.integers(-300, 300, 4000)
    for eb in [1e-300, 1e-10, 1.0, 1e100, 1e300]:
        check_roundtrip(x, eb, "abs")
    for eb in [1e-12, 1e-3, 0.5]:
        check_roundtrip(x, eb, "rel")


def test_opposite_extremes_float64_rel_and_psnr():
    """max - min overflows float64: the range is clamped, and the bounds still hold."""
    m = FMAX["float64"]
    x = np.array([m, -m, 0.0, 1.0, m / 3, -m / 7])
    check_roundtrip(x, 1e-3, "rel")
    check_roundtrip(x, 60.0, "psnr")


@pytest.mark.parametrize("name", NUMPY_DTYPES)
@pytest.mark.parametrize("shape", [(), (0,), (1,), (1, 1, 1, 1, 1), (0, 3, 5), (3, 0), (1, 1, 7, 1, 3), (2, 3, 4, 5, 6)])
def test_edge_shapes(name, shape):
    rng = np.random.default_rng(1)
    x = as_numpy(from_float64(np.cumsum(rng.standard_normal(math.prod(shape))).reshape(shape), name), name)
    for mode, eb in [("abs", 0.0), ("abs", 1e-2), ("rel", 1e-3), ("psnr", 50.0)]:
        c, y = check_roundtrip(x, eb, mode)
        assert y.shape == shape


# ---------------------------------------------------------------- regressions (found by the properties above)


@pytest.mark.parametrize("x,eb,mode", [
    (np.array([3.0e38, -3.0e38, 1.0], dtype=np.float32), 1e300, "rel"),  # eb * range = inf
    (np.array([1e308, -1e308, 0.0]), 2.0, "rel"),
    (np.array([1e308, -1e308, 0.0]), 1.0, "psnr"),
    (np.array([1e308, -1e308, 0.0]), 60.0, "psnr"),  # sqrt(3) * range overflows before the 1e-3 factor
    (np.array([-6e307, 6e307, 1.0]), 100.0, "psnr"),
], ids=["f32-rel-1e300", "f64-rel-2", "f64-psnr-1dB", "f64-psnr-60dB", "f64-psnr-100dB-range-1.2e308"])
def test_huge_derived_bound_is_accepted(x, eb, mode):
    """A valid eb whose absolute bound (eb * range, or the PSNR bound) is beyond float64
    must not make compress fail; the bound still holds (everything may be stored exactly)."""
    check_roundtrip(x, eb, mode)


@pytest.mark.parametrize("x,target", [
    (np.array([9.48338265e-161, 9.45759914e-161, 9.53485190e-161, np.inf, 9.41724269e-161, 9.50696914e-161,
               9.60120964e-161]), 1.0),  # squared errors underflow: math domain error
    (np.array([2.30630338e-163, np.inf, 7.45322768e-163]), 1.0),  # squared errors underflow to 0: "PSNR = inf"
    (np.array([1e-160, 3e-160, 2e-160]), 1.0),
], ids=["domain-error", "underflow-2", "underflow-3"])
def test_psnr_tiny_magnitudes(x, target):
    """PSNR mode on data of tiny magnitude (float64 ~1e-160): must neither crash nor miss the target."""
    check_roundtrip(x, target, "psnr")


@pytest.mark.parametrize("x,target", [
    (np.array([0.0, 1.0, 1.0, 1.0, 1.0]), 1.0),
    (np.array([0.0, 1.0, 1.0, 1.0, 1.0], dtype=np.float32), 1.0),
    (np.array([-0.02297188633611562, 0.021164105653316053]), 6.027128542061861),
], ids=["f64-5", "f32-5", "f64-2"])
def test_psnr_target_small_arrays(x, target):
    """The PSNR tightening loop must end at or above the target (or fall back to a bound that does)."""
    check_roundtrip(x, target, "psnr")


# ---------------------------------------------------------------- the checker itself


def test_checker_catches_violations():
    """assert_within_bound must fail on the faults it is meant to find (so passing means something)."""
    x = np.array([1.0, np.nan, np.inf, -0.0, 2.0], dtype=np.float32)
    ok = x.copy()
    ok[0] = np.float32(1.0) + np.float32(0.25)
    assert_within_bound(x, ok, 0.25)
    bad_cases = []
    y = ok.copy()
    y[0] = np.float32(1.2500001)  # just over the bound
    bad_cases.append((y, 0.25))
    y = x.copy()
    y[1] = np.float32(-np.nan)  # NaN sign changed
    bad_cases.append((y, 0.25))
    y = x.copy()
    y.view(np.uint32)[1] += 1  # NaN payload changed
    bad_cases.append((y, 0.25))
    y = x.copy()
    y[2] = np.nan  # inf came back as NaN
    bad_cases.append((y, 0.25))
    y = x.copy()
    y[4] = np.nan  # a finite value came back as NaN
    bad_cases.append((y, 0.25))
    y = x.copy()
    y[3] = 0.0  # -0.0 -> +0.0 is not lossless
    bad_cases.append((y, 0.0))
    bad_cases.append((x.astype(np.float64), 0.25))  # dtype changed
    bad_cases.append((x.reshape(5, 1), 0.25))  # shape changed
    for y, eb in bad_cases:
        with pytest.raises(AssertionError):
            assert_within_bound(x, y, eb)
    # float16 arrays are checked too
    x16 = np.array([1000.0], dtype=np.float16)
    with pytest.raises(AssertionError):
        assert_within_bound(x16, np.array([1000.5], dtype=np.float16), 0.49)  # off by 0.5


def test_psnr_helper():
    x = np.linspace(0, 1, 101)
    assert psnr(x, x) == math.inf
    assert psnr(x, x + 0.1) == pytest.approx(20.0)
    m = 1.7976931348623157e308
    big = np.array([-m, m])
    assert psnr(big, big * 0.9) == pytest.approx(-10 * math.log10(0.05**2), rel=1e-12)


@pytest.mark.parametrize("scale", [1e-200, 1e-165, 1e-100, 1.0, 1e100, 1e160, 1e200])
def test_psnr_mode_is_scale_invariant(scale):
    """PSNR is scale-free: float64 data multiplied by 10^k (no overflow of the data itself) must reach
    the target with about the same ratio. Squared errors computed unscaled overflow above ~1e154
    (everything then gets stored exactly) and underflow below ~1e-154 (target missed)."""
    rng = np.random.default_rng(0)
    g = np.cumsum(np.cumsum(rng.standard_normal((64, 64)), axis=0), axis=1)
    reference = ebzip.compress(g, 40.0, "psnr")
    c, y = check_roundtrip(g * scale, 40.0, "psnr")
    assert c.ratio > 0.5 * reference.ratio, f"ratio {c.ratio:.2f} at scale {scale:g} vs {reference.ratio:.2f} at 1"
