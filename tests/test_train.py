"""The training engine on tiny configs: phases, adversarial kinds, WGAN mechanics, resume, DDP, export, NaN."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import ENV, ROOT, flat_noisy_images
from conftest import run_cli as cli
from conftest import tiny_srgan as tiny
from tolerance import assert_paths_close

from perceptsr.engine.checkpoint import find, load_checkpoint, split_prefix
from perceptsr.engine.setup import build_method, load_train_config, parse_train_config
from perceptsr.engine.train import (
    Trainer,
    TrainingError,
    learning_rate,
    make_optimizer,
    restore_optimizer,
)
from perceptsr.errors import ConfigError
from perceptsr.methods.base import OptimizerConfig, ScheduleConfig


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return flat_noisy_images(tmp_path_factory.mktemp("hr"), count=6, size=(40, 48), seed=0, base=200, noise=55)


def fresh_weights(config: dict) -> dict[str, torch.Tensor]:
    parsed = parse_train_config(config)
    torch.manual_seed(parsed.seed)
    method = build_method(parsed)
    return {k: v.clone() for k, v in method.state_dict().items()}


def final_weights(run: Path, prefix: str) -> dict[str, torch.Tensor]:
    return split_prefix(load_checkpoint(find(run, "latest"), with_state=False).weights, prefix)


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in after if after[k].is_floating_point())


def run(config: dict, out: Path) -> Path:
    Trainer(parse_train_config(config), out, progress=False).run()
    return out


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_pretrain_moves_only_the_generator(hr_folder: Path, tmp_path: Path) -> None:
    config = tiny(hr_folder, pretrain=3, gan=0)
    before = fresh_weights(config)
    out = run(config, tmp_path / "run")
    assert changed(split_prefix(before, "generator"), final_weights(out, "generator"))
    assert not changed(split_prefix(before, "discriminators.image"), final_weights(out, "discriminators.image"))
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logs] == [1, 2, 3] and all(np.isfinite(r["g_mse"]) for r in logs)


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
@pytest.mark.parametrize("kind", ["vanilla", "lsgan", "hinge", "ragan", "wgan"])
def test_every_adversarial_kind_trains_both_networks(hr_folder: Path, tmp_path: Path, kind: str) -> None:
    config = tiny(hr_folder, pretrain=0, gan=2, adversarial=kind, real_label=0.9 if kind == "vanilla" else 1.0)
    before = fresh_weights(config)
    out = run(config, tmp_path / "run")
    assert changed(split_prefix(before, "generator"), final_weights(out, "generator"))
    assert changed(split_prefix(before, "discriminators.image"), final_weights(out, "discriminators.image"))
    last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    terms = {k: v for k, v in last.items() if k.startswith(("g_", "d_"))}
    assert {"g_content", "g_adversarial", "d_adversarial"} <= set(terms)
    assert all(np.isfinite(v) for v in terms.values())


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_wgan_clips_the_critic_and_steps_generator_every_n_critic(hr_folder: Path, tmp_path: Path) -> None:
    gan = {"iterations": 4, "trains": ["generator", "image"], "n_critic": 2, "clip_discriminator": 0.01,
           "generator_optimizer": {"kind": "rmsprop", "learning_rate": 5e-5},
           "discriminator_optimizer": {"kind": "rmsprop", "learning_rate": 5e-5}}
    config = tiny(hr_folder, pretrain=0, adversarial="wgan", phases={"pretrain": {"iterations": 0}, "gan": gan})
    out = run(config, tmp_path / "run")
    critic = final_weights(out, "discriminators.image")
    params = [v for k, v in critic.items() if not k.split(".")[-1].startswith(("running_", "num_batches"))]
    assert max(p.abs().max().item() for p in params) <= 0.01 + 1e-7
    logs = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [("g_adversarial" in r) for r in logs] == [True, False, True, False]


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_wgan_gp_adds_a_penalty_term(hr_folder: Path, tmp_path: Path) -> None:
    gan = {"iterations": 2, "trains": ["generator", "image"], "gradient_penalty": 10.0}
    config = tiny(hr_folder, pretrain=0, adversarial="wgan", discriminator={"norm": "none"},
                  phases={"pretrain": {"iterations": 0}, "gan": gan})
    out = run(config, tmp_path / "run")
    last = json.loads((out / "log.jsonl").read_text().splitlines()[-1])
    assert last["d_gradient_penalty"] > 0


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_virtual_batch_norm_reference_is_fixed_and_saved(hr_folder: Path, tmp_path: Path) -> None:
    config = tiny(hr_folder, pretrain=0, gan=2, discriminator={"norm": "virtual"})
    out = run(config, tmp_path / "run")
    critic = final_weights(out, "discriminators.image")
    reference = [v for k, v in critic.items() if "reference" in k]
    assert reference and reference[0].shape[0] == 4  # the first batch's HR patches


def test_schedules() -> None:
    multistep = ScheduleConfig(kind="multistep", milestones=(2, 4), gamma=0.5)
    assert [learning_rate(1.0, multistep, s, 6) for s in range(6)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    cosine = ScheduleConfig(kind="cosine", eta_min=0.0)
    assert learning_rate(1.0, cosine, 0, 10) == 1.0 and learning_rate(1.0, cosine, 5, 10) == pytest.approx(0.5)


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_fused_adam_makes_the_loop_update_and_takes_its_state(hr_folder: Path) -> None:
    """The engine's fused Adam (fused_optimizer, the default) against torch's per-parameter loop on the same
    gradients: the same weights after 3 steps, and again after 3 more from each other's saved state (a run resumed
    across the switch). Each step rounds every weight (float32, at its size); Adam's steps move them by ~lr each."""
    config = parse_train_config(tiny(hr_folder))
    torch.manual_seed(0)
    method = build_method(config)
    optimizer_config = OptimizerConfig(learning_rate=1e-3)
    nets = {fused: build_method(config) for fused in (True, False)}
    for net in nets.values():
        net.generator.load_state_dict(method.generator.state_dict())
    optimizers = {fused: make_optimizer(optimizer_config, net, "generator", "pretrain", fused=fused)
                  for fused, net in nets.items()}
    assert optimizers[True].defaults["fused"] and not optimizers[False].defaults["fused"]
    gradients = torch.Generator().manual_seed(1)

    def steps(count: int) -> None:
        for _ in range(count):
            grads = [torch.randn(p.shape, generator=gradients) for p in method.generator.parameters()]
            for fused, net in nets.items():
                for param, grad in zip(net.generator.parameters(), grads, strict=True):
                    param.grad = grad.clone()
                optimizers[fused].step()

    @torch.no_grad()
    def compare(count: int) -> None:
        peak = max(float(p.abs().max()) for p in method.generator.parameters())
        tolerance = 8 * torch.finfo(torch.float32).eps * count * max(peak, 1.0)
        moved = 0.0
        for start, one, two in zip(method.generator.parameters(), nets[True].generator.parameters(),
                                   nets[False].generator.parameters(), strict=True):
            assert float((one - two).abs().max()) <= tolerance
            moved = max(moved, float((one - start).abs().max()))
        assert moved > 100 * tolerance  # the steps moved the weights far beyond the rounding allowed

    steps(3)
    compare(3)
    states = {fused: optimizer.state_dict() for fused, optimizer in optimizers.items()}
    for fused, optimizer in optimizers.items():
        restore_optimizer(optimizer, states[not fused])
    steps(3)
    compare(6)


def test_unknown_config_key_names_its_path(hr_folder: Path) -> None:
    config = tiny(hr_folder)
    config["model"]["phases"]["gan"]["n_critc"] = 3
    with pytest.raises(ConfigError, match=r"model\.phases\.gan\.n_critc"):
        parse_train_config(config)
    with pytest.raises(ConfigError, match=r"data\.patch"):
        parse_train_config(tiny(hr_folder), ["data.patch=3"])


@pytest.mark.parametrize("path", sorted((ROOT / "configs").rglob("*.yaml")), ids=lambda p: p.name)
def test_config_files_round_trip(path: Path) -> None:
    from perceptsr.config import to_dict

    config = load_train_config(path)
    assert parse_train_config(to_dict(config)) == config


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_nan_loss_stops_and_keeps_last_good_checkpoint(hr_folder: Path, tmp_path: Path) -> None:
    config = tiny(hr_folder, pretrain=4, gan=0)
    out = run(config, tmp_path / "run")
    good = final_weights(out, "generator")
    # the rate jumps to 1e38 at step 4 (an infinite rate is refused when the config is read)
    exploding = {"iterations": 8, "schedule": {"kind": "multistep", "milestones": [4], "gamma": 1e42}}
    phases = {"pretrain": exploding, "gan": {"iterations": 0}}
    resumed = parse_train_config({**config, "model": {**config["model"], "phases": phases}})
    with pytest.raises(TrainingError, match="became (nan|inf)"):
        Trainer(resumed, out, resume=True, progress=False).run()
    assert load_checkpoint(find(out, "latest")).meta["step"] == 4
    assert all(torch.equal(good[k], v) for k, v in final_weights(out, "generator").items())



@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_a_resumed_run_takes_the_learning_rate_it_is_given(hr_folder: Path, tmp_path: Path) -> None:
    """`--resume --set ...learning_rate=` applies: the checkpoint's optimizer moments come back, not its settings.
    Resumed at rate 1e-12, Adam's two steps move no weight by more than ~2e-12 (the old rate would move them ~1e-4)."""
    config = tiny(hr_folder, pretrain=3, gan=0)
    out = run(config, tmp_path / "run")
    before = final_weights(out, "generator")
    phases = {"pretrain": {"iterations": 5, "generator_optimizer": {"learning_rate": 1e-12}}, "gan": {"iterations": 0}}
    resumed = parse_train_config({**config, "model": {**config["model"], "phases": phases}})
    Trainer(resumed, out, resume=True, progress=False).run()
    after = final_weights(out, "generator")
    assert load_checkpoint(find(out, "latest")).meta["step"] == 5
    assert max(float((after[k] - before[k]).abs().max()) for k in before) < 1e-9


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_wall_time_adds_up_over_resumed_sessions(hr_folder: Path, tmp_path: Path) -> None:
    """A resumed session's elapsed_s (log rows and checkpoint) starts from the checkpoint's, not from zero: a model
    card cites the whole run's wall time. The first session's clock is set back an hour so a reset would show."""
    config = tiny(hr_folder, pretrain=2, gan=0)
    out = tmp_path / "run"
    trainer = Trainer(parse_train_config(config), out, progress=False)
    trainer.elapsed_before = 3600.0
    trainer.run()
    assert load_checkpoint(find(out, "latest")).meta["elapsed_s"] >= 3600.0
    phases = {"pretrain": {"iterations": 4}, "gan": {"iterations": 0}}
    Trainer(parse_train_config({**config, "model": {**config["model"], "phases": phases}}), out, resume=True,
            progress=False).run()
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    resumed = [r["elapsed_s"] for r in rows if "elapsed_s" in r and r["step"] > 2]
    assert resumed and min(resumed) >= 3600.0
    assert load_checkpoint(find(out, "latest")).meta["elapsed_s"] >= max(resumed)


KILL_AFTER_CHECKPOINT = """
import os, signal, sys
from perceptsr.cli.main import main
from perceptsr.engine import train
save = train.save_checkpoint
def save_then_die(run_dir, step, *args, **kwargs):
    path = save(run_dir, step, *args, **kwargs)
    if step == int(os.environ["KILL_AT_STEP"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return path
train.save_checkpoint = save_then_die
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_resume_after_kill_is_bit_identical(hr_folder: Path, tmp_path: Path) -> None:
    config = tiny(hr_folder, pretrain=20, gan=20)
    config["model"]["phases"]["pretrain"]["schedule"] = {"kind": "cosine"}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli("train", str(path), "-o", str(tmp_path / "whole"), "--quiet").returncode == 0

    # killed by itself right after writing checkpoint 2 (deterministic: no race with a watching parent)
    killed = subprocess.run([sys.executable, "-c", KILL_AFTER_CHECKPOINT, "train", str(path), "-o",
                             str(tmp_path / "cut"), "--quiet"], env={**ENV, "KILL_AT_STEP": "2"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert load_checkpoint(find(tmp_path / "cut", "latest")).meta["step"] == 2
    result = cli("train", "--resume", str(tmp_path / "cut"), "--quiet")
    assert result.returncode == 0, result.stderr
    for prefix in ("generator", "discriminators.image", "ema"):
        whole, cut = final_weights(tmp_path / "whole", prefix), final_weights(tmp_path / "cut", prefix)
        assert whole.keys() == cut.keys()
        assert all(torch.equal(whole[k], cut[k]) for k in whole), prefix


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_two_gloo_processes_match_one(hr_folder: Path, tmp_path: Path) -> None:
    # BN-free nets, so a rank's half batch gives the same per-example gradients as the full batch; the all-reduced
    # mean of the two halves equals the full-batch mean up to float summation order. What remains is each of the 6
    # steps rounding every weight (float32, at the scale of the net's largest weight): far below Adam's steps (~3e-4
    # in all), which a wrong all-reduce would change by their own size.
    config = tiny(hr_folder, pretrain=3, gan=3, discriminator={"norm": "none"})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    single = cli("train", str(path), "-o", str(tmp_path / "one"), "--quiet")
    assert single.returncode == 0, single.stderr
    double = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "perceptsr",
         "train", str(path), "-o", str(tmp_path / "two"), "--quiet"],
        env=ENV, capture_output=True, text=True, timeout=300,
    )
    assert double.returncode == 0, double.stderr[-2000:]
    start = fresh_weights(config)
    for prefix in ("generator", "discriminators.image"):
        one, two = final_weights(tmp_path / "one", prefix), final_weights(tmp_path / "two", prefix)
        peak = max(float(v.abs().max()) for v in one.values() if v.is_floating_point())
        for key in one:
            tolerance = assert_paths_close(two[key], one[key], depth=6, min_scale=peak, what=f"{prefix}.{key}")
        moved = max(float((v - start[f"{prefix}.{k}"]).abs().max()) for k, v in one.items() if v.is_floating_point())
        assert moved > 100 * tolerance  # training moved the weights far beyond the tolerance
    assert changed(start, {f"generator.{k}": v for k, v in final_weights(tmp_path / "two", "generator").items()})


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_export_then_load_gives_identical_output(hr_folder: Path, tmp_path: Path) -> None:
    from perceptsr import load_model

    config = tiny(hr_folder, pretrain=2, gan=0)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    assert cli("train", str(path), "-o", str(tmp_path / "run"), "--quiet").returncode == 0
    for flag in ([], ["--ema"]):
        out = tmp_path / f"model{len(flag)}.safetensors"
        result = cli("export", str(tmp_path / "run"), "-o", str(out), *flag)
        assert result.returncode == 0, result.stderr
        model = load_model(out)
        parsed = parse_train_config(config)
        reference = build_method(parsed).generator
        reference.load_state_dict(final_weights(tmp_path / "run", "ema" if flag else "generator"))
        lr = torch.rand(1, 3, 9, 11)
        with torch.no_grad():
            assert torch.equal(model(lr), reference.eval()(lr))
    again = cli("export", str(tmp_path / "run"), "-o", str(tmp_path / "model0.safetensors"))
    assert again.returncode == 2 and "exists" in again.stderr and again.stderr.count("\n") == 1


def test_train_refuses_existing_run_and_bad_config(hr_folder: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: srgan\nmodel: {arch: msrresnet, generatr: {}}\n")
    result = cli("train", str(bad), "-o", str(tmp_path / "x"))
    assert result.returncode == 2 and "model.generatr" in result.stderr and "Traceback" not in result.stderr
    result = cli("train", str(tmp_path / "missing.yaml"))
    assert result.returncode == 2 and "cannot read config" in result.stderr
