"""ebzip.torch freeze-cache and progressive freezing: the cache feeds the suffix what the prefix would
(within the bound, every element), spills to and reloads from disk, keeps its memory budget, and
refuses bad arguments and damaged caches clearly.

Data: scikit-learn's bundled digits (no download), so these run on a clean machine.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
datasets = pytest.importorskip("sklearn.datasets")

from torch import nn  # noqa: E402

import ebzip  # noqa: E402
from ebzip.torch import (  # noqa: E402
    ChannelAugmentation,
    FeatureCache,
    FreezeCacheError,
    GradNormConvergence,
    ProgressiveBound,
    ProgressiveFreezer,
    Shift,
    freeze_stages,
    split_stages,
    stage_forward_flops,
)
from ebzip.torch.freeze_cache import iterate_tensors, prefix_of, suffix_of  # noqa: E402

SHIFTS = [Shift(dy, dx) for dy in (-2, 0, 2) for dx in (-2, 0, 2) if (dy, dx) != (0, 0)]


@pytest.fixture(scope="module")
def digits():
    d = datasets.load_digits()
    x = torch.from_numpy((d.images / 16.0).astype(np.float32))[:, None]
    x = nn.functional.pad(x, (2, 2, 2, 2))  # 12x12 with a blank border, like MNIST's
    return x[:600], torch.from_numpy(d.target[:600].astype(np.int64))


def make_stages():
    torch.manual_seed(0)
    stages = [
        nn.Sequential(nn.Conv2d(1, 6, 3, 1, 1), nn.BatchNorm2d(6), nn.ReLU()),
        nn.Sequential(nn.Conv2d(6, 8, 3, 2, 1), nn.BatchNorm2d(8), nn.ReLU()),
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1), nn.Linear(8, 10)),
    ]
    # non-trivial batch-norm statistics, as after some training
    with torch.no_grad():
        for s in stages[:2]:
            s[1].running_mean.uniform_(-0.2, 0.2)
            s[1].running_var.uniform_(0.5, 2.0)
            s[1].bias.uniform_(-0.3, 0.3)
    return stages


def reference(prefix, x):
    with torch.no_grad():
        return prefix.eval()(x)


def assert_within(actual: torch.Tensor, expected: torch.Tensor, eb: float):
    assert actual.shape == expected.shape and actual.dtype == expected.dtype
    err = (actual.double() - expected.double()).abs()
    assert float(err.max()) <= eb, f"max error {float(err.max())} > bound {eb}"


# ---------------------------------------------------------------- the cache feeds what the prefix would


def test_batches_match_prefix_within_bound(digits, tmp_path):
    x, y = digits
    stages = make_stages()
    prefix = prefix_of(stages, 1)
    cache = FeatureCache(memory_budget=60_000, spill_dir=tmp_path / "spill", chunk_size=100,
                         bound=ProgressiveBound(base=1e-2))
    stats = cache.build(prefix, x, y, n_frozen=1, batch_size=64)
    calibration = reference(prefix, x[:256])
    assert cache.eb_abs == pytest.approx(1e-2 * float(calibration.max() - calibration.min()), rel=1e-6)
    assert stats["chunks"] == 6 and 0 < stats["spilled_chunks"] < 6  # some in memory, some on disk
    ref = reference(prefix, x)
    seen = []
    for epoch in (0, 1):
        order = []
        for feats, labels, idx, aug in cache.batches(32, epoch, with_index=True):
            assert feats.shape[0] == labels.shape[0] <= 32
            assert torch.equal(labels, y[idx])
            assert (aug == -1).all()  # no augmentation configured
            assert_within(feats, ref[idx], cache.eb_abs)
            # chunk-level shuffling: a batch draws from at most two chunks (runs on across a boundary)
            assert len(set((idx // 100).tolist())) <= 2
            order.append(idx)
        order = torch.cat(order)
        assert sorted(order.tolist()) == list(range(len(x)))  # every sample once
        assert not torch.equal(order, torch.arange(len(x)))
        seen.append(order)
    assert not torch.equal(seen[0], seen[1])  # a new order each epoch
    # the same epoch gives the same batches (randomness drawn up front, not in the prefetch thread)
    again = torch.cat([i for _, _, i, _ in cache.batches(32, 1, with_index=True)])
    assert torch.equal(again, seen[1])
    # the suffix trains on them: a step runs and changes its weights
    suffix = suffix_of(stages, 1).train()
    opt = torch.optim.SGD(suffix.parameters(), lr=0.1)
    before = [p.clone() for p in suffix.parameters()]
    for feats, labels in cache.batches(64, 0):
        loss = nn.functional.cross_entropy(suffix(feats), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, suffix.parameters()))
    cache.close()
    assert not (tmp_path / "spill").exists() or not any((tmp_path / "spill").iterdir())


def test_dtype_is_kept(digits):
    x, y = digits
    prefix = prefix_of(make_stages(), 1).double()
    with FeatureCache(chunk_size=256) as cache:
        cache.build(prefix, x.double()[:300], y[:300], n_frozen=1)
        feats, labels = next(iter(cache.batches(300, 0, shuffle=False)))
        assert feats.dtype == torch.float64 and labels.dtype == torch.int64
        assert_within(feats, reference(prefix, x.double()[:300]), cache.eb_abs)


def test_signed_maps_are_not_clamped(digits):
    """Maps that are non-negative in the calibration samples but not later keep their negative values."""
    x, y = digits
    signed = torch.cat([x[:300], -x[300:]])
    with FeatureCache(chunk_size=200) as cache:
        cache.build(nn.Identity(), signed, y, n_frozen=1)
        assert [c.nonnegative for c in cache._chunks] == [True, False, False]
        decoded = torch.cat([cache.chunk_features(i) for i in range(3)])
        assert_within(decoded, signed, cache.eb_abs)
        assert (decoded[:200][signed[:200] == 0] == 0).all()  # the non-negative chunk keeps exact zeros
        assert (decoded[300:] < 0).any()


def test_non_finite_maps(digits, tmp_path):
    """NaN and Inf in the maps (calibration samples included): the bound's scale is the range of the
    finite values, NaN and Inf come back exactly, every finite value within the bound, also reloaded."""
    x, y = digits
    x = x[:300].clone()
    x[3, 0, 5, 5] = float("nan")  # in the calibration samples and the first chunk
    x[7, 0, 6, 6] = float("inf")
    x[250, 0, 4, 4] = float("inf")  # the last chunk: inf but no NaN, so still clamped at 0
    prefix = prefix_of(make_stages(), 1)
    cache = FeatureCache(memory_budget=0, spill_dir=tmp_path / "spill", chunk_size=100)
    cache.build(prefix, x, y[:300], n_frozen=1)
    ref = reference(prefix, x)
    assert ref[:256].isnan().any() and ref[:256].isposinf().any() and ref[250:].isposinf().any()
    finite = ref[:256][ref[:256].isfinite()]
    assert cache.eb_abs == pytest.approx(1e-2 * float(finite.max() - finite.min()), rel=1e-6)
    assert [c.nonnegative for c in cache._chunks] == [False, True, True]
    loaded = FeatureCache.load(cache.save(tmp_path / "saved"))
    for c in (cache, loaded):
        decoded = torch.cat([c.chunk_features(i) for i in range(3)])
        assert torch.equal(decoded.isnan(), ref.isnan())
        inf = ref.isinf()
        assert torch.equal(decoded.isinf(), inf) and torch.equal(decoded[inf], ref[inf])
        ok = ref.isfinite()
        assert_within(decoded[ok], ref[ok], c.eb_abs)
    with pytest.raises(ValueError, match="no finite value"):
        FeatureCache().build(lambda t: t * float("nan"), x, y[:300], n_frozen=1)
    # the channel mismatch is measured over the finite elements (was NaN for every channel the NaN reaches)
    aug = ChannelAugmentation(SHIFTS[:2], threshold=0.0, variant_budget=1.0, calibration_samples=64)
    deeper = prefix_of(make_stages(), 2)
    clean = aug.mismatch(deeper, digits[0][:64], reference(deeper, digits[0][:64]), (2, 2))
    with FeatureCache(chunk_size=150, channel_aug=aug) as augmented:
        augmented.build(deeper, x, y[:300], n_frozen=2)
        assert np.allclose(augmented.channel_mismatch, clean, rtol=0.05)  # 2 of 64 samples touched
        assert augmented.sensitive_channels


def test_augmented_batches(digits):
    """Sensitive channels with variants match prefix(aug(x)) within the bound; the others are aug(cached map)."""
    x, y = digits
    x, y = x[:300], y[:300]
    prefix = prefix_of(make_stages(), 2)
    aug = ChannelAugmentation(SHIFTS, threshold=0.0, variant_budget=1.0, variants_per_sample=2,
                              calibration_samples=100)
    cache = FeatureCache(chunk_size=128, bound=ProgressiveBound(base=5e-3), channel_aug=aug, seed=3)
    stats = cache.build(prefix, x, y, n_frozen=2)
    vc = cache.sensitive_channels
    mismatch = np.array(cache.channel_mismatch)
    assert 0 < len(vc) < 8 and stats["variant_channels"] == len(vc)
    assert stats["sensitive_channels"] == int((mismatch > 0).sum())  # threshold 0: all but dead channels
    # the most sensitive channels were chosen
    assert mismatch[vc].min() >= np.delete(mismatch, vc).max()
    assert stats["variant_bytes"] <= 1.0 * stats["compressed_bytes"] * 1.2  # the budget, judged on a sample
    other = [c for c in range(8) if c not in vc]
    base = torch.cat([cache.chunk_features(i) for i in range(cache.n_chunks)])
    counts = np.zeros(len(SHIFTS) + 1, int)
    for feats, labels, idx, applied in cache.batches(50, 4, with_index=True):
        assert torch.equal(labels, y[idx])
        for f, i, a in zip(feats, idx.tolist(), applied.tolist()):
            counts[a + 1] += 1
            if a < 0:
                assert torch.equal(f, base[i])
                continue
            s = SHIFTS[a]
            expected = reference(prefix, s.input(x[i:i + 1]))[0]
            assert_within(f[vc], expected[vc], cache.eb_abs)
            assert torch.equal(f[other], s.feature(base[i:i + 1], (2, 2))[0][other])
    assert counts[0] > 50 and (counts[1:] > 0).sum() >= 6  # identity and most shifts used
    # each sample only ever gets its own cached augmentations
    for feats, labels, idx, applied in cache.batches(300, 5, with_index=True):
        own = np.concatenate([c.aug_ids for c in cache._chunks])
        for i, a in zip(idx.tolist(), applied.tolist()):
            assert a < 0 or a in own[i]


def test_channel_selection_on_constructed_prefix():
    """Channels that commute with shifts (pointwise maps) are kept; position-dependent ones are sensitive."""

    class Constructed(nn.Module):
        def forward(self, x):
            ramp = torch.linspace(0, 1, x.shape[-1]).expand_as(x)
            return torch.cat([x, x + 1.0, x * ramp * 3, torch.relu(x - 0.5), ramp * x.mean(), x * ramp.mT], 1)

    rng = torch.Generator().manual_seed(0)
    x = torch.zeros(64, 1, 16, 16)
    x[:, :, 4:12, 4:12] = torch.rand(64, 1, 8, 8, generator=rng)  # blank border: shifts lose nothing
    aug = ChannelAugmentation([Shift(2, 0), Shift(0, -2), Shift(-2, 2)], threshold=0.05, variant_budget=1.0,
                              calibration_samples=64)
    f = Constructed()(x)
    mismatch = aug.mismatch(Constructed(), x, f, (1, 1))
    assert mismatch[[0, 1, 3]].max() < 1e-6  # exact commuters
    assert mismatch[[2, 4, 5]].min() > 0.05
    cache = FeatureCache(channel_aug=aug, chunk_size=64, bound=ProgressiveBound(base=1e-3))
    stats = cache.build(Constructed(), x, torch.zeros(64, dtype=torch.long), n_frozen=1)
    assert stats["sensitive_channels"] == 3
    assert set(cache.sensitive_channels) <= {2, 4, 5} and cache.sensitive_channels
    # a small budget keeps only the most sensitive channel
    small = FeatureCache(channel_aug=ChannelAugmentation(aug.augmentations, threshold=0.05, variant_budget=0.2,
                                                         calibration_samples=64), chunk_size=64,
                         bound=ProgressiveBound(base=1e-3))
    small.build(Constructed(), x, torch.zeros(64, dtype=torch.long), n_frozen=1)
    assert len(small.sensitive_channels) <= 1
    if small.sensitive_channels:
        assert small.sensitive_channels[0] == int(mismatch.argmax())


# ---------------------------------------------------------------- budget, spill, reload


@pytest.mark.parametrize("budget", [0, 60_000, 10**9])
def test_memory_budget_respected(digits, tmp_path, budget):
    x, y = digits
    cache = FeatureCache(memory_budget=budget, spill_dir=tmp_path, chunk_size=100)
    stats = cache.build(prefix_of(make_stages(), 1), x, y, n_frozen=1)
    sizes = [c.nbytes for c in cache._chunks]
    assert cache.memory_bytes <= budget  # chunks are only ever added, so it never exceeded it
    assert stats["memory_bytes"] == cache.memory_bytes
    on_disk = sorted(p.name for p in tmp_path.glob("chunk-*.ebz"))
    assert len(on_disk) == cache.spilled_chunks
    if budget == 0:
        assert cache.spilled_chunks == 6 and cache.memory_bytes == 0
    elif budget == 10**9:
        assert cache.spilled_chunks == 0 and cache.memory_bytes == sum(sizes)
    else:
        assert 0 < cache.spilled_chunks < 6
        # a chunk spilled only because it did not fit next to those in memory
        assert cache.memory_bytes + min(s for c, s in zip(cache._chunks, sizes) if c.base is None) > budget


def test_spill_save_reload_roundtrip(digits, tmp_path):
    x, y = digits
    prefix = prefix_of(make_stages(), 2)
    aug = ChannelAugmentation(SHIFTS, threshold=0.0, variant_budget=0.5, calibration_samples=100)
    cache = FeatureCache(memory_budget=30_000, spill_dir=tmp_path / "spill", chunk_size=150, channel_aug=aug,
                         bound=ProgressiveBound(base=1e-2))
    cache.build(prefix, x, y, n_frozen=2)
    assert 0 < cache.spilled_chunks < cache.n_chunks
    streams = [(cache._read(c, "base"), cache._read(c, "variants")) for c in cache._chunks]
    saved = cache.save(tmp_path / "saved")
    manifest = json.loads((saved / "manifest.json").read_text())
    assert manifest["format"] == "ebzip-freeze-cache" and manifest["version"] == 1
    assert manifest["n_samples"] == 600 and manifest["eb_abs"] == cache.eb_abs
    for entry, (base, variants) in zip(manifest["chunks"], streams):
        assert (saved / entry["base"]["file"]).read_bytes() == base  # exact bytes
        assert (saved / entry["variants"]["file"]).read_bytes() == variants
        assert ebzip.inspect(base)["eb_abs"] == cache.eb_abs
    loaded = FeatureCache.load(saved, seed=cache.seed)
    assert loaded.n_chunks == cache.n_chunks and loaded.memory_bytes == 0
    assert loaded.sensitive_channels == cache.sensitive_channels
    ref = reference(prefix, x)
    for i in range(cache.n_chunks):
        assert torch.equal(loaded.chunk_features(i), cache.chunk_features(i))
        start = i * 150
        assert_within(loaded.chunk_features(i), ref[start:start + 150], loaded.eb_abs)
    # the same epoch from the reloaded cache: identical batches, augmentation included
    for (a, la, ia, aa), (b, lb, ib, ab) in zip(cache.batches(64, 7, with_index=True),
                                                loaded.batches(64, 7, with_index=True)):
        assert torch.equal(a, b) and torch.equal(la, lb) and torch.equal(ia, ib) and torch.equal(aa, ab)
    # saving into its own spill directory reuses the spilled files
    cache.save(tmp_path / "spill")
    again = FeatureCache.load(tmp_path / "spill", seed=cache.seed)
    assert torch.equal(again.chunk_features(cache.n_chunks - 1), cache.chunk_features(cache.n_chunks - 1))
    # a rebuild of the loaded cache never writes into (or deletes from) the saved directory
    before = sorted(p.name for p in saved.iterdir())
    loaded.memory_budget = 0
    loaded.build(prefix, x, y, n_frozen=2)
    loaded.close()
    assert sorted(p.name for p in saved.iterdir()) == before


def test_rebuild_keeps_a_cache_saved_into_the_spill_dir(digits, tmp_path):
    """save(spill_dir) then a rebuild: the rebuild spills to fresh names, never over the saved cache's files."""
    x, y = digits
    stages = make_stages()
    cache = FeatureCache(memory_budget=0, spill_dir=tmp_path, chunk_size=200)
    cache.build(prefix_of(stages, 1), x, y, n_frozen=1)
    cache.save(tmp_path)
    saved = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    maps = [FeatureCache.load(tmp_path).chunk_features(i) for i in range(3)]
    cache.build(prefix_of(stages, 2), x, y, n_frozen=2)  # the rewrite at the next freeze point
    assert cache.spilled_chunks == 3
    assert_within(cache.chunk_features(0), reference(prefix_of(stages, 2), x[:200]), cache.eb_abs)
    assert all((tmp_path / name).read_bytes() == data for name, data in saved.items())
    reloaded = FeatureCache.load(tmp_path)
    assert all(torch.equal(reloaded.chunk_features(i), maps[i]) for i in range(3))
    # a third build drops the second build's files, still not the saved ones; close() keeps them too
    cache.build(prefix_of(stages, 1), x, y, n_frozen=1)
    cache.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(saved)
    assert torch.equal(FeatureCache.load(tmp_path).chunk_features(2), maps[2])
    # a new cache spilling into a directory that holds a saved cache leaves it alone as well
    with FeatureCache(memory_budget=0, spill_dir=tmp_path, chunk_size=300) as other:
        other.build(prefix_of(stages, 2), x, y, n_frozen=2)
        assert_within(other.chunk_features(1), reference(prefix_of(stages, 2), x[300:]), other.eb_abs)
    assert torch.equal(FeatureCache.load(tmp_path).chunk_features(0), maps[0])
    # a cache saved into the temporary spill directory it created outlives close()
    temp = FeatureCache(memory_budget=0, chunk_size=300)
    temp.build(prefix_of(stages, 1), x, y, n_frozen=1)
    spill = temp._chunks[0].directory
    temp.save(spill)
    temp.close()
    assert FeatureCache.load(spill).n_samples == 600


def test_save_into_another_caches_spill_dir(digits, tmp_path):
    """save() never replaces another live cache's spilled files, and that cache's close() keeps the saved ones."""
    x, y = digits
    stages = make_stages()
    a = FeatureCache(memory_budget=0, spill_dir=tmp_path, chunk_size=300)
    a.build(prefix_of(stages, 1), x, y, n_frozen=1)
    a_files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    a_maps = a.chunk_features(1)
    b = FeatureCache(memory_budget=1 << 30, spill_dir=tmp_path, chunk_size=300)
    b.build(prefix_of(stages, 2), x, y, n_frozen=2)
    b.save(tmp_path)
    assert all((tmp_path / name).read_bytes() == data for name, data in a_files.items())
    assert torch.equal(a.chunk_features(1), a_maps) and sum(len(t[1]) for t in a.batches(100)) == 600
    a.close()
    assert not any((tmp_path / name).exists() for name in a_files)  # a's own files, and only those
    loaded = FeatureCache.load(tmp_path)
    assert loaded.n_samples == 600 and torch.equal(loaded.chunk_features(1), b.chunk_features(1))
    # a file that replaced one a cache spilled is not that cache's to delete
    c = FeatureCache(memory_budget=0, spill_dir=tmp_path / "c", chunk_size=300)
    c.build(prefix_of(stages, 1), x, y, n_frozen=1)
    victim = c._chunks[0].directory / c._chunks[0].files["base"]["file"]
    (tmp_path / "other").write_bytes(b"someone else's")
    (tmp_path / "other").replace(victim)
    c.close()
    assert victim.read_bytes() == b"someone else's"


def test_progressive_bound_and_rebuild(digits, tmp_path):
    b = ProgressiveBound(base=1e-3, growth=2.0, max_rel=5e-3)
    assert [b.rel(k) for k in (1, 2, 3, 4)] == [1e-3, 2e-3, 4e-3, 5e-3]
    assert [ProgressiveBound.fixed(2e-3).rel(k) for k in (1, 5)] == [2e-3, 2e-3]
    x, y = digits
    stages = make_stages()
    cache = FeatureCache(memory_budget=0, spill_dir=tmp_path, chunk_size=200, bound=b)
    s1 = cache.build(prefix_of(stages, 1), x, y, n_frozen=1)
    files1 = sorted(p.name for p in tmp_path.iterdir())
    s2 = cache.build(prefix_of(stages, 2), x, y, n_frozen=2)
    assert (s1["eb_rel"], s2["eb_rel"]) == (1e-3, 2e-3)
    for s, k in ((s1, 1), (s2, 2)):
        ref = reference(prefix_of(stages, k), x[:256])
        assert s["eb_abs"] == pytest.approx(s["eb_rel"] * float(ref.max() - ref.min()), rel=1e-6)
    assert [h["n_frozen"] for h in cache.history] == [1, 2]
    assert s2["feature_shape"] == [8, 6, 6] and s2["raw_bytes"] == 600 * 8 * 36 * 4
    assert s2["compressed_bytes"] < s2["raw_bytes"] / 2
    # the rewrite replaced the first cache's files
    assert sorted(p.name for p in tmp_path.iterdir()) == files1  # same names: chunk-00000.ebz ...
    assert_within(cache.chunk_features(0), reference(prefix_of(stages, 2), x[:200]), cache.eb_abs)


def test_failed_build_is_all_or_nothing(digits, tmp_path):
    """A build refused at its checks keeps the old cache; one failing later leaves the cache empty, never half built."""
    x, y = digits
    prefix = prefix_of(make_stages(), 1)
    cache = FeatureCache(memory_budget=0, spill_dir=tmp_path / "spill", chunk_size=100)
    cache.build(prefix, x, y, n_frozen=1)
    old = cache.chunk_features(5)
    # refused at calibration (3-D maps): the previous cache and its stats stay, whole
    with pytest.raises(ValueError, match="\\(N, C, H, W\\)"):
        cache.build(lambda t: prefix(t).flatten(2), x, y, n_frozen=2)
    assert cache.n_samples == 600 and cache.stats["n_frozen"] == 1
    assert torch.equal(cache.chunk_features(5), old)

    # the prefix fails on sample 450 (after calibration), once the old cache was dropped: nothing half built is left
    def failing(t):
        if bool((t == 1000.0).any()):
            raise RuntimeError("prefix failed")
        return prefix(t)
    x_bad = x.clone()
    x_bad[450, 0, 0, 0] = 1000.0
    with pytest.raises(RuntimeError, match="prefix failed"):
        cache.build(failing, x_bad, y, n_frozen=2)
    assert cache.n_chunks == 0 and cache.stats == {} and cache.memory_bytes == 0
    assert list((tmp_path / "spill").iterdir()) == []  # the old and the partial spilled files are gone
    with pytest.raises(RuntimeError, match="empty"):
        cache.save(tmp_path / "saved")
    with pytest.raises(RuntimeError, match="empty"):
        next(cache.batches(8))
    assert [h["n_frozen"] for h in cache.history] == [1]  # completed builds only

    # a spill that cannot be written (the spill directory is a file)
    (tmp_path / "afile").write_text("x")
    broken = FeatureCache(memory_budget=0, spill_dir=tmp_path / "afile", chunk_size=100)
    with pytest.raises(OSError):
        broken.build(prefix, x, y, n_frozen=1)
    assert broken.n_chunks == 0 and broken.stats == {}


def test_what_build_accepts_saves_and_loads(tmp_path):
    """Maps larger than the input (stride below 1), a huge freeze point: build -> save -> load works;
    what load would refuse (n_frozen=True, complex labels) build refuses."""
    torch.manual_seed(0)
    x, y = torch.randn(10, 1, 8, 8), torch.arange(10)
    grow = nn.Conv2d(1, 2, 3, padding=2).eval()  # 8x8 -> 10x10
    cache = FeatureCache()
    cache.build(grow, x, y, n_frozen=1)
    assert FeatureCache.load(cache.save(tmp_path / "grow")).n_samples == 10
    cache.build(grow, x, y, n_frozen=5000)  # rel(5000) overflows a float: max_rel
    assert cache.stats["eb_rel"] == cache.bound.max_rel
    assert FeatureCache.load(cache.save(tmp_path / "deep")).eb_abs == cache.eb_abs
    with pytest.raises(ValueError, match="freeze point"):
        cache.build(grow, x, y, n_frozen=True)
    with pytest.raises(TypeError, match="labels"):
        cache.build(grow, x, y.to(torch.complex64), n_frozen=1)
    # a cache load would refuse is not saved, and nothing is written
    cache._chunks[0].labels = cache._chunks[0].labels.to(torch.complex64)
    with pytest.raises(FreezeCacheError, match="cannot be saved"):
        cache.save(tmp_path / "bad")
    assert list((tmp_path / "bad").iterdir()) == []


def test_progressive_bound_saturates():
    assert ProgressiveBound(base=1e-2, growth=1e10, max_rel=0.05).rel(40) == 0.05
    assert ProgressiveBound().rel(1100) == 0.05


@pytest.mark.parametrize("budget", [0, 10**9])
def test_close_or_rebuild_during_an_epoch(digits, budget):
    x, y = digits
    prefix = prefix_of(make_stages(), 1)
    cache = FeatureCache(memory_budget=budget, chunk_size=100)
    cache.build(prefix, x, y, n_frozen=1)
    it = cache.batches(30)
    next(it)
    cache.build(prefix, x, y, n_frozen=1)  # a rebuild: the epoch's chunks are gone
    with pytest.raises(RuntimeError, match="while an epoch was being iterated"):
        list(it)
    it = cache.batches(30)
    next(it)
    cache.close()
    with pytest.raises(RuntimeError, match="while an epoch was being iterated"):
        list(it)


def test_build_runs_the_prefix_in_batches(digits):
    """Every prefix call of a build, the channel-mismatch pass included, sees at most batch_size samples;
    the mismatch is the same as computed in one batch."""
    x, y = digits
    prefix = prefix_of(make_stages(), 1).eval()  # build() cannot put a plain function in eval mode
    sizes = []

    def counted(t):
        sizes.append(len(t))
        return prefix(t)
    aug = ChannelAugmentation(SHIFTS[:3], threshold=0.0, calibration_samples=100)
    cache = FeatureCache(chunk_size=200, channel_aug=aug)
    cache.build(counted, x, y, n_frozen=1, batch_size=16)
    assert max(sizes) <= 16
    with torch.no_grad():
        whole = aug.mismatch(prefix, x[:100], prefix(x[:100]), (1, 1))
    assert torch.allclose(torch.tensor(cache.channel_mismatch, dtype=torch.float64), whole, rtol=1e-6)


# ---------------------------------------------------------------- errors


def test_bad_arguments(digits):
    x, y = digits
    for kw in ({"memory_budget": -1}, {"memory_budget": 1.5}, {"chunk_size": 0}, {"prefetch": 0},
               {"predictor": "zfp"}):
        with pytest.raises(ValueError):
            FeatureCache(**kw)
    with pytest.raises(TypeError):
        FeatureCache(bound=1e-3)
    with pytest.raises(ValueError, match="growth"):
        ProgressiveBound(growth=0.5)
    with pytest.raises(ValueError):
        ProgressiveBound(base=float("nan"))
    with pytest.raises(ValueError, match="freeze point"):
        ProgressiveBound().rel(0)
    with pytest.raises(TypeError):
        Shift(1.5, 0)
    with pytest.raises(TypeError):
        ChannelAugmentation([])
    with pytest.raises(ValueError, match="variants_per_sample"):
        ChannelAugmentation(SHIFTS[:2], variants_per_sample=3)
    with pytest.raises(ValueError, match="variant_budget"):
        ChannelAugmentation(SHIFTS, variant_budget=float("inf"))
    for seed in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            FeatureCache(seed=seed)
        with pytest.raises(ValueError, match="seed"):
            next(iterate_tensors(x, y, 10, epoch=0, seed=seed))
    for batch_size in (0, -4, 2.0):
        with pytest.raises(ValueError, match="batch_size"):
            next(iterate_tensors(x, y, batch_size, epoch=0))
    with pytest.raises(ValueError, match="epoch"):
        next(iterate_tensors(x, y, 10, epoch=-1))
    with pytest.raises(ValueError, match="multiples of the stride"):
        Shift(1, 0).feature(torch.zeros(1, 1, 4, 4), (2, 2))
    cache = FeatureCache()
    with pytest.raises(RuntimeError, match="empty"):
        next(cache.batches(8))
    with pytest.raises(ValueError, match="4-D"):
        cache.build(nn.Identity(), x[:, 0], y, n_frozen=1)
    with pytest.raises(ValueError, match="one entry per input"):
        cache.build(nn.Identity(), x, y[:10], n_frozen=1)
    with pytest.raises(ValueError, match="\\(N, C, H, W\\)"):
        cache.build(nn.Flatten(1), x, y, n_frozen=1)
    with pytest.raises(TypeError, match="floating-point"):
        cache.build(lambda t: (t > 0).long(), x, y, n_frozen=1)
    cache.build(nn.Identity(), x[:20], y[:20], n_frozen=1)
    with pytest.raises(ValueError, match="epoch"):
        next(cache.batches(8, epoch=-1))


def test_damaged_cache_is_refused(digits, tmp_path):
    x, y = digits
    cache = FeatureCache(chunk_size=300)
    cache.build(prefix_of(make_stages(), 1), x, y, n_frozen=1)
    d = cache.save(tmp_path / "c")
    with pytest.raises(FreezeCacheError, match="manifest.json is missing"):
        FeatureCache.load(tmp_path / "nothing")
    chunk = d / "chunk-00001.ebz"
    good = chunk.read_bytes()

    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x10
    chunk.write_bytes(bytes(bad))
    loaded = FeatureCache.load(d)
    with pytest.raises(FreezeCacheError, match="corrupted"):
        list(loaded.batches(100, 0))
    # with the manifest's checksum forged too, ebzip's own CRCs still catch it
    manifest = json.loads((d / "manifest.json").read_text())
    import hashlib
    manifest["chunks"][1]["base"]["sha256"] = hashlib.sha256(bytes(bad)).hexdigest()
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ebzip.StreamError):
        FeatureCache.load(d).chunk_features(1)

    chunk.write_bytes(good[:-5])
    with pytest.raises(FreezeCacheError, match="truncated"):
        FeatureCache.load(d)
    chunk.unlink()
    with pytest.raises(FreezeCacheError, match="missing"):
        FeatureCache.load(d)
    manifest["version"] = 99
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FreezeCacheError, match="version 99"):
        FeatureCache.load(d)
    (d / "manifest.json").write_text("{not json")
    with pytest.raises(FreezeCacheError, match="not valid JSON"):
        FeatureCache.load(d)
    del manifest["chunks"]
    manifest["version"] = 1
    (d / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FreezeCacheError, match="malformed"):
        FeatureCache.load(d)


@pytest.fixture(scope="module")
def saved_with_variants(digits, tmp_path_factory):
    """A saved cache of 300 samples in 3 chunks, with variants, and its manifest."""
    x, y = digits
    aug = ChannelAugmentation(SHIFTS, threshold=0.0, variant_budget=0.5, calibration_samples=100)
    cache = FeatureCache(memory_budget=0, chunk_size=100, channel_aug=aug)
    cache.build(prefix_of(make_stages(), 2), x[:300], y[:300], n_frozen=2)
    d = cache.save(tmp_path_factory.mktemp("saved"))
    assert cache.sensitive_channels and cache.n_chunks == 3
    return d, json.loads((d / "manifest.json").read_text())


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(m):
        for k in keys[:-1]:
            m = m[k]
        if value is _set:
            del m[keys[-1]]
        else:
            m[keys[-1]] = value
    return edit


MALFORMED = {
    "no chunk_size": _set("chunk_size", _set), "no bound": _set("bound", _set), "no predictor": _set("predictor", _set),
    "no n_samples": _set("n_samples", _set), "no eb_abs": _set("eb_abs", _set),
    "bound null": _set("bound", None), "bound without growth": _set("bound", "growth", _set),
    "bound.base -1": _set("bound", "base", -1), "bound extra key": _set("bound", "scale", 2),
    "chunk_size 0": _set("chunk_size", 0), "chunk_size 1.5": _set("chunk_size", 1.5),
    "chunk_size true": _set("chunk_size", True), "predictor zfp": _set("predictor", "zfp"),
    "n_samples off": _set("n_samples", 301), "n_frozen 0": _set("n_frozen", 0),
    "eb_abs nan": _set("eb_abs", float("nan")), "eb_abs -1": _set("eb_abs", -1.0), "eb_abs str": _set("eb_abs", "1"),
    "eb_abs not eb_rel x range": _set("eb_abs", 1e3), "eb_rel not the bound's": _set("eb_rel", 0.5),
    "value_range inf": _set("value_range", float("inf")),
    "feature_shape 2-D": _set("feature_shape", [8, 6]), "feature_shape 0": _set("feature_shape", [8, 0, 6]),
    "feature_shape off, stats too": lambda m: (m.__setitem__("feature_shape", [7, 6, 6]),
                                               m["stats"].__setitem__("feature_shape", [7, 6, 6])),
    "feature_shape off": _set("feature_shape", [3, 6, 6]), "dtype int8": _set("dtype", "int8"),
    "dtype float64": _set("dtype", "float64"), "device 42": _set("device", 42), "device bad": _set("device", "gpu!"),
    "stride 1 entry": _set("stride", [2]), "variant channel 8": _set("variant_channels", [8]),
    "variant channels repeated": lambda m: m.__setitem__("variant_channels", m["variant_channels"][:1] * 2),
    "channel_mismatch short": _set("channel_mismatch", [0.5]), "augmentation unknown": _set("augmentations", [{}]),
    "augmentation dy str": _set("augmentations", 0, "dy", "two"), "no augmentations": _set("augmentations", []),
    "variants_per_sample 2": _set("variants_per_sample", 2), "stats list": _set("stats", []),
    "chunks empty": _set("chunks", []), "chunk null": _set("chunks", 1, None),
    "chunk n 50": _set("chunks", 0, "n", 50), "last chunk n 101": _set("chunks", 2, "n", 101),
    "nonnegative str": _set("chunks", 0, "nonnegative", "yes"),
    "labels_dtype Tensor": _set("chunks", 0, "labels_dtype", "Tensor"),
    "labels ragged": _set("chunks", 0, "labels", [[1, 2], [3]] + [[0, 0]] * 98),
    "labels str": _set("chunks", 0, "labels", "abc"), "labels 99": _set("chunks", 1, "labels", [0] * 99),
    "aug_ids null": _set("chunks", 0, "aug_ids", None), "aug_id 8": _set("chunks", 0, "aug_ids", 0, [8]),
    "aug_ids 2 per sample": lambda m: m["chunks"][0].__setitem__("aug_ids", [[0, 1]] * 100),
    "no variants": _set("chunks", 0, "variants", None), "no base": _set("chunks", 0, "base", None),
    "base file ..": _set("chunks", 0, "base", "file", ".."), "base file int": _set("chunks", 0, "base", "file", 3),
    "nbytes str": _set("chunks", 0, "base", "nbytes", "12"), "sha256 short": _set("chunks", 0, "base", "sha256", "ab"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_manifest_is_refused_at_load(saved_with_variants, tmp_path, case):
    """Every manifest field is checked when the cache is opened: FreezeCacheError, never a raw KeyError,
    TypeError or a reshape error when a chunk is read later."""
    import shutil

    src, manifest = saved_with_variants
    d = tmp_path / "c"
    shutil.copytree(src, d)
    FeatureCache.load(d)  # the unedited copy loads
    m = json.loads(json.dumps(manifest))
    MALFORMED[case](m)
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FreezeCacheError):
        FeatureCache.load(d)


def test_stream_that_disagrees_with_the_manifest_is_refused_when_read(saved_with_variants, tmp_path):
    """A manifest that is consistent in itself but not with a chunk's stream (the last chunk said to
    hold 50 samples, not 100) is refused by file name when that chunk is read (the first chunk's streams
    are compared with the manifest at load)."""
    import shutil

    src, manifest = saved_with_variants
    d = tmp_path / "c"
    shutil.copytree(src, d)
    m = json.loads(json.dumps(manifest))
    last = m["chunks"][2]
    last["n"], last["labels"], last["aug_ids"] = 50, last["labels"][:50], last["aug_ids"][:50]
    m["n_samples"] = 250
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(FreezeCacheError, match="chunk-00002.ebz"):
        FeatureCache.load(d).chunk_features(2)
    with pytest.raises(FreezeCacheError, match="chunk-00002"):
        list(FeatureCache.load(d).batches(64, 0))


# ---------------------------------------------------------------- freezing


def test_split_stages():
    seq = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Conv2d(2, 2, 3), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    assert len(split_stages(seq)) == 6
    stages = split_stages(seq, [2, 4])
    assert [len(s) for s in stages] == [2, 2, 2]
    x = torch.randn(2, 1, 9, 9)
    h = x
    for s in stages:
        h = s(h)
    assert torch.equal(h, seq(x))

    class FakeResNet(nn.Module):  # torchvision's attribute names
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1, self.relu, self.maxpool = nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Identity()
            self.layer1, self.layer2 = nn.Conv2d(4, 4, 3), nn.Conv2d(4, 4, 3)
            self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(4, 3)

    r = FakeResNet()
    stages = split_stages(r)
    assert len(stages) == 4 and stages[1] is r.layer1 and stages[3][2] is r.fc
    for bad in ([0, 2], [4, 2], [6]):
        with pytest.raises(ValueError, match="split_points"):
            split_stages(seq, bad)
    with pytest.raises(TypeError):
        split_stages(nn.Linear(2, 2))
    with pytest.raises(ValueError):
        split_stages(nn.Sequential(nn.Linear(2, 2)))


def test_freeze_stages_and_schedule():
    stages = make_stages()
    freezer = ProgressiveFreezer(stages, schedule={2: 1, 4: 2})
    assert [freezer.start_epoch(e) for e in range(6)] == [0, 0, 1, 1, 2, 2]
    assert all(not p.requires_grad for s in stages[:2] for p in s.parameters())
    assert all(p.requires_grad for p in stages[2].parameters())
    assert not stages[0].training and not stages[1].training
    with pytest.raises(ValueError, match="last stage"):
        freeze_stages(stages, 3)
    with pytest.raises(ValueError, match="exactly one"):
        ProgressiveFreezer(stages)
    with pytest.raises(ValueError, match="schedule"):
        ProgressiveFreezer(stages, schedule={1: 3})


def test_convergence_freezing():
    stages = [nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2)]
    freezer = ProgressiveFreezer(stages, convergence=GradNormConvergence(threshold=0.05, patience=2))
    # stage 0's gradient norm settles at once; stage 1's keeps halving, then settles from epoch 5
    norms = {0: [1.0] * 10, 1: [8, 4, 2, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5]}
    frozen = []
    for epoch in range(10):
        frozen.append(freezer.start_epoch(epoch))
        for _ in range(3):  # steps
            for i, s in enumerate(stages):
                for p in s.parameters():
                    p.grad = None if not p.requires_grad else \
                        torch.full_like(p, norms.get(i, [1.0] * 10)[epoch] / np.sqrt(6 * len(list(s.parameters()))))
            freezer.after_backward()
    # converged means 3 equal epochs in a row (patience 2): stage 0 after epochs 0-2, stage 1 after 4-6
    assert frozen == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]


def test_convergence_needs_a_gradient():
    """after_backward() after zero_grad() sees no gradient: that is not convergence (nothing freezes, a warning)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), 0.1)
    freezer = ProgressiveFreezer(split_stages(model), convergence=GradNormConvergence(threshold=0.1))
    x, y = torch.randn(32, 4), torch.randint(0, 2, (32,))
    frozen = []
    with pytest.warns(RuntimeWarning, match="no gradient"):
        for epoch in range(4):
            frozen.append(freezer.start_epoch(epoch))
            for _ in range(3):
                nn.functional.cross_entropy(model(x), y).backward()
                opt.step()
                opt.zero_grad()
                freezer.after_backward()
    assert frozen == [0, 0, 0, 0]
    # a stage without parameters has nothing to wait for: it still counts as converged
    stages = [nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2)]
    freezer = ProgressiveFreezer(stages, convergence=GradNormConvergence(threshold=0.05))
    for epoch in range(3):
        freezer.start_epoch(epoch)
        for s in stages:
            for p in s.parameters():
                p.grad = torch.ones_like(p) if p.requires_grad else None
        freezer.after_backward()
    assert freezer.frozen == 2


def test_stage_forward_flops():
    stages = [nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(1), nn.Linear(4 * 8 * 8, 10)]
    flops = stage_forward_flops(stages, torch.zeros(5, 1, 8, 8))
    assert flops == [2 * 64 * 4 * 9, 0, 2 * 256 * 10]  # 2 FLOPs per multiply-add


def test_input_batches_helper(digits):
    x, y = digits
    got = list(iterate_tensors(x, y, 100, epoch=0, augmentations=SHIFTS))
    assert sum(len(b[1]) for b in got) == 600
    ys = torch.cat([b[1] for b in got])
    assert sorted(ys.tolist()) == sorted(y.tolist())


def test_import_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import ebzip; assert 'ebzip.torch' not in sys.modules\n"
            "try:\n    import ebzip.torch\nexcept ImportError as e:\n    print('ERR', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "ERR ebzip.torch needs PyTorch" in out.stdout
    out = subprocess.run([sys.executable, "-c", "import ebzip, sys; print('torch' in sys.modules)"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_training_bench_quick(tmp_path):
    """bench/freeze_cache_training.py --quick runs every variant and reports the cache (needs ../shared/data)."""
    import os
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    data = Path(os.environ.get("EBZIP_DATA") or repo.parent / "shared" / "data")
    if not (data / "manifest.json").is_file():
        pytest.skip(f"no benchmark data at {data}")
    proc = subprocess.run([sys.executable, str(repo / "bench" / "freeze_cache_training.py"), "--quick",
                           "--data", str(data), "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "freeze_cache_training_quick.json").read_text())
    summary = report["summary"]
    assert set(summary) == {"baseline", "plain-freezing", "freeze-cache", "freeze-cache/no-chaug",
                            "freeze-cache/fixed-bound"}
    builds = summary["freeze-cache"]["builds"]
    assert [b["n_frozen"] for b in builds] == [1, 2]
    assert builds[1]["eb_rel"] == 2 * builds[0]["eb_rel"]  # progressive
    assert [b["eb_rel"] for b in summary["freeze-cache/fixed-bound"]["builds"]] == [builds[0]["eb_rel"]] * 2
    assert all(b["ratio"] > 4 for b in builds)
    assert summary["freeze-cache"]["train_flops"] < summary["baseline"]["train_flops"]
