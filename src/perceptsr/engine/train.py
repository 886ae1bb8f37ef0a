"""The one training loop for every method.

Per iteration: the discriminators step on the detached `sr` (every iteration; plus the WGAN-GP term of each, when
the phase sets `gradient_penalty`; then weight clipping), then the generator steps with the discriminators frozen
(every `n_critic`-th iteration when discriminators train), then the generator's EMA. These mechanics live here
only, for every discriminator of every method: a method says what each discriminator compares
(`Method.critic_inputs`) and returns its loss terms.
Randomness comes from (seed, step) alone: the data sampler, the method's per-step draws and the saved torch RNG,
so `--resume` continues bit-identically on CPU. A non-finite loss stops the run before anything is saved.
"""

from __future__ import annotations

import copy
import math
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.data import default_collate
from tqdm import tqdm

from perceptsr.archs.vgg import VGGFeatureExtractor
from perceptsr.data.datasets import TrainBatchSampler, ValDataset, make_train_loader
from perceptsr.engine import distributed
from perceptsr.engine.checkpoint import (
    find,
    has_checkpoint,
    load_checkpoint,
    mark_best,
    recover,
    save_checkpoint,
    split_prefix,
    write_atomic,
)
from perceptsr.engine.runlock import RunLock
from perceptsr.engine.runlog import RunLogger
from perceptsr.engine.setup import TrainConfig, autocast, build_method, config_yaml, pick_device
from perceptsr.errors import CheckpointError, ConfigError, PerceptsrError, describe_mismatch
from perceptsr.evaluation.evaluate import evaluate_items
from perceptsr.inference.fast import resolve_precision
from perceptsr.losses import gradient_penalty
from perceptsr.methods.base import GENERATOR, Batch, Method, OptimizerConfig, Phase, ScheduleConfig


class TrainingError(PerceptsrError):
    """The run cannot go on (a non-finite loss); the last good checkpoint is kept."""


@dataclass(frozen=True)
class Span:
    """A phase placed on the global iteration axis: steps [start, end)."""

    name: str
    phase: Phase
    start: int
    end: int


def spans(phases: dict[str, Phase]) -> list[Span]:
    out, start = [], 0
    for name, phase in phases.items():
        if phase.iterations > 0:
            out.append(Span(name, phase, start, start + phase.iterations))
            start += phase.iterations
    return out


def learning_rate(base: float, schedule: ScheduleConfig, step: int, total: int) -> float:
    """The learning rate at `step` of a phase of `total` iterations."""
    if schedule.kind == "multistep":
        return base * schedule.gamma ** sum(step >= m for m in schedule.milestones)
    if schedule.kind == "cosine":
        return schedule.eta_min + (base - schedule.eta_min) * 0.5 * (1 + math.cos(math.pi * step / max(total, 1)))
    return base


def make_optimizer(config: OptimizerConfig, method: Method, network: str, phase: str, *,
                   fused: bool = True) -> torch.optim.Optimizer:
    """The phase's optimiser of `network`. `fused`: Adam updates each parameter in one pass (torch's fused kernel,
    the same update) instead of one elementwise op per moment and parameter: on a 2-core CPU 6.6x faster on
    tensors of SRGAN's generator and discriminator sizes; the loop had taken ~17% of the bench's small SRGAN bf16
    step. RMSProp has no fused kernel."""
    groups = [
        {"params": g.params, "lr": config.learning_rate * g.lr_scale, "base_lr": config.learning_rate * g.lr_scale,
         "start": g.start}
        for g in method.parameter_groups(network, phase)
    ]
    if config.kind == "rmsprop":
        return torch.optim.RMSprop(groups, lr=config.learning_rate, eps=config.eps, weight_decay=config.weight_decay)
    return torch.optim.Adam(groups, lr=config.learning_rate, betas=config.betas, eps=config.eps,
                            weight_decay=config.weight_decay, fused=fused or None)


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load a checkpoint's optimizer state (moments, step counts) but keep this run's settings.

    torch's load_state_dict also restores each group's hyperparameters, so a learning rate, betas or weight decay
    changed for a resumed run (`--resume RUN --set ...`) would be silently replaced by the checkpoint's.
    """
    settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, setting in zip(optimizer.param_groups, settings, strict=True):
        group.update(setting)


def seed_for(seed: int, step: int) -> int:
    """The seed of step `step`'s own random draws: a pure function, so a resumed run draws the same."""
    return (seed * 1_000_003 + step) % (2**63 - 1)


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for target, source in zip(ema.parameters(), model.parameters(), strict=True):
        target.lerp_(source, 1.0 - decay)
    for target, source in zip(ema.buffers(), model.buffers(), strict=True):
        target.copy_(source)


def collect_weights(method: Method, ema: nn.Module | None) -> dict[str, Tensor]:
    """Every trained network, the EMA generator and the method's own buffers (curriculum state), by prefix."""
    weights = {}
    for name, net in method.networks().items():
        prefix = name if name == GENERATOR else f"discriminators.{name}"
        weights.update({f"{prefix}.{k}": v for k, v in net.state_dict().items()})
    if ema is not None:
        weights.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    weights.update({f"method.{k}": v for k, v in method.named_buffers(recurse=False)})
    return weights


def restore_weights(method: Method, ema: nn.Module | None, weights: dict[str, Tensor]) -> None:
    prefix, net = "method", None
    try:
        for name, net in method.networks().items():
            prefix = name if name == GENERATOR else f"discriminators.{name}"
            net.load_state_dict(split_prefix(weights, prefix), strict=True)
        if ema is not None:
            prefix, net = "ema", ema
            ema.load_state_dict(split_prefix(weights, "ema"), strict=True)
        prefix, net = "method", None
        for key, value in split_prefix(weights, "method").items():
            getattr(method, key).copy_(value)
    except (RuntimeError, AttributeError) as error:
        reason = describe_mismatch(net, split_prefix(weights, prefix), error) if net is not None else \
            str(error).splitlines()[-1].strip()
        raise CheckpointError(f"checkpoint does not fit this method: {prefix}: {reason}") from None


def init_source(source: str) -> dict[str, Tensor]:
    """Generator weights from a run directory (its latest checkpoint, EMA if present) or a release file.

    Errors name the config key (`init: run runs/x does not exist`): the path came from the config, not the CLI."""
    from perceptsr.zoo.release import read_release

    path = Path(source)
    if not path.exists():
        kind = "release file" if path.suffix else "run"
        raise ConfigError(f"init: {kind} {source} does not exist (train it first, or fix init: in the config)")
    try:
        if path.is_dir():
            weights = load_checkpoint(find(path, "latest"), with_state=False).weights
            return split_prefix(weights, "ema") or split_prefix(weights, GENERATOR)
        return read_release(path).state_dict
    except PerceptsrError as error:
        raise type(error)(f"init: {error}") from None


class Trainer:
    """Holds one run's state; `run()` trains from the current step to the end of the last phase."""

    def __init__(self, config: TrainConfig, run_dir: Path, *, resume: bool = False, progress: bool = True) -> None:
        self.config, self.run_dir, self.progress = config, Path(run_dir), progress
        self.env = distributed.setup("cuda" if pick_device(config.device).type == "cuda" else "cpu")
        self.device = pick_device(config.device, self.env.local_rank)
        # `auto`: bf16 only where it is native (AMX/AVX512-BF16, Ampere+); emulated bf16 is slower than fp32
        self.precision = resolve_precision(config.precision, self.device)
        self.lock = RunLock(self.run_dir)
        if resume and self.env.is_main:
            self.lock.acquire()  # first: a live run is refused at once, and its checkpoints are not pruned under us
            recover(self.run_dir)
        torch.manual_seed(config.seed)
        self.method = build_method(config)
        self.scale = self.method.generator.scale
        show = progress and self.env.is_main
        self.dataset = self.method.train_dataset(config.data, scale=self.scale, progress=show)
        self.val = ValDataset(config.data.val, scale=self.scale, max_images=config.data.val_max_images) \
            if config.data.val else None
        self.spans = spans(self.method.phases)
        self.total = self.spans[-1].end if self.spans else 0
        self.method.on_train_start(self._first_batch(), self.dataset)
        self.ema = copy.deepcopy(self.method.generator).requires_grad_(False)
        self.step, self.best, self.optim_state, self.resumed_phase = 0, None, {}, None
        self.elapsed_before, self.started = 0.0, time.time()  # wall time of earlier sessions of this run, and now
        if resume and has_checkpoint(self.run_dir):  # a run folder without a complete checkpoint starts at 0
            self._resume()
        elif config.init:
            self.method.init_generator(init_source(config.init))
            self.ema.load_state_dict(self.method.generator.state_dict())
        memory = torch.channels_last if config.channels_last else torch.preserve_format
        self.method.to(self.device, memory_format=memory)
        self.ema.to(self.device, memory_format=memory)
        if self.precision != "fp32":  # frozen feature extractors keep their weights in the autocast dtype
            for module in self.method.modules():
                if isinstance(module, VGGFeatureExtractor):
                    module.store_in(torch.bfloat16 if self.precision == "bf16" else torch.float16)
        self.scalers = {role: torch.amp.GradScaler("cuda", enabled=self.precision == "fp16") for role in "dg"}
        self.stop_requested = False

    def _sampler(self, start: int) -> TrainBatchSampler:
        return TrainBatchSampler(len(self.dataset), batch_size=self.config.data.batch_size, seed=self.config.seed,
                                 start_step=start, rank=self.env.rank, world_size=self.env.world_size)

    def _first_batch(self) -> Batch:
        """Step 0's batch, rebuilt identically on resume (it fixes e.g. a virtual-batch-norm reference)."""
        keys = next(iter(self._sampler(0)))
        return Batch.from_dict(default_collate([self.dataset[k] for k in keys]))

    def _resume(self) -> None:
        checkpoint = load_checkpoint(find(self.run_dir, "latest"))
        restore_weights(self.method, self.ema, checkpoint.weights)
        torch.set_rng_state(checkpoint.state["torch_rng"])
        self.step = int(checkpoint.meta["step"])
        self.best = checkpoint.meta.get("best")
        self.optim_state = checkpoint.state.get("optimizers", {})
        self.resumed_phase = checkpoint.meta.get("phase")
        self.elapsed_before = float(checkpoint.meta.get("elapsed_s", 0.0))

    def elapsed(self) -> float:
        """Training wall time summed over every session of this run, so a card can cite the run's whole cost."""
        return self.elapsed_before + time.time() - self.started

    def _enter(self, span: Span) -> dict[str, torch.optim.Optimizer]:
        """Fresh optimisers for a phase (restored when resuming inside it) and only its networks trainable."""
        for name, net in self.method.networks().items():
            net.requires_grad_(name in span.phase.trains)
        optimizers = {}
        for name in span.phase.trains:
            config = span.phase.generator_optimizer if name == GENERATOR else span.phase.discriminator_optimizer
            optimizers[name] = make_optimizer(config, self.method, name, span.name,
                                              fused=self.config.fused_optimizer)
        if self.resumed_phase == span.name and self.optim_state:
            for name, optimizer in optimizers.items():
                restore_optimizer(optimizer, self.optim_state[name])
        self.optim_state, self.resumed_phase = {}, None
        return optimizers

    def _update(self, role: str, terms: dict[str, Tensor], names: list[str],
                optimizers: dict[str, torch.optim.Optimizer], local: int) -> None:
        for key, value in terms.items():
            if not torch.isfinite(value.detach()).all():
                raise TrainingError(
                    f"loss {key} became {value.item()} at iteration {self.step + 1}; the run stopped and its last "
                    f"good checkpoint is kept in {self.run_dir} (lower the learning rate or check the data)"
                )
        scaler = self.scalers[role]
        for name in names:
            optimizers[name].zero_grad(set_to_none=True)
        scaler.scale(sum(terms.values())).backward()
        nets = self.method.networks()
        distributed.average_gradients(self.env, [nets[n] for n in names])
        for name in names:
            optimizer = optimizers[name]
            for group in optimizer.param_groups:
                if group["start"] > local:
                    for param in group["params"]:
                        param.grad = None
            scaler.step(optimizer)
        scaler.update()

    def train_step(self, span: Span, batch: Batch, optimizers: dict[str, torch.optim.Optimizer]) -> dict[str, float]:
        phase, local = span.phase, self.step - span.start
        d_names = [n for n in phase.trains if n != GENERATOR]
        train_g = GENERATOR in phase.trains and (not d_names or local % phase.n_critic == 0)
        logs: dict[str, float] = {}
        with autocast(self.device, self.precision), torch.set_grad_enabled(train_g):
            sr = self.method.make_sr(batch, span.name)
        if d_names:
            fake = None if sr is None else sr.detach()
            with autocast(self.device, self.precision):
                terms = self.method.discriminator_losses(batch, fake, span.name)
                if phase.gradient_penalty > 0:
                    terms.update(self.gradient_penalties(d_names, batch, fake, phase.gradient_penalty))
            self._update("d", terms, d_names, optimizers, local)
            if phase.clip_discriminator is not None:
                with torch.no_grad():
                    for name in d_names:
                        for param in self.method.discriminators[name].parameters():
                            param.clamp_(-phase.clip_discriminator, phase.clip_discriminator)
            logs.update({f"d_{k}": v.item() for k, v in terms.items()})
        if train_g:
            for name in d_names:
                self.method.discriminators[name].requires_grad_(False)
            with autocast(self.device, self.precision):
                terms = self.method.generator_losses(batch, sr, span.name)
            self._update("g", terms, [GENERATOR], optimizers, local)
            for name in d_names:
                self.method.discriminators[name].requires_grad_(True)
            update_ema(self.ema, self.method.generator, phase.ema_decay)
            logs.update({f"g_{k}": v.item() for k, v in terms.items()})
        return logs

    def gradient_penalties(self, names: list[str], batch: Batch, fake: Tensor, weight: float) -> dict[str, Tensor]:
        """λ·WGAN-GP of each trained discriminator on what it compares; logged as d_gradient_penalty (one
        discriminator) or d_gradient_penalty_<name> (several)."""
        terms = {}
        for name in names:
            critic = self.method.critic_inputs(name, batch, fake)
            key = "gradient_penalty" if len(names) == 1 else f"gradient_penalty_{name}"
            terms[key] = weight * gradient_penalty(critic.score, critic.real, critic.fake)
        return terms

    def validate(self) -> dict[str, float]:
        """Mean PSNR/SSIM (Y, crop = scale) on the validation images, through the one measurement path of eval,
        report and sweep; the raw generator runs eagerly on its training device (a fused copy per validation would
        cost more than it saves), and its train/eval flag is restored."""
        return evaluate_items(self.method.generator, self.val.items, scale=self.scale)

    def save(self, span: Span, metrics: dict[str, float] | None) -> None:
        improved = bool(metrics) and (self.best is None or metrics["psnr"] > self.best["psnr"])
        if improved:
            self.best = {**metrics, "step": self.step}
        state = {"torch_rng": torch.get_rng_state(),
                 "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()}}
        meta = {"phase": span.name, "best": self.best, "method": self.config.method, "scale": self.scale,
                "elapsed_s": self.elapsed()}
        path = save_checkpoint(self.run_dir, self.step, collect_weights(self.method, self.ema), state, meta,
                               keep=self.config.keep_checkpoints)
        if improved:
            mark_best(self.run_dir, path)

    def _request_stop(self, signum: int, frame: object) -> None:
        self.stop_requested = True

    def run(self) -> bool:
        """Train to the end of the last phase; False when a stop signal ended the run early (it is resumable)."""
        main = self.env.is_main
        if main:
            self.lock.acquire()  # one writer per run folder, until the end of run()
            recover(self.run_dir)
            write_atomic(self.run_dir / "config.yaml", config_yaml(self.config))
        logger = RunLogger(self.run_dir, enabled=main, start_step=self.step)
        handled = (signal.SIGTERM, signal.SIGINT)
        previous = {s: signal.signal(s, self._request_stop) for s in handled} if main else {}
        loader = iter(make_train_loader(self.dataset, self._sampler(self.step), workers=self.config.data.workers,
                                        device=self.device))
        bar = tqdm(total=self.total, initial=self.step, disable=not (self.progress and main), dynamic_ncols=True,
                   unit="it")
        current, self.optimizers, self.started = None, {}, time.time()
        self.method.train()
        try:
            while self.step < self.total:
                span = next(s for s in self.spans if s.start <= self.step < s.end)
                if span is not current:
                    self.optimizers, current = self._enter(span), span
                local = self.step - span.start
                for name, optimizer in self.optimizers.items():
                    config = span.phase.generator_optimizer if name == GENERATOR else span.phase.discriminator_optimizer
                    for group in optimizer.param_groups:
                        scale = group["base_lr"] / config.learning_rate
                        group["lr"] = scale * learning_rate(config.learning_rate, span.phase.schedule, local,
                                                            span.phase.iterations)
                batch = Batch.from_dict(next(loader)).to(self.device, channels_last=self.config.channels_last)
                rng = torch.Generator().manual_seed(seed_for(self.config.seed, self.step))
                batch = self.method.prepare(batch, span.name, rng)
                logs = self.train_step(span, batch, self.optimizers)
                logs.update(self.method.after_step(self.step, span.name, batch))
                self.step += 1
                bar.update(1)
                bar.set_postfix({"phase": span.name, **{k: f"{v:.4g}" for k, v in logs.items()}}, refresh=False)
                if self.step % self.config.log_every == 0 or self.step == span.end:
                    optimizer = (span.phase.generator_optimizer if GENERATOR in span.phase.trains
                                 else span.phase.discriminator_optimizer)  # the rate of what this phase trains
                    logger.log(self.step, span.name, {**logs, "lr": learning_rate(
                        optimizer.learning_rate, span.phase.schedule, local, span.phase.iterations),
                        "elapsed_s": self.elapsed()})
                metrics = None
                validating = self.val is not None and main and GENERATOR in span.phase.trains  # else nothing changed
                if validating and (self.step % self.config.val_every == 0 or self.step == span.end):
                    metrics = self.validate()
                    logger.log(self.step, span.name, {f"val_{k}": v for k, v in metrics.items()})
                    shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())
                    bar.write(f"step {self.step} ({span.name}): {shown}")
                done = self.step == self.total or self.step == span.end or self.stop_requested
                if main and (self.step % self.config.save_every == 0 or done or metrics):
                    self.save(span, metrics)
                distributed.barrier(self.env)
                if self.stop_requested:
                    bar.write(f"stopped at iteration {self.step}; continue with --resume {self.run_dir}")
                    break
        finally:
            bar.close()
            logger.close()
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            distributed.teardown(self.env)
            self.lock.release()
        return self.step == self.total


def train(config: TrainConfig, run_dir: Path, *, resume: bool = False, progress: bool = True) -> bool:
    """Train `config` into `run_dir` (or continue it); False when stopped early by a signal (resumable)."""
    return Trainer(config, run_dir, resume=resume, progress=progress).run()
