"""Training methods: an explicit table, name -> (Method class, its config dataclass)."""

from __future__ import annotations

from dataclasses import dataclass

from perceptsr.methods.base import Method
from perceptsr.methods.esrgan import ESRGAN, ESRGANConfig
from perceptsr.methods.fxsr import FxSR, FxSRConfig
from perceptsr.methods.fxsr_nat import FxSRNat, FxSRNatConfig
from perceptsr.methods.natsr import NatSR, NatSRConfig
from perceptsr.methods.sftgan import SFTGAN, SFTGANConfig
from perceptsr.methods.srfeat import SRFeat, SRFeatConfig
from perceptsr.methods.srgan import SRGAN, SRGANConfig


@dataclass(frozen=True)
class MethodSpec:
    module: type[Method]
    config: type
    description: str


METHODS: dict[str, MethodSpec] = {
    "srgan": MethodSpec(SRGAN, SRGANConfig, "SRResNet pre-training + SRGAN (vanilla, WGAN, WGAN-GP)"),
    "srfeat": MethodSpec(SRFeat, SRFeatConfig, "SRFeat: MSE pre-training, then VGG54 + image and feature GANs"),
    "natsr": MethodSpec(NatSR, NatSRConfig, "NatSR: NMD with its curriculum, FRSR (L1), then L1 + naturalness + RaGAN"),
    "esrgan": MethodSpec(ESRGAN, ESRGANConfig, "RRDB PSNR pre-training + ESRGAN (RaGAN, VGG54 pre-ReLU, L1)"),
    "fxsr": MethodSpec(FxSR, FxSRConfig, "FxSR: one RRDB+SFT model for all t in [0,1] (conditional objective, PD/DS)"),
    "fxsr_nat": MethodSpec(FxSRNat, FxSRNatConfig, "FxSR's t control on MSRResNet, NatSR's losses times t (no VGG)"),
    "sftgan": MethodSpec(SFTGAN, SFTGANConfig, "SFTGAN: SFT generator on segmentation maps vs the ACD (GAN + class)"),
}
