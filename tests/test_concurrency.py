"""Concurrency: many Python threads calling compress/decompress at once.

The promise: a call made from any thread, beside any number of other calls,
with any ``threads=`` argument or ``set_num_threads`` setting, returns the
same bytes (and the same decoded bits) as the same call made alone. The C++
core keeps per-thread work buffers (thread_local) and no other mutable
global state; these tests would catch a shared buffer, a race on the
codebook, or a stream that depends on the thread count.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import ebzip
from conftest import NUMPY_DTYPES, as_numpy, bits_of, from_float64

N_WORKERS = 16


def _inputs():
    """A mix of dtypes, sizes (1 chunk to many), shapes, modes and bounds."""
    rng = np.random.default_rng(7)
    cases = []
    shapes = [(5,), (64, 33), (40, 30, 7), (3, 4, 5, 6, 2), (20001,), (257, 129)]
    for i, shape in enumerate(shapes):
        for j, name in enumerate(NUMPY_DTYPES):
            v = np.cumsum(rng.standard_normal(shape), axis=-1)
            flat = v.reshape(-1)
            if flat.size > 10:
                flat[:: max(1, flat.size // 5)] = np.nan
                flat[3] = np.inf
                flat[7] = 1e30
            x = as_numpy(from_float64(v, name), name)
            mode, eb = [("abs", 1e-2), ("rel", 1e-4), ("abs", 0.0), ("psnr", 50.0)][(i + j) % 4]
            block = [None, 1000, 97, 4096][(i * 3 + j) % 4]
            cases.append((x, eb, mode, block))
    return cases


CASES = _inputs()


@pytest.fixture(scope="module")
def serial():
    """Each case compressed and decoded alone, on one thread."""
    streams = [bytes(ebzip.compress(x, eb, mode, block_elems=b, threads=1)) for x, eb, mode, b in CASES]
    decoded = [bits_of(ebzip.decompress(s, threads=1)) for s in streams]
    return streams, decoded


def _run_threads(n, target):
    errors = []

    def wrap(k):
        try:
            target(k)
        except BaseException as e:  # noqa: BLE001 - reported by the caller
            errors.append(f"thread {k}: {e!r}")

    ts = [threading.Thread(target=wrap, args=(k,)) for k in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=300)
        assert not t.is_alive(), "a worker thread hung"
    return errors


def test_many_threads_same_bytes_as_serial(serial, restore_threads):
    streams, decoded = serial
    barrier = threading.Barrier(N_WORKERS)

    def work(k):
        barrier.wait()  # all start together
        for i in range(len(CASES)):
            j = (k * 5 + i) % len(CASES)
            x, eb, mode, block = CASES[j]
            nthreads = 1 + (k + i) % 3  # 1, 2 or 3 OpenMP threads per call
            s = bytes(ebzip.compress(x, eb, mode, block_elems=block, threads=nthreads))
            assert s == streams[j], f"compress of case {j} with threads={nthreads} differs from serial"
            y = ebzip.decompress(streams[j], threads=1 + (k + i + 1) % 3)
            assert np.array_equal(bits_of(y), decoded[j]), f"decompress of case {j} differs from serial"

    errors = _run_threads(N_WORKERS, work)
    assert not errors, errors[:5]


def test_set_num_threads_while_others_compress(serial, restore_threads):
    """set_num_threads from one thread changes speed only: streams stay the same."""
    streams, _ = serial
    stop = threading.Event()

    def flipper():
        k = 0
        while not stop.is_set():
            ebzip.set_num_threads(1 + k % 4)
            k += 1
            time.sleep(0.0005)

    f = threading.Thread(target=flipper)
    f.start()
    try:
        def work(k):
            for i in range(len(CASES)):
                j = (k + 3 * i) % len(CASES)
                x, eb, mode, block = CASES[j]
                assert bytes(ebzip.compress(x, eb, mode, block_elems=block)) == streams[j], f"case {j}"

        errors = _run_threads(8, work)
    finally:
        stop.set()
        f.join()
    assert not errors, errors[:5]


def test_shared_compressed_object_decoded_from_many_threads(serial):
    """One Compressed (one buffer) read by many threads at once, into out= buffers."""
    x, eb, mode, block = CASES[-1]
    c = ebzip.compress(x, eb, mode, block_elems=block)
    want = bits_of(ebzip.decompress(c))
    outs = [np.empty_like(np.asarray(x)) for _ in range(N_WORKERS)]

    def work(k):
        for _ in range(5):
            y = ebzip.decompress(c, out=outs[k], threads=2)
            assert y is outs[k]
            assert np.array_equal(bits_of(y), want)

    errors = _run_threads(N_WORKERS, work)
    assert not errors, errors[:5]


def test_failures_in_some_threads_do_not_disturb_others(serial):
    """Bad streams raise StreamError in their own thread; good calls beside them are unaffected."""
    streams, decoded = serial
    bad = []
    for s in streams[:6]:
        b = bytearray(s)
        b[len(b) // 2] ^= 0x40
        bad.append(bytes(b))

    def work(k):
        for i in range(20):
            if (k + i) % 2:
                with pytest.raises(ebzip.StreamError):
                    ebzip.decompress(bad[(k + i) % len(bad)], threads=2)
            else:
                j = (k + i) % len(streams)
                assert np.array_equal(bits_of(ebzip.decompress(streams[j], threads=2)), decoded[j])

    errors = _run_threads(N_WORKERS, work)
    assert not errors, errors[:5]


def test_thread_pool_map_matches_serial(serial):
    streams, decoded = serial
    with ThreadPoolExecutor(max_workers=8) as pool:
        got = list(pool.map(lambda case: bytes(ebzip.compress(case[0], case[1], case[2], block_elems=case[3])),
                            CASES * 3))
        back = list(pool.map(lambda s: bits_of(ebzip.decompress(s)), streams * 3))
    assert got == streams * 3
    for a, b in zip(back, decoded * 3):
        assert np.array_equal(a, b)


def test_gil_released_during_compress():
    """A Python thread keeps running while another thread compresses a large array."""
    x = np.cumsum(np.random.default_rng(1).standard_normal(4_000_000)).astype(np.float32)
    ticks = 0
    done = threading.Event()

    def counter():
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            time.sleep(0)

    t = threading.Thread(target=counter)
    t.start()
    try:
        t0 = time.perf_counter()
        c = ebzip.compress(x, 1e-3, threads=1)
        ebzip.decompress(c, threads=1)
        elapsed = time.perf_counter() - t0
    finally:
        done.set()
        t.join()
    # with the GIL held for the whole call the counter would be stuck at a handful of ticks
    assert ticks > 50, f"only {ticks} ticks in {elapsed:.3f} s: is the GIL released?"
