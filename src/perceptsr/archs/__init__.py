"""The generator table: every architecture a release file can hold, listed explicitly (no registry).

Contract of every generator: built as `module(config)` from a frozen config dataclass with at least `scale`;
attributes `config`, `scale: int` and `condition_scales: dict[str, int]` (condition name -> its size relative
to the LR input; empty for unconditional nets); `forward(lr, **conditions)` maps N×3×h×w in [0,1] to
N×3×(s·h)×(s·w) in the [0,1] convention, unclamped. Discriminators and VGG are not here: methods build them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from perceptsr.archs.bicubic import BICUBIC_SCALES, Bicubic, BicubicConfig
from perceptsr.archs.fxsr import FXSR_SCALES, FxSRNet, FxSRNetConfig
from perceptsr.archs.fxsr_msrresnet import FxMSRResNet, FxMSRResNetConfig
from perceptsr.archs.natsr import FRSR, FRSR_SCALES, FRSRConfig
from perceptsr.archs.outdoorseg import OutdoorSceneSeg, OutdoorSceneSegConfig
from perceptsr.archs.rrdb import RRDB_SCALES, RRDBNet, RRDBNetConfig
from perceptsr.archs.sftgan import SFTGAN_SCALES, SFTNet, SFTNetConfig
from perceptsr.archs.srfeat import SRFEAT_SCALES, SRFeatGenerator, SRFeatGeneratorConfig
from perceptsr.archs.srresnet import (
    MSRRESNET_SCALES,
    SRRESNET_SCALES,
    MSRResNet,
    MSRResNetConfig,
    SRResNet,
    SRResNetConfig,
)


@dataclass(frozen=True)
class ArchSpec:
    """One table row: how to build an architecture and which scales it supports."""

    module: type[nn.Module]  # built as module(config)
    config: type  # frozen dataclass with at least `scale: int`
    scales: tuple[int, ...]
    tiny: Callable[[int], Any]  # a tiny config at a given scale, for tests
    description: str


ARCHS: dict[str, ArchSpec] = {
    "bicubic": ArchSpec(
        module=Bicubic,
        config=BicubicConfig,
        scales=BICUBIC_SCALES,
        tiny=lambda scale: BicubicConfig(scale=scale),
        description="MATLAB bicubic upscaling (no parameters); the baseline",
    ),
    "srresnet": ArchSpec(
        module=SRResNet,
        config=SRResNetConfig,
        scales=SRRESNET_SCALES,
        tiny=lambda scale: SRResNetConfig(scale=scale, num_feat=8, num_block=1),
        description="SRResNet, the SRGAN paper's generator (Ledig et al. 2017); also BasicSR-old SRResNet",
    ),
    "msrresnet": ArchSpec(
        module=MSRResNet,
        config=MSRResNetConfig,
        scales=MSRRESNET_SCALES,
        tiny=lambda scale: MSRResNetConfig(scale=scale, num_feat=8, num_block=2),
        description="MSRResNet, BasicSR's modified SRResNet without BN (MSRGAN generator)",
    ),
    "srfeat": ArchSpec(
        module=SRFeatGenerator,
        config=SRFeatGeneratorConfig,
        scales=SRFEAT_SCALES,
        tiny=lambda scale: SRFeatGeneratorConfig(scale=scale, num_feat=8, num_block=2),
        description="SRFeat generator (Park et al. 2018): BN residual blocks + 1x1 long-range skips; SRFeat releases",
    ),
    "frsr": ArchSpec(
        module=FRSR,
        config=FRSRConfig,
        scales=FRSR_SCALES,
        tiny=lambda scale: FRSRConfig(scale=scale, num_feat=8, num_block=4, num_layer=2),
        description="FRSR, NatSR's fractal residual dense generator (Soh et al. 2019); FRSR and NatSR releases",
    ),
    "sftgan": ArchSpec(
        module=SFTNet,
        config=SFTNetConfig,
        scales=SFTGAN_SCALES,
        tiny=lambda scale: SFTNetConfig(scale=scale, num_feat=8, num_block=1, cond_feat=4, cond_hidden=8),
        description="SFTGAN generator (Wang et al. 2018), PyTorch or paper/Torch form; needs seg (8 classes, HR size)",
    ),
    "rrdb": ArchSpec(
        module=RRDBNet,
        config=RRDBNetConfig,
        scales=RRDB_SCALES,
        tiny=lambda scale: RRDBNetConfig(scale=scale, num_feat=8, num_block=1, num_grow_ch=4),
        description="RRDBNet, the ESRGAN generator (Wang et al. 2018); BasicSR, ESRGAN and Real-ESRGAN layouts",
    ),
    "fxsr": ArchSpec(
        module=FxSRNet,
        config=FxSRNetConfig,
        scales=FXSR_SCALES,
        tiny=lambda scale: FxSRNetConfig(scale=scale, num_feat=8, num_block=1, num_grow_ch=4, cond_feat=4),
        description="FxSR generator (Park et al. 2022): RRDBNet + SFT, steered by t in [0,1] (LR-size map)",
    ),
    "fxsr_msrresnet": ArchSpec(
        module=FxMSRResNet,
        config=FxMSRResNetConfig,
        scales=MSRRESNET_SCALES,
        tiny=lambda scale: FxMSRResNetConfig(scale=scale, num_feat=8, num_block=2, cond_feat=4,
                                             texture_gate=0.01),  # the bundled model's form
        description="FxSR's t-conditioning (SFT on a t map) on MSRResNet: the bundled fxsr-nat-x4 (project's own)",
    ),
}

# Networks a release file may hold that are NOT generators (no upscaling contract): the SFTGAN segmentation
# prior, loaded by `--seg-model FILE` and `perceptsr segment`. release.py accepts both tables.
PRIORS: dict[str, ArchSpec] = {
    "outdoorsceneseg": ArchSpec(
        module=OutdoorSceneSeg,
        config=OutdoorSceneSegConfig,
        scales=(1,),
        tiny=lambda scale: OutdoorSceneSegConfig(scale=scale, blocks=(1, 1, 1, 1), width=4),
        description="SFTGAN's OutdoorSceneSeg segmentation prior (use it with --seg-model or perceptsr segment)",
    ),
}
