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
    demo: tuple[str, ...] = ("",)  # `perceptsr demo`'s default columns: option suffixes of the name, one each


BUNDLED: dict[str, BundledModel] = {
    "srresnet-x4": BundledModel("srresnet_x4.safetensors", 4, "MSRResNet x4, L1, trained on CPU (Set5 31.71 dB Y)"),
    "natsr-x4": BundledModel("natsr_x4.safetensors", 4, "NatSR x4, perceptual (BSD100 NIQE 5.21), trained on CPU"),
    "fxsr-nat-x4": BundledModel("fxsr_nat_x4.safetensors", 4,
                                "FxSR on MSRResNet x4, t from PSNR (0) to natural (1), texture first; trained on CPU",
                                demo=(":t=0,label=fxsr-nat-x4_t0", ":t=1,label=fxsr-nat-x4_t1")),
}

@dataclass(frozen=True)
class Conversion:
    """One released file and the release file `perceptsr convert` makes of it."""

    file: str  # the name the authors give it (a TensorFlow checkpoint: its prefix, without .index/.data-*)
    output: str  # NAME.safetensors

    @property
    def command(self) -> str:
        return f"perceptsr convert {self.file} -o {self.output}"


@dataclass(frozen=True)
class Release:
    """Weights the authors released that `perceptsr convert` reads: where their README says to get them, the files
    expected, and what to do with the result. `download` holds only what the authors' READMEs (or, for the
    repository layout, docs/methods.md) state: no mirrors, no guessed links."""

    name: str
    repository: str
    download: tuple[str, ...]
    conversions: tuple[Conversion, ...]
    arch: str
    then: str = ""
    note: str = ""


RELEASES: tuple[Release, ...] = (
    Release(
        "ESRGAN / RRDB_PSNR x4", "https://github.com/xinntao/ESRGAN",
        ("Google Drive https://drive.google.com/drive/u/0/folders/17VYV_SoZZesU6mbxz2dMAIccSSlqLecY",
         "Baidu Drive https://pan.baidu.com/s/1-Lh6ma-wXzfH8NqeBtPaFQ"),
        (Conversion("RRDB_ESRGAN_x4.pth", "esrgan_x4.safetensors"),
         Conversion("RRDB_PSNR_x4.pth", "rrdb_psnr_x4.safetensors")),
        "rrdb", "perceptsr upscale photo.png -o out --model esrgan_x4.safetensors",
        "BasicSR / Real-ESRGAN net_g_*.pth and old-arch model.N files convert the same way"),
    Release(
        "FxSR-PD / FxSR-DS x4, x8", "https://github.com/seungho-snu/FxSR",
        ("OneDrive, linked from the repository's README (FxSR_models/model_path.txt says Dropbox)",),
        tuple(Conversion(f"FxSR-{kind}-{scale}x.pth", f"fxsr_{kind.lower()}_x{scale}.safetensors")
              for kind in ("PD", "DS") for scale in (4, 8)),
        "fxsr", "perceptsr upscale photo.png -o out --model fxsr_pd_x4.safetensors --t 0.8 (or --t-map MAP.png); "
        "perceptsr sweep"),
    Release(
        "SFTGAN x4 and its OutdoorSceneSeg prior", "https://github.com/xinntao/SFTGAN",
        ("Google Drive https://drive.google.com/drive/folders/16owosaM_ADAm2FmVI9eKmuYzULVeBy7t?usp=sharing",
         "Baidu Drive https://pan.baidu.com/s/1stZurDwBouItgfrGsrMwdw (pretrained_models/README.md)"),
        (Conversion("SFTGAN_torch.pth", "sftgan.safetensors"),
         Conversion("SFTGAN_noBN_OST_bg.pth", "sftgan_pytorch.safetensors"),
         Conversion("segmentation_OST_bic.pth", "seg.safetensors")),
        "sftgan", "perceptsr upscale photo.png -o out --model sftgan.safetensors --seg auto --seg-model "
        "seg.safetensors; perceptsr segment",
        "SFTGAN_torch.pth is the paper's model, SFTGAN_noBN_OST_bg.pth the PyTorch-trained one"),
    Release(
        "NatSR / FRSR x4 (FRSR also x2, x3)", "https://github.com/JWSoh/NatSR",
        ("in the repository's Model/ folder: git clone https://github.com/JWSoh/NatSR.git",),
        (Conversion("Model/NatSR", "natsr_x4.safetensors"), Conversion("Model/FRSR", "frsr_x4.safetensors"),
         Conversion("Model/FRSR_x2", "frsr_x2.safetensors"), Conversion("Model/FRSR_x3", "frsr_x3.safetensors")),
        "frsr", "perceptsr upscale photo.png -o out --model natsr_x4.safetensors",
        "TensorFlow checkpoints: reading them needs pip install tensorflow-cpu once (or an .npz of name -> array); "
        "Model/NMD is training input (model.nmd_init), not a converter input"),
    Release(
        "SRFeat x4", "https://github.com/HyeongseokSon1/SRFeat",
        ("in the repository's models/ folder: git clone https://github.com/HyeongseokSon1/SRFeat.git",),
        (Conversion("models/SRFeat_full.npz", "srfeat_x4.safetensors"),
         Conversion("models/SRFeat_init.npz", "srfeat_init_x4.safetensors")),
        "srfeat", "perceptsr upscale photo.png -o out --model srfeat_x4.safetensors",
        "SRFeat_full.npz is SRFeat_IF (GAN); SRFeat_init.npz the MSE pre-trained generator"),
    Release(
        "MSRResNet x4 (BasicSR)", "https://github.com/XPixelGroup/BasicSR",
        ("Google Drive https://drive.google.com/drive/folders/1XN4WXKJ53KQ0Cu0Yv-uCt8DZWq6uufaP?usp=sharing "
         "(docs/ModelZoo.md, \"reproduced models and logs\")",),
        (Conversion("net_g_latest.pth", "msrresnet_x4.safetensors"),),
        "msrresnet", "perceptsr upscale photo.png -o out --model msrresnet_x4.safetensors",
        "any BasicSR generator file (net_g_*.pth, weights under params or params_ema) of 001_MSRResNet_x4_*"),
)


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
    """A generator in eval mode with gradients off: `bicubic`, a bundled name, a release file path, or an exported
    `.onnx` file (run by onnxruntime, see perceptsr.inference.onnx; needs `pip install perceptsr[onnx]`).

    `forward(lr, **conditions)` takes N x 3 x h x w in [0,1] and returns N x 3 x sH x sW unclamped; `.scale` is
    the model's factor. `scale` picks the bicubic factor and is checked against any other model's.
    """
    from perceptsr.archs import ARCHS, PRIORS
    from perceptsr.archs.bicubic import Bicubic, BicubicConfig

    name = str(name_or_path)
    if name == "default":
        name = default_model()
    if name == "bicubic":
        return Bicubic(BicubicConfig(scale=scale or 4)).eval().requires_grad_(False)
    if name in BUNDLED:
        path = bundled_path(name)
        if path is None:
            raise InputError(f"bundled model {name!r} is not installed with this copy of perceptsr")
    else:
        path = Path(name)
        if not path.exists():
            known = ", ".join(["bicubic", *BUNDLED])
            raise InputError(f"model {name!r} is neither a known name ({known}) nor an existing file")
        if path.suffix.lower() == ".onnx":  # written by `perceptsr export -o X.onnx`; runs with onnxruntime
            from perceptsr.inference.onnx import load_onnx

            model = load_onnx(path)
            if scale is not None and scale != model.scale:
                raise InputError(f"model {name} upscales x{model.scale}, but scale={scale} was asked for")
            return model
    model = load_release(path)
    arch = model.release_metadata.get("arch")
    if arch not in ARCHS:  # a non-generator release, e.g. the SFTGAN segmentation prior
        raise InputError(f"{name} holds {arch}, which does not upscale: {PRIORS[arch].description}")
    if scale is not None and scale != model.scale:
        raise InputError(f"model {name} upscales x{model.scale}, but scale={scale} was asked for")
    return model.eval().requires_grad_(False)  # for inference: a trainer that wants gradients turns them on
