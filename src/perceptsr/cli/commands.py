"""CLI commands around models and runs: train, export, eval, models, convert."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from perceptsr.errors import InputError


def cmd_train(args: argparse.Namespace) -> int:
    from perceptsr.config import read_yaml
    from perceptsr.engine.setup import load_train_config, parse_train_config
    from perceptsr.engine.train import train

    if args.resume is not None:
        run_dir = args.resume
        stored = run_dir / "config.yaml"
        if not stored.is_file():
            raise InputError(f"{run_dir} is not a run directory (no config.yaml)")
        source = args.config or stored
        config = load_train_config(source, args.set) if args.config else parse_train_config(read_yaml(stored), args.set)
        resume = (run_dir / "checkpoints").is_dir()
    else:
        if args.config is None:
            raise InputError("give a config file, or --resume RUN_DIR")
        config = load_train_config(args.config, args.set)
        run_dir = args.out or Path("runs") / args.config.stem
        if (run_dir / "checkpoints").exists() and os.environ.get("RANK", "0") == "0":
            raise InputError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick --out")
        resume = False
    if args.vgg_weights:
        from dataclasses import replace

        if not hasattr(config.model, "vgg_weights"):
            raise InputError(f"method {config.method} uses no VGG loss")
        config = replace(config, model=replace(config.model, vgg_weights=str(args.vgg_weights)))
    finished = train(config, run_dir, resume=resume, progress=not args.quiet)
    if int(os.environ.get("RANK", "0")) == 0 and finished:
        print(f"run finished: {run_dir}", file=sys.stderr)  # noqa: T201
    return 0 if finished else 130


def cmd_export(args: argparse.Namespace) -> int:
    from perceptsr.archs import ARCHS
    from perceptsr.config import read_yaml
    from perceptsr.engine.checkpoint import find, load_checkpoint, split_prefix
    from perceptsr.engine.setup import build_method, config_yaml, parse_train_config
    from perceptsr.zoo.release import save_release

    path = find(args.run, args.checkpoint)
    config = parse_train_config(read_yaml(args.run / "config.yaml"))
    checkpoint = load_checkpoint(path, with_state=False)
    generator = build_method(config).generator
    generator.load_state_dict(split_prefix(checkpoint.weights, "ema" if args.ema else "generator"), strict=True)
    arch = next(name for name, spec in ARCHS.items() if type(generator) is spec.module)
    step = checkpoint.meta["step"]
    save_release(args.output, arch=arch, config=generator.config, state_dict=generator.state_dict(),
                 extra={"method": config.method, "step": str(step), "weights": "ema" if args.ema else "raw",
                        "train_config": config_yaml(config)}, overwrite=args.overwrite)
    print(f"wrote {args.output} ({arch} x{generator.scale}, step {step})", file=sys.stderr)  # noqa: T201
    return 0


def default_conditions(model: object) -> object:
    """For conditional models, a function giving their default conditions (t = 0.8, seg = auto); else None."""
    from perceptsr.conditions import ConditionOptions, build_conditions

    if not getattr(model, "condition_scales", None):
        return None
    return lambda lr, hr: build_conditions(model, lr, ConditionOptions())


def cmd_eval(args: argparse.Namespace) -> int:
    from perceptsr.evaluation.evaluate import evaluate
    from perceptsr.inference.upscale import pick_device
    from perceptsr.zoo.models import load_model

    device = pick_device(args.device)
    names = ["bicubic", *[m for m in args.model if m != "bicubic"]]
    models = {name: load_model(name, scale=args.scale).to(device) for name in names}
    results: dict[str, dict[str, dict[str, float]]] = {}
    protocol = None
    for folder in args.data:
        if not folder.is_dir():
            raise InputError(f"dataset folder {folder} does not exist")
        for name, model in models.items():
            result = evaluate(model, folder, scale=args.scale, device=device, tile=args.tile, model_name=name,
                              max_images=args.max_images, progress=not args.json,
                              conditions_fn=default_conditions(model))
            results.setdefault(folder.name, {})[name] = result.mean
            protocol = result.protocol
    if args.json:
        print(json.dumps({"protocol": protocol, "results": results}, allow_nan=True))  # noqa: T201
        return 0
    print(f"protocol: {protocol}")  # noqa: T201
    for dataset, rows in results.items():
        metrics = list(next(iter(rows.values())))
        print(f"\n{dataset} x{args.scale}\n{'model':32s} " + " ".join(f"{m:>9s}" for m in metrics))  # noqa: T201
        for name, values in rows.items():
            print(f"{name[-32:]:32s} " + " ".join(f"{values[m]:9.4f}" for m in metrics))  # noqa: T201
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from perceptsr.archs import ARCHS
    from perceptsr.zoo.models import BUNDLED, KNOWN_RELEASES, bundled_path, default_model

    print("bundled models (perceptsr upscale --model NAME):")  # noqa: T201
    print(f"  {'bicubic':14s} MATLAB bicubic, any scale (the baseline)")  # noqa: T201
    for name, entry in BUNDLED.items():
        state = "installed" if bundled_path(name) else "not in this install"
        print(f"  {name:14s} x{entry.scale}  {entry.description} [{state}]")  # noqa: T201
    print(f"default: {default_model()}\n\nreleased weights you can convert (perceptsr convert FILE):")  # noqa: T201
    for name, how in KNOWN_RELEASES.items():
        print(f"  {name}: {how}")  # noqa: T201
    print("\narchitectures: " + ", ".join(ARCHS))  # noqa: T201
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from perceptsr.convert import convert_file

    converted = convert_file(args.source, args.output, kind=args.kind, overwrite=args.overwrite)
    print(f"wrote {args.output} ({converted.arch} x{converted.config.scale})", file=sys.stderr)  # noqa: T201
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from perceptsr.inference.upscale import pick_device, upscale_image
    from perceptsr.io.compare import side_by_side
    from perceptsr.io.images import list_images, read_image, write_image
    from perceptsr.zoo.models import default_model, load_model

    device = pick_device("auto")
    names = list(dict.fromkeys(["bicubic", default_model()]))
    inputs = list_images(args.inputs)
    rows = []
    for name in names:
        model = load_model(name, scale=4).to(device)
        for index, path in enumerate(inputs):
            image = read_image(path)
            sr, alpha = upscale_image(model, image, device=device)
            write_image(args.output / name / f"{path.stem}.png", sr, alpha=alpha, grayscale=image.grayscale,
                        overwrite=args.overwrite)
            if len(rows) <= index:
                rows.append({"LR (nearest)": image.rgb})
            rows[index][name] = sr.clamp(0, 1)
    comparison = args.output / "comparison.png"
    write_image(comparison, side_by_side(rows, scale=4), overwrite=args.overwrite)
    for name in names:
        print(f"{name:12s} -> {args.output / name}/")  # noqa: T201
    print(f"comparison   -> {comparison}")  # noqa: T201
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    from perceptsr.conditions.seg import segment_files
    from perceptsr.io.images import list_images

    if args.output.exists() and not args.output.is_dir():
        raise InputError(f"output directory {args.output} is an existing file")
    inputs = list_images(args.inputs)
    segment_files(inputs, args.output, seg_model=args.seg_model, lr_inputs=args.lr, overwrite=args.overwrite,
                  progress=len(inputs) > 1)
    print(f"wrote the segmentation of {len(inputs)} image(s) to {args.output}", file=sys.stderr)  # noqa: T201
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from perceptsr.errors import CheckpointError
    from perceptsr.evaluation.report import parse_model_spec, run_report
    from perceptsr.metrics.lpips import FOLDER_ENV, load_lpips

    specs = [parse_model_spec(text) for text in args.model]
    lpips, note = None, "disabled with --no-lpips"
    if not args.no_lpips:
        try:
            lpips = load_lpips(args.lpips_net, folder=args.lpips_weights)
        except CheckpointError as error:
            if args.lpips_weights is not None or os.environ.get(FOLDER_ENV):
                raise
            note = f"no weights offline: pass --lpips-weights DIR or set {FOLDER_ENV}"
            print(f"perceptsr: LPIPS unavailable, left out of the report: {error}", file=sys.stderr)  # noqa: T201
    _, files = run_report(models=specs, data=args.data, scale=args.scale, out=args.output, lpips=lpips,
                          lpips_note=note, device=args.device, tile=args.tile, max_images=args.max_images,
                          progress=not args.quiet)
    print("wrote " + ", ".join(str(path) for path in files), file=sys.stderr)  # noqa: T201
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from perceptsr.evaluation.sweep import check_outputs, load_lpips_or_note, parse_t_values, run_sweep, write_outputs
    from perceptsr.inference.upscale import pick_device
    from perceptsr.zoo.models import load_model

    ts = parse_t_values(args.t)
    if not args.data.is_dir():
        raise InputError(f"dataset folder {args.data} does not exist")
    check_outputs(args.output, overwrite=args.overwrite)
    image_dir = args.output / "images" if args.save_images else None
    if image_dir is not None and image_dir.exists() and not args.overwrite:
        raise InputError(f"output {image_dir} already exists (pass --overwrite to replace it)")
    device = pick_device(args.device)
    model = load_model(args.model, scale=args.scale).to(device)
    lpips, note = load_lpips_or_note(enabled=not args.no_lpips, net=args.lpips_net, weights=args.lpips_weights)
    result = run_sweep(model, args.data, scale=model.scale, ts=ts, device=device, tile=args.tile,
                       max_images=args.max_images, lpips_net=lpips, lpips_note=note, image_dir=image_dir,
                       progress=not args.quiet)
    write_outputs(result, args.output, model_name=Path(args.model).name, dataset=args.data.name,
                  overwrite=args.overwrite)
    for text in result.notes:
        print(f"perceptsr: {text}", file=sys.stderr)  # noqa: T201
    print(f"wrote {', '.join(str(args.output / n) for n in ('sweep.csv', 'sweep.json', 'sweep.png'))}",  # noqa: T201
          file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from perceptsr.inference.bench import format_table, run_bench

    models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
    result = run_bench(quick=args.quick, models=models, compile=args.compile)
    print(json.dumps(result, indent=2) if args.json else format_table(result))  # noqa: T201
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    from perceptsr.cli.main import _positive, _scale

    p = sub.add_parser("train", help="train a method from a YAML config (torchrun-aware)")
    p.add_argument("config", nargs="?", type=Path, default=None, help="YAML config (see configs/)")
    p.add_argument("--set", action="append", default=[], metavar="KEY.PATH=VALUE", help="override a config value")
    p.add_argument("--out", type=Path, default=None, help="run directory (default runs/<config name>)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue a run from its checkpoint")
    p.add_argument("--vgg-weights", type=Path, default=None, help="torchvision VGG19 state dict for perceptual losses")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("export", help="turn a run's checkpoint into a release file")
    p.add_argument("run", type=Path, metavar="RUN_DIR")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--ema", action="store_true", help="export the EMA generator")
    p.add_argument("--checkpoint", default="latest", help="latest, best or a step number")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("eval", help="PSNR/SSIM (Y, crop = scale) and NIQE per dataset, bicubic as baseline")
    p.add_argument("--model", action="append", default=[], help="model name or file (repeatable)")
    p.add_argument("--data", nargs="+", action="extend", type=Path, required=True, help="HR dataset folders")
    p.add_argument("--scale", type=_scale, required=True)
    p.add_argument("--tile", type=_positive, default=None)
    p.add_argument("--max-images", type=_positive, default=None)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("demo", help="upscale sample images with bicubic and the default model, plus a comparison")
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN")
    p.add_argument("-o", "--output", type=Path, default=Path("out/demo"))
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("models", help="list bundled models, convertible releases and architectures")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("convert", help="convert released weights (BasicSR, ...) into a perceptsr release file")
    p.add_argument("source", type=Path, metavar="SRC")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DST")
    p.add_argument("--from", dest="kind", default=None, help="release kind (default: detected from the keys)")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("segment", help="SFTGAN's segmentation prior: <stem>_segprob.npy, _colorimg.png, _byteimg.png")
    p.add_argument("inputs", nargs="+", type=Path, metavar="IN", help="image files or folders")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    p.add_argument("--seg-model", default=None,
                   help="OutdoorSceneSeg release file (perceptsr convert segmentation_OST_bic.pth); "
                        "default $PERCEPTSR_SEG_MODEL")
    p.add_argument("--lr", action="store_true",
                   help="inputs are LR images: maps at 4x their size, for `upscale --seg` (default: inputs are HR "
                        "training images, maps at their size mod 4, as the original)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("report", help="every model on every dataset: tables, perception-distortion plot, viewer",
                       description="Run models on HR datasets (LR = MATLAB bicubic) and write OUTDIR/results.md|csv|"
                       "json, pd_*.png and index.html. SR images and numbers are cached in OUTDIR: a re-run only "
                       "computes what is new.")
    p.add_argument("--model", action="append", required=True, metavar="M[:key=value,...]",
                   help="bicubic, a bundled name or a release file, repeatable; options after ':' e.g. "
                   "fxsr.safetensors:t=0.3,label=FxSR-0.3 (keys t, t_map, seg, seg_model, label)")
    p.add_argument("--data", nargs="+", action="extend", type=Path, required=True, metavar="DIR",
                   help="HR dataset folders")
    p.add_argument("--scale", type=_scale, required=True)
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    p.add_argument("--lpips-weights", type=Path, default=None, metavar="DIR",
                   help="folder with alexnet-owt-7be5be79.pth + alex.pth (or vgg16-397923af.pth + vgg.pth); "
                   "default: $PERCEPTSR_LPIPS_WEIGHTS, else the torch.hub cache or a download")
    p.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex")
    p.add_argument("--no-lpips", action="store_true", help="leave LPIPS out")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--tile", type=_positive, default=None)
    p.add_argument("--max-images", type=_positive, default=None, help="only the first N images of each dataset")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("sweep", help="FxSR: PSNR/SSIM/LR-PSNR/NIQE(/LPIPS) for each t, the perception-distortion curve",
                       description="Evaluate a t-conditioned model (FxSR) on an HR dataset for each t and write "
                       "OUTDIR/sweep.csv, sweep.json and sweep.png (PSNR against NIQE, labelled by t).")
    p.add_argument("--model", required=True, help="FxSR release file (perceptsr convert FxSR-PD-4x.pth)")
    p.add_argument("--data", type=Path, required=True, metavar="DIR", help="HR dataset folder")
    p.add_argument("--scale", type=_scale, default=None, help="checked against the model's scale")
    p.add_argument("--t", default="0:1:0.1", help="start:stop:step (stop included), a comma list, or one value")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    p.add_argument("--max-images", type=_positive, default=None, help="only the first N images (sorted)")
    p.add_argument("--save-images", action="store_true", help="also keep the SR images in OUTDIR/images/t<t>/")
    p.add_argument("--lpips-weights", type=Path, default=None, metavar="DIR",
                   help="folder with alexnet-owt-7be5be79.pth + alex.pth; default: $PERCEPTSR_LPIPS_WEIGHTS, "
                   "else the torch.hub cache or a download (left out if unavailable)")
    p.add_argument("--lpips-net", choices=("alex", "vgg"), default="alex")
    p.add_argument("--no-lpips", action="store_true", help="leave LPIPS out")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--tile", type=_positive, default=None)
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("bench", help="inference speed vs this machine's conv roofline, speed-ups, peak memory")
    p.add_argument("--json", action="store_true")
    p.add_argument("--quick", action="store_true", help="tiny configs and inputs: a smoke run of the same code")
    p.add_argument("--models", default=None, help="comma-separated architectures (default: every one in ARCHS)")
    p.add_argument("--compile", action="store_true", help="also time the torch.compile paths (slow to start)")
    p.set_defaults(func=cmd_bench)
