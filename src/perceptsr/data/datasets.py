"""Training and validation data: HR folders in, aligned (LR, HR) patches out.

Every HR image is read once, mod-cropped to the scale and degraded with the project's one degradation
(`resize.degrade`: MATLAB bicubic 1/s, rounded to the 8-bit grid as a saved LR file would be). Both are kept
as uint8 HWC arrays; only the sampled crop becomes float. A sample is addressed by the key (image index,
sample seed) and the sampler derives keys from (seed, step) alone, so a resumed or multi-rank run sees exactly
the batches of an uninterrupted single-process run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from perceptsr.data.resize import degrade, imresize, modcrop
from perceptsr.errors import CheckpointError, ConfigError, InputError
from perceptsr.io.arrays import check_zip
from perceptsr.io.images import atomic_output, list_images, read_image

logger = logging.getLogger(__name__)

# Bump when the degradation or the cached layout changes, so stale caches are not reused.
CACHE_VERSION = 1


@dataclass(frozen=True)
class DataConfig:
    """Where the images are and how patches are drawn (BasicSR's `gt_size`, `use_hflip`, `use_rot`)."""

    train: tuple[str, ...] = ()  # HR folders (or files) for training
    val: tuple[str, ...] = ()  # HR folders for validation during training
    patch_size: int = 96  # HR patch side; the LR patch is patch_size / scale (SRGAN: 96)
    batch_size: int = 16  # GLOBAL batch, split evenly across DDP ranks (SRGAN: 16)
    hflip: bool = True  # random horizontal flip
    rotate: bool = True  # random vertical flip + transpose, i.e. the 8 rot90/flip variants with hflip
    workers: int = 2  # DataLoader worker processes (0 = load in the main process)
    cache_dir: str | None = None  # one .npz per image with the uint8 HR/LR, reused across restarts
    val_max_images: int | None = None  # use only the first N validation images (sorted order)
    # HR downscale factors in (0, 1): every training image is also used resized by each one (MATLAB bicubic, on
    # the 8-bit grid, before its LR is made). The scale augmentation of the papers trained on the 291 images
    # (VDSR, DRRN, MemNet: 0.9, 0.8, 0.7, 0.6): more and sharper-per-pixel samples from a small set.
    scale_augment: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if self.patch_size <= 0 or self.batch_size <= 0:
            raise ConfigError(
                f"patch_size and batch_size must be positive, got {self.patch_size}, {self.batch_size}"
            )
        if self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")
        if self.val_max_images is not None and self.val_max_images <= 0:
            raise ConfigError(f"val_max_images must be positive or null, got {self.val_max_images}")
        if not all(0 < factor < 1 for factor in self.scale_augment) or \
                len(set(self.scale_augment)) != len(self.scale_augment):
            raise ConfigError(
                f"scale_augment must list distinct factors between 0 and 1, got {list(self.scale_augment)}"
            )


def load_pair(path: Path, scale: int, *, max_pixels: int | None = None, mod_crop: bool = True,
              downscale: float = 1.0) -> tuple[Tensor, Tensor]:
    """Read one HR image and make its LR: (hr (1,3,H,W), lr (1,3,H/s,W/s)) float32 in [0,1].

    `downscale` < 1 (training's scale augmentation) first resizes the HR by that factor, MATLAB bicubic rounded
    to the 8-bit grid, as if the photo had been saved smaller. HR is mod-cropped to `scale` (with mod_crop=False,
    an HR that is not a multiple of it is an InputError); LR = `resize.degrade(hr)`, on the 8-bit grid. Grayscale
    files come back as three equal channels (io's canonical form). This is the one place training, validation and
    evaluation make their pairs, so they cannot drift apart.
    """
    hr = read_image(path, **({} if max_pixels is None else {"max_pixels": max_pixels})).rgb
    if downscale != 1.0:
        hr = torch.round(imresize(hr, downscale).clamp(0, 1) * 255) / 255
    if not mod_crop and (hr.shape[-2] % scale or hr.shape[-1] % scale):
        raise InputError(f"{path}: {hr.shape[-1]}x{hr.shape[-2]} is not a multiple of the scale {scale} "
                         "(mod-crop it: drop --no-mod-crop)")
    hr = modcrop(hr, scale)
    if min(hr.shape[-2:]) < scale:
        raise InputError(f"{path}: image is smaller than the scale {scale}")
    return hr, degrade(hr, scale)


def to_uint8(image: Tensor) -> np.ndarray:
    """(1,C,H,W) float [0,1] -> (H,W,C) uint8, rounding to the nearest level."""
    return image[0].mul(255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous().numpy()


def to_tensor(array: np.ndarray) -> Tensor:
    """(H,W,C) uint8 -> (C,H,W) float32 in [0,1] (no batch axis: the DataLoader's collate adds it)."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))).float().div_(255)


def crop_and_augment(
    arrays: Sequence[np.ndarray],
    factors: Sequence[int],
    rng: np.random.Generator,
    *,
    patch_lr: int,
    hflip: bool,
    rotate: bool,
) -> list[np.ndarray]:
    """Crop aligned arrays of different resolutions at one random position and flip/rotate them alike.

    arrays: (H_i, W_i, ...) with H_i = factors[i] * h, where h x w is the LR size and factors[i] the array's
    resolution relative to LR (LR 1, HR scale, a segmentation map at HR size: scale). The LR crop at (y, x)
    pairs with the crop at (f*y, f*x) of side f*patch_lr. Augmentation is BasicSR's `augment`: hflip,
    vflip, transpose, each with p=1/2. All three coins are always drawn, so the stream of draws (and thus
    every sample) does not depend on which flags are on. Returns views (no copy).
    """
    heights = {a.shape[0] // f for a, f in zip(arrays, factors, strict=True)}
    widths = {a.shape[1] // f for a, f in zip(arrays, factors, strict=True)}
    if len(heights) != 1 or len(widths) != 1:
        raise ValueError(
            f"arrays are not aligned: shapes {[a.shape for a in arrays]}, factors {list(factors)}"
        )
    height, width = heights.pop(), widths.pop()
    if height < patch_lr or width < patch_lr:
        raise ValueError(f"LR size {height}x{width} is smaller than the patch {patch_lr}")
    y = int(rng.integers(0, height - patch_lr + 1))
    x = int(rng.integers(0, width - patch_lr + 1))
    flip_h, flip_v, transpose = rng.random(3) < 0.5
    out = []
    for array, factor in zip(arrays, factors, strict=True):
        patch = array[factor * y : factor * (y + patch_lr), factor * x : factor * (x + patch_lr)]
        if hflip and flip_h:
            patch = patch[:, ::-1]
        if rotate and flip_v:
            patch = patch[::-1]
        if rotate and transpose:
            patch = patch.swapaxes(0, 1)
        out.append(patch)
    return out


class TrainDataset(Dataset):
    """All training pairs in memory as uint8; `dataset[(index, sample_seed)]` -> one aligned patch pair.

    Memory: about 1.06 bytes per HR pixel per channel (HR + LR at x4), so 500 BSD images take ~250 MB.
    A 16-bit HR is kept rounded to 8 bit (its LR is computed from the full-precision HR first). Each factor of
    `downscales` adds every image once more at that size (DataConfig.scale_augment): an entry of its own, sampled
    as often as the full-size one (0.9 ... 0.6 add 2.3x the memory).
    """

    def __init__(
        self,
        folders: Sequence[str | Path],
        *,
        scale: int,
        patch_size: int,
        hflip: bool,
        rotate: bool,
        cache_dir: str | Path | None = None,
        progress: bool = True,
        downscales: Sequence[float] = (),
    ) -> None:
        if patch_size % scale:
            raise ConfigError(f"patch_size {patch_size} is not a multiple of the scale {scale}")
        self.scale, self.patch_size, self.patch_lr = scale, patch_size, patch_size // scale
        self.hflip, self.rotate = hflip, rotate
        self.paths: list[Path] = []
        self.hr_images: list[np.ndarray] = []  # (H, W, 3) uint8, mod-cropped
        self.lr_images: list[np.ndarray] = []  # (H/s, W/s, 3) uint8
        cache = Path(cache_dir) if cache_dir is not None else None
        if cache is not None:
            cache.mkdir(parents=True, exist_ok=True)
        entries = [(path, factor) for path in _list(folders) for factor in (1.0, *downscales)]
        small_copies: list[str] = []  # resized copies under the patch: one line for all of them
        for path, factor in tqdm(entries, desc="loading HR", disable=not progress):
            hr, lr = self._load(path, cache, factor)
            if hr.shape[0] < patch_size or hr.shape[1] < patch_size:
                if factor == 1:
                    logger.warning("skipping %s: %dx%d is smaller than the %d patch", path, *hr.shape[1::-1],
                                   patch_size)
                else:
                    small_copies.append(f"{path.name} at x{factor:g}")
                continue
            self.paths.append(path)
            self.hr_images.append(hr)
            self.lr_images.append(lr)
        if small_copies:
            logger.info("scale_augment: %d resized copies are smaller than the %d patch and left out (%s%s)",
                        len(small_copies), patch_size, ", ".join(small_copies[:3]), ", ..." * (len(small_copies) > 3))
        if not self.hr_images:
            raise InputError(
                f"no training image of at least {patch_size}x{patch_size} pixels in {list(folders)}"
            )

    def _load(self, path: Path, cache: Path | None, downscale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        if cache is None:
            return self._degrade(path, downscale)
        file = cache / f"{path.stem}-{cache_key(path, self.scale, downscale)}.npz"
        if file.exists():
            try:
                check_zip(file, what="image cache")  # a damaged cache must not inflate without bound
                with np.load(file, allow_pickle=False) as stored:
                    hr, lr = stored["hr"], stored["lr"]
                aligned = hr.shape[:2] == (lr.shape[0] * self.scale, lr.shape[1] * self.scale)
                if aligned and hr.dtype == lr.dtype == np.uint8:
                    return hr, lr
                logger.warning("cache %s has inconsistent shapes; rebuilding it", file)
            except (OSError, ValueError, KeyError, zipfile.BadZipFile, CheckpointError) as error:
                logger.warning("cache %s is unreadable (%s); rebuilding it", file, error)
        hr, lr = self._degrade(path, downscale)
        with atomic_output(file, overwrite=True) as temporary, open(temporary, "wb") as handle:
            np.savez(handle, hr=hr, lr=lr)
        return hr, lr

    def _degrade(self, path: Path, downscale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        hr, lr = load_pair(path, self.scale, downscale=downscale)
        return to_uint8(hr), to_uint8(lr)

    def __len__(self) -> int:
        return len(self.hr_images)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        """{"lr": (3, p/s, p/s), "hr": (3, p, p)} float32 in [0,1]; a pure function of the key."""
        index, sample_seed = key
        rng = np.random.default_rng(sample_seed)
        lr, hr = crop_and_augment(
            [self.lr_images[index], self.hr_images[index]],
            [1, self.scale],
            rng,
            patch_lr=self.patch_lr,
            hflip=self.hflip,
            rotate=self.rotate,
        )
        return {"lr": to_tensor(lr), "hr": to_tensor(hr)}


def _list(folders: Sequence[str | Path]) -> list[Path]:
    """Images of each folder in turn; folders are listed one by one so equal stems in two folders are fine."""
    return [path for folder in folders for path in list_images([folder])]


def cache_key(path: Path, scale: int, downscale: float = 1.0) -> str:
    """Hash of (absolute path, size, mtime, scale, cache version[, downscale]): a changed file gets a new entry."""
    stat = path.stat()
    identity = [str(path.resolve()), stat.st_size, stat.st_mtime_ns, scale, CACHE_VERSION]
    if downscale != 1.0:  # full-size entries keep the keys they had before scale augmentation existed
        identity.append(downscale)
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:20]


class TrainBatchSampler:
    """Infinite stream of batches of keys (image index, sample seed) for `DataLoader(batch_sampler=...)`.

    Step k's GLOBAL batch is positions [k*B, (k+1)*B) of the concatenation of epoch-wise permutations (each
    seeded by (seed, epoch)); each key's sample seed comes from (seed, k, position). Rank r yields the slice
    [r*b, (r+1)*b), b = B / world_size. Everything is a function of (seed, step), so resuming at `start_step`
    replays an uninterrupted run, and the ranks' batches together are the single-process batch.
    """

    def __init__(
        self,
        num_items: int,
        *,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if num_items <= 0:
            raise InputError("the training set is empty")
        if batch_size <= 0 or world_size <= 0 or batch_size % world_size:
            raise ConfigError(f"batch_size {batch_size} is not divisible by the {world_size} processes")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside [0, {world_size})")
        if seed < 0 or start_step < 0:
            raise ConfigError(f"seed and start_step must be >= 0, got {seed}, {start_step}")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start_step, self.rank, self.world_size = start_step, rank, world_size
        self._permutations: dict[int, np.ndarray] = {}

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch not in self._permutations:
            if len(self._permutations) > 2:  # a batch spans at most a few epochs; keep memory bounded
                self._permutations.pop(min(self._permutations))
            self._permutations[epoch] = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        return self._permutations[epoch]

    def keys(self, step: int) -> list[tuple[int, int]]:
        """This rank's keys for `step` (the whole global batch when world_size == 1)."""
        local = self.batch_size // self.world_size
        keys = []
        for position in range(self.rank * local, (self.rank + 1) * local):
            epoch, offset = divmod(step * self.batch_size + position, self.num_items)
            index = int(self._permutation(epoch)[offset])
            sample_seed = int(np.random.SeedSequence([self.seed, step, position]).generate_state(1)[0])
            keys.append((index, sample_seed))
        return keys

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start_step
        while True:
            yield self.keys(step)
            step += 1


def _worker_init(worker_id: int) -> None:
    # Workers only crop uint8 arrays; more than one thread each would oversubscribe the few cores.
    torch.set_num_threads(1)
    # A Ctrl-C or SIGTERM sent to the whole process group is the trainer's to handle (it saves a checkpoint and
    # stops); a worker dying from it first would crash the run instead.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def make_train_loader(
    dataset: Dataset, sampler: TrainBatchSampler, *, workers: int, device: torch.device
) -> DataLoader:
    """A DataLoader over `sampler`'s batches; pinned memory on CUDA, persistent prefetching workers."""
    if workers < 0:
        raise ConfigError(f"workers must be >= 0, got {workers}")
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=torch.device(device).type == "cuda",
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_worker_init if workers > 0 else None,
    )


@dataclass
class ValItem:
    """One validation image: `lr` (1,3,h,w) and mod-cropped `hr` (1,3,s*h,s*w), float32 in [0,1]."""

    stem: str
    lr: Tensor
    hr: Tensor


class ValDataset:
    """Full validation images, preloaded as (LR, HR) pairs made exactly as in evaluation."""

    def __init__(
        self,
        folders: Sequence[str | Path],
        *,
        scale: int,
        max_images: int | None = None,
        progress: bool = True,
    ) -> None:
        paths = _list(folders)
        if max_images is not None:
            paths = paths[:max_images]
        self.items: list[ValItem] = []
        seen: set[str] = set()
        for path in tqdm(paths, desc="loading val", disable=not progress):
            stem = path.stem if path.stem not in seen else f"{path.parent.name}/{path.stem}"
            seen.add(stem)
            hr, lr = load_pair(path, scale)
            self.items.append(ValItem(stem=stem, lr=lr, hr=hr))

    def __len__(self) -> int:
        return len(self.items)
