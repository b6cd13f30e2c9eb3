"""The trainer: ``fit(config)`` yields one ``Result`` per evaluation (the CLI is resnet_core/train.py).

The whole data set lives on the training device and batches are cut, augmented and shuffled with tensor
ops (no DataLoader in the hot loop). All randomness comes from state that goes into the checkpoint, so a
resumed run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnet_core.checkpoint import load_checkpoint, save_checkpoint
from resnet_core.config import TrainConfig, current_keys, validate
from resnet_core.data import Dataset, Split, augment_batch, load_dataset
from resnet_core.models import build_model
from resnet_core.probes import global_norm, gradient_norms, layer_response_std

# Warm-up and divergence are checked on a window of this many iterations: often enough to react, rarely
# enough that the device sync it needs costs nothing.
CHECK_EVERY = 10


@dataclass
class Result:
    """What ``fit`` reports at each evaluation.

    ``status`` is "running", "completed" (the last evaluation) or "diverged" (a non-finite loss stopped
    the run). ``state()`` returns the checkpoint dict; it references live tensors, so save it before
    advancing the iterator.
    """

    iteration: int
    metrics: dict[str, float]
    layer_response_std: dict[str, float]
    grad_norms: dict[str, float]
    status: str
    state: Any = field(repr=False, default=None)

    @property
    def done(self) -> bool:
        return self.status != "running"

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        return save_checkpoint(self.state(), path)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device={name!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return device


def has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: CUDA GPUs from Ampere on, CPUs with AVX512-BF16 or AMX.

    Elsewhere bf16 is emulated and slower than fp32, so ``run.precision=auto`` keeps fp32 there.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    return False


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run computes in: "auto" becomes bf16 where the hardware has it natively, else fp32."""
    if precision == "auto":
        return "bf16" if has_native_bf16(device) else "fp32"
    return precision


def autocast_for(config: TrainConfig, device: torch.device) -> torch.autocast | None:
    """bf16 autocast (BN and the loss stay fp32) where the config asks for it; None means fp32."""
    if resolve_precision(config.run.precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return None


class LearningRate:
    """The paper's step schedule in iterations, with the optional ResNet-110 warm-up rule."""

    def __init__(self, config: TrainConfig, warmup_active: bool):
        self.optim = config.optim
        self.warmup_active = warmup_active

    def at(self, iteration: int) -> float:
        if self.warmup_active:
            return self.optim.warmup_lr
        passed = sum(iteration >= m for m in self.optim.milestones)
        return self.optim.lr * self.optim.gamma**passed

    def observe_training_error(self, error_pct: float) -> None:
        """End warm-up once the training error is below the threshold (checked on recent batches)."""
        if self.warmup_active and error_pct < self.optim.warmup_until_error:
            self.warmup_active = False


class BatchSampler:
    """Shuffled batches without replacement, one permutation per epoch, drawn on the data's device."""

    def __init__(self, num_images: int, batch_size: int, generator: torch.Generator):
        if batch_size > num_images:
            raise ValueError(f"optim.batch_size={batch_size} exceeds the {num_images} training images")
        self.num_images, self.batch_size, self.generator = num_images, batch_size, generator
        self.order = torch.randperm(num_images, generator=generator, device=generator.device)
        self.position = 0

    def next_indices(self) -> torch.Tensor:
        if self.position + self.batch_size > self.num_images:  # drop the remainder, start a new epoch
            self.order = torch.randperm(self.num_images, generator=self.generator, device=self.generator.device)
            self.position = 0
        indices = self.order[self.position : self.position + self.batch_size]
        self.position += self.batch_size
        return indices


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int, autocast: torch.autocast | None,
             channels_last: bool) -> tuple[float, float]:
    """(error %, mean loss) of ``model`` on a split, single view, eval mode."""
    model.eval()
    loss_sum = torch.zeros((), device=split.images.device)
    wrong = torch.zeros((), device=split.images.device, dtype=torch.long)
    for start in range(0, len(split.labels), batch_size):
        x = _prepare(split.images[start : start + batch_size], channels_last)
        y = split.labels[start : start + batch_size]
        with autocast or contextlib.nullcontext():
            logits = model(x)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        wrong += (logits.argmax(1) != y).sum()
    model.train()
    n = len(split.labels)
    return 100.0 * wrong.item() / n, loss_sum.item() / n


def _prepare(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def fit(config: TrainConfig, resume: str | os.PathLike | dict | None = None,
        dataset: Dataset | None = None) -> Iterator[Result]:
    """Train ``config``; yield a Result after every evaluation, the last one with status != "running".

    Args:
        config: the run's configuration (validated here).
        resume: a checkpoint path or state dict to continue from; the run then continues exactly as an
            uninterrupted one would (same batches, same augmentation, same losses).
        dataset: an already loaded data set (to share one across runs); loaded from ``config`` otherwise.
    """
    validate(config)
    device = resolve_device(config.run.device)
    if config.run.threads:
        torch.set_num_threads(config.run.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    m, o, r = config.model, config.optim, config.run

    state = None
    if resume is not None:  # read and check the checkpoint before any expensive work
        state = resume if isinstance(resume, dict) else load_checkpoint(resume, map_location=device)
        check_resume_config(state["config"], config)
    torch.manual_seed(r.seed)
    data = dataset if dataset is not None else load_dataset(config.data, device, seed=r.seed)
    model = build_model(m.layout, m.depth, residual=m.residual, shortcut=m.shortcut,
                        num_classes=data.num_classes, width=m.width, zero_init_residual=m.zero_init_residual,
                        dropout=m.dropout, in_channels=data.in_channels).to(device)
    if r.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    generator = torch.Generator(device=device).manual_seed(r.seed)
    sampler = BatchSampler(len(data.train.labels), o.batch_size, generator)
    schedule = LearningRate(config, warmup_active=o.warmup)
    iteration = 0

    if resume is not None:
        model.load_state_dict(state["model"])
        # A deep copy: load_state_dict keeps the given momentum buffers (no copy) and SGD updates them in
        # place, which would otherwise change the caller's state dict (a second resume from it would differ).
        optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        iteration = int(state["iteration"])
        sampler.order, sampler.position = state["order"].to(device), int(state["position"])
        generator.set_state(state["generator"].cpu())
        torch.set_rng_state(state["torch_rng"].cpu())
        if device.type == "cuda" and "cuda_rng" in state:
            torch.cuda.set_rng_state(state["cuda_rng"].cpu(), device)
        schedule.warmup_active = bool(state["warmup_active"])

    def checkpoint_state() -> dict[str, Any]:
        state = {
            "config": config.to_dict(), "iteration": iteration, "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "order": sampler.order, "position": sampler.position,
            "generator": generator.get_state(), "torch_rng": torch.get_rng_state(),
            "warmup_active": schedule.warmup_active,
        }
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        return state

    step_model = torch.compile(model) if r.compile else model
    autocast = autocast_for(config, device)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=o.label_smoothing)
    probe_images = _prepare(data.test.images[: r.probe_images], r.channels_last) if r.probe_images else None
    images, labels = data.train.images, data.train.labels
    flip = data.hflip
    pad = max(1, data.image_size // 8)  # the paper's 4 pixels on 32x32 images, in proportion for smaller ones

    # Running sums since the last evaluation / the last check, kept on the device to avoid syncs.
    window_loss = torch.zeros((), device=device)
    window_wrong = torch.zeros((), device=device, dtype=torch.long)
    check_loss = torch.zeros((), device=device)
    check_wrong = torch.zeros((), device=device, dtype=torch.long)
    window_start, check_start, train_seconds = iteration, iteration, 0.0
    model.train()
    tic = time.perf_counter()

    while iteration < o.iterations:
        lr = schedule.at(iteration)
        for group in optimizer.param_groups:
            group["lr"] = lr
        batch = sampler.next_indices()
        x = images[batch]
        if config.data.augment:
            x = augment_batch(x, generator, pad=pad, flip=flip)
        x, y = _prepare(x, r.channels_last), labels[batch]
        with autocast or contextlib.nullcontext():
            logits = step_model(x)
        loss = loss_fn(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        iteration += 1

        detached = loss.detach()
        wrong = (logits.detach().argmax(1) != y).sum()
        check_loss += detached
        check_wrong += wrong
        window_loss += detached
        window_wrong += wrong

        at_eval = iteration % r.eval_every == 0 or iteration == o.iterations
        if iteration - check_start >= CHECK_EVERY or at_eval:
            steps = iteration - check_start
            mean_loss = check_loss.item() / steps
            if not math.isfinite(mean_loss):
                yield _diverged(iteration, lr, mean_loss, checkpoint_state)
                return
            schedule.observe_training_error(100.0 * check_wrong.item() / (steps * o.batch_size))
            check_loss.zero_()
            check_wrong.zero_()
            check_start = iteration

        if at_eval:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            train_seconds = time.perf_counter() - tic
            steps = iteration - window_start
            metrics = {
                "train/error": 100.0 * window_wrong.item() / (steps * o.batch_size),
                "train/loss": window_loss.item() / steps,
                "opt/lr": lr,
                "perf/images_per_sec": steps * o.batch_size / max(train_seconds, 1e-9),
            }
            for split_name, split in (("val", data.val), ("test", data.test)):
                if split is not None:
                    error, split_loss = evaluate(model, split, r.eval_batch_size, autocast, r.channels_last)
                    metrics[f"{split_name}/error"], metrics[f"{split_name}/loss"] = error, split_loss
            grads = gradient_norms(model)
            metrics["probe/grad_norm"] = global_norm(grads)
            responses = {}
            if probe_images is not None:
                responses = layer_response_std(model, probe_images, autocast)
                metrics["probe/response_std_mean"] = sum(responses.values()) / max(len(responses), 1)
            status = "completed" if iteration == o.iterations else "running"
            yield Result(iteration, metrics, responses, grads, status, checkpoint_state)
            window_loss.zero_()
            window_wrong.zero_()
            window_start = iteration
            tic = time.perf_counter()


# Settings that may change when a run is resumed: how it executes, and how long it trains.
RESUMABLE_CHANGES = ("optim.iterations", "data.data_dir", "data.download")


def check_resume_config(saved: dict[str, Any], config: TrainConfig) -> None:
    """Refuse to resume a checkpoint into a different experiment (model, data, recipe or seed).

    Keys are compared under their current names, so a checkpoint saved with a legacy key still resumes.
    """
    saved, current = current_keys(saved), config.to_dict()
    differ = sorted(key for key in current
                    if key in saved and saved[key] != current[key] and key not in RESUMABLE_CHANGES
                    and not (key.startswith("run.") and key != "run.seed"))
    if differ:
        details = ", ".join(f"{key}: checkpoint {saved[key]!r} vs now {current[key]!r}" for key in differ)
        raise ValueError(f"cannot resume: the checkpoint was made with a different config ({details})")


def _diverged(iteration: int, lr: float, loss: float, state: Any) -> Result:
    return Result(iteration, {"train/loss": loss, "opt/lr": lr}, {}, {}, "diverged", state)
