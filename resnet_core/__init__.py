"""The science: the paper's ResNets and plain twins, their config and flags, data, device, trainer and checkpoints.
Runs inside trial processes and the single-run CLI; imports torch, torchvision, numpy, never the sweep/driver code."""

from importlib import import_module
from typing import Any

# Public name -> its module. Imported on first use, so that ``resnet_core.config`` (plain dataclasses and the
# one function naming a net) loads without torch: the report reads it.
_HOMES = {
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "DataConfig": "config", "ModelConfig": "config", "OptimConfig": "config", "RunConfig": "config",
    "TrainConfig": "config", "validate": "config",
    "Dataset": "data", "DatasetUnavailableError": "data", "load_dataset": "data",
    "build_model": "models", "count_parameters": "models",
    "Result": "trainer", "fit": "trainer", "ImageNetSource": "imagenet.stream",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'resnet_core' has no attribute {name!r}")
    return getattr(import_module(f"resnet_core.{_HOMES[name]}"), name)
