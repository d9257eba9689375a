"""Where a process runs: its rank and device; under torchrun, the process group (NCCL on CUDA, gloo on
CPU)."""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from tqdm import tqdm

from rat.shared.devices import pick_device


@dataclass(frozen=True)
class Runtime:
    """Where this process runs: rank and world size (1 without torchrun) and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup(device: str = "auto") -> Runtime:
    """Pick the device; under torchrun (WORLD_SIZE > 1) join the process group (NCCL/gloo)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cuda = pick_device(device) == "cuda"
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        # validation of big test sets runs between collectives: allow it time
        dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(hours=2))
    return Runtime(rank, world, dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(rt: Runtime) -> None:
    if rt.world > 1:
        dist.barrier()


def say(rt: Runtime, text: str) -> None:
    """Print a line on the main process (above its progress bar)."""
    if rt.main:
        tqdm.write(text)


def gather(rt: Runtime, items: list) -> list:
    """Every rank's list of picklable items, concatenated in rank order (the list itself on one process)."""
    if rt.world == 1:
        return items
    parts: list = [None] * rt.world
    dist.all_gather_object(parts, items)
    return [x for part in parts for x in part]


def mean_over_ranks(rt: Runtime, value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar tensor over the ranks (the tensor itself on one process)."""
    if rt.world > 1:
        dist.all_reduce(value)
        value /= rt.world
    return value
