"""Foreign release layouts built from our own networks: the test side of every converter (not a test module).

Each function is an inverse map written independently of perceptsr.convert (ours -> the original release's key
names, tensor layouts and file formats), so converting its output and comparing forwards checks the converter.
Shared by test_convert.py (the CONVERTERS table round trip) and the per-method test files.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from perceptsr.archs.natsr import FRSR
from perceptsr.archs.srfeat import SRFeatGenerator


def randomized(module: nn.Module, seed: int = 0, std: float = 0.1) -> nn.Module:
    """Every float tensor far from its init, so a swapped or skipped one shows: N(0, std) values, but BN scales
    N(1, std) and variances in [0.5, 1.5), so a deep net with BN still passes its input through."""
    generator = torch.Generator().manual_seed(seed)
    norms = nn.modules.batchnorm._NormBase
    norm_scales = {f"{name}.weight" for name, m in module.named_modules() if isinstance(m, norms)}
    with torch.no_grad():
        for name, value in module.state_dict().items():
            if name.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=generator) + 0.5)
            elif value.is_floating_point():
                value.copy_(torch.randn(value.shape, generator=generator) * std + (name in norm_scales))
    return module.eval()


# --- BasicSR MSRResNet / SRResNet ---------------------------------------------------------------------------


def msrresnet_to_v0(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse map, ours -> BasicSR v0.x names: body -> recon_trunk, conv_hr -> HRconv."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("body."):
            key = "recon_trunk." + key[len("body.") :]
        elif key.startswith("conv_hr."):
            key = "HRconv." + key[len("conv_hr.") :]
        renamed[key] = value
    return renamed


class OldResNetBlock(nn.Module):
    """BasicSR-old `B.ResNetBlock` in mode CNA without norm: x + conv(relu(conv(x)))."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.res = nn.Sequential(nn.Conv2d(nf, nf, 3, 1, 1), nn.ReLU(), nn.Conv2d(nf, nf, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res(x)


class OldShortcut(nn.Module):
    def __init__(self, sub: nn.Module) -> None:
        super().__init__()
        self.sub = sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sub(x)


class OldSRResNet(nn.Module):
    """BasicSR-old `architecture.SRResNet(norm_type=None, act_type='relu', mode='CNA',
    upsample_mode='pixelshuffle')` rebuilt from its source, with its flattened `model.N` keys."""

    def __init__(self, nf: int, nb: int, scale: int) -> None:
        super().__init__()
        factors = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
        upsampler = []
        for factor in factors:
            upsampler += [nn.Conv2d(nf, nf * factor * factor, 3, 1, 1), nn.PixelShuffle(factor), nn.ReLU()]
        trunk = nn.Sequential(*[OldResNetBlock(nf) for _ in range(nb)], nn.Conv2d(nf, nf, 3, 1, 1))
        self.model = nn.Sequential(
            nn.Conv2d(3, nf, 3, 1, 1),
            OldShortcut(trunk),
            *upsampler,
            nn.Conv2d(nf, nf, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(nf, 3, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# --- ESRGAN RRDBNet and FxSR -------------------------------------------------------------------------------


def rrdb_to_trunk(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse map, ours -> xinntao/ESRGAN (post-2019) names."""
    out = {}
    for key, value in state.items():
        key = key.replace("body.", "RRDB_trunk.", 1).replace(".rdb", ".RDB") if key.startswith("body.") else key
        for ours, theirs in (("conv_body.", "trunk_conv."), ("conv_up", "upconv"), ("conv_hr.", "HRconv.")):
            if key.startswith(ours):
                key = theirs + key[len(ours):]
        out[key] = value
    return out


def rrdb_to_old(state: dict[str, torch.Tensor], num_block: int, stages: int) -> dict[str, torch.Tensor]:
    """Inverse map, ours -> the original ESRGAN `B.sequential` layout (model.N, convs wrapped as `.0`)."""
    named = {"conv_first": "model.0", "conv_body": f"model.1.sub.{num_block}",
             "conv_hr": f"model.{2 + 3 * stages}", "conv_last": f"model.{4 + 3 * stages}"}
    named.update({f"conv_up{s}": f"model.{3 * s}" for s in range(1, stages + 1)})
    out = {}
    for key, value in state.items():
        module, param = key.rsplit(".", 1)
        if module.startswith("body."):
            _, i, rdb, conv = module.split(".")
            out[f"model.1.sub.{i}.RDB{rdb[-1]}.{conv}.0.{param}"] = value
        else:
            out[f"{named[module]}.{param}"] = value
    return out


def fxsr_to_original(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse map, ours -> the released FxSR names."""
    out = {}
    for key, value in state.items():
        for ours, theirs in (("body.", "RRDB_trunk."), ("conv_body.", "trunk_conv."), ("conv_up", "upconv"),
                             ("conv_hr.", "HRconv."), ("cond_net.", "CondNet.")):
            if key.startswith(ours):
                key = theirs + key[len(ours):]
        out[key.replace(".rdb", ".RDB")] = value
    return out


# --- NatSR (TensorFlow) -----------------------------------------------------------------------------------------


def to_tf(tensor: torch.Tensor, factor: int = 1) -> np.ndarray:
    """Pixel-shuffle channel order -> depth_to_space order, then OIHW -> HWIO."""
    if factor > 1:  # torch channel c·r² + k  ->  TF channel k·C + c
        rest = tensor.shape[1:]
        tensor = tensor.reshape(-1, factor * factor, *rest).transpose(0, 1).reshape(tensor.shape[0], *rest)
    return (tensor.permute(2, 3, 1, 0) if tensor.ndim == 4 else tensor).detach().numpy().copy()


def frsr_to_tf(model: FRSR) -> dict[str, np.ndarray]:
    """Our FRSR -> the JWSoh/NatSR checkpoint's GEN/... name -> HWIO array mapping."""
    cfg, sd = model.config, model.state_dict()
    names = {"conv1": "GEN/conv1", "conv2": "GEN/conv2", "conv_out": "GEN/conv_out", "conv_up1": "GEN/conv_up1"}
    if cfg.scale == 4:
        names["conv_up2"] = "GEN/conv_up2"
    for b in range(cfg.num_block):
        names[f"blocks.{b}.conv_fusion"] = f"GEN/Block{b}/conv_fusion"
        names.update({f"blocks.{b}.convs.{k}": f"GEN/Block{b}/conv{k}" for k in range(cfg.num_layer)})
    tf = {}
    for ours, theirs in names.items():
        factor = (2 if cfg.scale == 4 else cfg.scale) if ours.startswith("conv_up") else 1
        tf[f"{theirs}/conv2d/kernel"] = to_tf(sd[f"{ours}.weight"], factor)
        tf[f"{theirs}/conv2d/bias"] = to_tf(sd[f"{ours}.bias"], factor)
    return tf


# --- SRFeat (tensorlayer .npz) ------------------------------------------------------------------------------


def srfeat_to_tensorlayer(model: SRFeatGenerator) -> list[np.ndarray]:
    """Our state -> the release's ordered tensorlayer list of arrays."""
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    num_feat, stages = model.config.num_feat, len(model.upsampler) // 3

    def hwio(weight: np.ndarray) -> np.ndarray:
        return weight.transpose(2, 3, 1, 0)

    def tf_order(values: np.ndarray) -> np.ndarray:
        # TF channel k·C + c (k = i·r + j) holds what PixelShuffle reads at channel c·r² + k.
        r2 = values.shape[0] // num_feat
        return values[[c * r2 + k for k in range(r2) for c in range(num_feat)]]

    params = [hwio(state["conv_first.weight"]), state["conv_first.bias"]]
    for i in range(len(model.body)):
        for n in (1, 2):
            params.append(hwio(state[f"body.{i}.conv{n}.weight"]))
            params += [state[f"body.{i}.bn{n}.{k}"] for k in ("bias", "weight", "running_mean", "running_var")]
    params += [hwio(state[f"skips.{i}.weight"]) for i in range(len(model.skips))]
    for stage in range(stages):
        conv = f"upsampler.{3 * stage}"
        params += [hwio(tf_order(state[f"{conv}.weight"])), tf_order(state[f"{conv}.bias"])]
    return params + [hwio(state["conv_last.weight"]), state["conv_last.bias"]]


def object_array(params: list[np.ndarray]) -> np.ndarray:
    """A 1-d object array of arrays: what tensorlayer's save_npz pickles as `params`."""
    array = np.empty(len(params), dtype=object)
    for index, value in enumerate(params):
        array[index] = value
    return array
