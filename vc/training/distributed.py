"""Running one training on several processes (`torchrun`), and stopping all of them at the same step.

    torchrun --nproc_per_node 4 -m vc train recipes/default.yaml --data DATA --out runs/x

`setup` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and joins the process
group: NCCL when the process has a GPU, gloo on CPUs. Without torchrun it is a no-op and training runs as one process.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..runtime import resolve_device


@dataclass
class Dist:
    """This process's place in the run: rank among `world` processes, and the device it computes on."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        """The process that writes checkpoints, logs and TensorBoard."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """DistributedDataParallel around `module` (gradients averaged over ranks in backward); as is for one
        process. DDP also broadcasts rank 0's weights and buffers, so that every rank starts from the same model."""
        if self.world == 1:
            return module
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids)

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on at least one (a collective: every rank must call it)."""
        if self.world == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def setup(device: str = "auto") -> Dist:
    """Join the torchrun process group if launched by torchrun; pick this process's device (cuda:LOCAL_RANK)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    d = resolve_device(device)
    if world == 1:
        return Dist(device=d)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if d.type == "cuda":
        d = torch.device("cuda", local)
        torch.cuda.set_device(d)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if d.type == "cuda" else "gloo", rank=rank, world_size=world)
    return Dist(rank, world, local, d)


class StopRequest:
    """Ctrl-C, SIGTERM (what torchrun and schedulers send) or a time budget ask a loop to stop at the next step.

    Inside `with StopRequest(minutes) as stop:`, `stop.due(d)` is true on all ranks at the same step once any rank
    was signalled or ran out of time, so that the run checkpoints at a step boundary and resumes exactly. A second
    Ctrl-C stops at once.
    """

    def __init__(self, minutes: float | None = None, started: float | None = None):
        self.deadline = None if minutes is None else (started or time.time()) + minutes * 60
        self.signalled = False
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.signalled and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signalled = True

    def __enter__(self) -> "StopRequest":
        for s in (signal.SIGINT, signal.SIGTERM):
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def out_of_time(self) -> bool:
        return self.deadline is not None and time.time() > self.deadline

    def due(self, d: Dist) -> bool:
        return d.any(self.signalled or self.out_of_time())
