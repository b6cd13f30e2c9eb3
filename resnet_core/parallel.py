"""Data-parallel training: which part of every batch this process trains on, and the sums all processes share.

A run of N processes (a torch.distributed process group, set up by whoever launched them: Ray Train in a sweep,
or a script of yours under ``torchrun`` that calls ``init_process_group``) trains one model on the same global
batch as a single process would: process r takes slice r of each batch (``optim.batch_size`` / N images, the
batch its BatchNorm sees), DDP averages the gradients, and the loss and error sums, held-out scores and the
checks' inputs are summed over the processes, so every process takes the same decisions (divergence, warm-up,
plateau) at the same iteration. Outside a process group there is one shard, and nothing here does anything.
Framework-free: torch.distributed only.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class Shard:
    """This process's place in the run: ``rank`` of ``world`` processes (0 of 1 without a process group)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Shard:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def is_parallel(self) -> bool:
        return self.world > 1

    def local_batch(self, batch_size: int) -> int:
        """Images per process in a global batch of ``batch_size`` (which must split evenly)."""
        if batch_size % self.world:
            raise ValueError(f"optim.batch_size={batch_size} must be a multiple of the {self.world} data-parallel "
                             f"workers (each trains on an equal slice of every batch)")
        return batch_size // self.world

    def part(self, batch_size: int) -> slice:
        """This process's slice of a global batch: contiguous, rank-ordered, so the slices make the whole batch."""
        size = self.local_batch(batch_size)
        return slice(self.rank * size, (self.rank + 1) * size)

    def every(self, items: list) -> list:
        """This process's share of a list of held-out items (every world-th one), for scores summed over all."""
        return items[self.rank :: self.world]

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the processes (in place; a no-op in a single process)."""
        if self.is_parallel:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The module the training step calls: ``model`` in DistributedDataParallel when there are several
        processes (gradients averaged over them; BatchNorm statistics stay per process, as the paper's)."""
        if not self.is_parallel:
            return model
        if device.type != "cuda":
            return nn.parallel.DistributedDataParallel(model)
        index = device.index if device.index is not None else torch.cuda.current_device()
        return nn.parallel.DistributedDataParallel(model, device_ids=[index])

    def align_buffers(self, model: nn.Module) -> None:
        """Give every process rank 0's buffers (BatchNorm running statistics), so all evaluate, probe and save the
        same model: each process's last training step updated them from its own slice of the batch."""
        if self.is_parallel:
            for buffer in model.buffers():
                dist.broadcast(buffer, src=0)
