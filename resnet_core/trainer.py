"""The trainer: ``fit(config)`` yields one ``Result`` per evaluation (the CLI is resnet_core/train.py; the
device and precision are chosen in resnet_core/device.py).

The whole data set lives on the training device and batches are cut, augmented and shuffled with tensor
ops (no DataLoader in the hot loop). All randomness comes from state that goes into the checkpoint, so a
resumed run continues exactly as an uninterrupted one would.

Reading order: ``fit`` builds a ``TrainingState`` (or restores one) and hands it to ``train``, the loop.
Each iteration is ``training_batch`` then a ``TrainStep`` (step.py); the loss and error sums stay on the device in
``RunningSums``; every CHECK_EVERY iterations ``Checks`` copies them to the host without waiting and acts on
them one window later (divergence, warm-up). An evaluation reports
``training_metrics``, ``held_out_metrics`` and ``probe`` in one ``Result``.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from resnet_core.checkpoint import device_neutral, load_checkpoint, save_checkpoint, saved_device_type
from resnet_core.checks import Checks
from resnet_core.config import RunConfig, TrainConfig, current_keys, recipe_tag, validate
from resnet_core.data import Dataset, Split, augment_batch, load_dataset
from resnet_core.device import autocast_for, prepare_device, resolve_precision
from resnet_core.evaluation import evaluate_batches
from resnet_core.models import build_model, count_parameters
from resnet_core.parallel import Shard
from resnet_core.probes import global_norm, gradient_norms, layer_response_std
from resnet_core.schedule import LearningRate
from resnet_core.step import RunningSums, TrainStep, training_metrics

if TYPE_CHECKING:
    from resnet_core.imagenet.stream import ImageNetSource

# Warm-up and divergence are checked on a window of this many iterations, read one window late (``Checks``):
# often enough to react, and the device never waits for the host.
CHECK_EVERY = 10

log = logging.getLogger(__name__)


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
    state: Callable[[], dict[str, Any]] | None = field(repr=False, default=None)
    parameters: int = 0  # trainable parameters of the model (the paper's "params")
    info: dict[str, str] = field(default_factory=dict)  # the data's identity and the recipe (streamed data)

    @property
    def done(self) -> bool:
        return self.status != "running"

    def save_checkpoint(self, path: str | os.PathLike) -> Path:
        return save_checkpoint(self.state(), path)


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


def evaluate(model: nn.Module, split: Split, batch_size: int, autocast: torch.autocast | None,
             channels_last: bool, shard: Shard = Shard()) -> tuple[float, float]:
    """(error %, mean loss) of ``model`` on an in-memory split, single view, eval mode (in a data-parallel run each
    process scores every world-th image, and the scores are summed over the processes)."""
    images, labels = split.images[shard.rank :: shard.world], split.labels[shard.rank :: shard.world]
    batches = ((images[start : start + batch_size], labels[start : start + batch_size])
               for start in range(0, len(labels), batch_size))
    scores = evaluate_batches(model, batches, autocast, channels_last, shard)
    return scores.error, scores.loss


def _prepare(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class TrainingState:
    """Everything a run needs to go on exactly where it stopped: model, optimizer (momentum), batch order,
    the generator behind batch order and augmentation, the lr schedule's warm-up flag, the iteration; and
    ``shard``, this process's part of a data-parallel run (every process holds the same state but its RNG's).

    ``checkpoint()`` is the dict a checkpoint file holds; ``restore(state)`` puts one back. The model is the
    uncompiled one: its state dict, evaluation and probes never depend on ``torch.compile``.
    """

    def __init__(self, config: TrainConfig, data: Dataset | ImageNetSource, device: torch.device):
        o = config.optim
        self.config, self.device, self.shard = config, device, Shard.current()
        self.model = _model_for(config, data, device)
        # Fused on CUDA: one kernel for the whole update instead of a few per parameter group of tensors.
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                         weight_decay=o.weight_decay, fused=True if device.type == "cuda" else None)
        self.generator = torch.Generator(device=device).manual_seed(config.run.seed)
        # Streamed data derives its order from the seed and the iteration (imagenet/stream.py): no sampler.
        in_memory = isinstance(data, Dataset)
        self.sampler = BatchSampler(len(data.train.labels), o.batch_size, self.generator) if in_memory else None
        self.train_images = step_images(data.train.images, config, device) if in_memory else None
        self.schedule = LearningRate(config, warmup_active=o.warmup)
        self.iteration = 0

    def checkpoint(self) -> dict[str, Any]:
        """The checkpoint dict, every tensor on the CPU (a plain ``torch.load`` reads it anywhere), with the type of
        device that made it. On a CPU it references live tensors: save it before training goes on."""
        state = {
            "config": self.config.to_dict(), "iteration": self.iteration, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(), "warmup_active": self.schedule.warmup_active,
            "device": self.device.type,
        }
        if self.sampler is not None:
            state.update(order=self.sampler.order, position=self.sampler.position)
        if self.schedule.plateau is not None:
            state["plateau"] = self.schedule.plateau.state_dict()
        if self.device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        return device_neutral(state)

    def restore(self, state: dict[str, Any]) -> None:
        """Continue from a checkpoint dict, which is left as it was (it may be resumed from again).

        Made on another type of device, everything carries over except the generators' states (a CPU and a CUDA
        generator's states are different things): those are re-seeded from the seed and the iteration, so the
        run continues with the same weights, momentum, batch order and schedule, but other augmentation and
        dropout draws than an uninterrupted run's.
        """
        self.model.load_state_dict(state["model"])
        # A deep copy: load_state_dict keeps the given momentum buffers (no copy) and SGD updates them in
        # place, which would otherwise change the caller's state dict (a second resume from it would differ).
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.iteration = int(state["iteration"])
        if self.sampler is not None:
            self.sampler.order, self.sampler.position = state["order"].to(self.device), int(state["position"])
        if self.schedule.plateau is not None:
            self.schedule.plateau.load_state_dict(state["plateau"])
        torch.set_rng_state(state["torch_rng"].cpu())
        if saved_device_type(state) == self.device.type:
            self.generator.set_state(state["generator"].cpu())
            if self.device.type == "cuda" and "cuda_rng" in state:
                torch.cuda.set_rng_state(state["cuda_rng"].cpu(), self.device)
        else:
            self._reseed_generators(saved_device_type(state))
        self.schedule.warmup_active = bool(state["warmup_active"])

    def _reseed_generators(self, saved_on: str) -> None:
        """Seed the data generator (and CUDA's default one) from the run's seed and the iteration."""
        seed = self.config.run.seed * 1_000_003 + self.iteration
        self.generator.manual_seed(seed)
        if self.device.type == "cuda":
            torch.cuda.manual_seed(seed)
        log.warning("resuming on %s a checkpoint made on %s at iteration %d: weights, momentum, batch order and "
                    "schedule carry over; augmentation and dropout draws are re-seeded, so the run is no longer "
                    "bit for bit the uninterrupted one", self.device.type, saved_on, self.iteration)

    def set_learning_rate(self) -> float:
        """Give the optimizer the schedule's rate for the next step, and return it."""
        lr = self.schedule.at(self.iteration)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr


def step_images(images: torch.Tensor, config: TrainConfig, device: torch.device) -> torch.Tensor:
    """The training images in the dtype the step's first convolution reads, and on a GPU in its layout, so a batch
    needs no cast (and no copy: augmentation keeps channels-last): bf16 under bf16 autocast (the very values
    autocast would cast them to, so the arithmetic is unchanged; a gather moves half the bytes), channels-last on
    CUDA for a channels-last model. Not on a CPU, where the channels-last gather measured slower (6.1 ms against
    4.1 ms per batch of 128 at 32x32 on one thread) than gathering NCHW and copying."""
    dtype = torch.bfloat16 if resolve_precision(config.run.precision, device) == "bf16" else images.dtype
    on_gpu_layout = config.run.channels_last and device.type == "cuda"
    return images.to(dtype=dtype, memory_format=torch.channels_last if on_gpu_layout else torch.preserve_format)


def _model_for(config: TrainConfig, data: Dataset | ImageNetSource, device: torch.device) -> nn.Module:
    """The config's network, shaped for the data set's images and classes, on ``device``."""
    m = config.model
    model = build_model(m.layout, m.depth, residual=m.residual, shortcut=m.shortcut, num_classes=data.num_classes,
                        width=m.width, zero_init_residual=m.zero_init_residual, dropout=m.head_dropout,
                        in_channels=data.in_channels, bottleneck_stride=m.bottleneck_stride).to(device)
    return model.to(memory_format=torch.channels_last) if config.run.channels_last else model


def training_batch(state: TrainingState, data: Dataset | ImageNetSource) -> tuple[torch.Tensor, torch.Tensor]:
    """This process's part of the next training batch (all of it outside a data-parallel run): cut from the
    on-device data by the sampler, augmented with the run's generator (or streamed: batch number
    ``state.iteration``), in the model's memory format."""
    if not isinstance(data, Dataset):
        x, y = data.training_batch(state.iteration)
        return _prepare(x, state.config.run.channels_last), y
    indices = state.sampler.next_indices()
    x = state.train_images[indices]
    if state.config.data.augment:  # the whole batch, so that every process's generator stays in step
        pad = max(1, data.image_size // 8)  # the paper's 4 pixels on 32x32 images, in proportion for smaller ones
        x = augment_batch(x, state.generator, pad=pad, flip=data.hflip)
    part = state.shard.part(len(indices))
    return _prepare(x[part], state.config.run.channels_last), data.train.labels[indices[part]]


def held_out_metrics(model: nn.Module, data: Dataset | ImageNetSource, run: RunConfig,
                     autocast: torch.autocast | None, final: bool = False, shard: Shard = Shard()) -> dict[str, float]:
    """Error and loss on the validation split (when there is one) and the test split, and their image counts;
    for streamed data also top-5, and 10-crop scores at the end of training (``final``). In a data-parallel run
    the processes share the work and all get the scores of the whole split."""
    if not isinstance(data, Dataset):
        return data.held_out_metrics(model, autocast, final)
    metrics = {}
    for name, split in (("val", data.val), ("test", data.test)):
        if split is not None:
            metrics[f"{name}/error"], metrics[f"{name}/loss"] = evaluate(model, split, run.eval_batch_size,
                                                                        autocast, run.channels_last, shard)
            metrics[f"{name}/images"] = float(len(split.labels))
    return metrics


def probe(model: nn.Module, probe_images: torch.Tensor | None,
          autocast: torch.autocast | None) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """(layer responses, gradient norms, their summary metrics): the gradient norms left by the last step,
    and the Fig. 7 layer responses on ``probe_images`` unless there are none (``run.probe_images=0``)."""
    grads = gradient_norms(model)
    metrics = {"probe/grad_norm": global_norm(grads)}
    responses = {}
    if probe_images is not None:
        responses = layer_response_std(model, probe_images, autocast)
        metrics["probe/response_std_mean"] = sum(responses.values()) / max(len(responses), 1)
    return responses, grads, metrics


def fit(config: TrainConfig, resume: str | os.PathLike | dict | None = None,
        dataset: Dataset | ImageNetSource | None = None) -> Iterator[Result]:
    """Train ``config``; yield a Result after every evaluation, the last one with status != "running".

    Args:
        config: the run's configuration (validated here).
        resume: a checkpoint path or state dict to continue from; the run then continues exactly as an
            uninterrupted one would (same batches, same augmentation, same losses).
        dataset: an already loaded data set (to share one across runs), or an ImageNet source; loaded (or,
            for ImageNet, opened and checked) from ``config`` otherwise.

    Inside a torch.distributed process group, each process trains on its slice of every batch (parallel.py).
    """
    validate(config)
    Shard.current().local_batch(config.optim.batch_size)  # refuses a batch the processes cannot split evenly
    device = prepare_device(config.run)
    saved = read_resume(resume, config, device)  # before any expensive work
    torch.manual_seed(config.run.seed)
    data = dataset if dataset is not None else load_data(config, device)
    state = TrainingState(config, data, device)
    if saved is not None:
        state.restore(saved)
    yield from train(state, data)


def load_data(config: TrainConfig, device: torch.device) -> Dataset | ImageNetSource:
    """The config's data: ImageNet streamed from its files (checked first), any other set loaded whole."""
    if config.data.dataset == "imagenet":
        from resnet_core.imagenet.stream import ImageNetSource

        return ImageNetSource(config, device)
    return load_dataset(config.data, device, seed=config.run.seed)


def read_resume(resume: str | os.PathLike | dict | None, config: TrainConfig,
                device: torch.device) -> dict[str, Any] | None:
    """The checkpoint dict to continue from (a path is loaded), checked to be of the same experiment."""
    if resume is None:
        return None
    state = resume if isinstance(resume, dict) else load_checkpoint(resume, map_location=device)
    check_resume_config(state["config"], config)
    return state


def train(state: TrainingState, data: Dataset | ImageNetSource) -> Iterator[Result]:
    """The training loop from ``state.iteration`` on: a step per iteration, a check of the recent loss (for
    divergence) and training error (for the warm-up rule) every CHECK_EVERY iterations (acted on one window
    later, or at the evaluation), an evaluation every ``run.eval_every`` iterations and at the end."""
    config, device = state.config, state.device
    o, r = config.optim, config.run
    autocast = autocast_for(config, device)
    shard = state.shard
    step = TrainStep(config, shard.wrap(state.model, device), autocast)
    probe_images = _prepare(_probe_batch(data, r.probe_images), r.channels_last) if r.probe_images else None
    info = {**getattr(data, "identity", {}), **({"recipe": recipe} if (recipe := recipe_tag(config)) else {})}
    window, recent = RunningSums(device), RunningSums(device)  # since the last evaluation / the last check
    checks = Checks(device, o.batch_size)
    parameters = count_parameters(state.model)
    state.model.train()
    tic = time.perf_counter()

    while state.iteration < o.iterations:
        lr = state.set_learning_rate()
        loss, wrong = step(state.optimizer, *training_batch(state, data))
        state.iteration += 1
        recent.add(loss, wrong)
        window.add(loss, wrong)

        at_eval = state.iteration % r.eval_every == 0 or state.iteration == o.iterations
        if recent.steps >= CHECK_EVERY or at_eval:
            recent.combine(shard)  # every process decides on the whole batches' sums, so all decide alike
            checks.submit(recent.loss, recent.wrong, recent.steps)
            recent.restart()
            for mean_loss, error_pct in checks.due(everything=at_eval):
                if not math.isfinite(mean_loss):
                    yield _diverged(state.iteration, lr, mean_loss, state.checkpoint)
                    return
                state.schedule.observe_training_error(error_pct)

        if at_eval:
            window.combine(shard)
            metrics = training_metrics(window, o.batch_size, lr, _seconds_since(tic, device))
            status = "completed" if state.iteration == o.iterations else "running"
            shard.align_buffers(state.model)
            metrics.update(held_out_metrics(state.model, data, r, autocast, status == "completed", shard))
            if "val/error" in metrics:
                state.schedule.observe_validation_error(metrics["val/error"])
            responses, grads, probe_metrics = probe(state.model, probe_images, autocast)
            yield Result(state.iteration, {**metrics, **probe_metrics}, responses, grads, status, state.checkpoint,
                         parameters=parameters, info=info)
            window.restart()
            tic = time.perf_counter()


def _probe_batch(data: Dataset | ImageNetSource, count: int) -> torch.Tensor:
    """The first ``count`` test images, as the model sees them at evaluation."""
    return data.test.images[:count] if isinstance(data, Dataset) else data.probe_images(count)


def _seconds_since(tic: float, device: torch.device) -> float:
    """Wall time since ``tic``, once the device has finished the work queued so far."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - tic


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
        hint = ""
        if differ == ["optim.milestones"] and saved.get("optim.iterations") != current["optim.iterations"]:
            hint = (f"; a new --iterations moves the milestones it implies: to train on with the checkpoint's "
                    f"schedule, also pass --milestones {','.join(map(str, saved['optim.milestones']))}")
        raise ValueError(f"cannot resume: the checkpoint was made with a different config ({details}){hint}")


def _diverged(iteration: int, lr: float, loss: float, state: Callable[[], dict[str, Any]]) -> Result:
    return Result(iteration, {"train/loss": loss, "opt/lr": lr}, {}, {}, "diverged", state)
