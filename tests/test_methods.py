"""Every entry of the methods table, on a tiny config: each phase trains two iterations, `--resume` continues
bit-identically, and `export` works with no VGG or LPIPS weights anywhere. And for every method with a
discriminator, a phase with `gradient_penalty: 10` trains with the engine's logged penalty or is refused when
the config is read."""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import flat_noisy_images

from perceptsr.engine.checkpoint import find, load_checkpoint
from perceptsr.engine.setup import parse_train_config
from perceptsr.engine.train import Trainer
from perceptsr.errors import ConfigError
from perceptsr.methods import METHODS

pytestmark = pytest.mark.filterwarnings("ignore:RANDOM VGG")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """128×128 noisy images (the VGG-style discriminator's patch) and SFTGAN maps for them."""
    root = tmp_path_factory.mktemp("data")
    (root / "hr").mkdir()
    flat_noisy_images(root / "hr", count=4, size=(128, 128), seed=0, base=200, noise=55)
    (root / "seg").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        np.save(root / "seg" / f"img{i}_segprob.npy", rng.dirichlet(np.ones(8), (128, 128)).transpose(2, 0, 1)
                .astype(np.float32))
    from safetensors.torch import save_file

    from perceptsr.archs.natsr import NMD, NMDConfig

    save_file(NMD(NMDConfig(num_feat=4)).state_dict(), str(root / "nmd.safetensors"))  # fxsr_nat's frozen NMD
    return root


def two(*trains: str) -> dict:
    return {"iterations": 2, "trains": list(trains)}


G = "generator"


def srgan(root: Path) -> tuple[dict, int]:
    return {"generator": {"scale": 4, "num_feat": 8, "num_block": 1}, "arch": "msrresnet",
            "discriminator": {"num_feat": 4, "input_size": 32, "dense_features": 8, "norm": "none"},
            "content_layers": {"relu1_2": 1.0}, "phases": {"pretrain": two(G), "gan": two(G, "image")}}, 32


def srfeat(root: Path) -> tuple[dict, int]:
    tiny_d = {"num_feat": 2, "head": "conv", "dense_features": 4}
    return {"generator": {"scale": 4, "num_feat": 8, "num_block": 2}, "image_discriminator": tiny_d,
            "feature_discriminator": tiny_d, "patch_size": 16,
            "phases": {"pretrain": two(G), "gan": two(G, "image", "feature")}}, 16


def natsr(root: Path) -> tuple[dict, int]:
    return {"generator": {"scale": 4, "num_feat": 8, "num_block": 4, "num_layer": 2}, "nmd": {"num_feat": 4},
            "discriminator": {"num_feat": 2}, "curriculum_every": 2, "curriculum_window": 2,
            "curriculum_val_size": 4, "phases": {"nmd": two("nmd"), "pretrain": two(G), "gan": two(G, "image")}}, 32


def esrgan(root: Path) -> tuple[dict, int]:
    return {"generator": {"scale": 4, "num_feat": 8, "num_block": 1, "num_grow_ch": 4},
            "discriminator": {"num_feat": 4, "input_size": 128}, "perceptual_layers": {"conv1_1": 1.0},
            "phases": {"pretrain": {**two(G), "ema_decay": 0.9}, "gan": {**two(G, "image"), "ema_decay": 0.9}}}, 128


def fxsr(root: Path) -> tuple[dict, int]:
    return {"generator": {"scale": 4, "num_feat": 8, "num_block": 1, "num_grow_ch": 4, "cond_feat": 4},
            "discriminator": {"num_feat": 4, "input_size": 128}, "perceptual_layers": ["conv1_1"],
            "t_sampling": "sample", "phases": {"gan": two(G, "image")}}, 128


def fxsr_nat(root: Path) -> tuple[dict, int]:
    return {"generator": {"scale": 4, "num_feat": 8, "num_block": 2, "cond_feat": 4}, "nmd": {"num_feat": 4},
            "discriminator": {"num_feat": 2}, "nmd_init": str(root / "nmd.safetensors"),
            "phases": {"gan": two(G, "image")}}, 32


def sftgan(root: Path) -> tuple[dict, int]:
    return {"generator": {"scale": 4, "num_feat": 8, "num_block": 1, "cond_feat": 4, "cond_hidden": 8},
            "discriminator": {"num_feat": 4, "input_size": 32, "hidden": 8}, "seg_dir": str(root / "seg"),
            "content_layers": {"conv1_2": 1.0}, "other_start": 1, "background_every": 3,
            "phases": {"gan": two(G, "image")}}, 32


TINY: dict[str, Callable[[Path], tuple[dict, int]]] = {
    "srgan": srgan, "srfeat": srfeat, "natsr": natsr, "esrgan": esrgan, "fxsr": fxsr, "sftgan": sftgan,
    "fxsr_nat": fxsr_nat}


def tiny_config(method: str, root: Path, **phase_settings: object) -> dict:
    """The tiny run config of `method` (batch 4, one image set); `phase_settings` go into every adversarial phase."""
    model, patch = TINY[method](root)
    if "allow_random_vgg" in {field.name for field in dataclasses.fields(METHODS[method].config)}:
        model["allow_random_vgg"] = True  # the only way to train a perceptual loss on random weights
    for phase in model["phases"].values():
        if any(net != G for net in phase["trains"]):
            phase.update(phase_settings)
    return {"method": method, "model": model, "seed": 3,
            "data": {"train": [str(root / "hr")], "patch_size": patch, "batch_size": 4, "workers": 0},
            "save_every": 1, "log_every": 1, "keep_checkpoints": 20}


def test_the_table_covers_every_method() -> None:
    assert set(TINY) == set(METHODS)


def weights(run: Path, step: str = "latest") -> dict[str, torch.Tensor]:
    return load_checkpoint(find(run, step), with_state=False).weights


def logs(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def no_loss_networks(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No VGG or LPIPS weights anywhere: variables unset, an empty hub cache, and building a VGG fails."""
    from perceptsr.archs import vgg

    for name in ("PERCEPTSR_VGG19_WEIGHTS", "PERCEPTSR_LPIPS_DIR"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "hub").mkdir()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a VGG was built for export")

    monkeypatch.setattr(vgg.VGGFeatureExtractor, "__init__", refuse)


@pytest.mark.parametrize("method", sorted(TINY))
def test_trains_every_phase_resumes_and_exports(method: str, data: Path, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    whole = tiny_config(method, data)
    Trainer(parse_train_config(whole), tmp_path / "whole", progress=False).run()
    records = logs(tmp_path / "whole")
    phases = [name for name in whole["model"]["phases"]]
    assert [r["phase"] for r in records] == [p for p in phases for _ in range(2)]
    assert all(np.isfinite(v) for r in records for k, v in r.items() if k.startswith(("g_", "d_")))

    cut = copy.deepcopy(whole)
    cut["model"]["phases"][phases[-1]]["iterations"] = 1
    Trainer(parse_train_config(cut), tmp_path / "cut", progress=False).run()
    Trainer(parse_train_config(whole), tmp_path / "cut", resume=True, progress=False).run()
    resumed, reference = weights(tmp_path / "cut"), weights(tmp_path / "whole")
    assert resumed.keys() == reference.keys()
    for key, value in reference.items():
        assert torch.equal(resumed[key], value), key

    from perceptsr import load_model
    from perceptsr.cli.main import main

    (tmp_path / "whole" / "config.yaml").write_text((tmp_path / "whole" / "config.yaml").read_text()
                                                     .replace("allow_random_vgg: true", "allow_random_vgg: false"))
    no_loss_networks(monkeypatch, tmp_path)
    out = tmp_path / "model.safetensors"
    assert main(["export", str(tmp_path / "whole"), "-o", str(out), "--ema"]) == 0
    model = load_model(out)
    assert all(torch.equal(v, reference[f"ema.{k}"]) for k, v in model.state_dict().items())


# Discriminators that are no real-vs-fake critic, by method: a gradient penalty on a phase training them is refused.
REFUSED = {"natsr": "nmd"}


@pytest.mark.parametrize("method", sorted(TINY))
def test_gradient_penalty_is_applied_or_refused(method: str, data: Path, tmp_path: Path) -> None:
    config = tiny_config(method, data, gradient_penalty=10.0)
    phases = config["model"]["phases"]
    if method in REFUSED:
        with pytest.raises(ConfigError, match=rf"model\.phases\.{REFUSED[method]}\.gradient_penalty"):
            parse_train_config(config)
        phases[REFUSED[method]]["gradient_penalty"] = 0.0
    for phase in phases.values():
        if phase["trains"] == [G]:
            phase["iterations"] = 0  # only the adversarial phases (and NatSR's NMD, which its gan phase needs)
    Trainer(parse_train_config(config), tmp_path / "run", progress=False).run()
    critics = [net for phase in phases.values() if phase.get("gradient_penalty") for net in phase["trains"] if net != G]
    keys = ["d_gradient_penalty"] if len(critics) == 1 else [f"d_gradient_penalty_{net}" for net in critics]
    penalised = [r for r in logs(tmp_path / "run") if any(k in r for k in keys)]
    assert len(penalised) == 2
    assert all(np.isfinite(r[k]) and r[k] > 0 for r in penalised for k in keys)


def test_a_mechanic_without_its_network_is_refused(data: Path) -> None:
    config = tiny_config("srgan", data)
    config["model"]["phases"]["pretrain"]["gradient_penalty"] = 10.0
    with pytest.raises(ConfigError, match=r"model\.phases\.pretrain\.gradient_penalty: .*no discriminator"):
        parse_train_config(config)
    config = tiny_config("natsr", data)
    config["model"]["phases"]["nmd"]["ema_decay"] = 0.9
    with pytest.raises(ConfigError, match=r"model\.phases\.nmd\.ema_decay"):
        parse_train_config(config)


@pytest.mark.parametrize(("key", "value", "named"), [
    ("save_every", 0, "config.save_every"), ("log_every", -1, "config.log_every"),
    ("val_every", 0, "config.val_every"), ("seed", -1, "config.seed"), ("seed", 2**63, "config.seed"),
    ("model.phases.gan.generator_optimizer.learning_rate", float("inf"), "learning_rate"),
    ("model.phases.gan.discriminator_optimizer.learning_rate", 0.0, "learning_rate"),
    ("model.phases.gan.iterations", -1, "model.phases.gan.iterations"),
    ("model.phases.gan.gradient_penalty", float("nan"), "model.phases.gan.gradient_penalty"),
])
def test_values_are_range_checked_when_read(data: Path, key: str, value: object, named: str) -> None:
    config = tiny_config("srgan", data)
    node = config
    *parents, last = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_train_config(config)


@pytest.mark.parametrize("method", ["srgan", "esrgan", "fxsr", "sftgan"])
def test_the_discriminator_patch_size_binds_only_runs_that_train_it(method: str, data: Path, tmp_path: Path) -> None:
    config = tiny_config(method, data)
    config["data"]["patch_size"] = 64  # none of the tiny dense-head discriminators takes 64x64
    with pytest.raises(ConfigError, match="discriminator takes"):
        Trainer(parse_train_config(config), tmp_path / "gan", progress=False)
    for phase in config["model"]["phases"].values():
        if "image" in phase["trains"]:
            phase["iterations"] = 0  # e.g. a PSNR-only run of srresnet on larger patches
    Trainer(parse_train_config(config), tmp_path / "pretrain", progress=False)


def test_fp16_on_a_cpu_is_refused_when_read(data: Path) -> None:
    with pytest.raises(ConfigError, match="precision"):
        parse_train_config({**tiny_config("srgan", data), "device": "cpu", "precision": "fp16"})


@pytest.mark.parametrize(("native", "expected"), [(None, "fp32"), ("bf16", "bf16")])
def test_auto_precision_is_bf16_only_where_native(data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                 native: str | None, expected: str) -> None:
    """Emulated bf16 (a CPU without AVX512-BF16/AMX) trained the NMD ~13x slower than fp32: `auto` must not pick it."""
    from perceptsr.inference import fast

    monkeypatch.setattr(fast, "native_reduced_precision", lambda device: native)
    config = {**tiny_config("srgan", data), "device": "cpu", "precision": "auto"}
    trainer = Trainer(parse_train_config(config), tmp_path / "run", progress=False)
    assert trainer.precision == expected


CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_every_shipped_config_parses_into_typed_dataclasses(path: Path) -> None:
    import dataclasses

    from perceptsr.engine.setup import load_train_config

    config = load_train_config(path)
    for name in ("generator", "discriminator", "image_discriminator", "feature_discriminator", "nmd"):
        value = getattr(config.model, name, None)
        assert value is None or dataclasses.is_dataclass(value), name


def test_a_layer_mapping_replaces_the_defaults_and_arch_picks_the_generator_type() -> None:
    from perceptsr.archs.srresnet import MSRResNetConfig

    config = parse_train_config({"method": "srgan", "model": {"arch": "msrresnet", "generator": {"num_feat": 8},
                                                              "content_layers": {"relu1_2": 1.0}}})
    assert config.model.content_layers == {"relu1_2": 1.0}  # not the default relu5_4 as well
    assert config.model.generator == MSRResNetConfig(num_feat=8)
    with pytest.raises(ConfigError, match=r"model\.generator\.batch_norm"):
        parse_train_config({"method": "srgan", "model": {"arch": "msrresnet", "generator": {"batch_norm": True}}})
