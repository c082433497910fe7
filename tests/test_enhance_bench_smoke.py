"""Smoke test of bench/enhance.py --quick: it runs on the real data and reports the bound kept.

Needs ../shared/data (or $EBZIP_DATA) and torch; skips otherwise.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EBZIP_DATA") or REPO.parent / "shared" / "data")
pytest.importorskip("torch")


@pytest.mark.skipif(not (DATA / "manifest.json").is_file(), reason=f"no benchmark data at {DATA}")
def test_enhance_bench_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "enhance.py"), "--quick", "--data", str(DATA),
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "enhance.json").read_text())
    recs = report["records"]
    assert recs and {r["variant"] for r in recs} == {"cross_1x"}
    assert all(r["violations"] == 0 and r["max_err_over_eb"] <= 1.0 for r in recs), recs
    assert all(r["bits_per_value"] > r["base_bits_per_value"] for r in recs)  # the container costs something
    acc = report["acceptance"]
    assert acc["points"] == len(recs) and isinstance(acc["passed"], bool)
    assert "## Acceptance" in (tmp_path / "enhance.md").read_text()

    # --report-only merges runs: here the same run twice, so every record twice and the same mean
    merged = tmp_path / "merged"
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "enhance.py"), "--report-only",
                           str(tmp_path / "enhance.json"), str(tmp_path / "enhance.json"), "--out", str(merged)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again = json.loads((merged / "enhance.json").read_text())
    assert len(again["records"]) == 2 * len(recs) and again["acceptance"]["points"] == 2 * acc["points"]
    assert again["acceptance"]["mean_gain_db"] == pytest.approx(acc["mean_gain_db"])
