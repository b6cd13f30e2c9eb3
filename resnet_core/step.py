"""One SGD step on a batch (``TrainStep``, compiled if asked) and the loss and error sums it leaves on the device
(``RunningSums``), read into ``training_metrics`` at an evaluation. Used by resnet_core/trainer.py's loop."""

from __future__ import annotations

import contextlib
import torch
from torch import nn

from resnet_core.config import RunConfig, TrainConfig
from resnet_core.parallel import Shard

# torch.compile modes that capture CUDA graphs (on a GPU), which need each step's start marked.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


class TrainStep:
    """One SGD step on one batch, with what stays fixed for a run: the forward (compiled if asked, in
    ``run.compile_mode``), the autocast context and the loss."""

    def __init__(self, config: TrainConfig, model: nn.Module, autocast: torch.autocast | None):
        self.forward = compiled(model, config.run)
        self.marks_steps = config.run.compile and config.run.compile_mode in CUDA_GRAPH_MODES
        self.autocast = autocast
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=config.optim.label_smoothing)

    def __call__(self, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Forward, backward, update; returns the batch's loss and its number of wrong predictions, both
        left on the device (reading them would sync it)."""
        if self.marks_steps:  # a new iteration: CUDA graph outputs of the last one may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        with self.autocast or contextlib.nullcontext():
            logits = self.forward(x)
        loss = self.loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), (logits.detach().argmax(1) != y).sum()


def compiled(model: nn.Module, run: RunConfig) -> nn.Module:
    """``model`` compiled in ``run.compile_mode`` when ``run.compile``, else ``model`` itself.

    Dynamo is reset first: in a process that trains one run after another (Tune's reused actors), the graphs of
    earlier runs would count towards its recompile limit, past which it silently falls back to eager.
    """
    if not run.compile:
        return model
    torch.compiler.reset()
    return torch.compile(model, mode=run.compile_mode)


class RunningSums:
    """Training loss and wrong predictions summed over the steps since the last ``restart``.

    The sums stay on the device, so adding to them costs no sync; reading them costs one, which is why the
    loop reads them only at evaluations (the checks between them go through ``Checks``, which does not wait).
    """

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), device=device)
        self.wrong = torch.zeros((), device=device, dtype=torch.long)
        self.steps = 0

    def add(self, loss: torch.Tensor, wrong: torch.Tensor) -> None:
        self.loss += loss
        self.wrong += wrong
        self.steps += 1

    def mean_loss(self) -> float:
        return self.loss.item() / self.steps

    def error_pct(self, batch_size: int) -> float:
        return 100.0 * self.wrong.item() / (self.steps * batch_size)

    def combine(self, shard: Shard) -> None:
        """Make the sums those of the whole batches of a data-parallel run: wrong predictions summed over the
        processes, the loss (each process's batch mean) averaged over them. Nothing in a single process."""
        if shard.is_parallel:
            shard.sum(self.loss).div_(shard.world)
            shard.sum(self.wrong)

    def restart(self) -> None:
        self.loss.zero_()
        self.wrong.zero_()
        self.steps = 0


def training_metrics(window: RunningSums, batch_size: int, lr: float, seconds: float) -> dict[str, float]:
    """Training error, loss and speed over the steps since the last evaluation, and the last step's lr."""
    return {
        "train/error": window.error_pct(batch_size),
        "train/loss": window.mean_loss(),
        "train/images": float(window.steps * batch_size),  # what the error is a fraction of: its granularity
        "opt/lr": lr,
        "perf/images_per_sec": window.steps * batch_size / max(seconds, 1e-9),
    }
