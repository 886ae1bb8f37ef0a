"""The measuring commands: eval, report, sweep and metrics. Typed arguments in, exit status out; no argparse.

All four measure through `evaluation.evaluate.run_evaluation` under one `Protocol` (printed and stored with every
result) and run models as `upscale` does (`RunOptions`: fast path, precision, tiles and overlap, device).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from perceptsr.conditions import ModelSpec, options_for, parse_model_spec
from perceptsr.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from perceptsr.evaluation.evaluate import Sample
    from perceptsr.evaluation.protocol import Protocol
    from perceptsr.inference.upscale import RunOptions


def _say(text: str) -> None:
    print(f"perceptsr: {text}", file=sys.stderr)  # noqa: T201


def _prepared(spec: ModelSpec, scale: int | None, run: RunOptions) -> nn.Module:
    """The model of `spec`, loaded and prepared once for the run (the fast path of `upscale`)."""
    from perceptsr.inference.upscale import load_prepared

    return load_prepared(spec.source, scale=scale, run=run)[0]


def _check_data(data: list[Path]) -> None:
    """Every --data folder exists, and no two share a name (results are keyed by it)."""
    if not data:
        raise InputError("give at least one --data folder")
    names: set[str] = set()
    for folder in data:
        if not Path(folder).is_dir():
            raise InputError(f"dataset folder {folder} does not exist")
        if Path(folder).name in names:
            raise InputError(f"two dataset folders are both named {Path(folder).name!r}; rename one")
        names.add(Path(folder).name)


def cmd_eval(*, models: list[ModelSpec], data: list[Path], protocol: Protocol, run: RunOptions,
             max_images: int | None, max_pixels: int, json: bool, quiet: bool) -> int:
    """Mean PSNR/SSIM (the protocol's channel and crop), LR-PSNR, NIQE and lattice artifacts of each model on each HR
    folder; bicubic first, as the baseline."""
    from perceptsr.engine.distributed import teardown
    from perceptsr.evaluation.evaluate import EVAL_METRICS, describe_run, protocol_record, run_record
    from perceptsr.evaluation.report.specs import check_labels
    from perceptsr.evaluation.strict_json import dumps
    from perceptsr.inference.batch import evaluate_shared, setup_ranks
    from perceptsr.inference.upscale import pick_device
    from perceptsr.metrics import METRICS

    _check_data(data)
    specs = list(models)
    if not any(spec.source == "bicubic" for spec in specs):
        specs.insert(0, parse_model_spec("bicubic"))
    check_labels(specs)
    env, group = setup_ranks(pick_device(run.device).type)  # under torchrun, each rank measures a share of the images
    try:
        loaded = [(spec, _prepared(spec, protocol.scale, run)) for spec in specs]
        metrics = list(EVAL_METRICS)
        results: dict[str, dict[str, dict[str, float]]] = {}
        for folder in data:
            for spec, model in loaded:
                result = evaluate_shared(env, group, model, folder, protocol=protocol, metrics=metrics, run=run,
                                         conditions=options_for(model, spec), max_images=max_images,
                                         max_pixels=max_pixels, model_name=spec.label, progress=not (quiet or json))
                if result is not None:
                    results.setdefault(Path(folder).name, {})[spec.label] = result.mean
    finally:
        teardown(env)
    if not env.is_main:
        return 0
    record, how = protocol_record(protocol, metrics), run_record(run)
    if json:
        print(dumps({"protocol": record, "run": how, "results": results}))  # noqa: T201
        return 0
    headers = [METRICS[m].column(protocol.y_channel) for m in metrics]
    print(f"protocol: {protocol.describe()}; models on the {describe_run(how)}")  # noqa: T201
    for dataset, rows in results.items():
        print(f"\n{dataset} x{protocol.scale}\n{'model':32s} " + " ".join(f"{h:>9s}" for h in headers))  # noqa: T201
        for label, values in rows.items():
            print(f"{label[-32:]:32s} " + " ".join(f"{values[m]:9.4f}" for m in metrics))  # noqa: T201
    return 0


def cmd_report(*, models: list[ModelSpec], data: list[Path], protocol: Protocol, run: RunOptions, output: Path,
               max_images: int | None, max_pixels: int, lpips_net: str, lpips_weights: Path | None, no_lpips: bool,
               overwrite: bool, quiet: bool) -> int:
    """Tables, plots and the viewer in OUTDIR; cached SR images and numbers are reused unless --overwrite."""
    from perceptsr.evaluation.evaluate import describe_run, run_record
    from perceptsr.evaluation.report import compute_report, write_outputs
    from perceptsr.metrics.lpips import lpips_or_note

    _check_data(data)
    lpips, note = lpips_or_note(enabled=not no_lpips, net=lpips_net, weights=lpips_weights)
    if lpips is None and not no_lpips:
        _say(note)
    doc = compute_report(models=models, data=data, protocol=protocol, out=output, run=run, lpips=lpips,
                         lpips_note=note, max_images=max_images, max_pixels=max_pixels, progress=not quiet,
                         refresh=overwrite)
    files = write_outputs(doc, output)
    _say(f"protocol: {protocol.describe()}; models on the {describe_run(run_record(run))}")
    _say("wrote " + ", ".join(str(path) for path in files))
    return 0


def cmd_sweep(*, models: list[ModelSpec], data: list[Path], t_values: str, protocol: Protocol, run: RunOptions,
              output: Path, max_images: int | None, max_pixels: int, save_images: bool, lpips_net: str,
              lpips_weights: Path | None, no_lpips: bool, overwrite: bool, quiet: bool) -> int:
    """PSNR/SSIM/LR-PSNR/NIQE(/LPIPS) of t-conditioned models for each model, dataset and t: OUTDIR/sweep.*"""
    from perceptsr.evaluation.evaluate import describe_run
    from perceptsr.evaluation.report.specs import check_labels
    from perceptsr.evaluation.sweep import check_outputs, check_sweepable, parse_t_values, run_sweep, write_outputs
    from perceptsr.metrics.lpips import lpips_or_note

    ts = parse_t_values(t_values)
    if not models:
        raise InputError("give at least one --model")
    _check_data(data)
    check_outputs(output, overwrite=overwrite, save_images=save_images)
    check_labels(models)
    loaded = []
    for spec in models:
        model = _prepared(spec, protocol.scale, run)
        check_sweepable(spec, model)
        loaded.append((spec, model))
    lpips, note = lpips_or_note(enabled=not no_lpips, net=lpips_net, weights=lpips_weights)
    if lpips is None and not no_lpips:
        _say(note)
    result = run_sweep(loaded, data, protocol=protocol, ts=ts, run=run, lpips=lpips, lpips_note=note,
                       max_images=max_images, max_pixels=max_pixels,
                       image_dir=output / "images" if save_images else None, progress=not quiet)
    files = write_outputs(result, output, overwrite=overwrite)
    _say(f"protocol: {protocol.describe()}; models on the {describe_run(result.run)}")
    _say("wrote " + ", ".join(str(path) for path in files))
    return 0


def _pairs(gt: Path | None, sr: Path) -> list[tuple[str, Path | None, Path]]:
    """(stem, ground truth or None, SR file) by file stem; an SR without ground truth (or the reverse) is an error."""
    from perceptsr.io.images import list_images

    sr_files = list_images([sr])
    if gt is None:
        return [(p.stem, None, p) for p in sr_files]
    if gt.is_file() and sr.is_file():
        return [(sr.stem, gt, sr)]
    gt_files = {p.stem: p for p in list_images([gt])}
    pairs = []
    for path in sr_files:
        if path.stem not in gt_files:
            raise InputError(f"{path} has no ground truth with stem {path.stem!r} in {gt}")
        pairs.append((path.stem, gt_files[path.stem], path))
    missing = sorted(set(gt_files) - {p.stem for p in sr_files})
    if missing:
        raise InputError(f"ground truth {gt_files[missing[0]]} has no SR image with stem {missing[0]!r} in {sr}")
    return pairs


def cmd_metrics(*, gt: Path | None, sr: Path, metrics: list[str], protocol: Protocol, max_pixels: int, json: bool,
                quiet: bool, lpips_net: str = "alex", lpips_weights: Path | None = None) -> int:
    """Metrics of SR files against ground truth (mod-cropped to protocol.scale), per image and their mean."""
    from dataclasses import replace

    from perceptsr.evaluation.evaluate import protocol_record, run_evaluation
    from perceptsr.evaluation.strict_json import dumps
    from perceptsr.metrics import METRICS, check_metrics

    names = check_metrics(metrics)
    if protocol.crop_border is None and protocol.scale == 1:
        protocol = replace(protocol, crop_border=0)  # no scale given: no border to drop
    needs_gt = [n for n in names if {"hr", "lr"} & set(METRICS[n].needs)]
    if gt is None and needs_gt:
        raise InputError("--gt is required for " + ", ".join(needs_gt))
    for name in ("lr_psnr", "lattice"):
        if name in names and protocol.scale < 2:
            raise InputError(f"{name} needs --scale S (the factor the SR images were upscaled by)")
    lpips = None
    if "lpips" in names:
        from perceptsr.metrics.lpips import load_lpips

        lpips = load_lpips(lpips_net, folder=lpips_weights)
    pairs = _pairs(gt, sr)
    for _, gt_path, sr_path in pairs:  # sizes from the headers: a mismatch is refused before any work
        if gt_path is not None:
            _check_sizes(gt_path, sr_path, protocol)
    samples = [_file_sample(stem, gt_path, sr_path, protocol, max_pixels, with_lr="lr_psnr" in names)
               for stem, gt_path, sr_path in pairs]
    result = run_evaluation(samples, protocol=protocol, metrics=names, lpips=lpips, dataset=Path(sr).name, name="SR",
                            progress=len(samples) > 1 and not (json or quiet))
    if json:
        print(dumps({"protocol": protocol_record(protocol, names), "images": result.images,  # noqa: T201
                     "mean": result.mean}))
        return 0
    print(f"{'image':24s} " + " ".join(f"{n:>10s}" for n in names) + f"   ({protocol.describe()})")  # noqa: T201
    for stem, values in [*result.images.items(), ("mean", result.mean)]:
        print(f"{stem:24s} " + " ".join(f"{values[n]:10.4f}" for n in names))  # noqa: T201
    return 0


def _size(path: Path) -> tuple[int, int] | None:
    """(width, height) as read_image will return it (EXIF rotation applied), from the header; None if unreadable
    (read_image then says why)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            width, height = image.size
            rotated = image.getexif().get(0x0112) in (5, 6, 7, 8)
    except Exception:  # noqa: BLE001  (any decoder failure: read_image reports it properly later)
        return None
    return (height, width) if rotated else (width, height)


def _mismatch(sr_path: Path, sr_size: tuple[int, int], gt_path: Path, gt_size: tuple[int, int],
              protocol: Protocol) -> InputError:
    cropped = f" (mod-cropped to {protocol.scale})" if protocol.mod_crop and protocol.scale > 1 else ""
    hint = "" if protocol.scale > 1 else "; pass --scale S to mod-crop the ground truth to the SR's scale"
    return InputError(f"{sr_path} is {sr_size[0]}x{sr_size[1]} but {gt_path}{cropped} is {gt_size[0]}x{gt_size[1]}"
                      f"{hint}")


def _check_sizes(gt_path: Path, sr_path: Path, protocol: Protocol) -> None:
    gt_size, sr_size = _size(gt_path), _size(sr_path)
    if gt_size is None or sr_size is None:
        return
    if protocol.mod_crop:
        gt_size = (gt_size[0] - gt_size[0] % protocol.scale, gt_size[1] - gt_size[1] % protocol.scale)
    if gt_size != sr_size:
        raise _mismatch(sr_path, sr_size, gt_path, gt_size, protocol)


def _file_sample(stem: str, gt_path: Path | None, sr_path: Path, protocol: Protocol, max_pixels: int,
                 *, with_lr: bool) -> Sample:
    """A Sample of one SR file and its ground truth (mod-cropped to the scale unless the protocol says not)."""
    from perceptsr.data.resize import degrade, modcrop
    from perceptsr.evaluation.evaluate import Sample
    from perceptsr.io.images import read_image

    def load() -> tuple:
        if gt_path is None:
            return None, None
        hr = read_image(gt_path, max_pixels=max_pixels).rgb
        if protocol.mod_crop:
            hr = modcrop(hr, protocol.scale)
        return hr, degrade(hr, protocol.scale) if with_lr else None

    sample = Sample(stem, load)

    def read_sr() -> object:
        image = read_image(sr_path, max_pixels=max_pixels).rgb
        hr = sample.pair()[0]
        if hr is not None and hr.shape != image.shape:
            raise _mismatch(sr_path, (image.shape[-1], image.shape[-2]), gt_path, (hr.shape[-1], hr.shape[-2]),
                            protocol)
        return image

    sample.sr = read_sr
    return sample
