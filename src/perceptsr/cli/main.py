"""The `perceptsr` command line.

Every user-caused failure is a `PerceptsrError`: printed as one line on stderr, exit code 2, no traceback.
Outputs are checked before any work starts, and written atomically, so a failed command leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from perceptsr.errors import InputError, PerceptsrError

log = logging.getLogger("perceptsr")

# Commands that run models forward only: they get the inference allocator settings (perceptsr/allocator.py).
INFERENCE_COMMANDS = frozenset({"upscale", "eval", "demo", "segment", "report", "sweep", "bench"})


def _scale(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"scale must be an integer, got {text!r}") from None
    if value < 1 or value > 16:
        raise argparse.ArgumentTypeError(f"scale must be between 1 and 16, got {value}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def _outputs(inputs: list[Path], outdir: Path, overwrite: bool) -> list[Path]:
    """`OUTDIR/<stem>.png` per input; refuse before any work if one exists (unless --overwrite)."""
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"output directory {outdir} is an existing file")
    outputs = [outdir / f"{p.stem}.png" for p in inputs]
    for out in outputs:
        if out.is_dir():
            raise InputError(f"output {out} is an existing directory")
        if out.exists() and not overwrite:
            raise InputError(f"output {out} already exists (pass --overwrite to replace it)")
    return outputs


def cmd_degrade(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from perceptsr.data.resize import degrade, imresize, modcrop
    from perceptsr.io.images import list_images, read_image, write_image

    inputs = list_images(args.inputs)
    outputs = _outputs(inputs, args.output, args.overwrite)
    for path, out in tqdm(list(zip(inputs, outputs, strict=True)), disable=len(inputs) < 2, unit="img"):
        image = read_image(path, max_pixels=args.max_pixels)
        lr = degrade(image.rgb, args.scale, bit_depth=image.bit_depth)
        alpha = None
        if image.alpha is not None:
            alpha = imresize(modcrop(image.alpha, args.scale), 1 / args.scale).clamp(0, 1)
        write_image(out, lr, alpha=alpha, grayscale=image.grayscale, bit_depth=image.bit_depth,
                    overwrite=args.overwrite)
    return 0


def _pairs(gt: Path, sr: Path) -> list[tuple[str, Path, Path | None]]:
    from perceptsr.io.images import list_images

    sr_files = list_images([sr])
    if gt is None:
        return [(p.stem, None, p) for p in sr_files]
    gt_files = {p.stem: p for p in list_images([gt])}
    if gt.is_file() and sr.is_file():
        return [(sr.stem, gt, sr)]
    pairs = []
    for path in sr_files:
        if path.stem not in gt_files:
            raise InputError(f"{path} has no ground truth with stem {path.stem!r} in {gt}")
        pairs.append((path.stem, gt_files[path.stem], path))
    missing = sorted(set(gt_files) - {p.stem for p in sr_files})
    if missing:
        raise InputError(f"ground truth {gt_files[missing[0]]} has no SR image with stem {missing[0]!r} in {sr}")
    return pairs


def cmd_metrics(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from perceptsr.io.images import read_image
    from perceptsr.metrics import METRICS

    names = [m.strip() for m in args.metrics.split(",") if m.strip()]
    for name in names:
        if name not in METRICS:
            raise InputError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    if args.gt is None and any(METRICS[n].needs_reference for n in names):
        raise InputError("--gt is required for " + ", ".join(n for n in names if METRICS[n].needs_reference))
    pairs = _pairs(args.gt, args.sr)
    images: dict[str, dict[str, float]] = {}
    for stem, gt_path, sr_path in tqdm(pairs, disable=len(pairs) < 2 or args.json, unit="img"):
        sr = read_image(sr_path, max_pixels=args.max_pixels).rgb
        gt = read_image(gt_path, max_pixels=args.max_pixels).rgb if gt_path is not None else None
        if gt is not None and gt.shape != sr.shape:
            raise InputError(
                f"{sr_path} is {sr.shape[-1]}x{sr.shape[-2]} but {gt_path} is {gt.shape[-1]}x{gt.shape[-2]}"
            )
        values = {}
        for name in names:
            spec = METRICS[name]
            if spec.needs_reference:
                values[name] = spec.function(sr, gt, crop_border=args.crop_border, y_channel=args.y_channel)
            else:
                values[name] = spec.function(sr, crop_border=args.crop_border)
        images[stem] = values
    mean = {n: sum(v[n] for v in images.values()) / len(images) for n in names}
    if args.json:
        print(json.dumps({"images": images, "mean": mean}, allow_nan=True))  # noqa: T201
    else:
        convention = f"{'Y' if args.y_channel else 'RGB'}, crop {args.crop_border}"
        print(f"{'image':24s} " + " ".join(f"{n:>10s}" for n in names) + f"   ({convention})")  # noqa: T201
        for stem, values in [*images.items(), ("mean", mean)]:
            print(f"{stem:24s} " + " ".join(f"{values[n]:10.4f}" for n in names))  # noqa: T201
    return 0


def cmd_upscale(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from perceptsr.conditions import ConditionOptions, build_conditions
    from perceptsr.inference.fast import prepare
    from perceptsr.inference.upscale import pick_device, upscale_image
    from perceptsr.io.images import list_images, read_image, write_image
    from perceptsr.zoo.models import load_model

    inputs = list_images(args.inputs)
    outputs = _outputs(inputs, args.output, args.overwrite)
    device = pick_device(args.device)
    model = prepare(load_model(args.model, scale=args.scale), precision=args.precision, device=device,
                    compile=args.compile)
    options = ConditionOptions(seg=args.seg, seg_model=args.seg_model, t=args.t, t_map=args.t_map)
    for path, out in tqdm(list(zip(inputs, outputs, strict=True)), disable=len(inputs) < 2, unit="img"):
        image = read_image(path, max_pixels=args.max_pixels)
        conditions = build_conditions(model, image.rgb, options, stem=path.stem)
        sr, alpha = upscale_image(model, image, tile=args.tile, overlap=args.tile_overlap, device=device,
                                  conditions=conditions, precision=args.precision)
        write_image(out, sr, alpha=alpha, grayscale=image.grayscale, bit_depth=image.bit_depth,
                    overwrite=args.overwrite)
    print(f"wrote {len(outputs)} image(s) to {args.output}", file=sys.stderr)  # noqa: T201
    return 0


def build_parser() -> argparse.ArgumentParser:
    from perceptsr.io.images import DEFAULT_MAX_PIXELS

    parser = argparse.ArgumentParser(prog="perceptsr", description="Perception-oriented super-resolution.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def images_parser(name: str, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="image files or folders")
        p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
        p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
        p.add_argument("--max-pixels", type=_positive, default=DEFAULT_MAX_PIXELS,
                       help="refuse inputs with more pixels than this (decompression-bomb guard)")
        return p

    p = images_parser("degrade", "modcrop and MATLAB-bicubic downscale by 1/S (the LR of the papers)")
    p.add_argument("--scale", type=_scale, required=True)
    p.set_defaults(func=cmd_degrade)

    p = images_parser("upscale", "super-resolve images with a model (default: the bundled PSNR model)")
    p.add_argument("--model", default="default", help="bicubic, a bundled name (see `perceptsr models`) or a file")
    p.add_argument("--scale", type=_scale, default=None, help="upscaling factor (checked against the model's)")
    p.add_argument("--tile", type=_positive, default=None, help="LR tile size (default: chosen from free memory)")
    p.add_argument("--tile-overlap", type=_positive, default=32, help="LR pixels of overlap between tiles")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="fp32",
                   help="auto: bf16/fp16 where the hardware runs it natively and the model's output holds")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster tiles)")
    p.add_argument("--seg", default=None,
                   help="SFTGAN: auto | probability .npy | folder of <stem>_segprob.npy | label image")
    p.add_argument("--seg-model", default=None,
                   help="SFTGAN: segmentation model for --seg auto, or a label mapping (ade20k | FILE.yaml)")
    p.add_argument("--t", type=float, default=None, help="FxSR: style t in [0,1] (0 = distortion, 1 = perception)")
    p.add_argument("--t-map", default=None, help="FxSR: grayscale picture of per-pixel t (0 -> 0, 255 -> 1)")
    p.set_defaults(func=cmd_upscale)

    p = sub.add_parser("metrics", help="PSNR / SSIM / NIQE of SR images against ground truth")
    p.add_argument("--gt", type=Path, default=None, help="ground-truth file or folder (pairs match by file stem)")
    p.add_argument("--sr", type=Path, required=True, help="SR file or folder")
    p.add_argument("--crop-border", type=_positive, default=0)
    p.add_argument("--y-channel", action="store_true", help="compute on the MATLAB Y channel")
    p.add_argument("--metrics", default="psnr,ssim")
    p.add_argument("--json", action="store_true")
    p.add_argument("--max-pixels", type=_positive, default=DEFAULT_MAX_PIXELS)
    p.set_defaults(func=cmd_metrics)

    from perceptsr.cli import commands

    commands.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="perceptsr: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in INFERENCE_COMMANDS:
        from perceptsr.inference import allocator

        allocator.configure()
    try:
        return args.func(args)
    except PerceptsrError as error:
        print(f"perceptsr: error: {error}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        print("perceptsr: interrupted", file=sys.stderr)  # noqa: T201
        return 130
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        print(f"perceptsr: error: {error.strerror or error}{where}", file=sys.stderr)  # noqa: T201
        return 2
