"""What `perceptsr report` compares: the metric columns, label checks and cache keys of model arguments
(`perceptsr.conditions.parse_model_spec`)."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from perceptsr.conditions import ModelSpec
from perceptsr.errors import InputError
from perceptsr.evaluation.evaluate import DEFAULT_METRICS
from perceptsr.evaluation.protocol import Protocol
from perceptsr.inference.upscale import RunOptions
from perceptsr.metrics import METRICS
from perceptsr.zoo.weights import file_sha256

CACHE_VERSION = "2"  # bump when the protocol changes, so old cached SR images and numbers are not reused


@dataclass(frozen=True)
class Metric:
    """One column of the tables: key in results.json, header text, direction and the convention it follows."""

    key: str
    header: str
    higher_is_better: bool
    convention: str


def metric_columns(protocol: Protocol, lpips_net: str | None) -> list[Metric]:
    """The report's columns, from the metrics table under the protocol; LPIPS only when its weights are loaded
    (never a made-up number)."""
    names = [*DEFAULT_METRICS, *(["lpips"] if lpips_net is not None else [])]
    return [Metric(name, METRICS[name].column(protocol.y_channel), METRICS[name].higher_is_better,
                   METRICS[name].describe(scale=protocol.scale, crop_border=protocol.border,
                                          y_channel=protocol.y_channel, lpips_net=lpips_net))
            for name in names]


def check_labels(specs: list[ModelSpec]) -> None:
    seen: set[str] = set()
    for spec in specs:
        if spec.label in seen:
            raise InputError(f"two models are both labelled {spec.label!r}; name one with FILE:label=NAME")
        seen.add(spec.label)




def source_digest(source: str) -> str:
    """What identifies the model's weights: 'bicubic', or the sha256 of the bundled / release file."""
    from perceptsr.zoo.models import BUNDLED, bundled_path

    if source == "bicubic":
        return "bicubic"
    path = bundled_path(source) if source in BUNDLED else Path(source)
    if path is None or not path.is_file():
        raise InputError(f"model {source!r} is neither bicubic, an installed bundled model nor an existing file")
    return file_sha256(path)


def model_id(spec: ModelSpec, digest: str, scale: int, run: RunOptions) -> str:
    """Cache folder name: readable label slug + a hash of (weights, scale, options, run options, cache version)."""
    options = asdict(spec.options)
    for key in ("t_map", "seg", "seg_model"):  # files given as options are part of the identity too
        value = options[key]
        if value is not None and value != "auto" and Path(value).is_file():
            options[key] = f"{value}@{file_sha256(Path(value))[:16]}"
    how = {"precision": run.precision, "tile": run.tile, "tile_overlap": run.tile_overlap}
    key = json.dumps({"weights": digest, "scale": scale, "options": options, "run": how, "version": CACHE_VERSION},
                     sort_keys=True)
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", spec.label).strip("-")[:40] or "model"
    return f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"
