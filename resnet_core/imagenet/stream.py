"""ImageNet streamed from JPEG files: what ``fit`` needs of a data set, for data too big to hold in memory.

``ImageNetSource`` is the streaming counterpart of ``data.Dataset``: ``fit`` asks it for the training batch
of an iteration, for the held-out metrics, and for a fixed probe batch.

Order and augmentation are functions of the run's seed and the iteration alone: training batch k is batch
``k mod (N // batch)`` of epoch ``k // (N // batch)`` (the remainder of an epoch is dropped, as in the
in-memory path), epoch e's order is a permutation seeded by (seed, e), and the image in slot j of epoch e is
augmented with a generator seeded by (seed, e, j). So the batches do not depend on how many worker processes
decode them or in which order they finish, and a run resumed at iteration k (the checkpoint holds k) gets
exactly the batches an uninterrupted run would: the loader is simply started at k. That is why a plain
``DataLoader`` suffices here: its sampler position is the iteration, already in every checkpoint.

With ``run.decode=device`` the training batches come from device_decode.py instead of ``TrainImages``: the
workers read the files and make the same draws, and the training process decodes and crops on the device.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from resnet_core.config import TrainConfig
from resnet_core.data import download_dataset
from resnet_core.evaluation import Scores, evaluate_batches
from resnet_core.imagenet.device_decode import DeviceDecoder, EncodedBatch, EncodedImages, collate_encoded
from resnet_core.imagenet.folders import preflight
from resnet_core.imagenet.transforms import BatchSteps, centre_view, ten_crop_view, train_view
from resnet_core.parallel import Shard

Sample = tuple[str, int]  # (path, label)
log = logging.getLogger(__name__)


class TrainImages(TorchDataset):
    """Training crops, addressed by (image index, epoch, slot in the epoch): the key seeds the augmentation.

    Items are (uint8 pixels, label, lighting α), or with ``steps`` (a CPU run) (finished float image, label,
    α): on a CPU the training process is busy with the model, and finishing one image at a time in the worker
    measured faster than a batch there (a batch-sized float buffer costs page faults on every batch).
    """

    def __init__(self, samples: list[Sample], recipe: str, crop_size: int, seed: int,
                 steps: BatchSteps | None = None):
        self.samples, self.recipe, self.crop_size, self.seed, self.steps = samples, recipe, crop_size, seed, steps

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[torch.Tensor, int, torch.Tensor]:
        index, epoch, slot = key
        path, label = self.samples[index]
        view = train_view(path, self.recipe, self.crop_size, np.random.default_rng((self.seed, epoch, slot)))
        if self.steps is None:
            return view.pixels, label, view.lighting
        return self.steps.finish(view.pixels, view.lighting[None]), label, view.lighting


class EvalImages(TorchDataset):
    """Test-time views of images in file order: the centre crop, or the 10 crops; uint8, or finished with
    ``steps`` (a CPU run, as ``TrainImages``)."""

    def __init__(self, samples: list[Sample], crop_size: int, ten_crop: bool, steps: BatchSteps | None = None):
        self.samples, self.crop_size, self.ten_crop, self.steps = samples, crop_size, ten_crop, steps

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.samples[index]
        pixels = (ten_crop_view if self.ten_crop else centre_view)(path, self.crop_size)
        return (pixels if self.steps is None else self.steps.finish(pixels)), label


class EpochBatches:
    """The batch sampler: lists of (index, epoch, slot) keys from training iteration ``start`` on, forever; of
    each batch only the slots of ``part`` (a data-parallel process's slice: parallel.py), or all of them."""

    def __init__(self, num_images: int, batch_size: int, seed: int, start: int, part: slice = slice(None)):
        self.num_images, self.batch_size, self.seed, self.start = num_images, batch_size, seed, start
        self.per_epoch, self.part = num_images // batch_size, part

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        epoch, batch = divmod(self.start, self.per_epoch)
        while True:
            order = epoch_order(self.num_images, self.seed, epoch)
            for b in range(batch, self.per_epoch):
                slots = range(b * self.batch_size, (b + 1) * self.batch_size)[self.part]
                yield [(int(order[j]), epoch, j) for j in slots]
            epoch, batch = epoch + 1, 0


def epoch_order(num_images: int, seed: int, epoch: int) -> np.ndarray:
    """The image order of one epoch: a permutation seeded by (seed, epoch)."""
    return np.random.default_rng((seed, epoch)).permutation(num_images)


HELD_OUT_FRACTION = 0.1  # the most of a tree's training images a held-out split takes (the paper's CIFAR 5k of 50k)


def held_out_size(size: int, samples: list[Sample]) -> int:
    """How many of ``samples`` a held-out split of ``data.val_size=size`` takes: ``size``, but at most
    HELD_OUT_FRACTION (10 %) of them or one image per class, whichever is more.

    The paper's recipe holds out 10 000 of ILSVRC-2012's 1 281 167 training images (0.78 %), far below the cap.
    A small ImageNet-layout tree (Imagenette: ~9 500 images, 10 classes) has fewer than 10 000 in all; there the
    split keeps a tenth of the tree (about 950) to decide the plateau rule on and trains on the other 90 %. One
    image per class is the floor, so that a tree of a few images per class still holds every class out once.
    Every value is capped alike, the recipe's or one given on the command line: a config is one flat dict that
    does not record who set a value, and a rule that depended on it would split the same config two ways. The
    run says when it holds out fewer than asked (``ImageNetSource``) and records the number (``data.held_out``).
    """
    if size == 0:
        return 0
    classes = len({label for _, label in samples})
    return min(size, max(classes, int(len(samples) * HELD_OUT_FRACTION)))


def hold_out(samples: list[Sample], size: int, seed: int) -> tuple[list[Sample], list[Sample]]:
    """(training, held out): ``held_out_size(size, samples)`` images chosen by ``seed`` (none for 0), both parts
    kept in file order. The same seed holds out the same images, and a smaller size a subset of them."""
    held = held_out_size(size, samples)
    if held == 0:
        return list(samples), []
    if held >= len(samples):
        raise ValueError(f"data.val_size={size}: the {len(samples)} training images are too few to hold {held} out "
                         "(one per class) and train on the rest; set data.val_size=0 or give a larger tree")
    chosen = set(torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed))[:held].tolist())
    return ([s for i, s in enumerate(samples) if i not in chosen], [s for i, s in enumerate(samples) if i in chosen])


def scaled_note(size: int, held: int, total: int) -> str:
    """The line a run prints when its held-out split is smaller than ``data.val_size`` asks."""
    return (f"held out {held} of the {total} training images for validation (what the plateau rule decides on): "
            f"data.val_size={size} asks for more than a held-out split takes of this tree (at most "
            f"{HELD_OUT_FRACTION:.0%} of its training images, or one per class)")


class ImageNetSource:
    """ImageNet for ``fit``: the preflight at construction (before training), then streamed batches.

    Splits: ``train`` (what is trained on), ``val`` (``data.val_size`` images held out of the training set:
    what the plateau rule decides on; fewer on a small tree: ``held_out_size``) and ``test`` (the official val set,
    as the paper uses it). With ``data.download`` a generated set (``data.generated``) missing from
    ``data.data_dir`` is written first (a sweep's driver has done it already).
    """

    in_channels = 3

    def __init__(self, config: TrainConfig, device: torch.device):
        d = config.data
        if d.download:
            download_dataset(d)
        files, self.survey = preflight(d.data_dir, d.verify_images, d.generated)
        self.shard = Shard.current()
        train, self.val = hold_out(list(files.train), d.val_size, config.run.seed)
        if len(self.val) < d.val_size and self.shard.rank == 0:
            log.warning(scaled_note(d.val_size, len(self.val), len(files.train)))
        self.identity = {**self.survey.identity(), "data.layout": files.layout, "data.held_out": str(len(self.val))}
        self.train = train[: d.train_limit] if d.train_limit else train
        self.test = list(files.val)
        if config.optim.batch_size > len(self.train):
            raise ValueError(f"optim.batch_size={config.optim.batch_size} exceeds the {len(self.train)} training "
                             f"images under {d.data_dir!r}")
        self.num_classes, self.image_size = len(files.classes), d.crop_size
        self.config, self.device = config, device
        self.steps = BatchSteps(d.recipe, device)
        # Where the recipe's float steps run: in the workers on a CPU run, on the device otherwise.
        self._worker_steps = self.steps if device.type == "cpu" else None
        # run.decode=device: training JPEGs decoded in this process, on the device (device_decode.py).
        self._decoder = DeviceDecoder(d.crop_size, device) if config.run.decode == "device" else None
        self._batches: Iterator | None = None
        self._next_iteration = -1

    def training_batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training batch number ``iteration`` (0-based), augmented and normalised, on the device (in a
        data-parallel run, this process's slice of it). Batches are prefetched in order; asking for another
        iteration (after a restore) restarts the loader there."""
        if self._batches is None or iteration != self._next_iteration:
            d, o = self.config.data, self.config.optim
            sampler = EpochBatches(len(self.train), o.batch_size, self.config.run.seed, start=iteration,
                                   part=self.shard.part(o.batch_size))
            if self._decoder is None:
                images = TrainImages(self.train, d.recipe, d.crop_size, self.config.run.seed, self._worker_steps)
                self._batches = iter(self._loader(images, batch_sampler=sampler))
            else:  # file bytes and draws: nothing to pin
                images = EncodedImages(self.train, d.recipe, d.crop_size, self.config.run.seed)
                self._batches = iter(self._loader(images, pin=False, batch_sampler=sampler,
                                                  collate_fn=collate_encoded))
        batch = next(self._batches)
        self._next_iteration = iteration + 1
        return self._finish(batch)

    def held_out_metrics(self, model: nn.Module, autocast: torch.autocast | None, final: bool) -> dict[str, float]:
        """Centre-crop top-1 / top-5 error and loss on the held-out and test splits; at the end of training
        (``final``) also the 10-crop top-1 / top-5 error on the test split, as separate metrics."""
        metrics = {}
        for name, samples in (("val", self.val), ("test", self.test)):
            if samples:
                metrics.update(_named(name, "", self.evaluate(model, samples, autocast, ten_crop=False)))
        if final:
            metrics.update(_named("test", "_10crop", self.evaluate(model, self.test, autocast, ten_crop=True)))
        return metrics

    def evaluate(self, model: nn.Module, samples: list[Sample], autocast: torch.autocast | None,
                 ten_crop: bool) -> Scores:
        """``model``'s scores on the centre crops (or the 10 crops) of ``samples`` (in a data-parallel run each
        process scores every world-th one, and all get the scores of the whole list)."""
        run = self.config.run
        batch_size = max(1, run.eval_batch_size // 10) if ten_crop else run.eval_batch_size
        images = EvalImages(self.shard.every(samples), self.config.data.crop_size, ten_crop, self._worker_steps)
        loader = self._loader(images, batch_size=batch_size)
        return evaluate_batches(model, map(self._finish, loader), autocast, run.channels_last, self.shard)

    def probe_images(self, count: int) -> torch.Tensor:
        """The centre crops of the first ``count`` test images, normalised: the fixed probe batch."""
        pixels = [centre_view(path, self.config.data.crop_size) for path, _ in self.test[:count]]
        return self.steps.finish(torch.stack(pixels))

    def _loader(self, images: TorchDataset, pin: bool = True, **batching: object) -> DataLoader:
        workers = self.config.run.data_workers
        return DataLoader(images, num_workers=workers, pin_memory=pin and self.device.type == "cuda",
                          prefetch_factor=4 if workers else None, **batching)

    def _finish(self, batch: tuple[torch.Tensor, ...] | EncodedBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """A loader's batch as the model takes it, on the device: finished here unless the workers did it (and
        decoded here first on the device-decode path)."""
        if isinstance(batch, EncodedBatch):
            return self.steps.finish(self._decoder.crops(batch), batch.lighting), batch.labels.to(self.device)
        images, labels, *lighting = batch
        if self._worker_steps is None:
            images = self.steps.finish(images, *lighting)
        return images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True)


def _named(split: str, suffix: str, scores: Scores) -> dict[str, float]:
    """``scores`` as metrics: ``test/error``, ``test/top5_error``, ``test/loss``, ``test/images`` (+ suffix)."""
    return {f"{split}/error{suffix}": scores.error, f"{split}/top5_error{suffix}": scores.top5_error,
            f"{split}/loss{suffix}": scores.loss, f"{split}/images{suffix}": float(scores.images)}
