"""MLflow tracking for sweeps: one parent run per sweep, exactly one child run per trial.

The layout (tags, metric names, artifacts) is documented in docs/tracking.md; the report reads only that.
Trials log from their own processes (possibly other machines) straight to the store. A trial finds its
run by its Ray Tune trial id, so a retried or restored trial keeps logging into the same run, and steps
that are already logged are not logged twice.
"""

from __future__ import annotations

import json
import logging
import os
import random
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)
T = TypeVar("T")

ROLE_SWEEP, ROLE_TRIAL = "sweep", "trial"
PROGRESS_METRIC = "train/error"  # logged at every evaluation: its last step is how far a run's log got


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unwritable path, ...)."""


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` if set, else a SQLite store ``mlflow.db`` in the current directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def absolute_tracking_uri(uri: str) -> str:
    """Make a local store URI absolute, so trials in other working directories write to the same store."""
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).resolve()}"
    if "://" not in uri:  # a bare path: MLflow's file store
        return str(Path(uri).resolve())
    return uri


def is_local_store(uri: str) -> bool:
    """True for stores that only processes on this machine can reach (SQLite, a local file store)."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def check_tracking_uri(uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any trial starts, when the store cannot be reached or created."""
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as response:
                if response.status != 200:
                    raise TrackingError(f"tracking server {uri} answered /health with HTTP {response.status}")
        except (urllib.error.URLError, OSError) as exc:
            raise TrackingError(f"tracking server {uri} is unreachable ({exc}); start it, or pass "
                                f"--tracking-uri sqlite:///PATH/mlflow.db for a local store") from None
        return
    if uri.startswith("sqlite:///"):
        directory = Path(uri[len("sqlite:///"):]).parent
        if not directory.is_dir() or not os.access(directory, os.W_OK):
            raise TrackingError(f"cannot create the SQLite tracking store {uri}: {directory} is not a writable directory")


def with_retries(action: Callable[[], T], what: str, attempts: int = 8, first_wait: float = 0.2) -> T:
    """Run a tracking call, retrying with exponential back-off on a busy or unreachable store."""
    wait = first_wait
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except (MlflowException, sqlite3.OperationalError, OSError) as exc:
            if attempt == attempts:
                raise
            log.warning("MLflow %s failed (attempt %d/%d): %s; retrying in %.1fs", what, attempt, attempts, exc, wait)
            time.sleep(wait * (1 + random.random() / 2))
            wait = min(wait * 2, 30.0)
    raise AssertionError("unreachable")


def experiment_id_for(client: MlflowClient, name: str, create: bool) -> str | None:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    return client.create_experiment(name) if create else None


def start_parent_run(uri: str, experiment: str, sweep_id: str, run_name: str, tags: dict[str, str],
                     params: dict[str, Any]) -> tuple[str, str]:
    """Create (or, for a resumed sweep, reopen) the sweep's parent run; returns (experiment_id, run_id).

    ``sweep_id`` identifies the sweep across driver restarts (the Tune experiment's storage path).
    """
    client = MlflowClient(uri)
    experiment_id = with_retries(lambda: experiment_id_for(client, experiment, create=True), "create experiment")
    existing = client.search_runs([experiment_id], f"tags.role = '{ROLE_SWEEP}' and tags.sweep_id = '{sweep_id}'",
                                  max_results=1)
    if existing:
        run_id = existing[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return experiment_id, run_id
    run = client.create_run(experiment_id, run_name=run_name,
                            tags={**tags, "role": ROLE_SWEEP, "sweep_id": sweep_id})
    client.log_batch(run.info.run_id, params=[Param(k, _param_value(v)) for k, v in params.items()])
    return experiment_id, run.info.run_id


def finish_run(uri: str, run_id: str, status: str) -> None:
    with_retries(lambda: MlflowClient(uri).set_terminated(run_id, status), "finish run")


def close_orphaned_trial_runs(uri: str, experiment_id: str, parent_run_id: str) -> list[str]:
    """Mark trial runs left RUNNING by a dead driver as KILLED; a restored trial reopens its run."""
    client = MlflowClient(uri)
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                               f"attributes.status = 'RUNNING'", max_results=10_000)
    for run in runs:
        client.set_tag(run.info.run_id, "outcome", "interrupted")
        client.set_terminated(run.info.run_id, "KILLED")
    return [run.info.run_id for run in runs]


@dataclass(frozen=True)
class TrialTracking:
    """What a trial needs to find its MLflow run: plain data, shipped to the trial's process."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    tags: tuple[tuple[str, str], ...] = ()  # sweep-wide tags (preset, dataset, study)


class TrialRun:
    """The one MLflow run of a Tune trial, created on first use and reopened on retries and restores."""

    def __init__(self, tracking: TrialTracking, trial_id: str, run_name: str, tags: dict[str, str],
                 params: dict[str, Any]):
        self.client = MlflowClient(tracking.tracking_uri)
        self.tracking = tracking
        self.run_id, self.last_logged_step = with_retries(
            lambda: self._open(trial_id, run_name, tags, params), "open trial run")

    def _open(self, trial_id: str, run_name: str, tags: dict[str, str], params: dict[str, Any]) -> tuple[str, int]:
        t = self.tracking
        found = self.client.search_runs(
            [t.experiment_id], f"tags.mlflow.parentRunId = '{t.parent_run_id}' and tags.trial_id = '{trial_id}'",
            max_results=2)
        if found:
            run_id = found[0].info.run_id
            self.client.update_run(run_id, status="RUNNING")
            history = self.client.get_metric_history(run_id, PROGRESS_METRIC)
            return run_id, max((m.step for m in history), default=-1)
        all_tags = {**dict(t.tags), **tags, "role": ROLE_TRIAL, "trial_id": trial_id,
                    "mlflow.parentRunId": t.parent_run_id, "outcome": "running"}
        run = self.client.create_run(t.experiment_id, run_name=run_name, tags=all_tags)
        self.client.log_batch(run.info.run_id, params=[Param(k, _param_value(v)) for k, v in params.items()])
        return run.info.run_id, -1

    def log_metrics(self, step: int, metrics: dict[str, float]) -> bool:
        """Log one evaluation's metrics at ``step`` unless that step is already in the run; True if logged."""
        if step <= self.last_logged_step:
            return False
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        # PROGRESS_METRIC goes last: a batch that dies half-way is then re-sent whole on the next attempt.
        batch.sort(key=lambda m: m.key == PROGRESS_METRIC)
        with_retries(lambda: self.client.log_batch(self.run_id, metrics=batch), "log metrics")
        self.last_logged_step = step
        return True

    def set_tags(self, tags: dict[str, str]) -> None:
        with_retries(lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()]),
                     "set tags")

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        with_retries(lambda: self.client.log_dict(self.run_id, data, artifact_file), "log artifact")

    def log_file(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        with_retries(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path), "log artifact")

    def finish(self, outcome: str) -> None:
        """Close the run with a true status: FINISHED when completed, FAILED when diverged or crashed."""
        tags = {"outcome": outcome}
        if outcome == "diverged":
            tags["diverged"] = "true"
        self.set_tags(tags)
        status = RunStatus.to_string(RunStatus.FINISHED if outcome == "completed" else RunStatus.FAILED)
        finish_run(self.tracking.tracking_uri, self.run_id, status)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return text[:6000]
