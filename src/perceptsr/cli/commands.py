"""The command functions that do not measure: upscale, degrade, demo, segment, train, export, plot, convert, models,
bench.

Each takes typed keyword arguments (paths, `ModelSpec`, `RunOptions`) and returns an exit code; the parser
(`parser.py`) builds those from the command line, so these functions know nothing of argparse and can be called
from Python as they are. Outputs are checked before any work starts.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from perceptsr.cli.messages import note, one_line
from perceptsr.errors import InputError

if TYPE_CHECKING:
    from collections.abc import Callable

    from torch import nn

    from perceptsr.conditions import ModelSpec
    from perceptsr.inference.upscale import RunOptions
    from perceptsr.io.images import LoadedImage


def check_outputs(outputs: list[Path], *, folder: Path, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that is a file, an output that is a folder, or one that exists."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"output directory {folder} is an existing file")
    for out in outputs:
        if out.is_dir():
            raise InputError(f"output {out} is an existing directory")
        if out.exists() and not overwrite:
            raise InputError(f"output {out} already exists (pass --overwrite to replace it)")
        if out.parent != folder and out.parent.exists() and not out.parent.is_dir():
            raise InputError(f"output directory {out.parent} is an existing file")


def image_outputs(inputs: list[Path], folder: Path, overwrite: bool) -> list[Path]:
    """`folder/<stem>.png` per input, checked (see `check_outputs`)."""
    outputs = [folder / f"{p.stem}.png" for p in inputs]
    seen: dict[Path, Path] = {}
    for path, out in zip(inputs, outputs, strict=True):
        if out in seen:
            raise InputError(f"{seen[out]} and {path} would both be written to {out}")
        seen[out] = path
    check_outputs(outputs, folder=folder, overwrite=overwrite)
    return outputs


def cmd_degrade(*, inputs: list[Path], output: Path, scale: int, max_pixels: int, overwrite: bool = False,
                quiet: bool = False) -> int:
    from tqdm import tqdm

    from perceptsr.io.images import list_images, read_image, write_image

    files = list_images(inputs)
    outputs = image_outputs(files, output, overwrite)
    for path, out in tqdm(list(zip(files, outputs, strict=True)), disable=quiet or len(files) < 2, unit="img"):
        lr = degraded(read_image(path, max_pixels=max_pixels), scale)
        write_image(out, lr.rgb, alpha=lr.alpha, grayscale=lr.grayscale, bit_depth=lr.bit_depth, overwrite=overwrite)
    return 0


def degraded(image: LoadedImage, scale: int) -> LoadedImage:
    """The papers' LR of a ground-truth image (data.resize.degrade, rounded to its bit depth; alpha mod-cropped and
    MATLAB-bicubic downscaled too): what `degrade` writes and what `demo --hr` feeds the models, from one place."""
    from perceptsr.data.resize import degrade, imresize, modcrop

    alpha = None if image.alpha is None else imresize(modcrop(image.alpha, scale), 1 / scale).clamp(0, 1)
    return replace(image, rgb=degrade(image.rgb, scale, bit_depth=image.bit_depth), alpha=alpha)


def load_prepared(source: str, *, scale: int | None, run: RunOptions) -> tuple[nn.Module, object]:
    """`inference.upscale.load_prepared`, imported lazily (this module stays light) under a name the bench times."""
    from perceptsr.inference.upscale import load_prepared as load

    return load(source, scale=scale, run=run)


CONDITION_FLAGS = {"t": "--t / --t-map apply only to FxSR models", "t_map": "--t / --t-map apply only to FxSR models",
                   "seg": "--seg / --seg-model apply only to SFTGAN models",
                   "seg_model": "--seg / --seg-model apply only to SFTGAN models"}


def cmd_upscale(*, inputs: list[Path], output: Path, model: ModelSpec, scale: int | None, run: RunOptions,
                max_pixels: int, overwrite: bool = False, quiet: bool = False, png_level: int | None = None,
                recursive: bool = False, skip_existing: bool = False, continue_on_error: bool = False) -> int:
    """The model is prepared once; decoding the next input and writing the previous output overlap the forward
    (inference.upscale.upscale_files). Under torchrun each rank upscales its share (inference.batch); rank 0 writes
    OUTDIR/manifest.jsonl."""
    from tqdm import tqdm

    from perceptsr.conditions import build_conditions, unused_flags
    from perceptsr.engine.distributed import teardown
    from perceptsr.inference import batch
    from perceptsr.inference.upscale import DEFAULT_PNG_LEVEL, pick_device, upscale_files

    jobs = batch.list_jobs(inputs, output, recursive=recursive)
    existing = {job.output for job in jobs if skip_existing and job.output.is_file()}
    check_outputs([job.output for job in jobs if job.output not in existing], folder=output, overwrite=overwrite)
    env, group = batch.setup_ranks(pick_device(run.device).type)
    try:
        network, device = load_prepared(model.source, scale=scale, run=run)
        unused = unused_flags(network, model)
        if unused:
            raise InputError(CONDITION_FLAGS[unused[0]])
        share = batch.split(jobs, env.world_size)[env.rank]
        batch.barrier(env, group)  # every rank has checked the outputs before any is written
        recorder = batch.Recorder(output, env.rank)
        todo = batch.skip_existing(share, recorder) if skip_existing else share
        by_output = {job.output: job for job in todo}
        with tqdm(total=len(todo), disable=quiet or len(todo) < 2 or not env.is_main, unit="img") as bar:

            def upscale(some: list[batch.Job], written: Callable[[batch.Job], None]) -> None:
                upscale_files(network, [(job.input, job.output) for job in some], run=run, device=device,
                              conditions_for=lambda path, image: build_conditions(network, image.rgb, model.options,
                                                                                  stem=path.stem),
                              max_pixels=max_pixels, overwrite=overwrite, progress=not quiet and env.is_main,
                              png_level=DEFAULT_PNG_LEVEL if png_level is None else png_level, done=bar.update,
                              written=lambda pair: written(by_output[pair[1]]))

            try:
                batch.run_jobs(todo, upscale, recorder, continue_on_error=continue_on_error)
            except BaseException:
                recorder.close(remove=True)
                raise
        summary = batch.finish(env, group, output, jobs, recorder)
    finally:
        teardown(env)
    if not env.is_main:
        return 0  # rank 0 reports for every rank
    if summary.failed:
        raise InputError(f"{summary.failed} of {summary.total} image(s) failed; each is named with its error in "
                         f"{output / batch.MANIFEST}")
    if not quiet:
        skipped = f" ({summary.skipped} existing skipped)" if summary.skipped else ""
        note(f"wrote {summary.written} image(s) to {output}{skipped}")
    return 0


def demo_model_names() -> list[str]:
    """bicubic, the default model and every bundled model this install carries (the perceptual ones among them);
    a controllable one as its `demo` settings say (fxsr-nat-x4 at t = 0 and t = 1)."""
    from perceptsr.zoo.models import BUNDLED, bundled_path, default_model

    bundled = [name + suffix for name, entry in BUNDLED.items() if bundled_path(name) for suffix in entry.demo]
    return list(dict.fromkeys(["bicubic", default_model(), *bundled]))


def folder_name(label: str) -> str:
    """A label as one path component: separators and control characters become `_`."""
    name = "".join("_" if c in "/\\" or not c.isprintable() else c for c in label).strip()
    return "_" if name in ("", ".", "..") else name


DEMO_SCALE = 4
HR_COLUMN = "HR"


def cmd_demo(*, inputs: list[Path], output: Path, models: list[ModelSpec], run: RunOptions, max_pixels: int,
             overwrite: bool = False, quiet: bool = False, hr: bool = False, crop_size: int | None = None,
             crop_zoom: int | None = None, crops_only: bool = False) -> int:
    """Every model on every input (x4) and one comparison picture. Every output is checked, every input read and
    every model loaded before the first file is written, so a refusal leaves nothing half done.

    With `hr`, the inputs are ground truth: the models upscale their `degraded` LR (the papers' protocol, so the
    picture shows what the published numbers measure) and an HR column shows the original, mod-cropped; the
    magnified region is then chosen on HR, the same for any set of models. `crop_size` (HR pixels, 0 = no
    magnified row) defaults to io.compare's CROP; `crop_zoom` to as much as a column holds (io.compare, zoom=None)."""
    from tqdm import tqdm

    from perceptsr.conditions import build_conditions, options_for, unused_flags
    from perceptsr.data.resize import modcrop
    from perceptsr.inference.upscale import upscale_image
    from perceptsr.io.compare import CROP, side_by_side
    from perceptsr.io.images import list_images, read_image, write_image

    crop_size = CROP if crop_size is None else crop_size
    if crop_zoom is not None and crop_zoom < 1:
        raise InputError(f"--crop-zoom must be at least 1, got {crop_zoom}")
    if crops_only and not crop_size:
        raise InputError("--crops-only needs the magnified regions: a --crop-size above 0")
    folders = [folder_name(spec.label) for spec in models]
    if len(set(folders)) < len(folders):
        raise InputError("two models would share an output folder: give each a distinct label (MODEL:label=NAME)")
    if hr and any(spec.label == HR_COLUMN for spec in models):
        raise InputError(f"a model is labelled {HR_COLUMN}, the ground-truth column of --hr: relabel it "
                         f"(MODEL:label=NAME)")
    files = list_images(inputs)
    stems = [p.stem for p in files]
    if len(set(stems)) < len(stems):
        raise InputError("two inputs share a file stem; their outputs would collide")
    comparison = output / "comparison.png"
    targets = {label: [output / folder / f"{stem}.png" for stem in stems] for label, folder in
               zip([s.label for s in models], folders, strict=True)}
    check_outputs([out for outs in targets.values() for out in outs] + [comparison], folder=output,
                  overwrite=overwrite)
    images = [read_image(path, max_pixels=max_pixels) for path in files]
    truths = [modcrop(image.rgb, DEMO_SCALE) for image in images] if hr else []
    if hr:
        images = [degraded(image, DEMO_SCALE) for image in images]
    loaded = []
    for spec in models:
        network, device = load_prepared(spec.source, scale=DEMO_SCALE, run=run)
        loaded.append((spec, network, device, options_for(network, spec)))
    flags = {key for spec in models for key in spec.defaulted}
    used = {key for spec, network, _, _ in loaded for key in spec.defaulted - set(unused_flags(network, spec))}
    if flags - used:
        raise InputError(f"--{sorted(flags - used)[0].replace('_', '-')} applies to none of the models")
    rows: list[dict] = [{} if hr else {"LR (nearest)": image.rgb} for image in images]
    results = []
    for spec, network, device, options in tqdm(loaded, disable=quiet, unit="model"):
        for index, (path, image) in enumerate(zip(files, images, strict=True)):
            cond = build_conditions(network, image.rgb, options, stem=path.stem)
            sr, alpha = upscale_image(network, image, tile=run.tile, overlap=run.tile_overlap, device=device,
                                      conditions=cond, precision=run.precision)
            results.append((targets[spec.label][index], sr, alpha, image))
            rows[index][spec.label] = sr.clamp(0, 1)
    if hr:
        for row, truth in zip(rows, truths, strict=True):
            row[HR_COLUMN] = truth
    for out, sr, alpha, image in results:
        write_image(out, sr, alpha=alpha, grayscale=image.grayscale, overwrite=overwrite)
    picture = side_by_side(rows, scale=DEMO_SCALE, crop=crop_size, zoom=crop_zoom, reference=HR_COLUMN if hr else None,
                           crops_only=crops_only)
    write_image(comparison, picture, overwrite=overwrite)
    for spec, folder in zip(models, folders, strict=True):
        print(one_line(f"{spec.label:14s} -> {output / folder}/"))  # noqa: T201
    print(one_line(f"{'comparison':14s} -> {comparison}"))  # noqa: T201
    return 0


def cmd_segment(*, inputs: list[Path], output: Path, seg_model: str | None, lr_inputs: bool, overwrite: bool = False,
                quiet: bool = False) -> int:
    from perceptsr.conditions.seg import segment_files
    from perceptsr.io.images import list_images

    if output.exists() and not output.is_dir():
        raise InputError(f"output directory {output} is an existing file")
    files = list_images(inputs)
    segment_files(files, output, seg_model=seg_model, lr_inputs=lr_inputs, overwrite=overwrite,
                  progress=not quiet and len(files) > 1)
    if not quiet:
        note(f"wrote the segmentation of {len(files)} image(s) to {output}")
    return 0


def cmd_train(*, config: Path | None, output: Path | None, overrides: list[str], resume: Path | None,
              vgg_weights: Path | None, quiet: bool = False) -> int:
    from perceptsr.config import read_yaml
    from perceptsr.engine.checkpoint import has_checkpoint
    from perceptsr.engine.setup import load_train_config, parse_train_config
    from perceptsr.engine.train import train

    if resume is not None:
        run_dir = resume
        stored = run_dir / "config.yaml"
        if not stored.is_file():
            raise InputError(f"{run_dir} is not a run directory (no config.yaml)")
        if output is not None and output != run_dir:
            raise InputError(f"--resume {run_dir} continues that run in place; drop -o {output}")
        settings = load_train_config(config, overrides) if config else parse_train_config(read_yaml(stored), overrides)
        resuming = True  # the trainer starts at step 0 when the folder holds no complete checkpoint
    else:
        if config is None:
            raise InputError("give a config file, or --resume RUN_DIR")
        settings = load_train_config(config, overrides)
        run_dir = output or Path("runs") / config.stem
        if has_checkpoint(run_dir) and os.environ.get("RANK", "0") == "0":  # a folder without one restarts
            raise InputError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or pick -o RUN_DIR")
        resuming = False
    if vgg_weights:
        if not hasattr(settings.model, "vgg_weights"):
            raise InputError(f"method {settings.method} uses no VGG loss")
        settings = replace(settings, model=replace(settings.model, vgg_weights=str(vgg_weights)))
    finished = train(settings, run_dir, resume=resuming, progress=not quiet)
    if int(os.environ.get("RANK", "0")) == 0 and finished:
        note(f"run finished: {run_dir}")
    return 0 if finished else 130


def cmd_export(*, run: Path, output: Path, ema: bool = False, checkpoint: str = "latest",
               overwrite: bool = False, half: bool = False, opset: int | None = None,
               overrides: list[str] | None = None) -> int:
    """`run` is a run folder, a release file or a bundled model's name; the output's extension picks the format
    (.safetensors: a release file; .onnx: see perceptsr.inference.onnx). `overrides` (key=value) change fields of
    the generator's config that leave its weights as they are (e.g. fxsr_msrresnet's texture_gate)."""
    onnx = export_format(output, half=half, opset=opset)
    check_outputs([output], folder=output.parent, overwrite=overwrite)
    if not run.is_dir():
        if ema or checkpoint != "latest":
            raise InputError(f"--ema / --checkpoint choose weights in a run folder; {run} is not one")
        return export_model(str(run), output, half=half, opset=opset, overwrite=overwrite, overrides=overrides)
    from perceptsr.archs import ARCHS
    from perceptsr.config import read_yaml
    from perceptsr.engine.checkpoint import find, load_checkpoint, split_prefix
    from perceptsr.engine.setup import build_generator, config_yaml, parse_train_config
    from perceptsr.zoo.release import save_release

    path = find(run, checkpoint)
    config = parse_train_config(read_yaml(run / "config.yaml"), for_training=False)
    saved = load_checkpoint(path, with_state=False)
    generator = build_generator(config)
    generator.load_state_dict(split_prefix(saved.weights, "ema" if ema else "generator"), strict=True)
    arch = next(name for name, spec in ARCHS.items() if type(generator) is spec.module)
    generator = with_config_overrides(generator, arch, overrides or [])
    step = saved.meta["step"]
    if onnx:
        from perceptsr.engine.checkpoint import WEIGHTS
        from perceptsr.inference.onnx import DEFAULT_OPSET, export_onnx
        from perceptsr.zoo.weights import file_sha256

        export_onnx(generator, output, arch=arch, half=half, opset=opset or DEFAULT_OPSET, overwrite=overwrite,
                    metadata={"source": f"{run.name}/{path.name}/{WEIGHTS}",
                              "source_sha256": file_sha256(path / WEIGHTS), "method": config.method,
                              "step": str(step), "weights": "ema" if ema else "raw"})
        note(f"wrote {output} ({arch} x{generator.scale}, step {step}, ONNX {'fp16' if half else 'fp32'})")
        return 0
    save_release(output, arch=arch, config=generator.config, state_dict=generator.state_dict(),
                 extra={"method": config.method, "step": str(step), "weights": "ema" if ema else "raw",
                        "train_config": config_yaml(config)}, overwrite=overwrite)
    note(f"wrote {output} ({arch} x{generator.scale}, step {step})")
    return 0


def export_format(output: Path, *, half: bool, opset: int | None) -> bool:
    """True for ONNX output, False for a release file; anything else, or ONNX flags without ONNX, is refused."""
    suffix = output.suffix.lower()
    if suffix not in (".safetensors", ".onnx"):
        raise InputError(f"cannot tell the format of {output}: name it .safetensors (a release file) or .onnx")
    if suffix != ".onnx" and (half or opset is not None):
        raise InputError("--half and --opset apply to ONNX output (-o FILE.onnx)")
    return suffix == ".onnx"


def with_config_overrides(model: nn.Module, arch: str, overrides: list[str]) -> nn.Module:
    """`model` rebuilt with `overrides` (key=value, YAML values) applied to its config and its weights loaded
    again; a field that changes the weights' shapes is refused (the weights would not fit)."""
    if not overrides:
        return model
    from perceptsr.config import apply_overrides, from_dict, to_dict
    from perceptsr.zoo.release import build

    config = from_dict(type(model.config), apply_overrides(to_dict(model.config), overrides), arch)
    rebuilt = build(arch, config).eval().requires_grad_(False)
    try:
        rebuilt.load_state_dict(model.state_dict(), strict=True)
    except RuntimeError as error:
        raise InputError(f"--set {' '.join(overrides)}: the {arch} weights do not fit the changed config; --set can "
                         f"only change fields that leave the weights as they are") from error
    if hasattr(model, "release_metadata"):
        rebuilt.release_metadata = model.release_metadata
    return rebuilt


def export_model(source: str, output: Path, *, half: bool = False, opset: int | None = None,
                 overwrite: bool = False, overrides: list[str] | None = None) -> int:
    """Export a release file or a bundled model (not a run folder): as ONNX, or copied as a release file."""
    from perceptsr.archs import ARCHS
    from perceptsr.inference.onnx import DEFAULT_OPSET, OnnxModel, export_onnx
    from perceptsr.zoo.models import bundled_path, load_model
    from perceptsr.zoo.release import save_release
    from perceptsr.zoo.weights import file_sha256

    model = load_model(source)
    if isinstance(model, OnnxModel):
        raise InputError(f"{source} is ONNX already; export takes a run folder, a release file or a bundled model")
    arch = next(name for name, spec in ARCHS.items() if type(model) is spec.module)
    if not any(True for _ in model.parameters()):
        raise InputError(f"{arch} has no weights to export: it is computed, not learned (use --model {arch})")
    model = with_config_overrides(model, arch, overrides or [])
    file = bundled_path(source) or Path(source)
    meta = {k: v for k, v in getattr(model, "release_metadata", {}).items()
            if k not in ("format", "version", "arch", "config", "scale")}
    if export_format(output, half=half, opset=opset):
        meta = {k: v for k, v in meta.items() if k in ("method", "step", "weights")}
        export_onnx(model, output, arch=arch, half=half, opset=opset or DEFAULT_OPSET, overwrite=overwrite,
                    metadata={**meta, "source": file.name, "source_sha256": file_sha256(file)})
        note(f"wrote {output} ({arch} x{model.scale}, ONNX {'fp16' if half else 'fp32'})")
        return 0
    save_release(output, arch=arch, config=model.config, state_dict=model.state_dict(), extra=meta,
                 overwrite=overwrite)
    note(f"wrote {output} ({arch} x{model.scale})")
    return 0


def cmd_plot(*, runs: list[Path], output: Path | None, smooth: int | None = None, overwrite: bool = False) -> int:
    """One PNG of the runs' logged curves (evaluation/curves.py); the output is checked before any log is read."""
    from perceptsr.evaluation.curves import load_run, log_path, plot_runs

    if output is None:
        if len(runs) > 1:
            raise InputError("several runs go into one picture: name it with -o FILE.png")
        folder = runs[0].parent if runs[0].is_file() else runs[0]
        output = folder / "curves.png"
    if output.suffix.lower() != ".png":
        raise InputError(f"cannot write {output}: plot writes PNG (name it .png)")
    for run in runs:
        log_path(run)  # a missing run is named before the output is looked at
    check_outputs([output], folder=output.parent, overwrite=overwrite)
    panels = plot_runs([load_run(run) for run in runs], output, overwrite=overwrite, smooth=smooth)
    note(f"wrote {output} ({', '.join(panels)})")
    return 0


def cmd_convert(*, source: Path, output: Path, kind: str | None = None, overwrite: bool = False) -> int:
    from perceptsr.convert import convert_file

    converted = convert_file(source, output, kind=kind, overwrite=overwrite)
    note(f"wrote {output} ({converted.arch} x{converted.config.scale})")
    return 0


def cmd_models(*, json: bool = False) -> int:
    """The bundled models, and for every release `perceptsr convert` reads: where the authors' README says to get
    it, the files expected and the exact convert command (`--json`: the same as strict JSON, for scripts)."""
    from dataclasses import asdict

    from perceptsr.archs import ARCHS
    from perceptsr.evaluation.strict_json import dumps
    from perceptsr.zoo.models import BUNDLED, RELEASES, bundled_path, default_model

    if json:
        bundled = {name: {"scale": e.scale, "description": e.description, "installed": bundled_path(name) is not None}
                   for name, e in BUNDLED.items()}
        releases = [{**asdict(release), "conversions": [{**asdict(c), "command": c.command}
                                                        for c in release.conversions]} for release in RELEASES]
        print(dumps({"bundled": bundled, "default": default_model(), "releases": releases,  # noqa: T201
                     "architectures": list(ARCHS)}, indent=2))
        return 0
    lines = ["bundled models (perceptsr upscale --model NAME):",
             f"  {'bicubic':14s} MATLAB bicubic, any scale (the baseline)"]
    for name, entry in BUNDLED.items():
        state = "installed" if bundled_path(name) else "not in this install"
        lines.append(f"  {name:14s} x{entry.scale}  {entry.description} [{state}]")
    lines += [f"default: {default_model()}", "",
              "released weights you can convert (download, then run the command; the result is a --model file):"]
    for release in RELEASES:
        lines += ["", f"{release.name}  ({release.repository})"]
        lines += [f"  {'get:' if i == 0 else '':6s}{where}" for i, where in enumerate(release.download)]
        lines += [f"  {'run:' if i == 0 else '':6s}{c.command}" for i, c in enumerate(release.conversions)]
        if release.then:
            lines.append(f"  then: {release.then}")
        if release.note:
            lines.append(f"  note: {release.note}")
    lines += ["", "architectures: " + ", ".join(ARCHS)]
    print("\n".join(lines))  # noqa: T201
    return 0


def cmd_bench(*, models: list[str] | None = None, quick: bool = False, compile: bool = False,
              json: bool = False) -> int:
    from perceptsr.evaluation.strict_json import dumps
    from perceptsr.inference.bench import format_table, run_bench

    result = run_bench(quick=quick, models=models, compile=compile)
    text = dumps(result, indent=2) if json else format_table(result)
    print(text)  # noqa: T201
    return 0
