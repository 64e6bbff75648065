"""Training under torchrun: the process group, the samplers that shard a split, and the few collectives the
loop needs. A plain `python -m rdfer.train` is world size 1 and never touches torch.distributed.

Sharding. Training: every epoch one permutation of the split (a pure function of seed and epoch, the same on
every rank) is dealt out round-robin, and each rank keeps an equal share so all ranks take the same number of
steps. Evaluation: rank r takes clips r, r + W, r + 2W, ...: every clip exactly once, no padding, so the
confusion matrices summed over ranks equal a single process's.

Agreement memory: all-gathered. Every rank holds the whole memory; after each step the rows that each rank
updated are gathered to all ranks. A sample's owner changes every epoch (the permutation), so an owner-only
memory would have to move rows between ranks anyway; the gathered rows are 4 numbers per sample in the batch.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from rdfer.data.sampling import epoch_order
from rdfer.runtime import pick_device


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def from_env() -> World:
    """This process's place, from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK)."""
    return World(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init(device_name: str) -> tuple[World, torch.device]:
    """World from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); the process group where size > 1
    (NCCL on CUDA, gloo on the CPU); the device of this rank."""
    world = from_env()
    device = pick_device(device_name)
    if device.type == "cuda" and world.distributed:
        device = torch.device("cuda", world.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world.distributed and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def shutdown(world: World) -> None:
    """Destroy the process group; the caller has dropped its DDP model first. A DDP reducer freed after
    this holds the last reference to the group, and its destructor would join gloo's threads while holding
    the GIL that a thread freeing a finished collective's tensors waits for: the process never exits."""
    if world.distributed and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


class ShardedEpochSampler(Sampler[int]):
    """This rank's equal share of the epoch's permutation of the split."""

    def __init__(self, num_samples: int, seed: int, world: World, epoch: int = 0):
        self.num_samples, self.seed, self.world, self.epoch = num_samples, seed, world, epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        order = epoch_order(self.num_samples, self.seed, self.epoch)
        return iter(order[self.world.rank :: self.world.size][: len(self)].tolist())

    def __len__(self) -> int:
        return self.num_samples // self.world.size


def eval_shard(num_samples: int, world: World) -> list[int]:
    return list(range(world.rank, num_samples, world.size))


def all_reduce_sum(t: torch.Tensor, world: World) -> torch.Tensor:
    if world.distributed:
        dist.all_reduce(t)
    return t


def all_max(value: int, world: World, device: torch.device) -> int:
    """The largest value over the ranks (so a step is skipped everywhere or nowhere)."""
    if not world.distributed:
        return value
    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_rows(ids: torch.Tensor, rows: torch.Tensor, capacity: int, world: World):
    """Gather (ids [n], rows [n, k]) from every rank, n <= capacity; returns the ids and rows of all ranks
    (padding removed)."""
    if not world.distributed:
        return ids, rows
    pad = capacity - ids.shape[0]
    ids_p = torch.cat([ids, ids.new_full((pad,), -1)])
    rows_p = torch.cat([rows, rows.new_zeros((pad, rows.shape[1]))])
    all_ids = [torch.empty_like(ids_p) for _ in range(world.size)]
    all_rows = [torch.empty_like(rows_p) for _ in range(world.size)]
    dist.all_gather(all_ids, ids_p)
    dist.all_gather(all_rows, rows_p)
    ids_all, rows_all = torch.cat(all_ids), torch.cat(all_rows)
    keep = ids_all >= 0
    return ids_all[keep], rows_all[keep]


def broadcast_buffers(module: torch.nn.Module, world: World) -> None:
    """Rank 0's BatchNorm statistics everywhere, so every rank evaluates the model rank 0 checkpoints."""
    if world.distributed:
        for b in module.buffers():
            dist.broadcast(b, 0)


def gather_objects(items: list, world: World) -> list:
    if not world.distributed:
        return items
    out: list = [None] * world.size
    dist.all_gather_object(out, items)
    return [x for part in out for x in part]
