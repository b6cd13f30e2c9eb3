"""The Ray Tune trainable: one trial = one ``resnet_core.fit`` run, checkpointed through Tune, tracked in MLflow.

Order of work at each evaluation: log to MLflow, then report to Tune with a checkpoint. If the trial dies in
between, it is retried from the previous checkpoint and re-logs nothing twice: training is deterministic on
resume, and steps already in the MLflow run are skipped.
"""

from __future__ import annotations

import json
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from ray import tune

from resnet_core import TrainConfig, fit, load_checkpoint, save_checkpoint
from resnet_core.checkpoint import CheckpointError, load_latest_checkpoint
from sweeps.tracking import TrialRun, TrialTracking

CHECKPOINT_FILE = "checkpoint.pt"
PROBES_FILE = "probes.json"
ARCH_KEY = "arch"  # param-space key holding the per-trial overrides (family, depth, ...)
PACKAGES = ("torch", "torchvision", "ray", "mlflow", "numpy", "resnet-depth-studies")


def trial_config(config: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a trial: Tune's config is flat TrainConfig keys plus an ``arch`` dict of overrides."""
    flat = {k: v for k, v in config.items() if k != ARCH_KEY}
    flat.update(config.get(ARCH_KEY, {}))
    return TrainConfig.from_dict(flat)


def family_name(config: TrainConfig) -> str:
    return "residual" if config.model.residual else "plain"


def run_name(config: TrainConfig) -> str:
    """Readable run name, e.g. ``plain-56 seed 1`` or ``residual-34 B seed 0``."""
    m = config.model
    option = f" {m.shortcut}" if m.residual and m.shortcut != "A" else ""
    return f"{family_name(config)}-{m.depth}{option} seed {config.run.seed}"


def run_tags(config: TrainConfig) -> dict[str, str]:
    m = config.model
    return {"family": family_name(config), "depth": str(m.depth), "shortcut": m.shortcut if m.residual else "none",
            "seed": str(config.run.seed), "dataset": config.data.dataset, "model_family": m.family}


def environment_record(sweep_env: dict[str, Any], trial_id: str, device: str) -> dict[str, Any]:
    """Where and with what a trial ran: git state (from the driver), packages, device, Tune trial id."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {**sweep_env, "packages": versions, "python": platform.python_version(), "host": platform.node(),
            "device": device, "trial_id": trial_id}


def _device_name(device: str) -> str:
    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        return torch.cuda.get_device_name()
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _restore() -> tuple[dict | None, dict]:
    """The newest readable Tune checkpoint of this trial (state, probe history), or (None, empty history)."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None, {}
    with checkpoint.as_directory() as directory:
        directory = Path(directory)
        try:
            _, state = load_latest_checkpoint([directory / CHECKPOINT_FILE])
        except CheckpointError as exc:
            raise RuntimeError(f"cannot resume trial {tune.get_context().get_trial_id()}: {exc}") from exc
        probes_path = directory / PROBES_FILE
        history = json.loads(probes_path.read_text()) if probes_path.exists() else {}
    return state, history


def train_trial(config: dict[str, Any], tracking: TrialTracking, sweep_env: dict[str, Any]) -> None:
    """Tune function trainable (bind ``tracking`` and ``sweep_env`` with ``tune.with_parameters``)."""
    train_config = trial_config(config)
    trial_id = tune.get_context().get_trial_id()
    run = TrialRun(tracking, trial_id, run_name(train_config), run_tags(train_config), train_config.to_dict())
    try:
        state, history = _restore()
        if state is None:
            run.log_dict(train_config.to_dict(), "config.json")
            run.log_dict(environment_record(sweep_env, trial_id, _device_name(train_config.run.device)),
                         "environment.json")
        outcome = "completed"  # also when resumed from the final checkpoint, where fit has nothing left to do
        for result in fit(train_config, resume=state):
            outcome = "diverged" if result.status == "diverged" else "completed"
            run.log_metrics(result.iteration, result.metrics)
            _append(history, "layer_response_std", result.iteration, result.layer_response_std)
            _append(history, "grad_norms", result.iteration, result.grad_norms)
            with tempfile.TemporaryDirectory() as directory:
                save_checkpoint(result.state(), Path(directory) / CHECKPOINT_FILE)
                (Path(directory) / PROBES_FILE).write_text(json.dumps(history))
                if result.done:
                    _log_final_artifacts(run, result, history, Path(directory))
                tune.report({**result.metrics, "iteration": result.iteration, "status": result.status,
                             "diverged": result.status == "diverged"},
                            checkpoint=tune.Checkpoint.from_directory(directory))
        run.finish(outcome)
    except BaseException:
        run.finish("failed")  # a retry reopens the run and sets it RUNNING again
        raise


def _append(history: dict, key: str, iteration: int, values: dict[str, float]) -> None:
    if not values:
        return
    entry = history.setdefault(key, {"layers": list(values), "iterations": [], "std" if key == "layer_response_std" else "norm": []})
    entry["iterations"].append(iteration)
    entry["std" if key == "layer_response_std" else "norm"].append([values[name] for name in entry["layers"]])


def _log_final_artifacts(run: TrialRun, result: Any, history: dict, directory: Path) -> None:
    if "layer_response_std" in history:
        run.log_dict(history["layer_response_std"], "probes/layer_response_std.json")
    if "grad_norms" in history:
        run.log_dict(history["grad_norms"], "probes/grad_norms.json")
    if result.status == "completed":
        weights = directory / "final_weights.pt"
        torch.save(result.state()["model"], weights)
        run.log_file(weights, "model")
