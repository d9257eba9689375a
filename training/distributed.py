"""Where a process runs: its rank and device; under torchrun, the process group (NCCL on CUDA, gloo on
CPU).

torchrun restarts every worker of a job when one fails (``--max-restarts``). Its agent keeps one key-value
store for all attempts (``TORCHELASTIC_USE_AGENT_STORE``), so the keys an attempt's process group leaves
there (the ranks' addresses) are still there when the next attempt starts: a process group made the usual
way (``env://``) may connect to the dead ranks of the previous attempt and wait for them until its timeout
(PyTorch issue 135712; seen with torch 2.14). The process group is therefore made on that store under a
prefix of its own per attempt (``TORCHELASTIC_RESTART_COUNT``). That count is the agent's: every rank of one
machine agrees on it, but agents of several machines may count differently, so multi-node jobs should give
each attempt a store of its own (``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1`` for torchrun; the README's SLURM
recipe does so).
"""

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


def setup(device: str, timeout_min: float) -> Runtime:
    """Pick the device; under torchrun (WORLD_SIZE > 1) join the process group (NCCL/gloo), whose
    collectives wait ``timeout_min`` minutes for every rank before they fail (the trainer passes
    ``TrainConfig.dist_timeout``). Ranks that die do not make the others wait that long: torchrun stops
    them all at once; the timeout is for ranks that hang, and machines lost without a word."""
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
        backend, timeout = "nccl" if cuda else "gloo", datetime.timedelta(minutes=timeout_min)
        store = attempt_store(timeout)
        if store is None:
            dist.init_process_group(backend, timeout=timeout)
        else:
            dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    return Runtime(rank, world, dev)


def attempt_store(timeout: datetime.timedelta) -> dist.Store | None:
    """The torchrun agent's store under a prefix of this attempt, when the agent keeps one store for all
    attempts; else None (``env://`` makes the store)."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                          timeout=timeout)
    return dist.PrefixStore(f"rat/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", agent)


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
