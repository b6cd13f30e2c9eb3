"""Paper-faithful ResNets and plain nets (He et al. 2016) with a fast, framework-free trainer.

    from resnet_core import TrainConfig, fit
    for result in fit(TrainConfig().replace(**{"data.dataset": "digits", "optim.iterations": 200})):
        print(result.iteration, result.metrics["train/error"])

This package imports only torch, torchvision, numpy and the standard library (scikit-learn inside the
offline digits loader): never ray, mlflow, optuna or plotly.
"""

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
