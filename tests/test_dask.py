"""Scale-out: ebzip.dask.to_zarr and HDF5 compression on a dask.distributed LocalCluster,
with more chunks than workers."""

from __future__ import annotations

import os

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
pytest.importorskip("zarr")
h5py = pytest.importorskip("h5py")

import ebzip.dask as ed  # noqa: E402
import ebzip.h5 as eh  # noqa: E402
from ebzip import cli as cli_mod  # noqa: E402
from click.testing import CliRunner  # noqa: E402
from h5_helpers import make_rich_file  # noqa: E402

N_WORKERS = 2


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=N_WORKERS, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=40) as cluster:
        with distributed.Client(cluster) as c:
            yield c


def smooth(shape, chunks, seed=0):
    rng = da.random.default_rng(seed)
    x = rng.standard_normal(shape, chunks=chunks)
    return x.cumsum(axis=len(shape) - 1).astype("f4")


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_to_zarr_on_local_cluster(client, tmp_path, zarr_format):
    x = smooth((64, 48, 40), (16, 24, 40))  # 8 chunks, 2 workers
    assert x.npartitions > N_WORKERS
    xv = x.compute()
    with distributed.get_task_stream(client) as ts:
        z = ed.to_zarr(x, str(tmp_path / "a.zarr"), 1e-3, "rel", zarr_format=zarr_format)
    assert len({t["worker"] for t in ts.data}) == N_WORKERS  # the work was spread
    vr = float(xv.max() - xv.min())
    assert z.shape == x.shape and z.chunks == (16, 24, 40)
    y = ed.from_zarr(str(tmp_path / "a.zarr"))
    assert y.npartitions == 8
    err = float(abs(y - x).max().compute())
    assert err <= 1e-3 * vr  # relative to the whole array's range, not each chunk's


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_to_zarr_of_a_big_endian_array_round_trips(tmp_path, zarr_format):
    x = np.linspace(270, 305, 1000).astype(">f4")
    ed.to_zarr(da.from_array(x, chunks=250), str(tmp_path / "be.zarr"), 1e-3, "abs", zarr_format=zarr_format)
    y = ed.from_zarr(str(tmp_path / "be.zarr")).compute()
    assert np.abs(y.astype(np.float64) - x.astype(np.float64)).max() <= 1e-3


def test_to_zarr_rechunks_irregular_and_refuses_ints(client, tmp_path):
    x = smooth((50, 30), ((10, 20, 20), (30,)))
    z = ed.to_zarr(x, str(tmp_path / "b.zarr"), 0.01, "abs")
    assert np.abs(z[:] - x.compute()).max() <= 0.01
    with pytest.raises(TypeError):
        ed.to_zarr(da.arange(10, chunks=5), str(tmp_path / "c.zarr"), 1.0, "abs")


@pytest.mark.parametrize("zarr_format", [3, 2])
@pytest.mark.parametrize("mode", ["rel", "abs", "psnr"])
def test_to_zarr_of_an_empty_array(tmp_path, zarr_format, mode):
    # as ebzip.compress takes an empty array, so does to_zarr, in every mode (rel failed in numpy's max)
    assert ed.value_range(da.zeros((0, 4), dtype="f4", chunks=(1, 4))) is None
    z = ed.to_zarr(da.zeros((0, 4), dtype="f4", chunks=(1, 4)), str(tmp_path / "e.zarr"), 1e-3, mode,
                   zarr_format=zarr_format)
    assert z.shape == (0, 4)
    assert ed.from_zarr(str(tmp_path / "e.zarr")).compute().shape == (0, 4)


def test_to_zarr_with_shards_keeps_every_chunk(tmp_path):
    """Dask tasks writing inner chunks of one shard at once lost each other's writes (half the array read 0)."""
    x = np.random.default_rng(1).standard_normal((20, 30)).astype("f4") + 10
    z = ed.to_zarr(da.from_array(x, chunks=(10, 15)), str(tmp_path / "s.zarr"), 1e-3, "abs", shards=(20, 30))
    assert z.chunks == (10, 15) and z.shards == (20, 30)
    assert np.abs(ed.from_zarr(str(tmp_path / "s.zarr")).compute() - x).max() <= 1e-3


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_to_zarr_psnr_holds_for_the_whole_array(tmp_path, zarr_format):
    """Per chunk, zarr's zero padding of the edge chunk stretched its range: 2 dB for a 60 dB target."""
    x = (1000 + np.random.default_rng(0).random(10)).astype("f4")
    z = ed.to_zarr(da.from_array(x, chunks=7), str(tmp_path / "p.zarr"), 60.0, "psnr", zarr_format=zarr_format)
    y = z[:].astype(np.float64)
    vr = float(x.max() - x.min())
    assert 10 * np.log10(vr * vr / np.mean((y - x) ** 2)) >= 60.0


def test_to_zarr_with_unknown_chunk_sizes_says_what_to_do(tmp_path):
    x = da.from_array(np.linspace(-1, 1, 100, dtype="f4"), chunks=25)
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        ed.to_zarr(x[x > 0], str(tmp_path / "u.zarr"), 1e-3, "abs")


def test_hdf5_on_local_cluster(client, tmp_path):
    src = make_rich_file(str(tmp_path / "in.h5"))
    out = str(tmp_path / "out.h5")
    with distributed.get_task_stream(client) as ts:
        reports = ed.compress_hdf5(src, out, 1e-3, "rel", scheduler=client)
    encode_tasks = [t for t in ts.data if "_dask_encode" in str(t["key"])]
    assert len(encode_tasks) > N_WORKERS and len({t["worker"] for t in encode_tasks}) == N_WORKERS
    assert {r.path for r in reports} == {"/data/h16", "/data/pres64", "/data/temp", "/data/withnan", "/resizable"}
    r = CliRunner().invoke(cli_mod.cli, ["verify", src, out])
    assert r.exit_code == 0, r.output
    # the same bytes as a local run: where a chunk is compressed does not matter
    local = str(tmp_path / "local.h5")
    assert CliRunner().invoke(cli_mod.cli, ["compress", src, local, "--eb", "1e-3", "-q"]).exit_code == 0
    with h5py.File(out, "r") as a, h5py.File(local, "r") as b:
        for off in eh.chunk_grid(a["data/temp"].shape, a["data/temp"].chunks):
            assert a["data/temp"].id.read_direct_chunk(off) == b["data/temp"].id.read_direct_chunk(off)
    with open(out, "rb") as a, open(local, "rb") as b:  # the whole file, as docs/cli.md says
        assert a.read() == b.read()


def test_cli_dask_scheduler_option(client, tmp_path):
    src = make_rich_file(str(tmp_path / "in.h5"))
    out = str(tmp_path / "out.h5")
    r = CliRunner().invoke(cli_mod.cli, ["compress", src, out, "--eb", "1e-2", "--dask-scheduler",
                                         client.scheduler.address])
    assert r.exit_code == 0, r.output
    assert os.path.exists(out)
    assert CliRunner().invoke(cli_mod.cli, ["verify", src, out]).exit_code == 0
