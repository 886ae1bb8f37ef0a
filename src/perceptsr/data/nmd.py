"""NatSR's NMD training data, made on the fly from HR patches (methods.md §5.4).

- Noisy ("too sharp") samples: N(0, σ²) added to the DCT coefficients with row index 7 or column index 7
  (15 of 64) of every 8×8 block, per channel, with the orthonormal 8×8 DCT.
- Blurry samples: α·HR + (1−α)·ILR, ILR = MATLAB bicubic ×s of the (8-bit) MATLAB bicubic LR.
- The patch texture filter of the original data scripts (mean squared gradient ≥ 0.005, variance ≥ 0.03).
- The NMD phase's batches (`nmd_batch`) and its curriculum (`NMDValidation`, `Curriculum`).
Images are float32 N×3×H×W in [0,1]; outputs are not clipped (the original does not clip either).
Matches: JWSoh/NatSR:Train_NMD/utils.py (inject_dct, interpolate_img), generate_Dataset/generate_TrainNMD.py.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from perceptsr.data.resize import imresize
from perceptsr.errors import ConfigError, InputError

BLOCK = 8


def dct_matrix(size: int = BLOCK, dtype: torch.dtype = torch.float64) -> Tensor:
    """The orthonormal DCT-II matrix D (size×size): coefficients of a block X are D·X·Dᵀ, and X = Dᵀ·C·D."""
    n = torch.arange(size, dtype=torch.float64)
    matrix = torch.cos(math.pi * (2 * n[None, :] + 1) * n[:, None] / (2 * size)) * math.sqrt(2 / size)
    matrix[0] /= math.sqrt(2)
    return matrix.to(dtype)


def high_frequency_mask(size: int = BLOCK) -> Tensor:
    """(size, size) bool: the coefficients the original perturbs, row index size-1 or column index size-1."""
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[-1, :] = True
    mask[:, -1] = True
    return mask


def dct_noise(shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """Unit-σ DCT noise image (N,C,H,W) float32: N(0,1) on the masked coefficients of each 8×8 block, inverted.

    The DCT is linear, so IDCT(DCT(x) + σ·z) = x + σ·IDCT(z): the noise never needs the image. Drawn on the
    CPU from `generator`, so a run's draws depend on its seed alone. H and W must be multiples of 8.
    """
    n, c, h, w = shape
    if h % BLOCK or w % BLOCK:
        raise InputError(f"DCT noise needs H and W that are multiples of {BLOCK}, got {h}x{w}")
    coefficients = torch.randn(n, c, h // BLOCK, w // BLOCK, BLOCK, BLOCK, generator=generator)
    coefficients = coefficients * high_frequency_mask().to(coefficients.dtype)
    d = dct_matrix(dtype=torch.float32)
    # X[i, j] = sum_uv D[u, i] C[u, v] D[v, j], per block (a, b); then blocks back into rows and columns.
    blocks = torch.einsum("ui,ncabuv,vj->ncaibj", d, coefficients, d)
    return blocks.reshape(n, c, h, w)


def inject_dct_noise(hr: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """hr + σ·DCT noise (see `dct_noise`), on hr's device and dtype."""
    return hr + sigma * dct_noise(tuple(hr.shape), generator).to(hr.device, hr.dtype)


def interpolated_lr(lr: Tensor, scale: int) -> Tensor:
    """The ILR: MATLAB bicubic ×scale of the LR batch (N,3,h,w) -> (N,3,s·h,s·w)."""
    return imresize(lr, scale)


def blur_blend(hr: Tensor, ilr: Tensor, alpha: float) -> Tensor:
    """α·HR + (1−α)·ILR: α = 1 is HR itself, smaller α is blurrier. Shapes must match."""
    if hr.shape != ilr.shape:
        raise InputError(f"blur blend needs equal shapes, got {tuple(hr.shape)} and {tuple(ilr.shape)}")
    return alpha * hr + (1 - alpha) * ilr


def texture_stats(patch: Tensor) -> tuple[float, float]:
    """(mean squared gradient, variance) of a (3,H,W) patch in [0,1], as the original's patch filter.

    gradient = mean over (H−1)×(W−1)×C of (x[i,j] − x[i+1,j])² + (x[i,j] − x[i,j+1])²; variance over all values.
    """
    x = patch.double()
    core = x[:, :-1, :-1]
    gradient = ((core - x[:, 1:, :-1]).square() + (core - x[:, :-1, 1:]).square()).mean()
    return float(gradient), float(x.var(unbiased=False))


MIN_GRADIENT = 0.005  # NatSR's texture filter: mean squared gradient of a kept HR patch
MIN_VARIANCE = 0.03  # and its variance (values in [0, 1])
TEXTURE_TRIES = 10  # crops tried per sample before taking the most textured one


class TexturedDataset(Dataset):
    """A training dataset whose patches pass the texture filter: each key retries its crop with derived seeds.

    `dataset[(index, seed)]` tries crops of image `index` with seeds seed, f(seed, 1), f(seed, 2), ... and
    returns the first whose HR passes both thresholds; after `tries` failures, the most textured one tried.
    A pure function of the key, so resume stays exact.
    """

    def __init__(self, base: Dataset, *, min_gradient: float = MIN_GRADIENT, min_variance: float = MIN_VARIANCE,
                 tries: int = TEXTURE_TRIES) -> None:
        if tries < 1:
            raise ConfigError(f"texture filter tries must be >= 1, got {tries}")
        self.base, self.min_gradient, self.min_variance, self.tries = base, min_gradient, min_variance, tries

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, seed = key
        best, best_score = None, -math.inf
        for attempt in range(self.tries):
            sample_seed = seed if attempt == 0 else int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0])
            sample = self.base[(index, sample_seed)]
            gradient, variance = texture_stats(sample["hr"])
            if gradient >= self.min_gradient and variance >= self.min_variance:
                return sample
            score = min(gradient / self.min_gradient, variance / self.min_variance)
            if score > best_score:
                best, best_score = sample, score
        return best


def fixed_patches(dataset: Dataset, count: int, *, seed: int) -> dict[str, Tensor]:
    """`count` patches from the first images of `dataset` (image i mod len), crops fixed by `seed`: {"lr", "hr"}."""
    keys = [(i % len(dataset), int(np.random.SeedSequence([seed, i]).generate_state(1)[0])) for i in range(count)]
    samples = [dataset[key] for key in keys]
    return {name: torch.stack([s[name] for s in samples]) for name in ("lr", "hr")}


# --- The NMD phase: its batches and its curriculum -------------------------------------------------------------

CURRICULUM_SEED = 2521  # fixes the validation patches and their noise (the original's Val_2521 set)


def nmd_batch(hr: Tensor, lr: Tensor, *, sigma: float, alpha: float, scale: int,
              rng: torch.Generator) -> tuple[Tensor, Tensor]:
    """The NMD's inputs from a training batch, ¼ DCT-noisy (σ), ¼ blurry (α), ½ clean HR, and labels 0, 0, 1 (N×1)."""
    quarter = hr.shape[0] // 4
    noisy = inject_dct_noise(hr[:quarter], sigma, rng)
    blurry = blur_blend(hr[quarter : 2 * quarter], interpolated_lr(lr[quarter : 2 * quarter], scale), alpha)
    label = torch.ones(hr.shape[0], 1, device=hr.device, dtype=hr.dtype)
    label[: 2 * quarter] = 0
    return torch.cat([noisy, blurry, hr[2 * quarter :]]), label


class NMDValidation:
    """The curriculum's fixed patches: `count` to corrupt (with fixed unit DCT noise and their ILR), `count` clean.

    Made from the training data once, when training starts; a pure function of the data and `seed`.
    """

    def __init__(self, dataset: Dataset, *, count: int, scale: int, seed: int = CURRICULUM_SEED) -> None:
        patches = fixed_patches(dataset, 2 * count, seed=seed)
        hr, lr = patches["hr"][:count], patches["lr"][:count]
        noise = dct_noise(tuple(hr.shape), torch.Generator().manual_seed(seed))
        self.patches = {"hr": hr, "ilr": interpolated_lr(lr, scale), "noise": noise, "clean": patches["hr"][count:]}

    @torch.no_grad()
    def accuracies(self, nmd: torch.nn.Module, sigma: float, alpha: float, chunk: int = 32) -> tuple[float, float]:
        """Accuracies (%) of `nmd` on [noisy, clean] and on [blurry, clean] patches at σ and α."""
        device = next(nmd.parameters()).device
        if self.patches["hr"].device != device:
            self.patches = {key: value.to(device) for key, value in self.patches.items()}
        val = self.patches

        def logits(images: Tensor) -> Tensor:
            return torch.cat([nmd(part) for part in images.split(chunk)])

        clean = (logits(val["clean"]) > 0).double().sum()
        noisy = logits(val["hr"] + sigma * val["noise"])
        blurry = logits(blur_blend(val["hr"], val["ilr"], alpha))
        total = 2 * val["hr"].shape[0]
        return (float(100 * ((noisy <= 0).double().sum() + clean) / total),
                float(100 * ((blurry <= 0).double().sum() + clean) / total))


@dataclass(frozen=True)
class Curriculum:
    """When the moving average of an accuracy reaches `threshold` (%): σ ← σ·sigma_decay, α ← min(α + step, max).

    The original tests the blur average with `== 95.0`, which almost never fires; here both use ≥. The state
    (σ, α and the accuracy histories, whose length is the window) is tensors the caller keeps in its checkpoint.
    """

    threshold: float
    sigma_decay: float
    alpha_step: float
    max_alpha: float

    def advance(self, sigma: Tensor, alpha: Tensor, histories: tuple[Tensor, Tensor],
                accuracies: tuple[float, float]) -> None:
        """Push the (noise, blur) accuracies into their histories and update σ and α in place."""
        for history, value in zip(histories, accuracies, strict=True):
            history.copy_(torch.cat([history[1:], history.new_tensor([value])]))
        if float(histories[0].mean()) >= self.threshold:
            sigma.mul_(self.sigma_decay)
        if float(histories[1].mean()) >= self.threshold:
            alpha.fill_(min(round(float(alpha) + self.alpha_step, 10), self.max_alpha))
