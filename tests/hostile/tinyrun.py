"""The tiny run the hostile run tests train: 8-channel MSRResNet + SRGAN discriminator, 12 iterations, saved every
iteration and validated every third, so checkpoints, best pointers and pruning all happen within a second."""

from __future__ import annotations

from pathlib import Path

from conftest import flat_noisy_images


def tiny(hr: Path, val: Path) -> dict:
    return {
        "method": "srgan",
        "model": {
            "arch": "msrresnet",
            "generator": {"scale": 4, "num_feat": 8, "num_block": 1},
            "discriminator_arch": "srgan",
            "discriminator": {"num_feat": 4, "input_size": 32, "dense_features": 8},
            "allow_random_vgg": True,
            "content_layers": {"relu1_2": 1.0},
            "phases": {"pretrain": {"iterations": 6, "schedule": {"kind": "cosine"}},
                       "gan": {"iterations": 6, "trains": ["generator", "image"]}},
        },
        "data": {"train": [str(hr)], "val": [str(val)], "patch_size": 32, "batch_size": 2, "workers": 0},
        "save_every": 1,
        "val_every": 3,
        "log_every": 1,
        "keep_checkpoints": 2,
    }


def tiny_data(root: Path) -> tuple[Path, Path]:
    """Four 48x40 training images and two 32x32 validation images under `root`."""
    (root / "hr").mkdir(parents=True)
    (root / "val").mkdir()
    hr = flat_noisy_images(root / "hr", count=4, size=(40, 48), seed=0, base=200, noise=55)
    val = flat_noisy_images(root / "val", count=2, size=(32, 32), seed=1, base=200, noise=55)
    return hr, val
