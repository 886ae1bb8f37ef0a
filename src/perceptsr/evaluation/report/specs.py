"""What `perceptsr report` compares: model arguments (`NAME_OR_FILE[:key=value,...]`) and the metric columns.

A model argument is `bicubic`, a bundled name or a release file, optionally followed by `:` and comma-separated
options: `t=0.3` (FxSR style), `t_map=FILE`, `seg=auto|FILE`, `seg_model=FILE` (SFTGAN), `label=NAME` (the name
in tables and the viewer). Conditional models left without options get their defaults (t = 0.8, seg = auto).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from perceptsr.conditions import ConditionOptions
from perceptsr.errors import InputError

OPTION_KEYS = ("t", "t_map", "seg", "seg_model", "label")
CACHE_VERSION = "1"  # bump when the protocol changes, so old cached SR images and numbers are not reused


@dataclass(frozen=True)
class Metric:
    """One column of the tables: key in results.json, header text, direction and the convention it follows."""

    key: str
    header: str
    higher_is_better: bool
    convention: str


def metric_columns(scale: int, lpips_net: str | None) -> list[Metric]:
    """The report's columns; LPIPS only when its weights are loaded (never a made-up number)."""
    columns = [
        Metric("psnr_y", "PSNR-Y", True, f"dB on the MATLAB Y channel (BT.601), crop {scale}"),
        Metric("ssim_y", "SSIM-Y", True, f"MATLAB-style SSIM on Y, crop {scale}"),
        Metric("psnr_rgb", "PSNR-RGB", True, f"dB on RGB (BasicSR ModelZoo style), crop {scale}"),
        Metric("ssim_rgb", "SSIM-RGB", True, f"SSIM on RGB, mean over channels, crop {scale}"),
        Metric("lr_psnr", "LR-PSNR", True, f"dB, PSNR(MATLAB-bicubic x1/{scale}(SR), LR) on RGB, 8-bit (NTIRE21)"),
        Metric("niqe", "NIQE", False, f"MATLAB-parity NIQE on Y, crop {scale}"),
    ]
    if lpips_net is not None:
        columns.append(Metric("lpips", "LPIPS", False, f"LPIPS v0.1 {lpips_net}, RGB, crop {scale}"))
    return columns


@dataclass(frozen=True)
class ModelSpec:
    """One compared model: where it comes from, its display label and its condition options."""

    source: str
    label: str
    options: ConditionOptions

    def option_text(self) -> str:
        return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in asdict(self.options).items() if v is not None)


def parse_model_arg(text: str) -> ModelSpec:
    """`FILE:t=0.3,label=ours` -> ModelSpec; a bad option is a one-line InputError."""
    source, values = text, {}
    head, sep, tail = text.rpartition(":")
    if sep and head and "=" in tail:
        source = head
        for item in tail.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or key not in OPTION_KEYS or not value.strip():
                raise InputError(f"model option {item!r} in {text!r}: use key=value with key one of "
                                 f"{', '.join(OPTION_KEYS)}")
            values[key] = value.strip()
    if not source:
        raise InputError(f"model argument {text!r} names no model")
    t = None
    if "t" in values:
        try:
            t = float(values["t"])
        except ValueError:
            raise InputError(f"model option t={values['t']!r} in {text!r} is not a number") from None
    options = ConditionOptions(seg=values.get("seg"), seg_model=values.get("seg_model"), t=t,
                               t_map=values.get("t_map"))
    spec = ModelSpec(source=source, label="", options=options)
    label = values.get("label") or default_label(source, spec.option_text())
    return ModelSpec(source=source, label=label, options=options)


def default_label(source: str, option_text: str) -> str:
    """`bicubic`, the bundled name, or the file's stem; options in parentheses."""
    from perceptsr.zoo.models import BUNDLED

    name = source if source == "bicubic" or source in BUNDLED else Path(source).stem
    return f"{name} ({option_text})" if option_text else name


def check_labels(specs: list[ModelSpec]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.label in seen:
            raise InputError(f"two models are both labelled {spec.label!r}; name one with FILE:label=NAME")
        seen.add(spec.label)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_digest(source: str) -> str:
    """What identifies the model's weights: 'bicubic', or the sha256 of the bundled / release file."""
    from perceptsr.zoo.models import BUNDLED, bundled_path

    if source == "bicubic":
        return "bicubic"
    path = bundled_path(source) if source in BUNDLED else Path(source)
    if path is None or not path.is_file():
        raise InputError(f"model {source!r} is neither bicubic, an installed bundled model nor an existing file")
    return file_sha256(path)


def model_id(spec: ModelSpec, digest: str, scale: int) -> str:
    """Cache folder name: readable label slug + a hash of (weights, scale, options, protocol version)."""
    options = asdict(spec.options)
    for key in ("t_map", "seg", "seg_model"):  # files given as options are part of the identity too
        value = options[key]
        if value is not None and value != "auto" and Path(value).is_file():
            options[key] = f"{value}@{file_sha256(Path(value))[:16]}"
    key = json.dumps({"weights": digest, "scale": scale, "options": options, "version": CACHE_VERSION},
                     sort_keys=True)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.label).strip("-")[:40] or "model"
    return f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
