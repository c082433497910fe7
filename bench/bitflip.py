"""Detection rate of random single-byte corruptions of ebzip streams.

Every byte of a stream is covered by a CRC-32 (docs/format.md), so changing
any one byte must make ``ebzip.decompress`` raise ``ebzip.StreamError``.
This flips one random byte (XOR with a random non-zero value) in realistic
streams, many times, and counts how often that happens. Anything else (a
silent decode, another exception, a crash) is a miss and is printed.

    python bench/bitflip.py                 # 100,000 random trials over 8 streams
    python bench/bitflip.py --trials 12000 --seed 3
    python bench/bitflip.py --exhaustive    # also every byte position x 8 XOR masks
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import ebzip



def _field(shape, seed):
    rng = np.random.default_rng(seed)
    v = rng.standard_normal(shape)
    for ax in range(len(shape)):
        v = np.cumsum(v, axis=ax)
    return v


def streams() -> list[tuple[str, bytes]]:
    """A few realistic streams: both pipelines, all dtypes, one and many chunks, zstd and raw chunks."""
    import ml_dtypes  # noqa: F401 - bfloat16

    out = []
    f = _field((96, 128), 0)
    out.append(("float32 96x128 rel 1e-3",
                bytes(ebzip.compress(f.astype(np.float32), 1e-3, "rel", block_elems=4096))))
    g = _field((24, 30, 40), 1)
    g.reshape(-1)[::97] = np.nan
    out.append(("float64 24x30x40 abs 1e-2 with NaN", bytes(ebzip.compress(g, 1e-2, "abs"))))
    noise = np.random.default_rng(2).standard_normal(20000).astype(np.float16)
    out.append(("float16 20000 psnr 40 dB (noise)",
                bytes(ebzip.compress(noise, 40.0, "psnr", block_elems=3000))))
    out.append(("bfloat16 64x64 rel 1e-2",
                bytes(ebzip.compress(_field((64, 64), 3).astype(ml_dtypes.bfloat16), 1e-2, "rel"))))
    out.append(("float32 50x50 eb=0",
                bytes(ebzip.compress(_field((50, 50), 4).astype(np.float32), 0.0, block_elems=1000))))
    out.append(("float64 0-d", bytes(ebzip.compress(np.float64(3.5), 1e-3))))
    out.append(("float32 40x50 lorenzo forced", bytes(ebzip.compress(f[:40, :50].astype(np.float32), 1e-3,
                                                                    predictor="lorenzo", block_elems=500))))
    out.append(("float64 30x40 interp forced", bytes(ebzip.compress(f[:30, :40], 1e-4,
                                                                   predictor="interp", block_elems=300))))
    # name each stream with the pipeline it uses
    return [(f"{name} [{ebzip.inspect(s)['pipeline']}]", s) for name, s in out]


def run(trials: int, seed: int, verbose: bool = True) -> dict:
    rng = np.random.default_rng(seed)
    data = streams()
    per = {name: [0, 0] for name, _ in data}  # detected, trials
    misses = []
    t0 = time.perf_counter()
    for t in range(trials):
        name, s = data[t % len(data)]
        b = bytearray(s)
        at = int(rng.integers(0, len(b)))
        b[at] ^= int(rng.integers(1, 256))
        per[name][1] += 1
        try:
            ebzip.decompress(bytes(b))
        except ebzip.StreamError:
            per[name][0] += 1
            continue
        except Exception as e:  # noqa: BLE001 - a miss, reported
            misses.append((name, at, f"{type(e).__name__}: {e}"))
            continue
        misses.append((name, at, "decoded without error"))
    elapsed = time.perf_counter() - t0
    detected = sum(d for d, _ in per.values())
    if verbose:
        print(f"single-byte corruption detection, {trials} trials, seed {seed}, {elapsed:.1f} s")
        print(f"{'stream':55s} {'bytes':>7s} {'trials':>7s} {'detected':>9s}")
        for name, s in data:
            d, n = per[name]
            print(f"{name:55s} {len(s):7d} {n:7d} {d:9d}")
        print(f"detection rate: {detected}/{trials} = {100.0 * detected / trials:.3f}%")
        for m in misses[:20]:
            print("MISS:", m)
    return {"trials": trials, "detected": detected, "misses": misses}


MASKS = (0x01, 0x02, 0x10, 0x80, 0x0F, 0xF0, 0x55, 0xFF)


def exhaustive(verbose: bool = True) -> list:
    """Every byte position of every stream, XORed with each of MASKS."""
    misses, total = [], 0
    t0 = time.perf_counter()
    for name, s in streams():
        for at in range(len(s)):
            for m in MASKS:
                b = bytearray(s)
                b[at] ^= m
                total += 1
                try:
                    ebzip.decompress(bytes(b))
                except ebzip.StreamError:
                    continue
                except Exception as e:  # noqa: BLE001
                    misses.append((name, at, m, f"{type(e).__name__}: {e}"))
                    continue
                misses.append((name, at, m, "decoded without error"))
    if verbose:
        print(f"exhaustive: {total} corruptions (every byte x {len(MASKS)} masks), {total - len(misses)} detected "
              f"({100.0 * (total - len(misses)) / total:.3f}%), {time.perf_counter() - t0:.1f} s")
        for m in misses[:20]:
            print("MISS:", m)
    return misses


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--trials", type=int, default=100000)
    ap.add_argument("--exhaustive", action="store_true", help="also flip every byte of every stream")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    r = run(args.trials, args.seed)
    misses = list(r["misses"])
    if args.exhaustive:
        misses += exhaustive()
    return 0 if not misses else 1


if __name__ == "__main__":
    sys.exit(main())
