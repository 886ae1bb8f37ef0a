"""SFTGAN's training data: image patches with their segmentation maps, class labels and the background mix.

Each training image's map is precomputed by `perceptsr segment` into `seg_dir/<stem>_segprob.npy` (8×H×W at the
HR size mod 4) and cropped/flipped with the image; one sample in `background_every` is a background sample (a
`background` folder image, or the same image, with a one-hot background map and class label 0). The class label
of an image (ACD order: building 1, plant 2, mountain 3, water 4, sky 5, grass 6, animal 7, else 0): `path` = the
original rule, a category word in the image's folder or file name; `map` = the argmax of the image's mean map
(our data has no category folders); `auto` = path when it names a category, else map. Not reproduced: the
original's random pre-scaling of each image by 0.5–1. Specification: methods.md §3.4, §6.2.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from perceptsr.data.datasets import TrainDataset, crop_and_augment, to_tensor
from perceptsr.errors import InputError

ClassLabel = Literal["auto", "path", "map"]

# ACD class labels: words of the original's file-path rule, and the segmentation channel -> label map (the
# two orders differ, methods.md §6.2).
PATH_LABELS = (("building", 1), ("plant", 2), ("mountain", 3), ("water", 4), ("sky", 5), ("grass", 6), ("animal", 7))
SEG_TO_LABEL = (0, 5, 4, 6, 3, 1, 2, 7)


def image_label(path: Path, seg: np.ndarray, rule: ClassLabel) -> int:
    """The ACD label of a training image from its folder/file name and/or its map (8×H×W)."""
    name = f"{path.parent.name}/{path.stem}".lower()
    by_path = next((label for word, label in PATH_LABELS if word in name), 0)
    if rule == "path" or (rule == "auto" and by_path):
        return by_path
    return SEG_TO_LABEL[int(np.asarray(seg, dtype=np.float64).mean(axis=(1, 2)).argmax())]


class SegTrainDataset(TrainDataset):
    """TrainDataset plus each image's map (memory-mapped from `seg_dir`, cropped and flipped with the image),
    its class label, and the background mix. Samples: {"lr", "hr", "seg" (8,p,p), "label" (long)}."""

    def __init__(self, folders: Sequence[str | Path], *, seg_dir: str | Path, background: Sequence[str | Path],
                 background_every: int, class_label: ClassLabel, scale: int, patch_size: int, hflip: bool,
                 rotate: bool, cache_dir: str | Path | None = None, progress: bool = True) -> None:
        super().__init__(folders, scale=scale, patch_size=patch_size, hflip=hflip, rotate=rotate,
                         cache_dir=cache_dir, progress=progress)
        self.background_every = background_every
        self.seg_files: list[Path] = []
        self.labels: list[int] = []
        for path, hr in zip(self.paths, self.hr_images, strict=True):
            file = Path(seg_dir) / f"{path.stem}_segprob.npy"
            if file in self.seg_files:
                raise InputError(f"two training images are named {path.stem}: their maps would share {file}")
            seg = self._open(file)
            if seg.ndim != 3 or seg.shape[0] != len(SEG_TO_LABEL) or seg.shape[1:] != hr.shape[:2]:
                raise InputError(f"{file} has shape {seg.shape}, but {path} (mod-cropped to {scale}) needs "
                                 f"(8, {hr.shape[0]}, {hr.shape[1]}): remake it with `perceptsr segment`")
            self.seg_files.append(file)
            self.labels.append(image_label(path, seg, class_label))
        self.background = TrainDataset(background, scale=scale, patch_size=patch_size, hflip=hflip,
                                       rotate=rotate, cache_dir=cache_dir, progress=progress) if background else None

    @staticmethod
    def _open(file: Path) -> np.ndarray:
        if not file.is_file():
            raise InputError(f"segmentation map {file} is missing: make the maps of the training images with "
                             f"`perceptsr segment TRAIN_FOLDER -o {file.parent}`")
        try:
            return np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read segmentation map {file}: {error}") from None

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, sample_seed = key
        coin = np.random.default_rng([sample_seed, 1])  # a stream apart from the crop's
        if self.background_every and int(coin.integers(self.background_every)) == 0:
            if self.background is not None:
                sample = self.background[(int(coin.integers(len(self.background))), sample_seed)]
            else:
                sample = super().__getitem__(key)
            seg = torch.zeros(len(SEG_TO_LABEL), *sample["hr"].shape[-2:])
            seg[0] = 1.0
            return {**sample, "seg": seg, "label": torch.tensor(0)}
        lr, hr, seg = crop_and_augment(
            [self.lr_images[index], self.hr_images[index], self._open(self.seg_files[index]).transpose(1, 2, 0)],
            [1, self.scale, self.scale], np.random.default_rng(sample_seed), patch_lr=self.patch_lr,
            hflip=self.hflip, rotate=self.rotate)
        seg = torch.from_numpy(np.ascontiguousarray(seg.transpose(2, 0, 1), dtype=np.float32))
        return {"lr": to_tensor(lr), "hr": to_tensor(hr), "seg": seg, "label": torch.tensor(self.labels[index])}
