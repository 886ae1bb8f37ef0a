"""Training methods: an explicit table, name -> (Method class, its config dataclass)."""

from __future__ import annotations

from dataclasses import dataclass

from perceptsr.methods.base import Method
from perceptsr.methods.natsr import NatSR, NatSRConfig
from perceptsr.methods.srgan import SRGAN, SRGANConfig


@dataclass(frozen=True)
class MethodSpec:
    module: type[Method]
    config: type
    description: str


METHODS: dict[str, MethodSpec] = {
    "srgan": MethodSpec(SRGAN, SRGANConfig, "SRResNet pre-training + SRGAN (vanilla, WGAN, WGAN-GP)"),
    "natsr": MethodSpec(NatSR, NatSRConfig, "NatSR: NMD with its curriculum, FRSR (L1), then L1 + naturalness + RaGAN"),
}
