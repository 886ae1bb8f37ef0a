"""Training/validation data: aligned crops, deterministic keys, (seed, step) sampling, cache, skipping."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_pngs
from torch.utils.data import default_collate

import perceptsr.data.datasets as data
from perceptsr.data.datasets import (
    DataConfig,
    TrainBatchSampler,
    TrainDataset,
    ValDataset,
    crop_and_augment,
    make_train_loader,
)
from perceptsr.data.resize import degrade, imresize, modcrop
from perceptsr.errors import ConfigError, InputError
from perceptsr.io.images import read_image


def make_dataset(folder: Path, **overrides: object) -> TrainDataset:
    options = {"scale": 2, "patch_size": 16, "hflip": True, "rotate": True, "progress": False, **overrides}
    return TrainDataset([folder], **options)


def as_hwc(x: torch.Tensor) -> np.ndarray:
    return (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def dihedral(a: np.ndarray) -> list[np.ndarray]:
    """The 8 flip/rotate variants of an (H, W, C) array."""
    out = []
    for t in (a, a.swapaxes(0, 1)):
        out += [t, t[::-1], t[:, ::-1], t[::-1, ::-1]]
    return out


def locate(patch: np.ndarray, full: np.ndarray, side: int) -> list[tuple[int, int, int]]:
    """All (y, x, variant) where dihedral(full[y:y+side, x:x+side])[variant] equals `patch`."""
    hits = []
    for y in range(full.shape[0] - side + 1):
        for x in range(full.shape[1] - side + 1):
            for v, candidate in enumerate(dihedral(full[y : y + side, x : x + side])):
                if np.array_equal(candidate, patch):
                    hits.append((y, x, v))
    return hits


def test_lr_is_the_8bit_degrade_of_the_modcropped_hr(tmp_path: Path) -> None:
    ds = make_dataset(write_pngs(tmp_path, [(35, 41)]), scale=2)
    hr = modcrop(read_image(tmp_path / "im0.png").rgb, 2)
    assert ds.hr_images[0].shape == (34, 40, 3) and ds.lr_images[0].shape == (17, 20, 3)
    assert ds.hr_images[0].dtype == np.uint8 and ds.lr_images[0].dtype == np.uint8
    np.testing.assert_array_equal(ds.hr_images[0], as_hwc(hr[0]))
    np.testing.assert_array_equal(ds.lr_images[0], as_hwc(degrade(hr, 2)[0]))


def test_sample_crops_are_aligned_regions_of_the_full_pair(tmp_path: Path) -> None:
    ds = make_dataset(write_pngs(tmp_path, [(30, 36)]), scale=2, patch_size=12, hflip=False, rotate=False)
    positions = set()
    for seed in range(6):
        sample = ds[(0, seed)]
        assert sample["lr"].shape == (3, 6, 6) and sample["hr"].shape == (3, 12, 12)
        assert sample["lr"].dtype == torch.float32 and sample["hr"].min() >= 0 and sample["hr"].max() <= 1
        hits = locate(as_hwc(sample["lr"]), ds.lr_images[0], 6)
        assert [h[2] for h in hits] == [0], "without augmentation the crop must be a plain region"
        y, x, _ = hits[0]
        np.testing.assert_array_equal(
            as_hwc(sample["hr"]), ds.hr_images[0][2 * y : 2 * y + 12, 2 * x : 2 * x + 12]
        )
        positions.add((y, x))
    assert len(positions) > 1, "crop positions should vary with the sample seed"


def test_augmentation_applies_the_same_transform_to_lr_and_hr(tmp_path: Path) -> None:
    ds = make_dataset(write_pngs(tmp_path, [(24, 28)]), scale=2, patch_size=12)
    variants = set()
    for seed in range(24):
        sample = ds[(0, seed)]
        (y, x, v), *rest = locate(as_hwc(sample["lr"]), ds.lr_images[0], 6)
        assert not rest
        hr_region = ds.hr_images[0][2 * y : 2 * y + 12, 2 * x : 2 * x + 12]
        np.testing.assert_array_equal(as_hwc(sample["hr"]), dihedral(hr_region)[v])
        variants.add(v)
    assert len(variants) >= 5, f"augmentation looks inactive: only variants {variants}"


def test_crop_and_augment_keeps_three_resolutions_aligned() -> None:
    # HR and a "segmentation map" are nearest-neighbour blow-ups of LR, so alignment is checkable exactly.
    lr = np.arange(10 * 13 * 2).reshape(10, 13, 2)
    hr = np.kron(lr, np.ones((3, 3, 1), dtype=lr.dtype))
    seg = np.kron(lr[..., 0], np.ones((3, 3), dtype=lr.dtype))
    for seed in range(20):
        a, b, c = crop_and_augment(
            [lr, hr, seg], [1, 3, 3], np.random.default_rng(seed), patch_lr=4, hflip=True, rotate=True
        )
        assert a.shape == (4, 4, 2) and b.shape == (12, 12, 2) and c.shape == (12, 12)
        np.testing.assert_array_equal(b, np.kron(a, np.ones((3, 3, 1), dtype=lr.dtype)))
        np.testing.assert_array_equal(c, b[..., 0])
    with pytest.raises(ValueError, match="not aligned"):
        crop_and_augment([lr, hr[:-3]], [1, 3], np.random.default_rng(0), patch_lr=4, hflip=True, rotate=True)


def test_same_key_same_sample_and_seeds_differ(tmp_path: Path) -> None:
    ds = make_dataset(write_pngs(tmp_path, [(40, 40), (36, 44)]))
    first, again, other = ds[(1, 1234)], ds[(1, 1234)], ds[(1, 1235)]
    assert torch.equal(first["lr"], again["lr"]) and torch.equal(first["hr"], again["hr"])
    assert not torch.equal(first["hr"], other["hr"])


def test_small_images_are_skipped_and_none_usable_is_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = write_pngs(tmp_path / "mixed", [(20, 30), (10, 40), (17, 17)])
    with caplog.at_level(logging.WARNING, logger="perceptsr.data.datasets"):
        ds = make_dataset(folder, patch_size=16)
    # 17x17 mod-crops to 16x16, which still holds a 16 patch; 10x40 does not
    assert [p.name for p in ds.paths] == ["im0.png", "im2.png"] and len(ds) == 2 and len(ds.lr_images) == 2
    assert "im1.png" in caplog.text and "im2.png" not in caplog.text
    with pytest.raises(InputError, match="no training image"):
        make_dataset(write_pngs(tmp_path / "small", [(8, 8)]), patch_size=16)


def test_scale_augment_adds_each_image_resized_before_its_degradation(tmp_path: Path) -> None:
    """Factor 0.5 of a 35x41 image: MATLAB bicubic to 18x21 on the 8-bit grid, mod-cropped to 18x20, and the LR
    made from that; full-size entries keep their cache keys, a resized one has its own; a resize that leaves the
    image under the patch is skipped."""
    folder, cache = write_pngs(tmp_path / "hr", [(35, 41), (24, 24)]), tmp_path / "cache"
    plain = make_dataset(folder, cache_dir=cache)
    ds = make_dataset(folder, cache_dir=cache, downscales=(0.5,))
    assert len(plain) == 2 and len(ds) == 3  # 24x24 at 0.5 is 12x12, under the 16 patch
    assert [p.name for p in ds.paths] == ["im0.png", "im0.png", "im1.png"]
    full = read_image(folder / "im0.png").rgb
    small = modcrop(torch.round(imresize(full, 0.5).clamp(0, 1) * 255) / 255, 2)
    assert ds.hr_images[1].shape == (18, 20, 3)
    np.testing.assert_array_equal(ds.hr_images[1], as_hwc(small[0]))
    np.testing.assert_array_equal(ds.lr_images[1], as_hwc(degrade(small, 2)[0]))
    np.testing.assert_array_equal(ds.hr_images[0], plain.hr_images[0])
    assert data.cache_key(folder / "im0.png", 2) == data.cache_key(folder / "im0.png", 2, 1.0)
    assert data.cache_key(folder / "im0.png", 2, 0.5) != data.cache_key(folder / "im0.png", 2)
    assert len(list(cache.glob("*.npz"))) == 4  # two full-size entries, shared, and two at 0.5
    for bad in [(1.0,), (0.0,), (0.5, 0.5), (1.5,)]:
        with pytest.raises(ConfigError, match="scale_augment"):
            DataConfig(scale_augment=bad)


def test_patch_must_be_a_multiple_of_the_scale(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="multiple of the scale"):
        make_dataset(write_pngs(tmp_path, [(32, 32)]), scale=3, patch_size=16)


def test_cache_round_trip_and_invalidation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, cache = write_pngs(tmp_path / "hr", [(20, 24), (22, 18)]), tmp_path / "cache"
    built = make_dataset(folder, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2 and not list(cache.glob(".*tmp"))

    def no_decoding(path: Path, scale: int) -> None:
        raise AssertionError(f"{path} was decoded although it is cached")

    monkeypatch.setattr(data, "load_pair", no_decoding)
    cached = make_dataset(folder, cache_dir=cache)
    for a, b in zip(built.hr_images + built.lr_images, cached.hr_images + cached.lr_images, strict=True):
        np.testing.assert_array_equal(a, b)
    assert torch.equal(built[(1, 7)]["lr"], cached[(1, 7)]["lr"])
    monkeypatch.undo()
    write_pngs(folder, [(26, 28)], seed=5)  # im0.png changes: a new entry, not the stale one
    changed = make_dataset(folder, cache_dir=cache)
    assert changed.hr_images[0].shape == (26, 28, 3) and len(list(cache.glob("*.npz"))) == 3
    (cache / next(p.name for p in cache.glob("im1-*.npz"))).write_bytes(b"broken")
    np.testing.assert_array_equal(make_dataset(folder, cache_dir=cache).lr_images[1], built.lr_images[1])


def take(sampler: TrainBatchSampler, count: int) -> list[list[tuple[int, int]]]:
    stream = iter(sampler)
    return [next(stream) for _ in range(count)]


def test_sampler_resume_replays_the_uninterrupted_stream() -> None:
    full = take(TrainBatchSampler(7, batch_size=4, seed=3), 12)
    assert take(TrainBatchSampler(7, batch_size=4, seed=3, start_step=5), 7) == full[5:]
    assert take(TrainBatchSampler(7, batch_size=4, seed=4), 12) != full


def test_sampler_ranks_split_the_global_batch() -> None:
    single = take(TrainBatchSampler(9, batch_size=6, seed=1, start_step=2), 5)
    ranks = [
        take(TrainBatchSampler(9, batch_size=6, seed=1, start_step=2, rank=r, world_size=3), 5)
        for r in range(3)
    ]
    for step in range(5):
        assert [key for r in range(3) for key in ranks[r][step]] == single[step]
    with pytest.raises(ConfigError, match="not divisible"):
        TrainBatchSampler(9, batch_size=6, seed=1, world_size=4)
    with pytest.raises(ConfigError, match="rank"):
        TrainBatchSampler(9, batch_size=6, seed=1, rank=2, world_size=2)


def test_sampler_visits_every_image_once_per_epoch() -> None:
    keys = [k for batch in take(TrainBatchSampler(10, batch_size=4, seed=0), 10) for k in batch]
    indices = [index for index, _ in keys]
    assert sorted(indices[:10]) == list(range(10)) and sorted(indices[10:20]) == list(range(10))
    assert indices[:10] != indices[10:20]  # a fresh permutation each epoch
    assert len({seed for _, seed in keys}) == len(keys)


def test_loader_batches_match_the_keys(tmp_path: Path) -> None:
    ds = make_dataset(write_pngs(tmp_path, [(24, 24), (30, 20), (20, 26)]))
    sampler = TrainBatchSampler(len(ds), batch_size=4, seed=2)
    expected = [default_collate([ds[k] for k in keys]) for keys in take(sampler, 2)]
    for workers in (0, 1):
        stream = iter(make_train_loader(ds, sampler, workers=workers, device=torch.device("cpu")))
        for want in expected:
            got = next(stream)
            assert got["lr"].shape == (4, 3, 8, 8) and got["hr"].shape == (4, 3, 16, 16)
            assert torch.equal(got["lr"], want["lr"]) and torch.equal(got["hr"], want["hr"])


def test_val_dataset_pairs_and_limit(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(21, 30), (16, 16), (18, 22)])
    items = ValDataset([folder], scale=4, max_images=2, progress=False).items
    assert [i.stem for i in items] == ["im0", "im1"]
    assert items[0].hr.shape == (1, 3, 20, 28) and items[0].lr.shape == (1, 3, 5, 7)
    assert torch.equal(items[0].lr, degrade(items[0].hr, 4))


def test_data_config_rejects_bad_values() -> None:
    assert DataConfig().patch_size == 96 and DataConfig().batch_size == 16
    with pytest.raises(ConfigError):
        DataConfig(batch_size=0)
    with pytest.raises(ConfigError):
        DataConfig(val_max_images=0)


def test_set5_pairs(shared) -> None:  # noqa: ANN001
    folder = shared("data/Set5")
    ds = TrainDataset([folder], scale=4, patch_size=96, hflip=True, rotate=True, progress=False)
    assert len(ds) == 5 and ds.hr_images[0].shape == (512, 512, 3) and ds.lr_images[4].shape == (86, 57, 3)
    sample = ds[(1, 99)]
    assert sample["lr"].shape == (3, 24, 24) and sample["hr"].shape == (3, 96, 96)
    assert sample["hr"].std() > 0.05 and sample["lr"].min() >= 0 and sample["lr"].max() <= 1
    hits = locate(as_hwc(sample["lr"]), ds.lr_images[1], 24)
    assert len(hits) == 1
    y, x, v = hits[0]
    hr_region = ds.hr_images[1][4 * y : 4 * y + 96, 4 * x : 4 * x + 96]
    np.testing.assert_array_equal(as_hwc(sample["hr"]), dihedral(hr_region)[v])
