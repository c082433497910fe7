"""Smoke test of the benchmark harness: bench/compare_cpu.py --quick runs and writes its reports.

Needs the real data in ../shared/data (or $EBZIP_DATA); a fresh clone has none, so it skips.
Peers that are not installed (pysz, zfpy, zstandard, matplotlib) are skipped by the script itself.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EBZIP_DATA") or REPO.parent / "shared" / "data")


@pytest.mark.skipif(not (DATA / "manifest.json").is_file(), reason=f"no benchmark data at {DATA}")
def test_compare_cpu_quick(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "compare_cpu.py"), "--quick", "--data", str(DATA),
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "compare_cpu.md").is_file()
    report = json.loads((tmp_path / "compare_cpu.json").read_text())
    assert report["records"] and all("error" not in r for r in report["records"]), report["records"]
    # ebzip, when installed, must keep its bound on every field it was measured on.
    ebzip_runs = [r for r in report["records"] if r["codec"].startswith("ebzip")]
    assert not [r for r in ebzip_runs if r["violation"]]
