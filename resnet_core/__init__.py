"""The science: the paper's ResNets and plain twins, their config and flags, data, device, trainer and checkpoints.
Runs inside trial processes and the single-run CLI; imports torch, torchvision, numpy, never the sweep/driver code."""

from resnet_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from resnet_core.config import DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig, validate
from resnet_core.data import Dataset, DatasetUnavailableError, load_dataset
from resnet_core.models import build_model, count_parameters
from resnet_core.trainer import Result, fit

__all__ = [
    "CheckpointError", "DataConfig", "Dataset", "DatasetUnavailableError", "ModelConfig", "OptimConfig",
    "Result", "RunConfig", "TrainConfig", "build_model", "count_parameters", "fit", "load_checkpoint",
    "load_dataset", "save_checkpoint", "validate",
]
