"""Honest failure: corruption detection, the errors table, the fuzz corpus and a bounded fuzz run.

The long versions live outside the default run:
  python bench/bitflip.py [--exhaustive]      100,000 single-byte flips (+ every byte x 8 masks)
  fuzz/ci.sh                                   C++ core under ASan+UBSan, libFuzzer (see fuzz/README.md)
  EBZIP_FUZZ_RUNS=200000 pytest tests/test_reliability.py -k atheris
"""

from __future__ import annotations

import glob
import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest

import ebzip

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(relpath: str, name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, relpath))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def bitflip():
    pytest.importorskip("ml_dtypes")
    return _load("bench/bitflip.py", "ebzip_bench_bitflip")


@pytest.fixture(scope="module")
def fuzz_api():
    return _load("fuzz/fuzz_api.py", "ebzip_fuzz_api")


# ---------------------------------------------------------------- corruption


def test_random_single_byte_flips_all_detected(bitflip):
    r = bitflip.run(600, seed=11, verbose=False)
    assert r["detected"] == r["trials"] == 600, r["misses"][:5]


@pytest.mark.parametrize("predictor", ["lorenzo", "interp"])
def test_every_byte_of_a_small_stream_is_covered(predictor):
    """Each byte position of a multi-chunk stream, flipped: always StreamError."""
    x = np.cumsum(np.random.default_rng(3).standard_normal((12, 40)), axis=1).astype(np.float32)
    x[2, 5] = np.nan
    s = bytes(ebzip.compress(x, 1e-2, predictor=predictor, block_elems=120))
    assert ebzip.inspect(s)["pipeline"] == predictor
    assert len(s) > 300
    for at in range(len(s)):
        b = bytearray(s)
        b[at] ^= 0x04
        with pytest.raises(ebzip.StreamError):
            ebzip.decompress(bytes(b))


def test_truncation_at_every_length_detected():
    s = bytes(ebzip.compress(np.linspace(0, 1, 500), 1e-3, block_elems=100))
    for n in range(len(s)):
        with pytest.raises(ebzip.StreamError):
            ebzip.decompress(s[:n])


# ---------------------------------------------------------------- docs/errors.md


def test_errors_doc_rows_are_current():
    """Every Python-API row of docs/errors.md is what the code does now (CLI rows: make_errors_table.py --check)."""
    mod = _load("docs/make_errors_table.py", "ebzip_make_errors_table")
    with open(os.path.join(ROOT, "docs", "errors.md")) as f:
        doc = f.read()
    stale = []
    for _, what, code in mod.CASES:
        exc, msg = mod.run_case(code)
        row = f"| {mod._md(what)} | {mod._md(f'`{code}`')} | {mod._md(exc)} | {mod._md(msg)} |"
        if row not in doc:
            stale.append(row)
    assert not stale, "docs/errors.md is stale (run python docs/make_errors_table.py); now:\n" + "\n".join(stale)


# ---------------------------------------------------------------- fuzzing


def test_corpus_replays_through_python_harness(fuzz_api):
    files = sorted(glob.glob(os.path.join(ROOT, "fuzz", "corpus", "*")))
    assert len(files) >= 30
    for path in files:
        with open(path, "rb") as f:
            fuzz_api.one_input(f.read())


def test_fix_crcs_makes_a_mutated_stream_pass_the_checksums(fuzz_api):
    s = bytearray(ebzip.compress(np.linspace(0, 1, 300, dtype=np.float32), 1e-3, block_elems=100))
    s[-5] ^= 0xFF  # a chunk byte
    with pytest.raises(ebzip.StreamError, match="checksum"):
        ebzip.decompress(bytes(s))
    fuzz_api.fix_crcs(s)
    try:
        ebzip.decompress(bytes(s))  # gets past every CRC: decodes, or the decoder's own checks refuse it
    except ebzip.StreamError as e:
        assert "checksum" not in str(e)


def test_atheris_bounded_run(tmp_path):
    """A short coverage-guided run of fuzz/fuzz_api.py (EBZIP_FUZZ_RUNS sets its length; CI runs longer)."""
    pytest.importorskip("atheris")
    runs = int(os.environ.get("EBZIP_FUZZ_RUNS", "1500"))
    work = tmp_path / "corpus"
    work.mkdir()
    p = subprocess.run(
        [sys.executable, os.path.join(ROOT, "fuzz", "fuzz_api.py"), str(work), os.path.join(ROOT, "fuzz", "corpus"),
         f"-runs={runs}", "-timeout=60", "-rss_limit_mb=4096", "-print_final_stats=1",
         f"-artifact_prefix={tmp_path}/"],
        capture_output=True, text=True, timeout=max(600, runs // 20))
    tail = "\n".join((p.stdout + p.stderr).splitlines()[-25:])
    assert p.returncode == 0, tail
    assert f"stat::number_of_executed_units: {runs}" in p.stdout + p.stderr, tail
    print(tail)


# ---------------------------------------------------------------- error messages


def test_truncated_payload_message_names_the_right_section():
    s = bytes(ebzip.compress(np.linspace(0, 1, 1000, dtype=np.float32), 1e-3, block_elems=300))
    with pytest.raises(ebzip.StreamError) as info:
        ebzip.decompress(s[:-1])
    assert "header" not in str(info.value), str(info.value)
