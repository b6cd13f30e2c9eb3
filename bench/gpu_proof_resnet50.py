"""The GPU proof's ImageNet step rate: ResNet-50 (the paper's §3.4 net) training at batch 256 on random 224x224
images through ``resnet_core.fit`` with the paper's recipe, per precision, eager or with CUDA graphs.

The images are held on the device as an in-memory data set (no decoding: the JPEG decode section measures the
input side), so this is the rate the GPU reaches when the input keeps up. Each row gives images/s, peak memory and
the wall time of 90 epochs of ILSVRC-2012 at that speed.
"""

from __future__ import annotations

from typing import Any

import torch

from bench.gpu_proof_measure import Deadline, Sizes, measure_rows
from bench.gpu_proof_report import format_resnet50_row
from resnet_core import TrainConfig
from resnet_core.config import IMAGENET_RECIPE_OVERRIDES
from resnet_core.data import Dataset, Split

IMAGENET_TRAIN_IMAGES = 1_281_167  # ILSVRC-2012's training set
EPOCHS = 90
CLASSES = 1000
PRECISIONS = ("bf16", "tf32", "fp32")  # the fast one first; the paper preset's IEEE fp32 last
# The paper's ImageNet net: its model keys (option B shortcuts, the stride in the first 1x1 of a bottleneck as in
# the released Caffe models) and its optimiser (SGD momentum 0.9, lr 0.1, weight decay 1e-4, batch 256).
PAPER = IMAGENET_RECIPE_OVERRIDES["paper"]
RECIPE_KEYS = ("model.layout", "model.shortcut", "model.bottleneck_stride", "optim.lr", "optim.momentum",
               "optim.weight_decay")


def imagenet_shaped_dataset(device: torch.device, images: int, resolution: int) -> Dataset:
    """``images`` random uint8-valued RGB images of ``resolution``² (scaled to [0, 1], mean-centred), 1000 classes,
    on ``device``; the test split is a view of the first batch. The pixel values do not change the arithmetic."""
    generator = torch.Generator(device=device).manual_seed(0)
    pixels = torch.randint(0, 256, (images, 3, resolution, resolution), generator=generator, device=device,
                           dtype=torch.uint8)
    x = pixels.float().div_(255)
    x.sub_(x.mean(0, keepdim=True))
    y = torch.randint(0, CLASSES, (images,), generator=generator, device=device)
    test = max(1, images // 2)
    return Dataset(f"random{resolution}", Split(x, y), None, Split(x[:test], y[:test]), CLASSES, resolution, 3, True)


def resnet50_config(device: torch.device, sizes: Sizes, precision: str, compile_mode: str | None = None) -> TrainConfig:
    """The paper's ResNet-50 and optimiser at ``sizes.imagenet_batch``, for two windows of ``sizes.imagenet_window``
    iterations (an evaluation after each). The lr schedule (steps, none reached) does not change a step's cost."""
    return TrainConfig().replace(**{
        **{key: PAPER[key] for key in RECIPE_KEYS},
        "model.depth": 50, "optim.batch_size": sizes.imagenet_batch, "optim.iterations": 2 * sizes.imagenet_window,
        "optim.milestones": [10**9], "optim.schedule": "steps", "run.eval_every": sizes.imagenet_window,
        "run.eval_batch_size": PAPER["run.eval_batch_size"], "run.probe_images": 0, "run.device": str(device),
        "run.precision": precision, "run.compile": compile_mode is not None,
        "run.compile_mode": compile_mode or "default", "run.threads": 1 if device.type == "cpu" else 0})


def epochs_projection(images_per_s: float, config: TrainConfig) -> dict[str, Any]:
    """The wall time of 90 epochs of ImageNet's 1.28 M training images at that speed (one device)."""
    return {"epochs_90_h": EPOCHS * IMAGENET_TRAIN_IMAGES / images_per_s / 3600}


def settings(sizes: Sizes) -> dict[str, Any]:
    """What the rows measure, for the JSON and the table's heading."""
    return {"net": "ResNet-50", "batch": sizes.imagenet_batch, "resolution": sizes.imagenet_resolution,
            "iterations_timed": sizes.imagenet_window, "bottleneck_stride": PAPER["model.bottleneck_stride"],
            "shortcut": PAPER["model.shortcut"], "projection": f"{EPOCHS} epochs of {IMAGENET_TRAIN_IMAGES} images"}


def resnet50_steps(device: torch.device, sizes: Sizes, precisions: tuple[str, ...], compile_mode: str | None,
                   deadline: Deadline, needed_s: float, rows: list[dict]) -> dict[str, Any]:
    """One measurement per precision, appended to ``rows`` as it ends; returns the settings and the counts."""
    # Two batches' worth of images: every window draws new batches, as a real epoch would.
    dataset = imagenet_shaped_dataset(device, 2 * sizes.imagenet_batch, sizes.imagenet_resolution)
    jobs = [({"net": "ResNet-50", "precision": precision, "mode": compile_mode or "eager",
              "batch": sizes.imagenet_batch, "resolution": sizes.imagenet_resolution},
             resnet50_config(device, sizes, precision, compile_mode)) for precision in precisions]
    try:
        counts = measure_rows(jobs, dataset, deadline, needed_s, rows, epochs_projection, format_resnet50_row)
    finally:
        del dataset
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {**settings(sizes), **counts}


def resnet50_eager(device: torch.device, sizes: Sizes, deadline: Deadline, rows: list[dict]) -> dict[str, Any]:
    """ResNet-50 eager in bf16, tf32 and fp32, while the guard leaves 20 s for each."""
    return resnet50_steps(device, sizes, PRECISIONS, None, deadline, 20, rows)


def resnet50_graphs(device: torch.device, sizes: Sizes, deadline: Deadline, rows: list[dict]) -> dict[str, Any]:
    """ResNet-50 bf16 with CUDA graphs (``reduce-overhead``), where the sizes ask for it and the guard leaves twice a
    CIFAR cell's compile estimate (a deeper graph to compile). Last in the proof: at batch 256 a GPU is busy with
    each kernel for long, so CUDA graphs (launch overhead) matter least here."""
    if not sizes.imagenet_graphs:
        return {**settings(sizes), "skipped": "not in --quick: compiling ResNet-50 takes over a minute on a CPU; the "
                                              "compiled CIFAR cell runs the same path"}
    return resnet50_steps(device, sizes, ("bf16",), "reduce-overhead", deadline, 2 * sizes.compile_estimate_s, rows)
