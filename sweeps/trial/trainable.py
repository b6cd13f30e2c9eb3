"""The Ray Tune trainable: one trial = one ``resnet_core.fit`` run, checkpointed through Tune, tracked in MLflow.

Runs in a trial process (``train_trial``), or in rank 0 of a trial's Ray Train workers (``run_trial`` with a
``Session`` of Ray Train's: sweeps/trial/workers.py). Order of work at each evaluation: log to MLflow, then
report to Tune with a checkpoint. If the trial dies in between, it is retried from the previous checkpoint and re-logs nothing
twice: training is deterministic on resume, and steps already in the MLflow run are skipped.

Restoring tries the checkpoint Tune hands back first and, if that one is truncated, corrupt or unsafe (it
is only ever read with ``weights_only=True``), the older ones Tune kept next to it (``num_to_keep``).
A diverged evaluation is reported without a checkpoint, so the last checkpoint stays a good one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import posixpath
import re
import tempfile
import time
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, ContextManager, Protocol

import pyarrow.fs
import ray
import torch
from ray import tune

from resnet_core import Result, TrainConfig, fit, save_checkpoint
from resnet_core.checkpoint import CheckpointError, load_latest_checkpoint
from resnet_core.data_identity import data_identity
from resnet_core.device import assigned_device, device_record, prepare_device
from tracking.system_metrics import system_metrics
from tracking.trial_run import TrialRun, TrialTracking
from sweeps.trial.progress import (DIVERGED, DIVERGED_KEY, ITERATION, MINUTES_LEFT, MLFLOW_RUN, SPOOL, STATUS,
                                   UNSENT)
from sweeps.trial.identity import trial_config, trial_meta, trial_name, trial_tags

log = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
PROBES_FILE = "probes.json"
# Every package that computes a result or decides what is trained (environment.json on each trial run).
PACKAGES = ("torch", "torchvision", "torchcodec", "numpy", "scikit-learn", "ray", "mlflow", "optuna", "pandas",
            "scipy", "plotly", "resnet-depth-studies")
# The probe histories kept across evaluations (and restores), with the key their values go under.
PROBE_VALUE_KEYS = {"layer_response_std": "std", "grad_norms": "norm"}
SHOWN = ("test/error", "perf/images_per_sec")  # Tune's live table: iteration, these, the ETA


class Session(Protocol):
    """Where a trial reports its evaluations and finds the checkpoint to resume from: Tune itself, or Ray Train
    (whose reports reach Tune through rank 0)."""

    trial_id: str

    def get_checkpoint(self) -> tune.Checkpoint | None: ...

    def report(self, metrics: dict[str, Any], checkpoint: tune.Checkpoint | None = None) -> None: ...

    def checkpoint_of(self, directory: str) -> tune.Checkpoint:
        """A checkpoint of ``directory`` of the session's own class (Tune's and Ray Train's differ)."""


class TuneSession:
    """A trial that trains in its own Tune process."""

    def __init__(self) -> None:
        self.trial_id = tune.get_context().get_trial_id()

    def get_checkpoint(self) -> tune.Checkpoint | None:
        return tune.get_checkpoint()

    def report(self, metrics: dict[str, Any], checkpoint: tune.Checkpoint | None = None) -> None:
        tune.report(metrics, checkpoint=checkpoint)

    def checkpoint_of(self, directory: str) -> tune.Checkpoint:
        return tune.Checkpoint.from_directory(directory)


class TrialHooks(Protocol):
    """Points where a caller may act inside a trial (the failure tests inject faults here); None in normal use."""

    def checkpoint_write(self, trial: str, iteration: int, directory: Path) -> ContextManager[None]:
        """Around writing the checkpoint of ``iteration`` into ``directory``."""

    def after_report(self, trial: str, iteration: int) -> None:
        """After ``iteration`` was reported to Tune with its checkpoint."""


def train_trial(config: dict[str, Any], tracking: TrialTracking, sweep_env: dict[str, Any],
                hooks: TrialHooks | None = None) -> None:
    """Tune function trainable (bind ``tracking``, ``sweep_env`` and ``hooks`` with ``tune.with_parameters``)."""
    quiet_checkpoint_logs()
    # First, before anything initialises CUDA: a trial given a GPU needs CUDA (or fails now, saying why), one
    # given none hides the GPUs. The logged config keeps the device as asked; only the run uses the resolved one.
    device = assigned_device(config.get("run.device", "auto"), has_gpu=bool(ray.get_gpu_ids()))
    run_trial(config, tracking, sweep_env, hooks, TuneSession(), device)


def quiet_checkpoint_logs() -> None:
    """Ray logs "Checkpoint successfully created" at every evaluation of every trial: in the driver's output that
    drowns Tune's progress table. Warnings and errors still come through."""
    logging.getLogger("ray.train._internal.storage").setLevel(logging.WARNING)


def run_trial(config: dict[str, Any], tracking: TrialTracking, sweep_env: dict[str, Any], hooks: TrialHooks | None,
              session: Session, device: str, tags: dict[str, str] | None = None) -> None:
    """The trial: its one MLflow run, opened (or reopened) by trial id (``tags`` added), and ``fit`` on ``device``
    from the session's checkpoint, each evaluation logged, then reported to the session with a checkpoint."""
    train_config = trial_config(config)
    trial_id = session.trial_id
    name = trial_name(config)
    meta = trial_meta(config)
    run = TrialRun(tracking, trial_id, name, trial_tags(config), train_config.to_dict(),
                   adopts=meta.adopts if meta else None)
    try:
        run.set_tags({"node_ip": ray.util.get_node_ip_address(), **(tags or {})})  # where this attempt runs
        run_config = train_config.replace(**{"run.device": device})
        state, history = _start(run, train_config, sweep_env, session, prepare_device(run_config.run))
        pace = Pace(train_config.optim.iterations)
        with system_metrics(tracking.tracking_uri, run.run_id, tracking.system_metrics_every):
            for result in fit(run_config, resume=state):
                # the last one closes the run before its report
                _evaluation(run, result, history, name, hooks, pace.minutes_left(result.iteration), session)
        if run.ended is None:  # resumed from the final checkpoint: fit had nothing left to do
            run.finish("completed")
    except SystemExit:  # Tune stopped the trial at a report: a scheduler's early stop, or the sweep ending
        if run.ended is None:  # stopped before its last report
            _finish(run, "stopped", trial_id)
        raise
    except BaseException:
        _finish(run, "failed", trial_id)  # a retry reopens the run and sets it RUNNING again
        raise


def _finish(run: TrialRun, outcome: str, trial_id: str) -> None:
    """Close the run of a trial that is ending by an exception; never hides that exception."""
    try:
        run.finish(outcome)
    except Exception:
        log.exception("could not mark the MLflow run of trial %s as %s", trial_id, outcome)


def _start(run: TrialRun, config: TrainConfig, sweep_env: dict[str, Any], session: Session,
           device: torch.device) -> tuple[dict | None, dict]:
    """Restore from the session's checkpoint (tagging what was refused), or log the config and environment of a
    fresh start (``device`` as ``prepare_device`` set it up for the run)."""
    state, history, refused = restore(session)
    if refused:
        run.set_tags({"checkpoint_refused": "; ".join(refused)[:4000]})
    if state is None:
        run.log_dict(config.to_dict(), "config.json")
        identity = data_identity(config.data)
        run.log_dataset(identity.name, identity.digest, identity.source_type, identity.source)
        run.log_dict(environment_record(sweep_env, session.trial_id, device), "environment.json")
    else:
        run.set_tags({"resumed_from_iteration": str(int(state["iteration"]))})
    return state, history


class Pace:
    """A trial's minutes left, from the wall time between its first evaluation in this process and the latest
    (evaluations and checkpoints included); NaN until there are two."""

    def __init__(self, iterations: int):
        self.iterations = iterations
        self.first: tuple[int, float] | None = None

    def minutes_left(self, iteration: int) -> float:
        now = time.monotonic()
        if self.first is None or iteration <= self.first[0]:
            self.first = self.first or (iteration, now)
            return float("nan")
        per_iteration = (now - self.first[1]) / (iteration - self.first[0])
        return round(max(self.iterations - iteration, 0) * per_iteration / 60, 1)


def _evaluation(run: TrialRun, result: Result, history: dict, name: str, hooks: TrialHooks | None,
                minutes_left: float, session: Session) -> None:
    """One evaluation: log it, keep its probes, report it to Tune with a checkpoint (none when diverged).

    The last one (completed or diverged) closes the run before it is reported: Tune may stop the trial at that
    report (ASHA stops every trial that reaches its last rung), and a stopped trial's process may be ended
    before it could close the run afterwards.
    """
    if run.last_logged_step < 0 and result.parameters:  # the first evaluation of this run
        run.set_tags({"parameters": str(result.parameters)})
    run.log_metrics(result.iteration, result.metrics)
    _append(history, "layer_response_std", result.iteration, result.layer_response_std)
    _append(history, "grad_norms", result.iteration, result.grad_norms)
    report = evaluation_report(result, minutes_left)
    if result.status == DIVERGED:  # no checkpoint of non-finite weights: the previous one stays the newest
        _close(run, result, history, None)
        session.report({**report, **_tracking_state(run)})
        return
    with tempfile.TemporaryDirectory() as directory:
        with hooks.checkpoint_write(name, result.iteration, Path(directory)) if hooks else contextlib.nullcontext():
            save_checkpoint(result.state(), Path(directory) / CHECKPOINT_FILE)
        (Path(directory) / PROBES_FILE).write_text(json.dumps(history))
        if result.done:
            _close(run, result, history, Path(directory))
        session.report({**report, **_tracking_state(run)}, checkpoint=session.checkpoint_of(directory))
    if hooks:
        hooks.after_report(name, result.iteration)


def evaluation_report(result: Result, minutes_left: float) -> dict[str, Any]:
    """What a trial reports of an evaluation (keys: sweeps.trial.progress): first what Tune's live table shows
    (iteration, test error, images/s, minutes left), then the other metrics, the status, whether it diverged."""
    shown, rest = _shown_first(result.metrics)
    return {ITERATION: result.iteration, **shown, MINUTES_LEFT: minutes_left, **rest, STATUS: result.status,
            DIVERGED_KEY: result.status == DIVERGED}


def _tracking_state(run: TrialRun) -> dict[str, Any]:
    """The trial's MLflow run and what its spool still holds, for the driver (a spool on a node's own disk is
    out of its reach)."""
    return {MLFLOW_RUN: run.run_id, UNSENT: run.spool.count(), SPOOL: str(run.spool.path)}


def _shown_first(metrics: dict[str, float]) -> tuple[dict[str, float], dict[str, float]]:
    """The metrics of Tune's live table (in SHOWN's order), and the rest."""
    return {k: metrics[k] for k in SHOWN if k in metrics}, {k: v for k, v in metrics.items() if k not in SHOWN}


def environment_record(sweep_env: dict[str, Any], trial_id: str, device: torch.device) -> dict[str, Any]:
    """Where and with what a trial ran: git state (from the driver), packages, host and process, the device and its
    settings (``device_record``: driver, CUDA, cuDNN, GPU, TF32), Tune trial id."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {**sweep_env, "packages": versions, "python": platform.python_version(), "host": platform.node(),
            "node_ip": ray.util.get_node_ip_address(), "pid": os.getpid(), **device_record(device),
            "trial_id": trial_id}


# Checkpoint directory names, oldest to newest in order of their key: Tune's (``checkpoint_000003``) and Ray
# Train's (``checkpoint_2026-12-07_03-10-11.123456``, a multi-worker trial's: sweeps/trial/workers.py).
CHECKPOINT_NAMES = (
    (re.compile(r"checkpoint_(\d+)"), int),
    (re.compile(r"checkpoint_(\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d(?:\.\d+)?)"),
     lambda stamp: datetime.strptime(stamp, "%Y-%m-%d_%H-%M-%S.%f" if "." in stamp else "%Y-%m-%d_%H-%M-%S")),
)


def _checkpoint_order(name: str) -> tuple[int, Any] | None:
    """Where a checkpoint directory's name puts it among its siblings: (naming scheme, key); None if not one."""
    for scheme, (pattern, key) in enumerate(CHECKPOINT_NAMES):
        match = pattern.fullmatch(name)
        if match:
            return scheme, key(match[1])
    return None


def _older_checkpoints(checkpoint: tune.Checkpoint) -> list[tune.Checkpoint]:
    """The checkpoints kept in the same directory before ``checkpoint`` (oldest first), named as it is: Tune's
    (``num_to_keep``) or Ray Train's, ordered by number or by time.

    Only older ones: a checkpoint newer than the one handed back was never registered (its upload may have been
    cut short by a kill).
    """
    parent, name = posixpath.split(checkpoint.path.rstrip("/"))
    newest = _checkpoint_order(name)
    if newest is None:
        return []
    older = []
    for info in checkpoint.filesystem.get_file_info(pyarrow.fs.FileSelector(parent)):
        order = _checkpoint_order(info.base_name)
        if info.type == pyarrow.fs.FileType.Directory and order and order[0] == newest[0] and order < newest:
            older.append((order, info.path))
    return [type(checkpoint)(path, filesystem=checkpoint.filesystem) for _, path in sorted(older)]


def restore(session: Session) -> tuple[dict | None, dict, list[str]]:
    """The newest readable checkpoint of this trial: (state, probe history, why newer ones were refused).

    (None, {}, []) when the session has no checkpoint for it (a fresh start).
    """
    checkpoint = session.get_checkpoint()
    if checkpoint is None:
        return None, {}, []
    refused: list[str] = []
    with contextlib.ExitStack() as stack:
        directories = [Path(stack.enter_context(c.as_directory()))
                       for c in [*_older_checkpoints(checkpoint), checkpoint]]
        try:
            path, state = load_latest_checkpoint(
                [d / CHECKPOINT_FILE for d in directories],
                on_skip=lambda p, exc: refused.append(f"{posixpath.basename(str(p.parent))}: {exc}"))
        except CheckpointError as exc:
            raise RuntimeError(f"cannot resume trial {session.trial_id}: {exc}") from exc
        probes_path = path.parent / PROBES_FILE
        history = json.loads(probes_path.read_text()) if probes_path.exists() else {}
    for reason in refused:
        log.warning("refused a checkpoint, resuming from an older one: %s", reason)
    return state, history, refused


def _append(history: dict, key: str, iteration: int, values: dict[str, float]) -> None:
    """Add one evaluation's per-layer values to a probe history (layout in docs/tracking.md)."""
    if not values:
        return
    value_key = PROBE_VALUE_KEYS[key]
    entry = history.setdefault(key, {"layers": list(values), "iterations": [], value_key: []})
    entry["iterations"].append(iteration)
    entry[value_key].append([values[name] for name in entry["layers"]])


def _close(run: TrialRun, result: Result, history: dict, directory: Path | None) -> None:
    """Log the final artifacts (probe histories, the final weights of a completed run) and end the run as the
    last result's status says: ``completed`` or ``diverged``."""
    for key in PROBE_VALUE_KEYS:
        if key in history:
            run.log_dict(history[key], f"probes/{key}.json")
    if result.status == "completed" and directory is not None:
        weights = directory / "final_weights.pt"
        torch.save(result.state()["model"], weights)
        run.log_file(weights, "model")
    run.finish(result.status)
