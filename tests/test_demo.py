"""The demo (the package's main job) and the command-line entry points."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

import ebzip
from ebzip.demo import run_demo
from ebzip.simulate import gray_scott


def test_run_demo_small(capsys):
    rows = run_demo(size=64, snapshots=4)
    out = capsys.readouterr().out
    assert [r["rel"] for r in rows] == [1e-2, 1e-3, 1e-4]
    for r in rows:
        assert 0 <= r["err_over_eb"] <= 1, r
        assert r["eb_abs"] > 0 and r["ratio"] > 1, r
        assert math.isfinite(r["psnr"]) and r["psnr"] > 0, r
    # tighter bounds: better PSNR, lower ratio
    assert rows[0]["psnr"] < rows[1]["psnr"] < rows[2]["psnr"]
    assert rows[0]["ratio"] > rows[1]["ratio"] > rows[2]["ratio"]
    assert "Gray-Scott" in out and "within its bound" in out


@pytest.mark.parametrize("size", [16, 24, 48])
def test_small_demo_fields_have_a_pattern(size):
    """Sizes 16-48 decayed to a constant (and the demo then divided by a bound of 0)."""
    assert np.ptp(gray_scott(size=size, snapshots=2)) > 0.1


def test_demo_cli_bad_options_are_one_line_errors():
    for args in (["--size", "8"], ["--snapshots", "0"], ["--threads", "-1"]):
        p = _run("-m", "ebzip", "demo", *args)
        assert p.returncode != 0 and "Traceback" not in p.stderr and "Error:" in p.stderr, args


def test_demo_field_roundtrip():
    """The simulated field itself, checked independently of the demo's own report."""
    field = gray_scott(size=32, snapshots=3)
    assert field.shape == (3, 32, 32) and field.dtype == np.float32 and np.isfinite(field).all()
    assert np.ptp(field) > 0.1  # a pattern, not the constant a too-small seed patch decays to
    for rel in (1e-2, 1e-4):
        c = ebzip.compress(field, rel, mode="rel")
        y = ebzip.decompress(c)
        assert np.abs(field.astype(np.float64) - y.astype(np.float64)).max() <= c.eb_abs
        assert np.all(np.abs(field - y) <= np.float32(c.eb_abs))


def _run(*args, timeout=120):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


def test_cli_demo():
    p = _run("-m", "ebzip", "demo", "--size", "64", "--snapshots", "4", "--threads", "2")
    assert p.returncode == 0, p.stderr
    assert "within its bound" in p.stdout
    lines = [ln for ln in p.stdout.splitlines() if ln.strip().startswith(("1e-02", "1e-03", "1e-04"))]
    assert len(lines) == 3, p.stdout
    for ln in lines:
        assert float(ln.split()[3]) <= 1.0, ln  # max err/eb column


def test_cli_demo_defaults_size_flags():
    p = _run("-m", "ebzip", "demo", "--size", "64", "--snapshots", "4")
    assert p.returncode == 0, p.stderr


def test_info_module():
    p = _run("-m", "ebzip.info")
    assert p.returncode == 0, p.stderr
    assert f"stream format version {ebzip.FORMAT_VERSION}" in p.stdout
    assert ebzip.__version__ in p.stdout


def test_cli_info_and_help():
    p = _run("-m", "ebzip", "info")
    assert p.returncode == 0, p.stderr
    assert "CPU backend" in p.stdout
    p = _run("-m", "ebzip", "--help")
    assert p.returncode == 0 and "demo" in p.stdout
    p = _run("-m", "ebzip", "no-such-command")
    assert p.returncode != 0
