"""Data-parallel training across processes, as `torchrun` starts them.

`torchrun --nproc_per_node=N -m vae.train ...` starts N copies of the CLI with RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT in their environment. `init_from_env` joins them into one
process group (nccl on CUDA, one GPU per LOCAL_RANK; gloo on the CPU) and returns a `Distributed`
that the trainer asks for its rank and world size. Without torchrun it returns `SINGLE`, and
nothing here is called: a plain `python -m vae.train` runs exactly the single-process code.

The rest are the few collectives the trainer needs, each a no-op for one process:
- `shard`: each rank's part of an epoch's shared permutation, as `DistributedSampler` does it;
- `average_gradients`: the gradient all-reduce for models trained outside DDP (vae/fused.py);
- `all_reduce_sum`, `all_reduce_means`, `any_rank`, `gather_objects`, `broadcast_module`.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .device import pick_device
from .errors import ConfigError


@dataclass(frozen=True)
class Distributed:
    """Where this process stands among the processes training one model."""

    rank: int = 0  # 0 .. world_size - 1, across every node
    local_rank: int = 0  # 0 .. processes on this node - 1: picks the GPU
    world_size: int = 1
    backend: str = ""  # "nccl" or "gloo"; "" for one process

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints progress and writes checkpoints."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


SINGLE = Distributed()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init_from_env(device: str = "auto") -> tuple[Distributed, torch.device]:
    """Join the process group torchrun set up, or SINGLE when not started by torchrun.

    Returns the group and this process's device: `device` as `pick_device` reads it, with
    CUDA narrowed to the GPU numbered LOCAL_RANK (made the current device, so "cuda" means it).
    """
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        return SINGLE, pick_device(device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    picked = pick_device(device)
    if picked.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local_rank} but {torch.cuda.device_count()} GPUs on this node: "
                              f"start at most that many processes per node (--nproc_per_node)")
        picked = torch.device("cuda", local_rank)
        torch.cuda.set_device(picked)
        backend = "nccl"
    elif picked.type == "cpu":
        backend = "gloo"
    else:
        raise ConfigError(f"device={device!r}: torch.distributed has no backend for {picked.type}; "
                          f"use --device cpu or cuda under torchrun")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world,
                                device_id=picked if backend == "nccl" else None)
    return Distributed(rank=rank, local_rank=local_rank, world_size=world, backend=backend), picked


def shutdown(ctx: Distributed) -> None:
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def one_disk_at_a_time(ctx: Distributed, fn):
    """fn() on rank 0, then on the first process of each other node, then on the rest: a data
    set is downloaded and cached once per disk before the other processes read it."""
    result = None
    for turn in (ctx.rank == 0, ctx.local_rank == 0 and ctx.rank != 0, ctx.local_rank != 0):
        if turn:
            result = fn()
        ctx.barrier()
    return result


# --- sharding ------------------------------------------------------------------------------
def shard(order: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank `rank`'s part of an epoch's permutation `order`, which every rank draws alike.

    As `torch.utils.data.DistributedSampler`: pad `order` with its own first entries to a
    multiple of the world size, then take every world_size-th entry from position `rank`. The
    parts are equally long (so every rank runs the same number of steps, which DDP needs),
    disjoint but for the padding, and together cover `order`. Batches of b from each part make
    up the single-process run's batches of b * world_size: part r's j-th entry is position
    j * world_size + r of the padded order.
    """
    if world_size == 1:
        return order
    total = math.ceil(len(order) / world_size) * world_size
    if total > len(order):
        order = order.repeat(math.ceil(total / len(order)))[:total]
    return order[rank:total:world_size]


# --- collectives ---------------------------------------------------------------------------
def _comm_device(ctx: Distributed) -> torch.device:
    """Where a collective's own small tensors live: nccl moves only CUDA tensors."""
    return torch.device("cuda", torch.cuda.current_device()) if ctx.backend == "nccl" else torch.device("cpu")


def all_reduce_sum(ctx: Distributed, tensor: torch.Tensor) -> torch.Tensor:
    """The sum over ranks (a new tensor; the input is left as it was)."""
    if not ctx.enabled:
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def all_reduce_means(ctx: Distributed, means: dict[str, float], count: int) -> dict[str, float]:
    """Means over the union of the ranks' shards, from each rank's means over `count` items.

    Exact for any figure that is a mean of per-item values, or an affine function of such means
    (as -ELBO and bits/dim are of the NLL): sum(count_r * mean_r) / sum(count_r).
    """
    if not ctx.enabled:
        return means
    keys = sorted(means)
    packed = torch.tensor([count] + [means[k] * count for k in keys], dtype=torch.float64, device=_comm_device(ctx))
    total = all_reduce_sum(ctx, packed).tolist()
    return {k: v / total[0] for k, v in zip(keys, total[1:])}


def any_rank(ctx: Distributed, flag: bool) -> bool:
    """True on every rank when it is True on one: ranks agree to stop at the same step (a rank
    that stopped alone would leave the others waiting in their next all-reduce forever)."""
    if not ctx.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_comm_device(ctx))
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def gather_objects(ctx: Distributed, obj) -> list:
    """[obj of rank 0, obj of rank 1, ...] on every rank (small picklable values only)."""
    if not ctx.enabled:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def average_gradients(ctx: Distributed, params: list[nn.Parameter]) -> None:
    """Replace each `.grad` by its mean over the ranks: what DDP's reducer does, for gradients
    set outside autograd (vae/fused.py), which DDP's autograd hooks never see. One flat buffer,
    one all-reduce: the MLPs this serves have a few million parameters at most."""
    if not ctx.enabled:
        return
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat.div_(ctx.world_size)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset:offset + g.numel()].view_as(g)
        offset += g.numel()


@torch.no_grad()
def broadcast_module(ctx: Distributed, module: nn.Module) -> None:
    """Rank 0's parameters and buffers on every rank (DDP does this for the models it wraps;
    the trainer calls it for the fused ones and, before each evaluation, for BatchNorm's
    running statistics, which each rank updates from its own shard)."""
    if not ctx.enabled:
        return
    for t in [*module.parameters(), *module.buffers()]:
        dist.broadcast(t.data, src=0)


__all__ = ["Distributed", "SINGLE", "launched_by_torchrun", "init_from_env", "shutdown", "one_disk_at_a_time",
           "shard", "all_reduce_sum", "all_reduce_means", "any_rank", "gather_objects", "average_gradients",
           "broadcast_module"]
