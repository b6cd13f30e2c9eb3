"""Tiny training configs the tests share (flat TrainConfig overrides): seconds on one CPU thread."""

from __future__ import annotations

from pathlib import Path

from resnet_core import TrainConfig
from resnet_core.config import apply_overrides, imagenet_recipe

# Tiny: ResNet-8 on 16×16 synthetic images, one CPU thread. Milestones off unless a test sets them.
TRAINER_BASE = {
    "data.dataset": "synthetic", "model.depth": 8, "optim.batch_size": 32, "optim.iterations": 30,
    "optim.milestones": [], "run.eval_every": 10, "run.threads": 1, "run.probe_images": 16,
    "run.device": "cpu", "run.eval_batch_size": 256,
}

# A tiny ImageNet-layout net at a reduced resolution: ResNet-18 at width 1/8 on 32-pixel crops.
IMAGENET_TINY = {
    "model.depth": 18, "model.width": 0.125, "data.crop_size": 32, "optim.batch_size": 4, "optim.iterations": 6,
    "optim.schedule": "steps", "optim.milestones": [], "data.val_size": 0, "run.eval_every": 3,
    "run.eval_batch_size": 8, "run.probe_images": 4, "run.threads": 1, "run.device": "cpu", "run.data_workers": 0,
}


def imagenet_config(data_dir: Path, recipe: str = "paper", **changes: object) -> TrainConfig:
    """An ImageNet recipe at IMAGENET_TINY's sizes on the tree under ``data_dir``, with ``changes``."""
    return TrainConfig.from_dict(apply_overrides(imagenet_recipe(recipe),
                                                 {"data.data_dir": str(data_dir), **IMAGENET_TINY, **changes}))
