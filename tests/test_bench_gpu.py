"""Smoke test of the GPU benchmark harness (bench/gpu.py --smoke): it must run end to end
on a CPU-only machine, measure the CPU backend and the shared path, and report what it skipped."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_harness_smoke_runs_on_this_machine(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "gpu.py"), "--smoke", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(next(tmp_path.glob("gpu_*_smoke.json")).read_text())
    records, skipped = report["records"], report["skipped"]
    assert not [r for r in records if "error" in r], records
    codecs = {r["codec"] for r in records}
    assert "ebzip-cpu" in codecs
    inputs = {r["input"] for r in records}
    assert {"synthetic_1MB", "synthetic_4MB"} <= inputs
    for r in records:
        assert r["comp_gbps"] > 0 and r["decomp_gbps"] > 0 and r["ratio"] > 1
        if r["codec"].startswith("ebzip"):
            assert r["max_err_over_eb"] <= 1.0
    import ebzip._device as dev

    if dev._shared_path is not None:  # the CUDA driver's source on the CPU writes the CPU bytes
        shared = [r for r in records if r["codec"] == "ebzip-shared-path"]
        assert shared and all(r["same_bytes_as_cpu"] for r in shared)
    if not dev.cuda_runnable():
        assert any("ebzip-cuda" in s for s in skipped), skipped
        assert "skipped: ebzip-cuda" in proc.stdout
    assert report["environment"]["backends"]["cpu"]["built"]
