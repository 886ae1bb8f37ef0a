"""Every `perceptsr` parser, built in one place from shared option groups, and the Namespace -> typed call.

An option means the same and is spelled the same on every command that takes it: the groups below (models,
conditions, data, run options, protocol, output) are the only places flags are declared. Each subcommand names a
binder that turns the parsed Namespace into the typed keyword arguments of its command function (`commands.py`,
the measuring ones in `measure.py`), so command functions know nothing of argparse. Old spellings stay as hidden
aliases that print one deprecation line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from perceptsr.cli.messages import PREFIX, one_line
from perceptsr.inference.upscale import DEFAULT_OVERLAP, DEFAULT_PNG_LEVEL
from perceptsr.io.compare import CROP, MAX_FIT_ZOOM, ZOOM
from perceptsr.io.images import DEFAULT_MAX_PIXELS

PROG = PREFIX

Binder = Callable[[argparse.Namespace], tuple[Callable[..., int], dict[str, Any]]]


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error: `perceptsr upscale: error: ... (see --help)`, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {one_line(message)} (see {self.prog} --help)\n")


def deprecation(old: str, new: str) -> None:
    print(f"{PROG}: {old} is deprecated; use {new}", file=sys.stderr)  # noqa: T201


class Deprecated(argparse.Action):
    """A hidden old spelling: prints one deprecation line, then stores (or extends) like the new option."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, split: bool = False, extend: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.new, self.split, self.extend = new, split, extend

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        deprecation(option_string or self.dest, self.new)
        if self.split:
            values = [v.strip() for v in str(values).split(",") if v.strip()]
        if self.extend:
            values = [*(getattr(namespace, self.dest, None) or []), *values]
        setattr(namespace, self.dest, values)


# ---- argument types: a bad value is one usage line, exit 2 ----

def scale_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"scale must be an integer, got {text!r}") from None
    if value < 1 or value > 16:
        raise argparse.ArgumentTypeError(f"scale must be between 1 and 16, got {value}")
    return value


def count_type(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {value}")
    return value


def float_type(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


# ---- shared option groups ----

def add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="image files or folders")


def add_output(p: argparse.ArgumentParser, *, metavar: str, help_text: str, required: bool = True,
               default: Path | None = None) -> None:
    p.add_argument("-o", "--output", type=Path, required=required, default=default, metavar=metavar, help=help_text)


def add_overwrite(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (default: refuse before any work)")


def add_batch_options(p: argparse.ArgumentParser) -> None:
    """Folders and long runs (also across processes under torchrun: inference/batch.py)."""
    p.add_argument("--recursive", action="store_true",
                   help="walk input folders' subfolders too, keeping their tree under OUTDIR")
    p.add_argument("--skip-existing", action="store_true",
                   help="skip inputs whose output exists (outputs are written atomically, so a rerun after a crash "
                   "finishes only what is missing)")
    p.add_argument("--continue-on-error", action="store_true",
                   help="record a bad image in OUTDIR/manifest.jsonl and go on; exit 2 at the end saying how many "
                   "failed (default: stop at the first)")


def add_quiet(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_max_pixels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=count_type, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help=f"refuse images with more pixels than N (a decompression-bomb guard; default "
                   f"{DEFAULT_MAX_PIXELS})")


def add_json(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as strict JSON (undefined values are null)")


def add_scale(p: argparse.ArgumentParser, *, required: bool, help_text: str) -> None:
    p.add_argument("--scale", type=scale_type, required=required, default=None, metavar="S", help=help_text)


MODEL_HELP = ("bicubic, a bundled name (see `perceptsr models`) or a release file; options after ':' override the "
              "condition flags for this model, e.g. fxsr.safetensors:t=0.3,label=FxSR-0.3 (keys t, t_map, seg, "
              "seg_model, label)")


def add_models(p: argparse.ArgumentParser, *, repeatable: bool, required: bool = False,
               default_text: str = "") -> None:
    if repeatable:
        p.add_argument("--model", action="append", default=[], required=required, metavar="SPEC",
                       help=f"{MODEL_HELP}; repeatable{default_text}")
    else:
        p.add_argument("--model", default="default", metavar="SPEC", help=f"{MODEL_HELP}{default_text}")


def add_conditions(p: argparse.ArgumentParser, *, t: bool = True) -> None:
    """The condition flags: defaults for every model of the command (a model's `:key=value` overrides them)."""
    if t:
        p.add_argument("--t", type=float_type, default=None, metavar="T",
                       help="FxSR: style t in [0,1] (0 = distortion, 1 = perception; default 0.8)")
        p.add_argument("--t-map", default=None, metavar="FILE",
                       help="FxSR: grayscale picture of per-pixel t (black = 0, white = 1)")
    p.add_argument("--seg", default=None, metavar="SRC",
                   help="SFTGAN: auto | probability .npy | folder of <stem>_segprob.npy | label image")
    p.add_argument("--seg-model", default=None, metavar="M",
                   help="SFTGAN: segmentation model for --seg auto, or a label mapping (ade20k | FILE.yaml)")


def add_data(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", nargs="+", action="extend", type=Path, required=True, metavar="DIR",
                   help="HR dataset folders (several after one --data, or --data repeated)")


def add_run_options(p: argparse.ArgumentParser, *, compile: bool = False) -> None:
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="fp32",
                   help="auto: bf16/fp16 where the hardware runs it natively and the output holds (default fp32)")
    p.add_argument("--tile", type=count_type, default=None, metavar="N",
                   help="LR tile size in pixels (default: chosen per image for speed, within free memory)")
    p.add_argument("--tile-overlap", type=count_type, default=DEFAULT_OVERLAP, metavar="N",
                   help=f"LR pixels shared by neighbouring tiles (default {DEFAULT_OVERLAP})")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where models run (auto: CUDA, then Apple MPS, then CPU)")
    if compile:
        p.add_argument("--compile", action="store_true", help="torch.compile the model (slow start, faster tiles)")


def add_protocol(p: argparse.ArgumentParser, *, crop_default: str = "the scale") -> None:
    p.add_argument("--crop-border", type=count_type, default=None, metavar="N",
                   help=f"pixels dropped at each edge before comparing (default: {crop_default})")
    channel = p.add_mutually_exclusive_group()
    channel.add_argument("--y-channel", dest="y_channel", action="store_true", default=True,
                         help="compare on MATLAB's Y channel (default)")
    channel.add_argument("--rgb", dest="y_channel", action="store_false", help="compare on RGB instead of Y")
    p.add_argument("--no-mod-crop", dest="mod_crop", action="store_false",
                   help="do not crop HR to a multiple of the scale")


def add_lpips(p: argparse.ArgumentParser, *, can_disable: bool = True) -> None:
    p.add_argument("--lpips-weights", type=Path, default=None, metavar="DIR",
                   help="folder with alexnet-owt-7be5be79.pth + alex.pth (or vgg16-397923af.pth + vgg.pth); "
                   "default: $PERCEPTSR_LPIPS_WEIGHTS, else the torch.hub cache or a download")
    p.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex", help="LPIPS backbone (default alex)")
    if can_disable:
        p.add_argument("--no-lpips", action="store_true", help="leave LPIPS out")


def add_max_images(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-images", type=count_type, default=None, metavar="N",
                   help="only the first N images (sorted) of each dataset")


# ---- Namespace -> typed values ----

def run_options(args: argparse.Namespace) -> Any:
    from perceptsr.inference.upscale import RunOptions

    return RunOptions(device=args.device, precision=args.precision, tile=args.tile, tile_overlap=args.tile_overlap,
                      compile=getattr(args, "compile", False))


def condition_defaults(args: argparse.Namespace) -> Any:
    from perceptsr.conditions import ConditionOptions

    return ConditionOptions(seg=args.seg, seg_model=args.seg_model, t=getattr(args, "t", None),
                            t_map=getattr(args, "t_map", None))


def model_specs(args: argparse.Namespace, texts: list[str]) -> list[Any]:
    """`--model` texts as ModelSpecs; the command's condition flags are their defaults."""
    from perceptsr.conditions import parse_model_spec

    defaults = condition_defaults(args)
    return [parse_model_spec(text, defaults) for text in texts]


def protocol(args: argparse.Namespace, scale: int, *, crop_default: int | None = None) -> Any:
    from perceptsr.evaluation.protocol import Protocol

    crop = args.crop_border if args.crop_border is not None else crop_default
    return Protocol(scale=scale, crop_border=crop, y_channel=args.y_channel, mod_crop=args.mod_crop)


def commands_module() -> Any:
    from perceptsr.cli import commands

    return commands


def measuring(name: str) -> Callable[..., int]:
    """The measuring command `name` (their bodies live in cli/measure.py)."""
    from perceptsr.cli import measure

    return getattr(measure, name)


# ---- binders ----

def bind_upscale(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    return commands_module().cmd_upscale, dict(
        inputs=a.inputs, output=a.output, model=model_specs(a, [a.model])[0], scale=a.scale, run=run_options(a),
        max_pixels=a.max_pixels, overwrite=a.overwrite, quiet=a.quiet, png_level=a.png_level, recursive=a.recursive,
        skip_existing=a.skip_existing, continue_on_error=a.continue_on_error)


def bind_degrade(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    return commands_module().cmd_degrade, dict(inputs=a.inputs, output=a.output, scale=a.scale,
                                               max_pixels=a.max_pixels, overwrite=a.overwrite, quiet=a.quiet)


def bind_metrics(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    names = [m.strip() for m in a.metrics.split(",") if m.strip()]
    return measuring("cmd_metrics"), dict(
        gt=a.gt, sr=a.sr, metrics=names, protocol=protocol(a, a.scale or 1, crop_default=None if a.scale else 0),
        max_pixels=a.max_pixels, json=a.json, quiet=a.quiet, lpips_net=a.lpips_net, lpips_weights=a.lpips_weights)


def bind_eval(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    return measuring("cmd_eval"), dict(
        models=model_specs(a, a.model), data=a.data, protocol=protocol(a, a.scale), run=run_options(a),
        max_images=a.max_images, max_pixels=a.max_pixels, json=a.json, quiet=a.quiet)


def bind_report(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    return measuring("cmd_report"), dict(
        models=model_specs(a, a.model), data=a.data, protocol=protocol(a, a.scale), run=run_options(a),
        output=a.output, max_images=a.max_images, max_pixels=a.max_pixels, lpips_net=a.lpips_net,
        lpips_weights=a.lpips_weights, no_lpips=a.no_lpips, overwrite=a.overwrite, quiet=a.quiet)


def bind_sweep(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    models = model_specs(a, a.model)
    scale = a.scale
    if scale is None:  # the protocol needs the scale before any image is read: the first model's
        from perceptsr.zoo.models import load_model

        scale = load_model(models[0].source).scale
    return measuring("cmd_sweep"), dict(
        models=models, data=a.data, t_values=a.t_values, protocol=protocol(a, scale), run=run_options(a),
        output=a.output, max_images=a.max_images, max_pixels=a.max_pixels, save_images=a.save_images,
        lpips_net=a.lpips_net, lpips_weights=a.lpips_weights, no_lpips=a.no_lpips, overwrite=a.overwrite,
        quiet=a.quiet)


def bind_demo(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    commands = commands_module()
    texts = a.model or commands.demo_model_names()
    return commands.cmd_demo, dict(inputs=a.inputs, output=a.output, models=model_specs(a, texts), run=run_options(a),
                                   max_pixels=a.max_pixels, overwrite=a.overwrite, quiet=a.quiet, hr=a.hr,
                                   crop_size=a.crop_size, crop_zoom=a.crop_zoom, crops_only=a.crops_only)


def bind_segment(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    return commands_module().cmd_segment, dict(inputs=a.inputs, output=a.output, seg_model=a.seg_model,
                                               lr_inputs=a.lr, overwrite=a.overwrite, quiet=a.quiet)


def bind_train(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    return commands_module().cmd_train, dict(config=a.config, output=a.output, overrides=a.set, resume=a.resume,
                                             vgg_weights=a.vgg_weights, quiet=a.quiet)


def bind_export(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    return commands_module().cmd_export, dict(run=a.run, output=a.output, ema=a.ema, checkpoint=a.checkpoint,
                                              overwrite=a.overwrite, half=a.half, opset=a.opset, overrides=a.set)


def bind_plot(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    return commands_module().cmd_plot, dict(runs=a.runs, output=a.output, smooth=a.smooth, overwrite=a.overwrite)


def bind_convert(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    return commands_module().cmd_convert, dict(source=a.source, output=a.output, kind=a.kind, overwrite=a.overwrite)


def bind_models(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    return commands_module().cmd_models, dict(json=a.json)


def bind_bench(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    return commands_module().cmd_bench, dict(models=a.model or None, quick=a.quick, compile=a.compile, json=a.json)


def bind_app(a: argparse.Namespace) -> tuple[Callable[..., int], dict[str, Any]]:
    from perceptsr.app.server import cmd_app

    return cmd_app, dict(models_dir=a.models_dir, host=a.host, port=a.port, max_pixels=a.max_pixels,
                         run=run_options(a))


# ---- the parser ----

def version() -> str:
    from perceptsr import __version__

    return __version__


def build_parser() -> Parser:
    parser = Parser(prog=PROG, description="Perception-oriented single-image super-resolution: upscale, measure, "
                    "compare, train and convert models.")
    parser.add_argument("--version", action="version", version=f"{PROG} {version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, binder: Binder, description: str = "") -> Parser:
        p = sub.add_parser(name, help=summary, description=f"{summary}. {description}".strip())
        p.set_defaults(bind=binder)
        return p

    p = command("upscale", "Super-resolve images with a model", bind_upscale,
                "Writes OUTDIR/<stem>.png per input, keeping alpha, grayscale and bit depth, and OUTDIR/manifest.jsonl "
                "(input, output, sha256). Under `torchrun` the inputs are split across the processes.")
    add_inputs(p)
    add_output(p, metavar="OUTDIR", help_text="output folder")
    add_models(p, repeatable=False, default_text=" (default: the bundled PSNR model, else bicubic)")
    add_scale(p, required=False, help_text="upscaling factor (bicubic's factor; checked against any other model's)")
    add_conditions(p)
    add_run_options(p, compile=True)
    p.add_argument("--png-level", type=int, choices=range(10), default=DEFAULT_PNG_LEVEL, metavar="0-9",
                   help=f"zlib level of PNG outputs: 0 fastest and largest, 9 smallest and slowest (default "
                   f"{DEFAULT_PNG_LEVEL})")
    add_max_pixels(p)
    add_overwrite(p)
    add_batch_options(p)
    add_quiet(p)

    p = command("degrade", "Make the papers' LR images: modcrop and MATLAB-bicubic downscale by 1/S", bind_degrade,
                "Writes OUTDIR/<stem>.png per input, rounded to the input's bit depth.")
    add_inputs(p)
    add_output(p, metavar="OUTDIR", help_text="output folder")
    add_scale(p, required=True, help_text="downscaling factor")
    add_max_pixels(p)
    add_overwrite(p)
    add_quiet(p)

    p = command("metrics", "PSNR, SSIM, NIQE, LPIPS of SR images against ground truth", bind_metrics,
                "Pairs match by file stem. With --scale S, HR is mod-cropped to S and the border crop defaults to S.")
    p.add_argument("--gt", type=Path, default=None, metavar="PATH",
                   help="ground-truth file or folder (needed by the reference metrics)")
    p.add_argument("--sr", type=Path, required=True, metavar="PATH", help="SR file or folder")
    p.add_argument("--metrics", default="psnr,ssim", metavar="LIST",
                   help="comma-separated metric names (default psnr,ssim)")
    add_scale(p, required=False, help_text="the SR factor: mod-crop HR to it and crop S pixels (default: no mod-crop, "
              "crop 0)")
    add_protocol(p, crop_default="the scale, or 0 without --scale")
    add_lpips(p, can_disable=False)
    add_max_pixels(p)
    add_json(p, "per-image values and means")
    add_quiet(p)

    p = command("eval", "PSNR/SSIM and NIQE per dataset, with bicubic as the baseline", bind_eval,
                "LR = MATLAB bicubic of each HR image; the protocol is printed with the numbers.")
    add_models(p, repeatable=True)
    add_data(p)
    add_scale(p, required=True, help_text="SR factor")
    add_conditions(p)
    add_protocol(p)
    add_run_options(p)
    add_max_images(p)
    add_max_pixels(p)
    add_json(p, "the results")
    add_quiet(p)

    p = command("report", "Every model on every dataset: tables, perception-distortion plot, viewer", bind_report,
                "Writes OUTDIR/results.md|csv|json, pd_*.png and index.html. SR images and numbers are cached in "
                "OUTDIR/report_files/: a re-run only computes what is new.")
    add_models(p, repeatable=True, required=True)
    add_data(p)
    add_scale(p, required=True, help_text="SR factor")
    add_output(p, metavar="OUTDIR", help_text="report folder")
    add_conditions(p)
    add_protocol(p)
    add_run_options(p)
    add_lpips(p)
    add_max_images(p)
    add_max_pixels(p)
    add_overwrite(p)
    add_quiet(p)

    p = command("sweep", "FxSR: PSNR/SSIM/LR-PSNR/NIQE(/LPIPS) for each t, the perception-distortion curve",
                bind_sweep, "Evaluates t-conditioned models on HR datasets for each t and writes OUTDIR/sweep.csv, "
                "sweep.json and sweep.png.")
    add_models(p, repeatable=True, required=True)
    add_data(p)
    add_scale(p, required=False, help_text="SR factor (default: the first model's)")
    p.add_argument("--t-values", default="0:1:0.1", metavar="SPEC",
                   help="t values: start:stop:step (stop included), a comma list, or one value (default 0:1:0.1)")
    p.add_argument("--t", dest="t_values", action=Deprecated, new="--t-values")
    add_output(p, metavar="OUTDIR", help_text="sweep folder")
    add_conditions(p, t=False)
    add_protocol(p)
    add_run_options(p)
    p.add_argument("--save-images", action="store_true", help="also keep the SR images in OUTDIR/images/t<t>/")
    add_lpips(p)
    add_max_images(p)
    add_max_pixels(p)
    add_overwrite(p)
    add_quiet(p)

    p = command("demo", "Upscale sample images with several models, plus a side-by-side comparison", bind_demo,
                "Writes OUTDIR/<label>/<stem>.png per model and OUTDIR/comparison.png; every output is checked "
                "before the first is written.")
    add_inputs(p)
    add_output(p, metavar="OUTDIR", help_text="output folder (default out/demo)", required=False,
               default=Path("out/demo"))
    add_models(p, repeatable=True,
               default_text=" (default: bicubic, the default model and every bundled perceptual model)")
    p.add_argument("--hr", action="store_true",
                   help="the inputs are ground-truth images: each is mod-cropped and downscaled by the MATLAB-bicubic "
                   "1/4 first (the papers' protocol, as `perceptsr degrade` does), the models upscale that, and an HR "
                   "column shows the original")
    p.add_argument("--crop-size", type=count_type, default=None, metavar="N",
                   help=f"side in HR pixels of the magnified region under each row, chosen where the texture is (on "
                   f"HR with --hr) (default {CROP}; 0 = none)")
    p.add_argument("--crop-zoom", type=count_type, default=None, metavar="N",
                   help=f"nearest-neighbour magnification of that region, so every pixel shows (default: as much as "
                   f"a column's width holds, {ZOOM} to {MAX_FIT_ZOOM})")
    p.add_argument("--crops-only", action="store_true",
                   help="comparison.png shows only the magnified regions (a compact figure, e.g. for a model card)")
    add_conditions(p)
    add_run_options(p)
    add_max_pixels(p)
    add_overwrite(p)
    add_quiet(p)

    p = command("segment", "SFTGAN's segmentation prior: <stem>_segprob.npy, _colorimg.png, _byteimg.png",
                bind_segment, "Probability maps for `upscale --seg` and for SFTGAN training data.")
    add_inputs(p)
    add_output(p, metavar="OUTDIR", help_text="output folder")
    p.add_argument("--seg-model", default=None, metavar="M",
                   help="OutdoorSceneSeg release file (perceptsr convert segmentation_OST_bic.pth); "
                   "default $PERCEPTSR_SEG_MODEL")
    p.add_argument("--lr", action="store_true",
                   help="inputs are LR images: maps at 4x their size, for `upscale --seg` (default: inputs are HR "
                   "training images, maps at their size mod 4, as the original)")
    add_overwrite(p)
    add_quiet(p)

    p = command("train", "Train a method from a YAML config (torchrun-aware)", bind_train,
                "A run folder holds config.yaml, checkpoints/ and log.jsonl; --resume continues it exactly.")
    p.add_argument("config", nargs="?", type=Path, default=None, help="YAML config (see configs/)")
    add_output(p, metavar="RUN_DIR", help_text="run folder (default runs/<config name>)", required=False)
    p.add_argument("--out", dest="output", type=Path, action=Deprecated, new="-o/--output")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value (repeatable)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue a run from its checkpoint")
    p.add_argument("--vgg-weights", type=Path, default=None, metavar="FILE",
                   help="torchvision VGG19 state dict for perceptual losses")
    add_quiet(p)

    p = command("export", "Turn a run's checkpoint into a release file, or any generator into ONNX", bind_export,
                "The output's extension picks the format: .safetensors (a release: the generator only, loads with "
                "--model FILE) or .onnx (dynamic batch and size, conditions as inputs t / seg; runs with --model "
                "FILE.onnx or any ONNX runtime; needs pip install perceptsr[onnx]).")
    p.add_argument("run", type=Path, metavar="RUN_OR_RELEASE",
                   help="run folder written by `perceptsr train`, a release file or a bundled model's name")
    add_output(p, metavar="FILE", help_text="file to write: .safetensors (release) or .onnx")
    p.add_argument("--half", action="store_true", help="ONNX in float16 (weights, inputs and output)")
    p.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset, 17..20 (default 17)")
    p.add_argument("--ema", action="store_true", help="export the EMA generator")
    p.add_argument("--checkpoint", default="latest", metavar="WHICH", help="latest, best or a step number")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a field of the generator's config that leaves its weights as they are, e.g. "
                   "texture_gate=0.03 (fxsr_msrresnet); repeatable")
    add_overwrite(p)

    p = command("plot", "Training curves of runs: loss terms, validation PSNR/SSIM, learning rate, curricula",
                bind_plot, "Reads RUN/log.jsonl (also while the run writes it) and draws one PNG: a panel per kind of "
                "value logged, phases as dotted lines. Several runs are overlaid, named in the legends.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN",
                   help="run folder written by `perceptsr train` (or its log.jsonl)")
    add_output(p, metavar="FILE", help_text="PNG to write (default RUN/curves.png; needed with several runs)",
               required=False)
    p.add_argument("--smooth", type=count_type, default=None, metavar="N",
                   help="moving-average window, in logged points, of the loss and t curves (default: about 1/20 "
                   "of the points; 0 = raw values only)")
    add_overwrite(p)

    p = command("convert", "Convert released weights (BasicSR, TensorFlow, ...) into a perceptsr release file",
                bind_convert, "Foreign checkpoints are read without running pickles; see `perceptsr models`.")
    p.add_argument("source", type=Path, metavar="SRC", help="foreign checkpoint file or TensorFlow prefix")
    add_output(p, metavar="FILE", help_text="release file to write (.safetensors)")
    p.add_argument("--from", dest="kind", default=None, metavar="KIND",
                   help="release kind (default: detected from the keys)")
    add_overwrite(p)

    p = command("models", "List bundled models, convertible releases and architectures", bind_models)
    add_json(p, "the lists")

    p = command("bench", "Inference speed against this machine's conv roofline, speed-ups, peak memory", bind_bench)
    p.add_argument("--model", action="append", default=[], metavar="ARCH",
                   help="architecture to time, repeatable (default: every one in `perceptsr models`)")
    p.add_argument("--models", dest="model", action=Deprecated, new="--model (repeatable)", split=True, extend=True)
    p.add_argument("--quick", action="store_true", help="tiny configs and inputs: a smoke run of the same code")
    p.add_argument("--compile", action="store_true", help="also time the torch.compile paths (slow to start)")
    add_json(p, "every figure")

    p = command("app", "A local web page: paint FxSR's t map or repaint SFTGAN's classes, and see the result", bind_app,
                "Needs the app extra (pip install perceptsr[app]). Serves until Ctrl-C, offline; one run at a time.")
    p.add_argument("--models-dir", type=Path, default=None, metavar="DIR",
                   help="folder whose release files (.safetensors) and .onnx models the page offers besides the "
                   "bundled ones; an outdoorsceneseg release there is SFTGAN's segmentation network")
    p.add_argument("--host", default=None, metavar="H",
                   help="address to listen on (default 127.0.0.1: this machine only; any other prints a warning)")
    p.add_argument("--port", type=count_type, default=7860, metavar="P", help="port to listen on (default 7860)")
    add_max_pixels(p)
    add_run_options(p)
    return parser
