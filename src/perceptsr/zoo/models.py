"""Models by name: the MATLAB bicubic baseline, the models bundled in the package, and release files.

`load_model` is the one way the CLI and the Python API turn a name or a path into a generator.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from torch import nn

from perceptsr.errors import InputError
from perceptsr.zoo.release import load_release


@dataclass(frozen=True)
class BundledModel:
    file: str
    scale: int
    description: str


BUNDLED: dict[str, BundledModel] = {
    "srresnet-x4": BundledModel("srresnet_x4.safetensors", 4, "MSRResNet x4, L1, trained on CPU (Set5 31.40 dB Y)"),
    "natsr-x4": BundledModel("natsr_x4.safetensors", 4, "NatSR x4, perceptual (BSD100 NIQE 5.04), trained on CPU"),
}

# Released weights users can bring: `perceptsr convert FILE` turns them into release files.
KNOWN_RELEASES: dict[str, str] = {
    "MSRResNet (BasicSR)": "net_g_*.pth / MSRResNet_x4.pth with params / params_ema: perceptsr convert FILE",
    "NatSR / FRSR x2, x3, x4 (JWSoh/NatSR, TensorFlow)": "perceptsr convert Model/NatSR (TF prefix, needs "
    "tensorflow-cpu; or an .npz of name->array) -> arch frsr; Model/NMD is training input: model.nmd_init",
    "ESRGAN / RRDB PSNR (xinntao/ESRGAN, BasicSR, Real-ESRGAN)": "RRDB_ESRGAN_x4.pth, RRDB_PSNR_x4.pth, "
    "net_g_*.pth, old-arch model.N files: perceptsr convert FILE -> arch rrdb",
    "FxSR-PD / FxSR-DS x4, x8 (seungho-snu/FxSR)": "FxSR-PD-4x.pth etc.: perceptsr convert FILE -> arch fxsr; "
    "then upscale --t 0.8 or --t-map MAP.png, perceptsr sweep",
    "SFTGAN x4 (xinntao/SFTGAN)": "SFTGAN_noBN_OST_bg.pth (PyTorch) or SFTGAN_torch.pth (paper): perceptsr convert "
    "FILE -> arch sftgan; then upscale --seg auto --seg-model SEG, --seg MAP.npy or --seg LABELS.png",
    "SRFeat x4 (HyeongseokSon1/SRFeat, TensorFlow)": "models/SRFeat_full.npz (SRFeat_IF, GAN) or SRFeat_init.npz "
    "(MSE pre-trained): perceptsr convert FILE -o srfeat_x4.safetensors -> arch srfeat",
    "OutdoorSceneSeg (xinntao/SFTGAN segmentation prior)": "segmentation_OST_bic.pth: perceptsr convert FILE -o "
    "seg.safetensors; then --seg-model seg.safetensors (or PERCEPTSR_SEG_MODEL), perceptsr segment",
}


def bundled_path(name: str) -> Path | None:
    """The package file of bundled model `name`, or None when this install does not carry it."""
    entry = BUNDLED.get(name)
    if entry is None:
        return None
    path = Path(str(resources.files("perceptsr.zoo") / "bundled" / entry.file))
    return path if path.is_file() else None


def default_model() -> str:
    """The bundled PSNR model when present, else MATLAB bicubic."""
    return "srresnet-x4" if bundled_path("srresnet-x4") else "bicubic"


def load_model(name_or_path: str | Path = "default", *, scale: int | None = None) -> nn.Module:
    """A generator in eval mode: `bicubic`, a bundled name, or a release file path.

    `forward(lr, **conditions)` takes N x 3 x h x w in [0,1] and returns N x 3 x sH x sW unclamped; `.scale` is
    the model's factor. `scale` picks the bicubic factor and is checked against any other model's.
    """
    from perceptsr.archs import ARCHS, PRIORS
    from perceptsr.archs.bicubic import Bicubic, BicubicConfig

    name = str(name_or_path)
    if name == "default":
        name = default_model()
    if name == "bicubic":
        return Bicubic(BicubicConfig(scale=scale or 4)).eval()
    if name in BUNDLED:
        path = bundled_path(name)
        if path is None:
            raise InputError(f"bundled model {name!r} is not installed with this copy of perceptsr")
    else:
        path = Path(name)
        if not path.exists():
            known = ", ".join(["bicubic", *BUNDLED])
            raise InputError(f"model {name!r} is neither a known name ({known}) nor an existing file")
    model = load_release(path)
    arch = model.release_metadata.get("arch")
    if arch not in ARCHS:  # a non-generator release, e.g. the SFTGAN segmentation prior
        raise InputError(f"{name} holds {arch}, which does not upscale: {PRIORS[arch].description}")
    if scale is not None and scale != model.scale:
        raise InputError(f"model {name} upscales x{model.scale}, but --scale {scale} was asked for")
    return model
