"""The ebzip command line: HDF5 files (compress, decompress, info, verify, estimate), raw binary
arrays with SZ3/zfp flags, stdin/stdout, safe outputs, errors; the demo and build report stay."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner

import ebzip
from ebzip import cli as cli_mod

h5py = pytest.importorskip("h5py")

import ebzip.h5 as eh  # noqa: E402
from h5_helpers import FLOAT_PATHS, attrs_equal, make_rich_file, shared_fields, smooth_field  # noqa: E402


def run(*args, input=None):
    return CliRunner().invoke(cli_mod.cli, [str(a) for a in args], input=input, catch_exceptions=False)


def leftovers(folder):
    return [p for p in os.listdir(folder) if "ebzip-tmp" in p]


@pytest.fixture(scope="module")
def rich(tmp_path_factory):
    d = tmp_path_factory.mktemp("rich")
    src = make_rich_file(str(d / "in.h5"))
    out = str(d / "out.h5")
    r = run("compress", src, out, "--eb", "1e-3", "--mode", "rel")
    assert r.exit_code == 0, r.output
    return src, out, r.output


# ------------------------------------------------------------------ demo and build report


def test_demo_and_no_command_still_run_the_demo(monkeypatch):
    calls = []
    import ebzip.demo

    monkeypatch.setattr(ebzip.demo, "run_demo", lambda **kw: calls.append(kw))
    assert run().exit_code == 0
    assert run("demo", "--size", "64", "--snapshots", "4", "--threads", "1").exit_code == 0
    assert calls == [dict(size=256, snapshots=32, threads=None), dict(size=64, snapshots=4, threads=1)]
    assert cli_mod.main(["demo", "--size", "32", "--snapshots", "2"]) == 0


def test_info_without_file_is_the_build_report():
    r = run("info")
    assert r.exit_code == 0 and "stream format version" in r.output and "CPU backend" in r.output


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "ebzip", "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for cmd in ("compress", "decompress", "info", "verify", "estimate", "demo"):
        assert cmd in out.stdout


# ------------------------------------------------------------------ HDF5


def test_compress_keeps_everything_but_the_floats(rich):
    src, out, report = rich
    assert "5 float dataset(s) compressed" in report
    with h5py.File(src, "r") as a, h5py.File(out, "r") as b:
        assert attrs_equal(a, b) and attrs_equal(a["grid/coords"], b["grid/coords"])
        for path in FLOAT_PATHS:
            assert eh.is_ebzip(b[path]), path
            assert attrs_equal(a[path], b[path])
            assert b[path].chunks == (a[path].chunks or b[path].chunks)
        assert b["resizable"].maxshape == (None, 64)
        assert b["data/withnan"].fillvalue == -999.0
        # not compressed, copied as they were: ints (with their filters), strings, scalars, scales
        for path in ("labels", "names", "scalar", "empty", "time", "grid/coords/x"):
            assert not eh.is_ebzip(b[path])
            assert b[path].dtype == a[path].dtype and b[path].shape == a[path].shape
            assert np.array_equal(a[path][()], b[path][()])
        assert b["labels"].compression == "gzip" and b["labels"].shuffle and b["labels"].chunks == (100,)
        assert b["data/hard"] == b["labels"]  # still one object with two names
        assert b.get("link_soft", getlink=True).path == "/data/temp"
        assert b.get("ext", getlink=True).filename == "other.h5"
        assert b[b.attrs["ref"]].name in ("/labels", "/data/hard")
        # dimension scales: same scales attached, label kept, coordinates exact
        t = b["data/temp"]
        assert t.dims[0].label == "t"
        assert [s.name for s in t.dims[0].values()] == ["/time"]
        assert [s.name for s in t.dims[2].values()] == ["/grid/coords/x"]
        assert h5py.h5ds.is_scale(b["time"].id)


def test_info_lists_each_dataset(rich):
    _, out, _ = rich
    r = run("info", out)
    assert r.exit_code == 0, r.output
    lines = {ln.split()[0]: ln for ln in r.output.splitlines() if ln.startswith("/")}
    assert "ebzip" in lines["/data/temp"] and "rel 0.001" in lines["/data/temp"] and "lorenzo" in lines["/data/temp"]
    assert "shuffle+deflate" in lines["/data/hard"]
    assert f"filter id {eh.FILTER_ID}" in r.output


def test_verify_passes_and_reports(rich):
    src, out, _ = rich
    r = run("verify", src, out)
    assert r.exit_code == 0, r.output
    row = next(ln for ln in r.output.splitlines() if ln.startswith("/data/withnan"))
    ratio = float(row.split()[5])
    assert 0.5 < ratio <= 1.0
    assert "ok:" in r.output


def test_decompress_then_verify_with_a_given_bound(rich, tmp_path):
    src, out, _ = rich
    dec = str(tmp_path / "dec.h5")
    r = run("decompress", out, dec)
    assert r.exit_code == 0, r.output
    with h5py.File(dec, "r") as f:
        assert not eh.is_ebzip(f["data/temp"])
        assert f["data/temp"].chunks == (5, 16, 64)
        f["data/temp"][...]  # plain h5py reads it
    assert run("verify", src, dec, "--eb", "1e-3", "--mode", "rel").exit_code == 0
    # a tighter bound than was used must fail, with a non-zero exit
    r = run("verify", src, dec, "--eb", "1e-5", "--mode", "rel")
    assert r.exit_code == 1 and "FAIL" in r.output


def test_verify_catches_a_violation(rich, tmp_path):
    src, out, _ = rich
    bad = str(tmp_path / "bad.h5")
    assert run("decompress", out, bad).exit_code == 0
    with h5py.File(bad, "r+") as f:
        f["data/temp"][3, 3, 3] += 1.0
        f["labels"][0] += 1
    r = run("verify", src, bad, "--eb", "1e-3")
    assert r.exit_code == 1
    failing = {ln.split()[0] for ln in r.output.splitlines() if "FAIL" in ln and ln.startswith("/")}
    assert failing == {"/data/temp", "/data/hard"}  # /labels is /data/hard (one object, listed once)


def test_verify_requires_a_float_dataset_not_compressed_to_be_identical(tmp_path):
    x = np.linspace(0, 1, 1000, dtype="f4")
    a, b, c = (str(tmp_path / n) for n in ("a.h5", "b.h5", "c.h5"))
    with h5py.File(a, "w") as f:
        f["x"] = x
    with h5py.File(b, "w") as f:
        f["x"] = x + 100  # a plain float dataset: nothing records a bound for it
    with h5py.File(c, "w") as f:
        y = x.copy()
        y[0] = -0.0  # +0 -> -0: no error at all, but not the same bits
        f["x"] = y
    for other in (b, c):
        r = run("verify", a, other)
        assert r.exit_code == 1, r.output
        assert "values differ" in next(ln for ln in r.output.splitlines() if ln.startswith("/x"))
    assert run("verify", a, a).exit_code == 0
    # with --eb the given bound decides (how a decompressed file is checked)
    assert run("verify", a, c, "--eb", "1e-3").exit_code == 0
    assert run("verify", a, b, "--eb", "1e-3").exit_code == 1


def test_verify_handles_long_double_and_complex(tmp_path):
    src, out = str(tmp_path / "q.h5"), str(tmp_path / "qc.h5")
    with h5py.File(src, "w") as f:
        f["x"] = np.linspace(0, 1, 100, dtype="f4")
        f["ld"] = np.array([1, np.nan, -0.0, 3], np.longdouble)
        f["cx"] = np.array([1 + 2j, complex(np.nan, 1)], np.complex128)
    assert run("compress", src, out, "--eb", "1e-3", "-q").exit_code == 0
    for other in (src, out):
        r = run("verify", src, other)
        assert r.exit_code == 0, r.output
    with h5py.File(out, "r+") as f:
        f["ld"][3] = 4
        f["cx"][0] = 1 + 3j
    r = run("verify", src, out)
    assert r.exit_code == 1 and "Error" not in r.output
    failing = {ln.split()[0] for ln in r.output.splitlines() if "FAIL" in ln and ln.startswith("/")}
    assert failing == {"/ld", "/cx"}


def test_verify_compares_references_by_what_they_point_to(tmp_path):
    src, out, bad = (str(tmp_path / n) for n in ("r.h5", "rc.h5", "rb.h5"))
    with h5py.File(src, "w") as f:
        d = f.create_dataset("x", data=np.linspace(0, 1, 1000, dtype="f4"))
        f.create_dataset("y", data=np.arange(5))
        f.create_dataset("refs", data=[d.ref, f["y"].ref, h5py.Reference()], dtype=h5py.ref_dtype)
        f.create_dataset("regions", data=[d.regionref[10:20]], dtype=h5py.regionref_dtype)
    assert run("compress", src, out, "--eb", "1e-3", "-q").exit_code == 0
    with h5py.File(out, "r") as f:
        assert f[f["refs"][0]].name == "/x"
    r = run("verify", src, out)
    refs_row = next(ln for ln in r.output.splitlines() if ln.startswith("/refs"))
    assert "ok" in refs_row and "identical" in refs_row
    # a copy whose references point elsewhere fails
    shutil.copy(src, bad)
    with h5py.File(bad, "r+") as f:
        f["refs"][0] = f["y"].ref
    r = run("verify", src, bad)
    assert r.exit_code == 1
    assert "FAIL" in next(ln for ln in r.output.splitlines() if ln.startswith("/refs"))
    assert "ok" in next(ln for ln in r.output.splitlines() if ln.startswith("/regions"))  # itself
    with h5py.File(bad, "r+") as f:
        f["regions"][0] = f["x"].regionref[10:21]
    r = run("verify", src, bad)
    assert "FAIL" in next(ln for ln in r.output.splitlines() if ln.startswith("/regions"))


def test_include_exclude_and_eb_for(tmp_path):
    src = make_rich_file(str(tmp_path / "in.h5"))
    out = str(tmp_path / "out.h5")
    r = run("compress", src, out, "--eb", "1e-2", "--exclude", "withnan", "--eb-for", "/data/pres*=0.5:abs",
            "--eb-for", "h16=0")
    assert r.exit_code == 0, r.output
    with h5py.File(out, "r") as f:
        assert not eh.is_ebzip(f["data/withnan"])
        p = eh.filter_params(f["data/pres64"])
        assert (p.mode, p.eb, p.eb_abs) == ("abs", 0.5, 0.5)
        assert eh.filter_params(f["data/h16"]).eb_abs == 0.0
        assert eh.filter_params(f["data/temp"]).mode == "rel"
    with h5py.File(src, "r") as a, h5py.File(out, "r") as b:
        np.testing.assert_array_equal(eh.read(b["data/h16"]), a["data/h16"][...])  # eb 0: exact
    out2 = str(tmp_path / "out2.h5")
    assert run("compress", src, out2, "--eb", "1e-2", "--include", "/data/t*").exit_code == 0
    with h5py.File(out2, "r") as f:
        assert [p for p in FLOAT_PATHS if eh.is_ebzip(f[p])] == ["/data/temp"]


def test_estimate_writes_nothing_and_is_close(rich, tmp_path):
    src, out, report = rich
    before = set(os.listdir(os.path.dirname(src)))
    r = run("estimate", src, "--eb", "1e-3", "--mode", "rel", "--sample", "0.5")
    assert r.exit_code == 0, r.output
    assert set(os.listdir(os.path.dirname(src))) == before
    est = {ln.split()[0]: float(ln.split()[-3]) for ln in r.output.splitlines() if ln.startswith("/data/temp")}
    with h5py.File(out, "r") as f:
        actual = f["data/temp"].size * 4 / f["data/temp"].id.get_storage_size()
    assert 0.6 * actual < est["/data/temp"] < 1.6 * actual
    assert "nothing written" in r.output


@pytest.mark.parametrize("args,message", [
    (["compress", "{d}/missing.h5", "{d}/o.h5", "--eb", "1e-3"], "no such file"),
    (["compress", "{d}/notes.txt", "{d}/o.h5", "--eb", "1e-3"], "not an HDF5 file"),
    (["compress", "{src}", "{d}/o.h5", "--eb", "-1"], "bound"),
    (["compress", "{src}", "{d}/o.h5", "--eb", "nan"], "bound"),
    (["compress", "{src}", "{d}/o.h5"], "give a bound"),
    (["compress", "{src}", "{d}/o.h5", "--eb", "1e-3", "--include", "nothing*"], "matches no"),
    (["compress", "{src}", "{d}/o.h5", "--eb", "1e-3", "--eb-for", "temp"], "PATTERN=VALUE"),
    (["compress", "{src}", "{d}/o.h5", "--eb", "1e-3", "--eb-for", "temp=x"], "not a number"),
    (["compress", "{src}", "{d}/o.h5", "--eb", "1e-3", "--mode", "bogus"], "bogus"),
    (["compress", "{src}", "{src}", "--eb", "1e-3", "--force"], "input"),
    (["compress", "{src}", "{d}/exists.h5", "--eb", "1e-3"], "--force"),
    (["compress", "{src}", "{d}/nofolder/o.h5", "--eb", "1e-3"], "does not exist"),
    (["decompress", "{d}/notes.txt", "{d}/o.h5"], "neither"),
    (["verify", "{src}", "{d}/missing.h5"], "no such file"),
    (["info", "{d}/notes.txt"], "neither"),
    (["estimate", "{d}/notes.txt", "--eb", "1e-3"], "not an HDF5 file"),
])
def test_errors_are_clear_and_nonzero(tmp_path, args, message):
    src = make_rich_file(str(tmp_path / "in.h5"))
    (tmp_path / "notes.txt").write_text("not hdf5\n")
    (tmp_path / "exists.h5").write_bytes(b"keep me")
    before = {p: os.path.getmtime(tmp_path / p) for p in os.listdir(tmp_path)}
    r = run(*[a.format(d=tmp_path, src=src) for a in args])
    assert r.exit_code != 0
    assert message in r.output
    assert "Traceback" not in r.output
    assert {p: os.path.getmtime(tmp_path / p) for p in os.listdir(tmp_path)} == before  # nothing written
    assert (tmp_path / "exists.h5").read_bytes() == b"keep me"


def test_force_replaces_an_existing_output(rich, tmp_path):
    src, _, _ = rich
    out = tmp_path / "o.h5"
    out.write_bytes(b"old")
    assert run("compress", src, out, "--eb", "1e-2", "--force", "-q").exit_code == 0
    assert eh.is_ebzip(h5py.File(out, "r")["data/temp"])


def test_outputs_get_the_usual_permissions(tmp_path):
    src = make_rich_file(str(tmp_path / "in.h5"))
    x = np.arange(100, dtype="f4")
    x.tofile(tmp_path / "x.f32")
    old = os.umask(0o027)
    try:
        assert run("compress", src, tmp_path / "c.h5", "--eb", "1e-3", "-q").exit_code == 0
        assert run("decompress", tmp_path / "c.h5", tmp_path / "d.h5", "-q").exit_code == 0
        assert run("compress", "-i", tmp_path / "x.f32", "-o", tmp_path / "x.ebz", "-f", "-1", 100, "-a", 1,
                   "-q").exit_code == 0
        assert run("decompress", tmp_path / "x.ebz", tmp_path / "x.out", "-q").exit_code == 0
        for name in ("c.h5", "d.h5", "x.ebz", "x.out"):  # 0666 less the umask, as open() gives (was 0600)
            assert oct(os.stat(tmp_path / name).st_mode & 0o7777) == oct(0o640), name
        # a replaced file keeps its permissions
        os.chmod(tmp_path / "x.out", 0o604)
        assert run("decompress", tmp_path / "x.ebz", tmp_path / "x.out", "--force", "-q").exit_code == 0
        assert oct(os.stat(tmp_path / "x.out").st_mode & 0o7777) == oct(0o604)
    finally:
        os.umask(old)


def _read_fifo_in_background(fifo):
    got = {}

    def reader():
        with open(fifo, "rb") as f:
            got["data"] = f.read()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    return t, got


@pytest.mark.parametrize("force", [False, True])
def test_fifo_output_is_written_into_never_replaced(tmp_path, force, monkeypatch):
    private_tmp = tmp_path / "tmp"  # where the HDF5 output is written before it goes into the FIFO
    private_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private_tmp))
    src = make_rich_file(str(tmp_path / "in.h5"))
    x = smooth_field((40, 50), 3)
    x.tofile(tmp_path / "x.f32")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    more = ["--force"] if force else []
    for args in (["compress", "-i", tmp_path / "x.f32", "-o", fifo, "-f", "-2", 50, 40, "-a", "0.01", "-q"],
                 ["compress", src, fifo, "--eb", "1e-3", "-q"]):
        t, got = _read_fifo_in_background(fifo)
        r = run(*args, *more)
        t.join(60)
        assert r.exit_code == 0, r.output
        assert stat.S_ISFIFO(os.lstat(fifo).st_mode)  # still the FIFO (was renamed over: a regular file)
        assert not t.is_alive() and got["data"]
        if args[1] == "-i":
            y = ebzip.decompress(got["data"])
            assert np.abs(y.astype(np.float64) - x).max() <= 0.01
        else:
            (tmp_path / "read.h5").write_bytes(got["data"])
            assert run("verify", src, tmp_path / "read.h5").exit_code == 0
    assert leftovers(tmp_path) == [] and os.listdir(private_tmp) == []


def test_character_device_output_is_written_into(tmp_path):
    null = tmp_path / "null"  # a private /dev/null (needs root, or CAP_MKNOD)
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot make a device node here: {e}")
    x = smooth_field((40, 50), 3)
    x.tofile(tmp_path / "x.f32")
    z = tmp_path / "x.ebz"
    assert run("compress", "-i", tmp_path / "x.f32", "-o", z, "-f", "-2", 50, 40, "-a", "0.01", "-q").exit_code == 0
    for force in ([], ["--force"]):
        assert run("decompress", z, null, "-q", *force).exit_code == 0
        assert run("compress", "-i", tmp_path / "x.f32", "-o", null, "-f", "-2", 50, 40, "-a", "0.01", "-q",
                   *force).exit_code == 0
        assert stat.S_ISCHR(os.lstat(null).st_mode) and os.stat(null).st_rdev == os.makedev(1, 3)
    assert leftovers(tmp_path) == []


def test_other_non_regular_outputs_are_refused_and_links_kept(tmp_path):
    import socket

    x = np.arange(100, dtype="f4")
    x.tofile(tmp_path / "x.f32")
    sock_path = tmp_path / "s"
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(sock_path))
        r = run("compress", "-i", tmp_path / "x.f32", "-o", sock_path, "-f", "-1", 100, "-a", 1, "--force")
        assert r.exit_code == 1 and "not a regular file" in r.output
        assert stat.S_ISSOCK(os.lstat(sock_path).st_mode)
    finally:
        sock.close()
    # a link to a regular file: the file is replaced (--force), the link stays a link
    (tmp_path / "target.ebz").write_bytes(b"old")
    os.symlink(tmp_path / "target.ebz", tmp_path / "link.ebz")
    r = run("compress", "-i", tmp_path / "x.f32", "-o", tmp_path / "link.ebz", "-f", "-1", 100, "-a", 1, "-q")
    assert r.exit_code == 1 and "--force" in r.output
    r = run("compress", "-i", tmp_path / "x.f32", "-o", tmp_path / "link.ebz", "-f", "-1", 100, "-a", 1, "-q",
            "--force")
    assert r.exit_code == 0, r.output
    assert os.path.islink(tmp_path / "link.ebz")
    assert ebzip.decompress((tmp_path / "target.ebz").read_bytes()).shape == (100,)
    assert leftovers(tmp_path) == []


def test_outputs_are_reproducible_byte_for_byte(tmp_path):
    # HDF5 stamps objects with their creation time (1 s resolution) unless told not to
    src = str(tmp_path / "in.h5")
    with h5py.File(src, "w", track_times=True) as f:
        g = f.create_group("g", track_times=True)
        g.create_dataset("x", data=smooth_field((40, 50), 2), chunks=(10, 50), track_times=True)
        g.create_dataset("i", data=np.arange(10), track_times=True)
    outs = []
    for run_no in range(2):
        if run_no:
            time.sleep(1.1)
        c, d = tmp_path / f"c{run_no}.h5", tmp_path / f"d{run_no}.h5"
        assert run("compress", src, c, "--eb", "1e-3", "-q", "--threads", 1 + run_no).exit_code == 0
        assert run("decompress", c, d, "-q").exit_code == 0
        outs.append((c.read_bytes(), d.read_bytes()))
    assert outs[0][0] == outs[1][0] and outs[0][1] == outs[1][1]


def test_user_block_bytes_are_kept(tmp_path):
    src, comp, dec = (str(tmp_path / n) for n in ("ub.h5", "ubc.h5", "ubd.h5"))
    with h5py.File(src, "w", userblock_size=512) as f:
        f["x"] = np.linspace(0, 1, 1000, dtype="f4")
    block = b"MY USER BLOCK HEADER v1" + bytes(range(256)) * 2
    with open(src, "r+b") as f:
        f.write(block[:512])
    assert run("compress", src, comp, "--eb", "1e-3", "-q").exit_code == 0
    assert run("decompress", comp, dec, "-q").exit_code == 0
    for path in (comp, dec):
        with open(path, "rb") as f:
            assert f.read(512) == block[:512], path
        with h5py.File(path, "r") as f:
            assert f.userblock_size == 512
    assert run("verify", src, comp).exit_code == 0 and run("verify", src, dec, "--eb", "1e-3").exit_code == 0


def test_interrupt_leaves_no_output(tmp_path, monkeypatch):
    src = make_rich_file(str(tmp_path / "in.h5"))
    calls = []
    real = eh.encode_chunk

    def interrupting(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(eh, "encode_chunk", interrupting)
    r = CliRunner().invoke(cli_mod.cli, ["compress", src, str(tmp_path / "o.h5"), "--eb", "1e-3", "--threads", "1"])
    assert r.exit_code != 0
    assert not (tmp_path / "o.h5").exists() and leftovers(tmp_path) == []


def test_sigint_in_a_real_process_leaves_no_output(tmp_path):
    src = make_rich_file(str(tmp_path / "in.h5"))
    script = textwrap.dedent(f"""
        import signal, sys, time
        # Python turns SIGINT into KeyboardInterrupt only if SIGINT was not ignored when it started;
        # a test run launched as a background job (`cmd &` in a script) starts with it ignored
        signal.signal(signal.SIGINT, signal.default_int_handler)
        import ebzip.h5 as eh
        real = eh.encode_chunk
        def slow(*a, **k):
            print("chunk", flush=True)
            time.sleep(5)  # the signal lands mid-compression however loaded the machine is
            return real(*a, **k)
        eh.encode_chunk = slow
        from ebzip.cli import main
        sys.exit(main(["compress", {src!r}, {str(tmp_path / "o.h5")!r}, "--eb", "1e-3", "--threads", "1"]))
    """)
    p = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "chunk"
    assert leftovers(tmp_path)  # the temporary output exists while working
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode != 0
    assert not (tmp_path / "o.h5").exists() and leftovers(tmp_path) == []


# ------------------------------------------------------------------ raw binary arrays


@pytest.fixture()
def raw(tmp_path):
    x = smooth_field((16, 24, 40), 7)
    path = tmp_path / "x.f32"
    x.tofile(path)
    return x, path


def test_raw_sz3_flags_round_trip(raw, tmp_path):
    x, path = raw
    z, o = tmp_path / "x.ebz", tmp_path / "x.out"
    r = run("compress", "-i", path, "-z", z, "-f", "-3", 40, 24, 16, "-M", "REL", "-R", "1e-3")
    assert r.exit_code == 0, r.output and "ratio" in r.output
    head = ebzip.inspect(z.read_bytes())
    assert head["shape"] == (16, 24, 40) and head["mode"] == "rel" and head["eb_param"] == 1e-3
    assert run("decompress", "-z", z, "-o", o).exit_code == 0
    y = np.fromfile(o, dtype=np.float32).reshape(x.shape)
    assert np.abs(x.astype(np.float64) - y).max() <= head["eb_abs"]
    r = run("verify", path, z)
    assert r.exit_code == 0 and "ok" in r.output
    r = run("info", z)
    assert r.exit_code == 0 and "16x24x40" in r.output and "lorenzo" in r.output


def test_sz3_mode_with_its_value(raw, tmp_path, monkeypatch):
    """SZ3's '-M ABS 1e-3' (bound after the mode): was 'unexpected argument', or with a positional IN
    the bound became the output path."""
    x, path = raw
    monkeypatch.chdir(tmp_path)
    for mode, value, expected in (("ABS", "1e-3", ("abs", 1e-3)), ("rel", "1e-3", ("rel", 1e-3)),
                                  ("PSNR", "60", ("psnr", 60.0))):
        z = tmp_path / f"{mode}.ebz"
        assert cli_mod.main(["compress", "-f", "-i", str(path), "-z", str(z), "-3", "40", "24", "16",
                             "-M", mode, value]) == 0
        head = ebzip.inspect(z.read_bytes())
        assert (head["mode"], head["eb_param"]) == expected
    assert cli_mod.main(["compress", str(path), str(tmp_path / "p.ebz"), "-f", "-3", "40", "24", "16",
                         "-M", "ABS", "1e-3"]) == 0
    assert ebzip.inspect((tmp_path / "p.ebz").read_bytes())["eb_abs"] == 1e-3 and not (tmp_path / "1e-3").exists()
    # the value given twice, or a mode that disagrees with it, is still refused
    assert cli_mod.main(["compress", "-f", "-i", str(path), "-z", str(tmp_path / "q.ebz"), "-3", "40", "24", "16",
                         "-M", "ABS", "1e-3", "-R", "1e-3"]) == 2


def test_bad_bound_names_its_flag_and_a_closed_pipe_is_quiet(raw, tmp_path):
    x, path = raw
    r = run("compress", "-i", path, "-o", tmp_path / "a.ebz", "-f", "-3", 40, 24, 16, "-A", "-1")
    assert r.exit_code == 2 and "-A" in r.output and "--eb" not in r.output
    z = tmp_path / "x.ebz"  # (800 kB decoded: more than a pipe holds, so the write meets the closed end)
    z.write_bytes(bytes(ebzip.compress(np.random.default_rng(0).random(200_000, np.float32), 1e-6)))
    p = subprocess.run(f"{sys.executable} -m ebzip decompress {z} - | true", shell=True,
                       capture_output=True, text=True, timeout=60)
    assert "Broken pipe" not in p.stderr and "Traceback" not in p.stderr, p.stderr


def test_decompress_takes_sz3_flags_and_checks_them(raw, tmp_path):
    """SZ3 decompression lines repeat -f/-3/-M: 'No such option -f' before."""
    x, path = raw
    z, o = tmp_path / "x.ebz", tmp_path / "x.out"
    assert run("compress", "-i", path, "-z", z, "-f", "-3", 40, 24, 16, "-A", "1e-3").exit_code == 0
    assert cli_mod.main(["decompress", "-z", str(z), "-o", str(o), "-f", "-3", "40", "24", "16",
                         "-M", "ABS", "1e-3"]) == 0
    assert np.abs(np.fromfile(o, np.float32).reshape(x.shape) - x).max() <= 1e-3
    for bad in (["-f", "-3", "16", "24", "40"], ["-d"], ["-2", "40", "384"]):
        r = run("decompress", "-z", z, "-o", tmp_path / "y.out", *bad)
        assert r.exit_code == 2 and not (tmp_path / "y.out").exists(), bad


def test_info_names_the_interpolation_and_its_fill_value(tmp_path):
    from ebzip import _core
    from ebzip.api import Compressed

    x = smooth_field((16, 24, 40), 7)
    x[:, :10, :12] = np.float32(-999.0)
    c = Compressed()
    _core.compress(x, 0, 0, 1e-3, 1e-3, c, threads=1, predictor=2, interp_cubic=2, interp_fill=1,
                   interp_fill_bits=int(np.float32(-999.0).view(np.uint32)), interp_order=[3, 2, 1, 0])
    z = tmp_path / "x.ebz"
    z.write_bytes(bytes(c))
    r = run("info", z)
    assert r.exit_code == 0, r.output
    assert "interpolation cubic (quadratic edges)" in r.output and "axis order 3,2,1,0" in r.output
    assert "fill value -999" in r.output


def test_raw_abs_double_and_zfp_flag(tmp_path):
    x = smooth_field((30, 50), 8, np.float64)
    path = tmp_path / "x.f64"
    x.tofile(path)
    for flags in (["-M", "ABS", "-A", "0.01"], ["-a", "0.01"], ["--eb", "0.01", "--mode", "abs"]):
        z = tmp_path / "x.ebz"
        assert run("compress", "-i", path, "-o", z, "-d", "-2", 50, 30, "--force", *flags).exit_code == 0
        head = ebzip.inspect(z.read_bytes())
        assert head["dtype"] == "float64" and head["mode"] == "abs" and head["eb_abs"] == 0.01


def test_raw_errors(raw, tmp_path):
    x, path = raw
    r = run("compress", "-i", path, "-o", tmp_path / "a.ebz", "-f", "-3", 40, 24, 15, "--eb", "1e-3")
    assert r.exit_code != 0 and "bytes" in r.output
    r = run("compress", "-i", path, "-o", tmp_path / "a.ebz", "-f", "-3", 40, 24, 16, "-A", "1", "-R", "1")
    assert r.exit_code != 0
    r = run("compress", "-i", path, "-o", tmp_path / "a.ebz", "-f", "-d", "-3", 40, 24, 16, "--eb", "1")
    assert r.exit_code != 0
    r = run("compress", "-i", path, "-o", tmp_path / "a.ebz", "-f", "-3", 40, 24, 16, "-M", "ABS", "-R", "1e-3")
    assert r.exit_code != 0
    (tmp_path / "junk.ebz").write_bytes(b"EBZP" + b"\0" * 40)
    r = run("decompress", tmp_path / "junk.ebz", tmp_path / "j.out")
    assert r.exit_code != 0 and "not a valid ebzip stream" in r.output
    assert not (tmp_path / "j.out").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("dims", [["-1", "0"], ["-2", "0", "5"], ["-3", "4", "0", "2"], ["-1", "-3"]])
def test_raw_zero_or_negative_dimension_is_named(tmp_path, dims):
    empty = tmp_path / "z.f32"
    empty.write_bytes(b"")
    for cmd in (["compress", "-i", empty, "-o", tmp_path / "z.ebz"], ["estimate", empty]):
        r = run(*cmd, "-f", *dims, "-a", "1")
        assert r.exit_code == 2 and "dimensions must be positive" in r.output, r.output
    assert not (tmp_path / "z.ebz").exists()


def test_raw_stdin_stdout_pipeline(raw, tmp_path):
    x, path = raw
    comp = subprocess.run([sys.executable, "-m", "ebzip", "compress", "-i", "-", "-o", "-", "-f", "-3", "40", "24",
                           "16", "-A", "0.05"], input=path.read_bytes(), capture_output=True, timeout=60)
    assert comp.returncode == 0, comp.stderr
    assert comp.stdout[:4] == b"EBZP" and b"ratio" in comp.stderr  # the report goes to stderr
    dec = subprocess.run([sys.executable, "-m", "ebzip", "decompress", "-", "-"], input=comp.stdout,
                         capture_output=True, timeout=60)
    assert dec.returncode == 0, dec.stderr
    y = np.frombuffer(dec.stdout, dtype=np.float32).reshape(x.shape)
    assert np.abs(x - y).max() <= 0.05


@pytest.mark.parametrize("closed", [0, 1])
def test_raw_closed_stdin_or_stdout_is_a_clear_error(raw, tmp_path, closed):
    x, path = raw
    z = tmp_path / "x.ebz"
    assert run("compress", "-i", path, "-o", z, "-f", "-3", 40, 24, 16, "-A", "0.05", "-q").exit_code == 0
    if closed == 0:  # `<&-`
        cmds = [["compress", "-i", "-", "-o", tmp_path / "o.ebz", "-f", "-1", "10", "-a", "1"],
                ["decompress", "-", tmp_path / "o.out"], ["estimate", "-", "-f", "-1", "10", "-a", "1"]]
        word = "standard input is closed"
    else:  # `>&-`
        cmds = [["compress", "-i", path, "-o", "-", "-f", "-3", "40", "24", "16", "-a", "1"],
                ["decompress", z, "-", "-q"]]
        word = "standard output is closed"
    for cmd in cmds:
        p = subprocess.run([sys.executable, "-m", "ebzip", *map(str, cmd)], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, timeout=60, preexec_fn=lambda: os.close(closed))
        assert p.returncode == 1, (cmd, p.stderr)
        assert word in p.stderr and "Traceback" not in p.stderr, (cmd, p.stderr)
    assert not (tmp_path / "o.ebz").exists() and not (tmp_path / "o.out").exists()


def test_raw_estimate(raw):
    x, path = raw
    r = run("estimate", path, "-f", "-3", 40, 24, 16, "--eb", "1e-3", "--sample", "0.25")
    assert r.exit_code == 0 and "predicted ratio" in r.output


def _bordered_volume(n0, inner):
    """A volume whose first and last slabs are empty borders (zeros), as scans and simulations often are."""
    x = smooth_field((n0, *inner), 5)
    x += np.random.default_rng(1).standard_normal(x.shape).astype("f4") * 0.05 * float(x.std())
    border = n0 // 6
    x[:border] = 0
    x[-border:] = 0
    return x


@pytest.mark.parametrize("sample", ["0.05", "0.2", "0.4"])
def test_estimate_does_not_sample_the_empty_edges(tmp_path, sample):
    # a few chunks used to mean the first (and last) ones: empty borders, predicting ~10x the real ratio
    x = _bordered_volume(48, (64, 64))
    src = tmp_path / "v.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("v", data=x, chunks=(8, 64, 64))  # 6 chunks: the first and last are zeros
    r = run("estimate", src, "--eb", "1e-3", "--sample", sample)
    assert r.exit_code == 0, r.output
    predicted = float(next(ln for ln in r.output.splitlines() if ln.startswith("/v")).split()[-3])
    assert run("compress", src, tmp_path / "c.h5", "--eb", "1e-3", "-q").exit_code == 0
    with h5py.File(tmp_path / "c.h5", "r") as f:
        actual = x.nbytes / f["v"].id.get_storage_size()
    assert actual / 3 < predicted < 1.25 * actual, (predicted, actual)

    raw = tmp_path / "v.f32"  # raw: slabs of 2**18 elements; 6 of them, the first and last zeros
    y = _bordered_volume(6 * 64, (64, 64))
    y.tofile(raw)
    r = run("estimate", raw, "-f", "-3", 64, 64, 6 * 64, "--eb", "1e-3", "--sample", sample)
    assert r.exit_code == 0, r.output
    predicted = float(r.output.split("predicted ratio ")[1].split()[0])
    c = ebzip.compress(y, 1e-3, "rel")
    assert c.ratio / 3 < predicted < 1.25 * c.ratio, (predicted, c.ratio)


# ------------------------------------------------------------------ real fields


FIELDS = shared_fields()


@pytest.fixture(scope="module")
def fields_file(tmp_path_factory):
    if not FIELDS:
        pytest.skip("no shared data (../shared/data)")
    path = str(tmp_path_factory.mktemp("fields") / "fields.h5")
    with h5py.File(path, "w") as f:
        for name, x in FIELDS:
            f.create_dataset(name, data=x)  # contiguous: ebzip picks ~2 MB chunks
    return path


@pytest.mark.parametrize("rel", [1e-2, 1e-3, 1e-4])
def test_verify_passes_on_every_shared_field(fields_file, tmp_path, rel):
    out = str(tmp_path / "c.h5")
    r = run("compress", fields_file, out, "--eb", rel, "--mode", "rel", "-q")
    assert r.exit_code == 0, r.output
    r = run("verify", fields_file, out)
    assert r.exit_code == 0, r.output
    rows = [ln.split() for ln in r.output.splitlines() if ln and ln.split()[0].lstrip("/") in dict(FIELDS)]
    assert len(rows) == len(FIELDS)
    worst = max(float(row[5]) for row in rows)
    assert worst <= 1.0
    summary = {"rel": rel, "fields": len(rows), "worst err/bound": worst,
               "min PSNR": min(float(row[6]) for row in rows),
               "ratio": sum(x.nbytes for _, x in FIELDS) / os.path.getsize(out)}
    print(json.dumps(summary))


# ------------------------------------------------------------------ bounded memory


MEM_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    import ebzip, ebzip.h5file as hf

    def status(key):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
    src, dst, warm = sys.argv[1], sys.argv[2], sys.argv[3]
    # warm up every code path on a small file of the same layout (library buffers, HDF5 caches,
    # the allocator's heap), so what follows measures the work itself
    import os
    hf.compress_file(warm, dst, 1e-3, "rel")
    hf.verify_files(warm, dst)
    os.unlink(dst)
    base = status("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # restart the high-water mark here
        reset = True
    except OSError:
        reset = False
    reports = hf.compress_file(src, dst, 1e-3, "rel")
    checks = hf.verify_files(src, dst)
    peak = status("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(dict(base=base, peak=peak, ok=all(c.ok for c in checks),
                          ratio=reports[0].ratio, worst=max(c.err_over_bound for c in checks))))
""")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_streaming_memory_stays_bounded(tmp_path):
    """A dataset 8x the memory cap compresses and verifies within the cap (peak RSS growth)."""
    # The growth is a fixed overhead (per-thread codec buffers, allocator arenas, HDF5
    # caches: 10-16 MiB measured), not a share of the data: the data is 8x the cap.
    cap_mib = 32
    shape, chunks = (64, 1024, 1024), (1, 256, 256)  # 256 MiB of float32 in 256 KiB chunks
    src, warm = tmp_path / "big.h5", tmp_path / "warm.h5"
    rng = np.random.default_rng(0)
    j, k = np.ogrid[0:1024, 0:1024]
    base = (np.cos(j * 0.003) * np.sin(k * 0.002)).astype("f4")
    for path, n in ((src, shape[0]), (warm, 1)):
        with h5py.File(path, "w") as f:  # written plane by plane: the test itself stays small too
            d = f.create_dataset("field", shape=(n, *shape[1:]), dtype="f4", chunks=chunks)
            for i in range(n):
                d[i] = base * np.float32(1 + 0.01 * i) + rng.standard_normal((1024, 1024), dtype="f4") * 1e-3
    data_mib = math.prod(shape) * 4 / 2**20
    assert data_mib >= 8 * cap_mib
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", MEM_SCRIPT, str(src), str(tmp_path / "c.h5"), str(warm)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    growth = res["peak"] - res["base"]
    print(f"data {data_mib:.0f} MiB, cap {cap_mib} MiB, RSS {res['base']:.1f} -> peak {res['peak']:.1f} MiB "
          f"(+{growth:.1f}), ratio {res['ratio']:.1f}, worst err/bound {res['worst']:.4f}, "
          f"{time.perf_counter() - t0:.1f} s")
    assert res["ok"] and res["worst"] <= 1
    assert growth <= cap_mib


# ------------------------------------------------------------------ confirmed bugs, one test each


@pytest.mark.parametrize("userblock", [16384, 65536])
def test_a_large_user_block_is_still_hdf5(tmp_path, userblock):
    src, comp = str(tmp_path / "ub.h5"), str(tmp_path / "ubc.h5")
    with h5py.File(src, "w", userblock_size=userblock) as f:
        f["x"] = np.linspace(0, 1, 1000, dtype="f4")
    assert run("info", src).exit_code == 0
    assert run("estimate", src, "--eb", "1e-3").exit_code == 0
    r = run("compress", src, comp, "--eb", "1e-3", "-q")
    assert r.exit_code == 0, r.output
    with h5py.File(comp, "r") as f:
        assert f.userblock_size == userblock


@pytest.mark.parametrize("bound", [["--eb", "-1", "--mode", "abs"], ["--eb", "-5", "--mode", "psnr"],
                                   ["--eb", "0", "--mode", "psnr"], ["--eb", "inf", "--mode", "abs"]])
def test_verify_refuses_a_bad_bound_for_raw_arrays(raw, tmp_path, bound):
    x, path = raw
    z = tmp_path / "x.ebz"
    assert run("compress", "-i", path, "-z", z, "-f", "-3", 40, 24, 16, "-A", "1e-2", "-q").exit_code == 0
    r = run("verify", path, z, *bound)
    assert r.exit_code == 2 and "--eb" in r.output and "ok" not in r.output.split("Error")[0], r.output


@pytest.mark.parametrize("mode", ["psnr", "rel", "abs"])
def test_eb_for_zero_stores_exactly_in_any_mode(tmp_path, mode):
    src, out = str(tmp_path / "s.h5"), str(tmp_path / "o.h5")
    rng = np.random.default_rng(3)
    with h5py.File(src, "w") as f:
        f["U"] = rng.random((64, 64)).astype("f4")
        f["V"] = rng.random((64, 64)).astype("f4")
    eb = "40" if mode == "psnr" else "1e-2"
    for extra in ([], [":" + mode]):
        assert run("estimate", src, "--eb", eb, "--mode", mode, "--eb-for", "V=0" + "".join(extra)).exit_code == 0
        r = run("compress", src, out, "--eb", eb, "--mode", mode, "--eb-for", "V=0" + "".join(extra), "--force")
        assert r.exit_code == 0, r.output
        with h5py.File(src, "r") as a, h5py.File(out, "r") as b:
            assert np.array_equal(a["V"][...], eh.read(b["V"]))


def test_a_range_beyond_float64_is_capped_everywhere(tmp_path):
    x = np.random.default_rng(1).uniform(-1, 1, 1000) * 1.7e308
    path, z = tmp_path / "huge.f64", tmp_path / "huge.ebz"
    x.tofile(path)
    h5, h5c = str(tmp_path / "huge.h5"), str(tmp_path / "hugec.h5")
    with h5py.File(h5, "w") as f:
        f["x"] = x
    assert run("compress", "-i", path, "-z", z, "-d", "-1", 1000, "-R", "1e-3", "-q").exit_code == 0
    r = run("estimate", path, "-d", "-1", 1000, "-R", "1e-3")
    assert r.exit_code == 0 and "predicted ratio" in r.output, r.output
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        r = run("verify", path, z, "--eb", "1e-12", "--mode", "rel")
    assert r.exit_code == 1 and "FAIL" in r.output and "nan" not in r.output, r.output
    assert run("verify", path, z, "--eb", "1e-3", "--mode", "rel").exit_code == 0
    assert run("compress", h5, h5c, "--eb", "1e-3", "-q").exit_code == 0
    r = run("verify", h5, h5c, "--eb", "1e-12", "--mode", "rel")
    assert r.exit_code == 1 and "FAIL" in r.output, r.output
    assert run("verify", h5, h5c, "--eb", "1e-3", "--mode", "rel").exit_code == 0



def test_compress_with_z_and_o_is_refused_not_half_done(raw, tmp_path):
    x, path = raw
    z, o = tmp_path / "x.ebz", tmp_path / "x.out"
    r = run("compress", "-i", path, "-z", z, "-o", o, "-f", "-3", 40, 24, 16, "-M", "ABS", "-A", "1e-3")
    assert r.exit_code == 2 and "-z" in r.output and "decompress" in r.output, r.output
    assert not z.exists() and not o.exists()


def _feed_fifo(path, data):
    os.mkfifo(path)

    def write():
        with open(path, "wb") as f:
            f.write(data)

    t = threading.Thread(target=write, daemon=True)
    t.start()
    return t


def test_pipe_and_fifo_inputs_are_read_once(raw, tmp_path):
    x, path = raw
    z = tmp_path / "x.ebz"
    ebz = ["-m", "ebzip"]
    dims = ["-f", "-3", "40", "24", "16"]
    assert run("compress", "-i", path, "-z", z, *dims, "-A", "1e-3", "-q").exit_code == 0
    for cmd, data in ((["compress", "-i", "/dev/stdin", "-o", tmp_path / "a.ebz", *dims, "-A", "1e-3"],
                       path.read_bytes()),
                      (["estimate", "/dev/stdin", *dims, "-A", "1e-3"], path.read_bytes()),
                      (["decompress", "/dev/stdin", tmp_path / "a.out"], z.read_bytes()),
                      (["info", "/dev/stdin"], z.read_bytes()),
                      (["verify", path, "/dev/stdin"], z.read_bytes())):
        p = subprocess.run([sys.executable, *ebz, *map(str, cmd)], input=data, capture_output=True, timeout=60)
        assert p.returncode == 0, (cmd, p.stderr)
    assert np.array_equal(np.fromfile(tmp_path / "a.out", dtype="f4"), ebzip.decompress(z.read_bytes()).ravel())
    for cmd, data in ((["decompress", "{f}", tmp_path / "b.out"], z.read_bytes()),
                      (["compress", "-i", "{f}", "-o", tmp_path / "b.ebz", *dims, "-A", "1e-3"], path.read_bytes()),
                      (["verify", "{f}", z], path.read_bytes())):
        fifo = tmp_path / "fifo"
        t = _feed_fifo(fifo, data)
        p = subprocess.run([sys.executable, *ebz, *(str(fifo) if a == "{f}" else str(a) for a in cmd)],
                           capture_output=True, timeout=60)
        t.join(10)
        fifo.unlink()
        assert p.returncode == 0, (cmd, p.stderr)
    assert (tmp_path / "b.out").read_bytes() == (tmp_path / "a.out").read_bytes()


def test_estimate_refuses_what_compress_refuses(raw, tmp_path):
    x, path = raw
    h5 = str(tmp_path / "s.h5")
    with h5py.File(h5, "w") as f:
        f["v"] = x
    for extra in (["--include", "nothing"], ["--eb-for", "zz=1"], ["--exclude", "v"]):
        for cmd in (["compress", "-i", path, "-z", tmp_path / "x.ebz"], ["estimate", path]):
            r = run(*cmd, "-f", "-3", 40, 24, 16, "-A", "1e-3", *extra)
            assert r.exit_code == 2 and "apply to HDF5 files" in r.output, (cmd, extra, r.output)
    for cmd in (["compress", h5, tmp_path / "o.h5"], ["estimate", h5]):
        r = run(*cmd, "-A", "1e-3", "-f")
        assert r.exit_code == 2 and "needs its dimensions" in r.output, (cmd, r.output)
    assert not (tmp_path / "x.ebz").exists() and not (tmp_path / "o.h5").exists()


def test_decompress_z_is_the_compressed_input(raw, tmp_path):
    x, path = raw
    z = tmp_path / "x.ebz"
    assert run("compress", "-i", path, "-z", z, "-f", "-3", 40, 24, 16, "-A", "1e-3", "-q").exit_code == 0
    want = ebzip.decompress(z.read_bytes()).tobytes()
    for n, args in enumerate((["-z", z, "{o}"], ["-i", path, "-z", z, "-o", "{o}"], ["-z", z, "-o", "{o}"])):
        o = tmp_path / f"o{n}.out"
        r = run("decompress", *(o if a == "{o}" else a for a in args), "-q")
        assert r.exit_code == 0, (args, r.output)
        assert o.read_bytes() == want
    r = run("decompress", path, "-z", z, tmp_path / "bad.out")
    assert r.exit_code == 2 and "-z" in r.output and not (tmp_path / "bad.out").exists(), r.output
