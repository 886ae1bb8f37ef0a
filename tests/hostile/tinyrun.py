"""The tiny run the hostile run tests train: 8-channel MSRResNet + SRGAN discriminator, 12 iterations, saved every
iteration and validated every third, so checkpoints, best pointers and pruning all happen within a second."""

from __future__ import annotations

from pathlib import Path

from conftest import flat_noisy_images, tiny_srgan


def tiny(hr: Path, val: Path) -> dict:
    config = tiny_srgan(hr, pretrain=6, gan=6)
    config["model"]["phases"]["pretrain"]["schedule"] = {"kind": "cosine"}
    config["data"].update(val=[str(val)], batch_size=2)
    config.update(save_every=1, val_every=3, log_every=1, keep_checkpoints=2)
    return config


def tiny_data(root: Path) -> tuple[Path, Path]:
    """Four 48x40 training images and two 32x32 validation images under `root`."""
    (root / "hr").mkdir(parents=True)
    (root / "val").mkdir()
    hr = flat_noisy_images(root / "hr", count=4, size=(40, 48), seed=0, base=200, noise=55)
    val = flat_noisy_images(root / "val", count=2, size=(32, 32), seed=1, base=200, noise=55)
    return hr, val
