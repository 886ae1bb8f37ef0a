"""Data-parallel training under `torchrun`: NCCL on CUDA, gloo on CPU.

Each rank computes the loss on its slice of the global batch; gradients are averaged across ranks with one
coalesced all-reduce per network before every optimiser step. That is what DistributedDataParallel does, made
explicit, because GAN steps run a discriminator several times (real, fake, penalty) per backward, which DDP's
reducer refuses. Rank 0 alone writes logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device_kind: str) -> Dist:
    """Join the process group torchrun describes in the environment; a single process needs nothing."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device_kind == "cuda" else "gloo"
        if device_kind == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank)


def teardown(state: Dist) -> None:
    if state.enabled and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(state: Dist, modules: list[nn.Module]) -> None:
    """Average the gradients of `modules` over all ranks (parameters without a gradient are skipped)."""
    if not state.enabled:
        return
    grads = [p.grad for m in modules for p in m.parameters() if p.grad is not None]
    if not grads:
        return
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= state.world_size
    for grad, reduced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
        grad.copy_(reduced)


def average_scalar(state: Dist, value: torch.Tensor) -> torch.Tensor:
    """Mean of a scalar over ranks (for logging)."""
    if not state.enabled:
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / state.world_size


def barrier(state: Dist) -> None:
    if state.enabled:
        dist.barrier()
