"""FxSR-Nat: FxSR's control (one generator for every t in [0,1], per-pixel t maps) trained with NatSR's losses,
which need no ImageNet weights. The project's own recipe (the bundled `fxsr-nat-x4`), not a published method.

Objective at t (per sample, or per pixel for the L1 term's weight, see losses/weighted.py):
    L1 + lattice_weight·lattice + t·(naturalness_weight·(−log NMD(SR)) + adversarial_weight·RaGAN)
so t = 0 is the PSNR model's objective and t = 1 NatSR's GAN objective, plus a term NatSR does not have:
`losses.lattice_loss`, which forbids what the GAN terms otherwise grow within a few hundred steps through the
sub-pixel upsampler: a checkerboard/grid at the sampling lattice (metrics.periodic measures it).
The NMD is a frozen natural manifold discriminator from a natsr run's nmd phase (`nmd_init`, e.g.
configs/bundled/nmd_cpu.yaml); `image` is NatSR's spectral-norm discriminator, trained with RaGAN on SR of every
t. The generator starts from an MSRResNet PSNR model (`init`): its SFT layers start as identities, so training
starts at that model for every t; they learn at `condition_learning_rate_scale` times the rate.
The NMD and the RaGAN logit are one number per image, so a t map weighs them by its per-sample mean.

Optional `teacher` (a frozen model, e.g. the bundled natsr-x4): the L1 term's target moves from HR to it,
    |SR − ((1 − teacher_share·t)·HR + teacher_share·t·teacher(LR))|
so as t grows the generator also learns from a NatSR-trained model's outputs: a target that is a function of the LR
alone, so a regression can learn it without a GAN's instability (an MSRResNet without t did, in 500 steps; this
t-conditioned one had not after 2,000: README, FxSR-Nat). At t = 0 it is the plain L1 to HR. One target, not
two L1 terms weighted 1 − t·share and t·share: the minimiser of that sum jumps from HR to the teacher at t·share =
½, where this one moves smoothly along the way.

`teacher_blend: shrink` (with `teacher_base`, a frozen PSNR model P, and u = teacher_share·t) splits the teacher's
output N into P and its detail N − P, and lets the detail in by size rather than by scale:
    |SR − ((1 − u)·HR + u·P(LR) + shrink(N − P, threshold·(1 − u)/u))|
where shrink keeps the part of each pixel's detail vector above the threshold (`shrunk_detail`). At u = 0 and 1
it is the linear blend's target. The linear blend adds a faint copy of all the teacher's grain at small u, and NIQE
scores faint grain worse than none or full (pixel blends of srresnet-x4 and natsr-x4 on 20 BSD100 images: NIQE
6.24, 6.51, 6.11 at u = 0, ¼, ½); shrinking lets strong texture in first at full strength and the faint grain
last (6.24 at u = 0 and 0.2, 6.12 at 0.3, 5.82 at ½, threshold 0.02), and PSNR falls monotonically either way.
What a t-conditioned model makes of it in a few thousand iterations is another matter: the fxsr-nat-x4 card (it
learned the linear blend of its two ends: whether a pixel's grain passes the threshold cannot be told from the LR).
`teacher_blend: region` gates the detail by region instead: where the local RMS of N − P (a Gaussian window of
`region_sigma` HR pixels) is above threshold·(1 − u)/u, all of it enters, ramping to none half the threshold
below (`region_detail`); textured regions turn perceptual first, smooth ones last, a choice the LR shows. Pixel
blends (BSD100's first 20 images, srresnet-x4 stage 6 and natsr-x4): NIQE 6.30, 5.88, 5.14, 4.90, 4.87 at u = 0,
¼, ½, ¾, 1 (threshold 0.02, sigma 4), against the linear blend's 6.30, 6.57, 6.11, 5.35, 4.87.
The network trained on it still changed every pixel a little at t = ¼; the bundled model got its texture-first
behaviour after training instead, from the generator's `texture_gate` (archs/fxsr_msrresnet.py; its card). A
generator built with that gate trains on gated t maps while these losses weigh by the drawn t.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from perceptsr.archs.fxsr_msrresnet import FxMSRResNetConfig
from perceptsr.archs.natsr import NMD, NatSRDiscriminator, NatSRDiscriminatorConfig, NMDConfig
from perceptsr.conditions.texture import gaussian_blur, region_gate
from perceptsr.conditions.tmap import TSampling, draw_t
from perceptsr.config import require
from perceptsr.data.nmd import TexturedDataset
from perceptsr.losses import discriminator_loss, lattice_loss
from perceptsr.losses.weighted import fit_weight, weighted_l1, weighted_ragan
from perceptsr.methods.base import GENERATOR, Batch, Method, OptimizerConfig, ParamGroup, Phase
from perceptsr.methods.transfer import transfer_weights


def conditional(key: str) -> bool:
    """The generator's t-conditioning parameters (FxMSRResNet keys)."""
    return ".sft." in key or key.startswith("cond_net.")


def shrunk_detail(detail: Tensor, share: Tensor | float, threshold: float) -> Tensor:
    """`detail` (N×C×H×W) with each pixel's vector shortened by threshold·(1 − share)/share, or dropped if shorter.

    Group soft-thresholding on the per-pixel RMS over channels, so a kept detail keeps its colour direction. Share 1
    keeps all of it, share 0 none; the kept part grows monotonically with the share, strongest detail first.
    """
    share = torch.as_tensor(share, dtype=detail.dtype, device=detail.device)
    size = detail.pow(2).mean(dim=1, keepdim=True).sqrt()
    # keep = max(0, 1 − λ/size) with λ = threshold·(1 − s)/s, written without dividing by s (s may be 0)
    keep = (share * size - threshold * (1 - share)).clamp(min=0) / (share * size).clamp(min=1e-12)
    return detail * keep.clamp(max=1)


def region_detail(detail: Tensor, share: Tensor | float, threshold: float, sigma: float) -> Tensor:
    """`detail` (N×C×H×W) kept whole where its local RMS (over channels and a Gaussian window of `sigma` pixels)
    is above threshold·(1 − share)/share, dropped where it is below by half the threshold, ramped between.

    Share 1 keeps all of it, share 0 none; the kept regions grow monotonically with the share, the most
    textured first.
    """
    energy = gaussian_blur(detail.pow(2).mean(dim=1, keepdim=True), sigma, padding="reflect")
    return detail * region_gate(energy.clamp(min=0).sqrt(), share, threshold)


def _gan_phase() -> dict[str, Phase]:
    adam = OptimizerConfig(learning_rate=1e-4, betas=(0.9, 0.999))
    return {"gan": Phase(iterations=10_000, trains=(GENERATOR, "image"), generator_optimizer=adam,
                         discriminator_optimizer=adam, ema_decay=0.999)}


@dataclass(frozen=True)
class FxSRNatConfig:
    generator: FxMSRResNetConfig = field(default_factory=FxMSRResNetConfig)
    nmd: NMDConfig = field(default_factory=lambda: NMDConfig(num_feat=16))
    discriminator: NatSRDiscriminatorConfig = field(default_factory=lambda: NatSRDiscriminatorConfig(num_feat=32))
    nmd_init: str = "runs/nmd_cpu"  # a natsr run with an nmd phase, or an NMD checkpoint file
    t_sampling: TSampling = "mixed"
    blobs: int = 3  # Gaussian blobs per random map
    pixel_weight: float = 1.0  # L1 at every t
    naturalness_weight: float = 1e-3  # NatSR's, times t
    adversarial_weight: float = 1e-3  # NatSR's (its two RaGAN terms summed), times t
    lattice_weight: float = 1.0  # losses.lattice_loss at every t: no periodic pattern at the upsampler's lattice
    texture_filter: bool = False  # train on patches that pass NatSR's texture filter (data.nmd.TexturedDataset)
    teacher: str | None = None  # a model (bundled name or release file) whose SR the t > 0 end also regresses to
    teacher_share: float = 0.8  # at t = 1, this share of the L1 weight goes to the teacher's SR, the rest to HR
    teacher_blend: Literal["linear", "shrink", "region"] = "linear"  # how the teacher's share enters (docstring)
    teacher_base: str | None = None  # shrink, region: the PSNR model the teacher's detail is measured from
    shrink_threshold: float = 0.02  # shrink, region: detail under threshold·(1 − u)/u is left out at share u
    region_sigma: float = 4.0  # region: the Gaussian window of the local detail RMS, in HR pixels
    condition_learning_rate_scale: float = 5.0  # the SFT layers and condition net start at identity: learn faster
    phases: dict[str, Phase] = field(default_factory=_gan_phase)

    def __post_init__(self) -> None:
        require(set(self.phases) == {"gan"}, "phases", f"fxsr_nat has the one phase gan, got {sorted(self.phases)}")
        require(set(self.phases["gan"].trains) == {GENERATOR, "image"}, "phases.gan.trains",
                "fxsr_nat trains [generator, image] (the NMD stays frozen)")
        require(self.blobs >= 0, "blobs", f"must be >= 0, got {self.blobs}")
        require(0.0 <= self.teacher_share <= 1.0, "teacher_share", f"must be in [0, 1], got {self.teacher_share}")
        if self.teacher_blend != "linear":
            require(self.teacher is not None and self.teacher_base is not None, "teacher_blend",
                    f"{self.teacher_blend} needs both teacher and teacher_base (the PSNR model its detail is "
                    f"measured from)")
        require(self.region_sigma > 0, "region_sigma", f"must be > 0, got {self.region_sigma}")
        require(self.shrink_threshold > 0, "shrink_threshold", f"must be > 0, got {self.shrink_threshold}")
        require(self.condition_learning_rate_scale > 0, "condition_learning_rate_scale",
                f"must be > 0, got {self.condition_learning_rate_scale}")


class FxSRNat(Method):
    """FxMSRResNet generator; discriminators `image` (trained) and `nmd` (frozen, loaded in build_losses)."""

    no_gradient_penalty = {"nmd": "the NMD is a frozen naturalness classifier, not a critic"}

    def __init__(self, config: FxSRNatConfig) -> None:
        super().__init__(config, self.make_generator(config), image=NatSRDiscriminator(config.discriminator),
                         nmd=NMD(config.nmd))

    def build_losses(self) -> None:
        from perceptsr.convert.natsr import load_nmd

        load_nmd(self.discriminators["nmd"], self.config.nmd_init)
        self.discriminators["nmd"].requires_grad_(False)
        from perceptsr.zoo.models import load_model

        # plain attributes, not submodules: the teachers are not part of this run's weights or checkpoints
        for name in ("teacher", "teacher_base"):
            source = getattr(self.config, name)
            if source is not None:
                object.__setattr__(self, name, load_model(source, scale=self.generator.scale))

    def teacher_sr(self, lr: Tensor, name: str = "teacher") -> Tensor:
        """A frozen teacher's SR of `lr`, on lr's device."""
        teacher = getattr(self, name).to(lr.device)
        with torch.no_grad():
            return teacher(lr).clamp(0, 1).to(lr.dtype)

    def l1_target(self, batch: Batch, t: Tensor) -> Tensor:
        """What the L1 term pulls SR to at t: HR, moving to the teacher's SR as t grows (the module docstring)."""
        cfg, hr = self.config, batch.hr
        if cfg.teacher is None:
            return hr
        share = fit_weight(cfg.teacher_share * t, hr.shape[-2:]).to(hr.dtype)
        teacher = self.teacher_sr(batch.lr)
        if cfg.teacher_blend == "linear":
            return torch.lerp(hr, teacher, share)
        base = self.teacher_sr(batch.lr, "teacher_base")
        if cfg.teacher_blend == "region":
            detail = region_detail(teacher - base, share, cfg.shrink_threshold, cfg.region_sigma)
        else:
            detail = shrunk_detail(teacher - base, share, cfg.shrink_threshold)
        return torch.lerp(hr, base, share) + detail

    def train_dataset(self, data: Any, *, scale: int, progress: bool) -> torch.utils.data.Dataset:
        dataset = super().train_dataset(data, scale=scale, progress=progress)
        return TexturedDataset(dataset) if self.config.texture_filter else dataset

    def prepare(self, batch: Batch, phase: str, rng: torch.Generator) -> Batch:
        n, _, height, width = batch.lr.shape
        t = draw_t(self.config.t_sampling, n, height, width, blobs=self.config.blobs, generator=rng)
        return Batch(batch.lr, batch.hr, {**batch.extras, "t": t.to(device=batch.lr.device, dtype=batch.lr.dtype)})

    def make_sr(self, batch: Batch, phase: str) -> Tensor:
        return self.generator(batch.lr, t=batch.extras["t"])

    def generator_losses(self, batch: Batch, sr: Tensor, phase: str) -> dict[str, Tensor]:
        cfg, t = self.config, batch.extras["t"]
        per_sample = t.mean(dim=(1, 2, 3))
        natural = self.discriminators["nmd"](sr).view(-1)
        # −log σ(z) per image, in its stable form; weighted by each image's mean t.
        naturalness = F.binary_cross_entropy_with_logits(natural, torch.ones_like(natural), reduction="none")
        image = self.discriminators["image"]
        return {"l1": weighted_l1(sr, self.l1_target(batch, t), cfg.pixel_weight),
                "lattice": cfg.lattice_weight * lattice_loss(sr, batch.hr, self.generator.scale),
                "naturalness": cfg.naturalness_weight * (per_sample * naturalness).mean(),
                "adversarial": 2 * weighted_ragan(image(sr), image(batch.hr), cfg.adversarial_weight * t)}

    def discriminator_losses(self, batch: Batch, sr: Tensor | None, phase: str) -> dict[str, Tensor]:
        image = self.discriminators["image"]
        return {"adversarial": 2 * discriminator_loss("ragan", image(batch.hr), image(sr))}

    def after_step(self, step: int, phase: str, batch: Batch) -> dict[str, float]:
        return {"t": float(batch.extras["t"].mean())}

    def parameter_groups(self, network: str, phase: str) -> list[ParamGroup]:
        """The conditional layers (SFT, condition net) at `condition_learning_rate_scale` times the phase's rate."""
        if network != GENERATOR:
            return super().parameter_groups(network, phase)
        named = list(self.generator.named_parameters())
        return [ParamGroup([p for n, p in named if conditional(n)], lr_scale=self.config.condition_learning_rate_scale),
                ParamGroup([p for n, p in named if not conditional(n)])]

    def init_generator(self, state_dict: dict[str, Tensor]) -> None:
        """Start from an MSRResNet PSNR model (SFT layers and condition net stay identities) or a whole model."""
        whole = any(conditional(key) for key in state_dict)

        def identities() -> None:
            for block in self.generator.body:
                block.start_as_identity()

        transfer_weights(self.generator, state_dict, fresh=lambda key: not whole and conditional(key),
                         reset=None if whole else identities,
                         hint=" (expected an msrresnet model of the same size, e.g. srresnet-x4, or an fxsr_nat run)")
