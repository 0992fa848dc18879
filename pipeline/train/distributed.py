"""Data-parallel training with torchrun: one process per device, gradients averaged by DDP.

`torchrun --nproc-per-node=N -m pipeline train ...` sets RANK / WORLD_SIZE / LOCAL_RANK /
MASTER_ADDR / MASTER_PORT; `init_distributed` reads them (init_method "env://"), picks NCCL on
CUDA and gloo on the CPU, and pins each process to its local GPU. Without WORLD_SIZE > 1 it is a
single process and every helper here is a no-op. Only rank 0 writes checkpoints and logs.
Several machines: torchrun's own rendezvous (--nnodes, --rdzv-backend=c10d, --rdzv-endpoint),
no launcher of ours.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import nn

from ..device import pick_device


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device_preference: str | None = None, timeout_s: float = 600.0) -> DistContext:
    """Join the torchrun process group when WORLD_SIZE > 1; else a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank=local_rank)
    if world <= 1:
        return DistContext(device=device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", timeout=timedelta(seconds=timeout_s))
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local_rank, device=device)


def wrap_ddp(module: nn.Module, ctx: DistContext) -> nn.Module:
    if not ctx.enabled:
        return module
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)   # the model has no buffers


def all_reduce_sum(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """Sum of `t` over all processes (a copy; `t` untouched)."""
    t = t.detach().clone()
    if ctx.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, ctx: DistContext) -> bool:
    """True on every process if `flag` is true on any (a stop request reaches all ranks together)."""
    if not ctx.enabled:
        return bool(flag)
    return bool(all_reduce_sum(torch.tensor([int(flag)], device=ctx.device), ctx).item() > 0)


def max_divergence(module: nn.Module, ctx: DistContext) -> float:
    """Largest |w - w_rank0| over all parameters and ranks (0.0 when DDP kept them in sync)."""
    if not ctx.enabled:
        return 0.0
    flat = torch.cat([p.detach().reshape(-1).float() for p in module.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    diff = (flat - ref).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def cleanup(ctx: DistContext) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
