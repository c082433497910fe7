"""Smoke test of the benchmark harness: bench/compare_cpu.py --quick runs and writes its reports.

Needs the real data in ../shared/data (or $EBZIP_DATA); a fresh clone has none, so it skips.
Peers that are not installed (pysz, zfpy, hdf5plugin, zstandard, matplotlib) are skipped by the script itself.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EBZIP_DATA") or REPO.parent / "shared" / "data")
sys.path.insert(0, str(REPO / "bench"))
import compare_cpu  # noqa: E402  (the helpers are tested directly below)


def _installed(mod: str) -> bool:
    return importlib.util.find_spec(mod) is not None


@pytest.mark.skipif(not (DATA / "manifest.json").is_file(), reason=f"no benchmark data at {DATA}")
def test_compare_cpu_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "compare_cpu.py"), "--quick", "--data", str(DATA),
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "compare_cpu.md").is_file()
    report = json.loads((tmp_path / "compare_cpu.json").read_text())
    assert report["records"] and all("error" not in r for r in report["records"]), report["records"]
    # ebzip, when installed, must keep its bound on every field it was measured on (timed run and RD sweep).
    ebzip_runs = [r for r in report["records"] if r["codec"].startswith("ebzip")]
    assert not [r for r in ebzip_runs if r["violation"]]
    assert not [p for p in report["rd_points"] if p["series"] == "ebzip" and p.get("violation")]
    assert all("error" not in p for p in report["rd_points"]), report["rd_points"]
    codecs = {r["codec"] for r in report["records"]}
    if _installed("hdf5plugin") and _installed("h5py"):
        assert "sz2_h5" in codecs, proc.stdout
    if ebzip_runs and "sz3" in codecs:
        acc = report["acceptance"]
        assert [r["rel"] for r in acc["cr"]] == [0.01, 0.001, 0.0001]
        assert all(isinstance(r["passed"], bool) and r["fields"] == 3 for r in acc["cr"])
        assert [r["rel"] for r in acc["speed"]][-1] == "all"
        assert 0 <= acc["rd"]["fraction"] <= 1 and acc["rd"]["fields"] == 3
        assert "## Acceptance" in (tmp_path / "compare_cpu.md").read_text()


def test_rd_gains_interpolates_in_log_bits():
    ours = [(1.0, 40.0), (4.0, 60.0)]  # log2: 0 -> 40 dB, 2 -> 60 dB
    g = compare_cpu.rd_gains(ours, [(2.0, 49.0), (0.5, 10.0), (8.0, 99.0), (2.0, math.inf)])
    # Only the point at 2 bits/value lies inside ebzip's range; there ebzip has 50 dB.
    assert len(g) == 1 and g[0]["ebzip_psnr"] == pytest.approx(50.0) and g[0]["gain_db"] == pytest.approx(1.0)


def test_rd_gains_non_monotone_curve_takes_the_best_segment():
    # Bits/value first rises, then falls back (a tighter bound on a lattice field): at 2 bits/value two
    # segments apply, 1->4 (50 dB there) and 4->2 (ends at 90 dB); the higher counts.
    ours = [(1.0, 40.0), (4.0, 60.0), (2.0, 90.0)]
    g = compare_cpu.rd_gains(ours, [(2.0, 70.0)])
    assert len(g) == 1 and g[0]["ebzip_psnr"] == pytest.approx(90.0)


def test_rd_compare_pass_and_fail():
    def pts(field, series, curve):
        return [dict(field=field, series=series, rel=1.0 / (i + 1), bits_per_value=b, psnr=p)
                for i, (b, p) in enumerate(curve)]

    points = (pts("a", "ebzip", [(1, 40), (4, 60)]) + pts("a", "sz3", [(2, 49), (3, 52)])
              + pts("b", "ebzip", [(1, 40), (4, 60)]) + pts("b", "sz3", [(2, 49), (3, 60)])
              + pts("c", "ebzip", [(1, 40), (2, 50)]) + pts("c", "sz3", [(8, 90)]))
    rd = compare_cpu.rd_compare(points, "sz3")
    assert rd["fields"] == 3 and rd["passed"] == 1 and rd["fraction"] == pytest.approx(1 / 3)
    assert rd["failing"] == ["b", "c"] and rd["not_comparable"] == ["c"]
