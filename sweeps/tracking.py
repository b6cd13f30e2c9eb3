"""MLflow tracking for sweeps: one parent run per sweep, exactly one child run per trial.

The layout (tags, metric names, artifacts) is documented in docs/tracking.md; the report reads only that.
Trials log from their own processes (possibly other machines) straight to the store. A trial finds its
run by its Ray Tune trial id, so a retried or restored trial keeps logging into the same run, and steps
that are already logged are not logged twice.

When the store cannot be reached (a tracking server restarting, a network outage), a trial does not stop
training: each call is retried a few times, then what it would have sent is appended to a *spool* (a JSONL
file per trial in the sweep's storage directory) and sent, in order, at the next call that reaches the
store. What is still spooled when the sweep ends can be re-sent with ``python -m sweeps.resend``
(failure modes and what to do: docs/failure-modes.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import shutil
import socket
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
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
SPOOL_DIRNAME = "tracking_spool"  # under the sweep's storage directory
# MLflow errors that retrying cannot fix: the request itself is wrong. Anything else (connection refused,
# timeouts, HTTP 5xx, a locked SQLite file) is treated as the store being temporarily unavailable.
PERMANENT_ERRORS = ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST", "RESOURCE_ALREADY_EXISTS",
                    "BAD_REQUEST", "PERMISSION_DENIED", "UNAUTHENTICATED", "INVALID_STATE")


class TrackingError(RuntimeError):
    """The tracking store cannot be used (unreachable server, unwritable path, ...)."""


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` tracking URI (None for any other store)."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


def absolute_tracking_uri(uri: str) -> str:
    """Make a local store URI absolute, so trials in other working directories write to the same store."""
    if (path := sqlite_path(uri)) is not None:
        return f"sqlite:///{path.resolve()}"
    if "://" not in uri:  # a bare path: MLflow's file store
        return str(Path(uri).resolve())
    return uri


def is_local_store(uri: str) -> bool:
    """True for stores that only processes on this machine can reach (SQLite, a local file store)."""
    return uri.startswith(("sqlite:", "file:")) or "://" not in uri


def bound_http_retries(uri: str) -> None:
    """Keep one MLflow HTTP call short (the sweep retries with its own back-off, then spools).

    MLflow's defaults retry a refused connection 7 times with exponential back-off (minutes of blocking)
    and wait 120 s for an answer. Explicit settings in the environment win.
    """
    if uri.startswith(("http://", "https://")):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")


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
    if (store := sqlite_path(uri)) is not None:
        directory = store.parent
        if not directory.is_dir() or not os.access(directory, os.W_OK):
            raise TrackingError(f"cannot create the SQLite tracking store {uri}: {directory} is not a writable directory")


def is_transient(exc: BaseException) -> bool:
    """True when retrying later may succeed (the store is busy or unreachable), False for a bad request."""
    if isinstance(exc, MlflowException):
        return exc.error_code not in PERMANENT_ERRORS
    return isinstance(exc, (sqlite3.OperationalError, OSError))


def with_retries(action: Callable[[], T], what: str, attempts: int = 8, first_wait: float = 0.2) -> T:
    """Run a tracking call, retrying with exponential back-off on a busy or unreachable store."""
    wait = first_wait
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except (MlflowException, sqlite3.OperationalError, OSError) as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            log.warning("MLflow %s failed (attempt %d/%d): %s; retrying in %.1fs", what, attempt, attempts,
                        _short(exc), wait)
            time.sleep(wait * (1 + random.random() / 2))
            wait = min(wait * 2, 30.0)
    raise AssertionError("unreachable")


def experiment_id_for(client: MlflowClient, name: str, create: bool) -> str | None:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location_for(client.tracking_uri)) if create else None


def artifact_location_for(uri: str) -> str | None:
    """Artifacts of a SQLite store live beside it (``mlartifacts/``), so store and artifacts move together.

    MLflow's default is ``./mlruns`` of whichever process creates the experiment: under ``ray job submit``
    that is a temporary copy of the working directory, which Ray deletes.
    """
    if (path := sqlite_path(uri)) is not None:
        return (path.parent / "mlartifacts").as_uri()
    return None  # a tracking server decides where its artifacts go


# --- the sweep's parent run, and runs left behind by a dead driver ----------------------------------------

def driver_identity() -> dict[str, str]:
    """Tags that say which process drives a sweep, so a later command can tell whether it is still alive."""
    import psutil  # a dependency of Ray

    me = psutil.Process()
    return {"driver_host": socket.gethostname(), "driver_pid": str(me.pid),
            "driver_started": f"{me.create_time():.2f}"}


def driver_alive(tags: dict[str, str]) -> bool | None:
    """Whether the driver recorded in a parent run's tags still runs: True, False, or None (another host)."""
    import psutil

    if tags.get("driver_host") != socket.gethostname() or "driver_pid" not in tags:
        return None
    try:
        process = psutil.Process(int(tags["driver_pid"]))
        return abs(process.create_time() - float(tags.get("driver_started", "0"))) < 1.0  # not a reused pid
    except (psutil.NoSuchProcess, ValueError):
        return False


@dataclass(frozen=True)
class EarlierSweep:
    """The newest parent run of the same sweep (same experiment and Tune storage directory)."""

    run_id: str
    status: str
    alive: bool | None  # whether its driver still runs (None: it ran on another host)
    started: int

    @property
    def interrupted(self) -> bool:
        """Its driver died (or was stopped) before the sweep finished."""
        return self.status == "KILLED" or (self.status == "RUNNING" and self.alive is False)


def earlier_sweep(uri: str, experiment: str, sweep_id: str) -> EarlierSweep | None:
    client = MlflowClient(uri)
    experiment_id = with_retries(lambda: experiment_id_for(client, experiment, create=False), "find experiment")
    if experiment_id is None:
        return None
    found = with_retries(lambda: client.search_runs(
        [experiment_id], f"tags.role = '{ROLE_SWEEP}' and tags.sweep_id = '{sweep_id}'",
        order_by=["attributes.start_time DESC"], max_results=1), "find the sweep's parent run")
    if not found:
        return None
    run = found[0]
    return EarlierSweep(run.info.run_id, run.info.status, driver_alive(run.data.tags), run.info.start_time)


def start_parent_run(uri: str, experiment: str, sweep_id: str, run_name: str, tags: dict[str, str],
                     params: dict[str, Any], resume: bool = False) -> tuple[str, str]:
    """Create the sweep's parent run, or with ``resume`` reopen the newest one of the same sweep.

    ``sweep_id`` identifies the sweep across driver restarts (the Tune experiment's storage path). Returns
    (experiment_id, run_id). Refuses to attach to a sweep whose driver is still running.
    """
    client = MlflowClient(uri)
    experiment_id = with_retries(lambda: experiment_id_for(client, experiment, create=True), "create experiment")
    earlier = earlier_sweep(uri, experiment, sweep_id)
    if earlier is not None and earlier.status == "RUNNING" and earlier.alive:
        raise TrackingError(f"the sweep {sweep_id} is still running (parent run {earlier.run_id}, driver pid "
                            f"on this host is alive); wait for it to end or stop it first")
    identity = driver_identity()
    if resume and earlier is not None:
        with_retries(lambda: client.log_batch(earlier.run_id, tags=[RunTag(k, v) for k, v in identity.items()]),
                     "tag parent run")
        with_retries(lambda: client.update_run(earlier.run_id, status="RUNNING"), "reopen parent run")
        return experiment_id, earlier.run_id
    run = with_retries(lambda: client.create_run(experiment_id, run_name=run_name, tags={
        **tags, "role": ROLE_SWEEP, "sweep_id": sweep_id, **identity}), "create parent run")
    with_retries(lambda: client.log_batch(run.info.run_id, params=[Param(k, _param_value(v)) for k, v in params.items()]),
                 "log sweep params")
    return experiment_id, run.info.run_id


def finish_run(uri: str, run_id: str, status: str, attempts: int = 8) -> None:
    with_retries(lambda: MlflowClient(uri).set_terminated(run_id, status), "finish run", attempts=attempts)


def close_orphaned_trial_runs(uri: str, experiment_id: str, parent_run_id: str, attempts: int = 8) -> list[str]:
    """Mark trial runs left RUNNING by a dead driver as KILLED (outcome ``interrupted``).

    Call only when no trial of this sweep can still be running. A resumed trial reopens its run.
    """
    client = MlflowClient(uri)
    runs = with_retries(lambda: client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'",
        max_results=10_000), "find orphaned runs", attempts=attempts)
    for run in runs:
        with_retries(lambda: client.set_tag(run.info.run_id, "outcome", "interrupted"), "tag orphaned run",
                     attempts=attempts)
        with_retries(lambda: client.set_terminated(run.info.run_id, "KILLED"), "close orphaned run",
                     attempts=attempts)
    return [run.info.run_id for run in runs]


def close_interrupted_sweep(uri: str, experiment: str, earlier: EarlierSweep) -> list[str]:
    """Give the runs of a sweep whose driver died their true status (KILLED, outcome ``interrupted``)."""
    client = MlflowClient(uri)
    experiment_id = experiment_id_for(client, experiment, create=False)
    closed = close_orphaned_trial_runs(uri, experiment_id, earlier.run_id)
    if earlier.status == "RUNNING":
        finish_run(uri, earlier.run_id, "KILLED")
    return closed


def find_trial_run(client: MlflowClient, experiment_id: str, parent_run_id: str, trial_id: str):
    found = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}' and "
                                                f"tags.trial_id = '{trial_id}'", max_results=2)
    return found[0] if found else None


def mark_trial_run_failed(tracking: "TrialTracking", trial_id: str, attempts: int = 3) -> bool:
    """From the driver: close a trial's run as FAILED if it is still RUNNING (its process died without
    closing it, e.g. killed by the OS). True if the run was changed."""
    client = MlflowClient(tracking.tracking_uri)
    run = with_retries(lambda: find_trial_run(client, tracking.experiment_id, tracking.parent_run_id, trial_id),
                       "find trial run", attempts=attempts)
    if run is None or run.info.status != "RUNNING":
        return False
    with_retries(lambda: client.set_tag(run.info.run_id, "outcome", "failed"), "tag failed run", attempts=attempts)
    with_retries(lambda: client.set_terminated(run.info.run_id, "FAILED"), "close failed run", attempts=attempts)
    return True


# --- the spool: what could not be sent yet ----------------------------------------------------------------

class Spool:
    """Tracking calls that could not reach the store, in order, in a JSONL file (one per run).

    Each line is one call: ``metrics`` (with their original timestamps, so re-sending is idempotent),
    ``tags``, ``artifact`` (a copy of the file sits next to the spool), ``status`` (the run's end) or, for
    the sweep's parent run, ``close_orphans``.
    """

    def __init__(self, path: str | os.PathLike, tracking_uri: str):
        self.path = Path(path)
        self.files = self.path.with_suffix(".files")
        self.tracking_uri = tracking_uri

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def pending(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def entries(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        entries = []
        for line in self.path.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill mid-append: its call is lost, not the rest
                log.warning("skipping an unreadable line in %s", self.path)
        return entries

    def append(self, entry: dict[str, Any]) -> None:
        with self._locked(), open(self.path, "a") as f:
            f.write(json.dumps({**entry, "uri": self.tracking_uri}) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def keep_file(self, source: str | os.PathLike, name: str) -> str:
        """Copy a file to be logged as an artifact next to the spool; returns its name there."""
        self.files.mkdir(parents=True, exist_ok=True)
        target = self.files / f"{len(list(self.files.iterdir())):04d}-{name}"
        shutil.copyfile(source, target)
        return target.name

    def flush(self, client: MlflowClient | None = None, attempts: int = 1) -> int:
        """Send the spooled calls in order; stop at the first that fails. Returns how many are left.

        Raises only for a permanent error (a call the store rejects), never because the store is down.
        """
        if not self.pending():
            return 0
        with self._locked():
            entries = self.entries()
            if not entries:
                return 0
            if client is None:
                bound_http_retries(entries[0]["uri"])
            sent = 0
            try:
                for entry in entries:
                    target = client or MlflowClient(entry["uri"])
                    with_retries(lambda: self._send(target, entry), "re-send spooled call", attempts=attempts)
                    sent += 1
            except (MlflowException, sqlite3.OperationalError, OSError) as exc:
                if not is_transient(exc):
                    raise
                log.warning("tracking store still unreachable (%s); %d spooled call(s) kept in %s",
                            _short(exc), len(entries) - sent, self.path)
            finally:
                self._rewrite(entries[sent:])
            return len(entries) - sent

    def _send(self, client: MlflowClient, entry: dict[str, Any]) -> None:
        run_id, op = entry["run_id"], entry["op"]
        if op == "metrics":
            client.log_batch(run_id, metrics=[Metric(k, float(v), int(ts), int(step))
                                              for k, v, ts, step in entry["metrics"]])
        elif op == "tags":
            client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in entry["tags"].items()])
        elif op == "artifact":
            source = self.files / entry["file"]
            with contextlib.ExitStack() as stack:  # log under the artifact's own name
                directory = Path(stack.enter_context(_temporary_directory()))
                named = directory / entry["name"]
                shutil.copyfile(source, named)
                client.log_artifact(run_id, str(named), entry.get("artifact_path"))
        elif op == "status":
            client.set_terminated(run_id, entry["status"], entry.get("end_time"))
        elif op == "close_orphans":  # the sweep's trial runs still RUNNING once everything else was sent
            orphans = client.search_runs([entry["experiment_id"]], f"tags.mlflow.parentRunId = '{run_id}' and "
                                                                   f"attributes.status = 'RUNNING'", max_results=10_000)
            for orphan in orphans:
                client.set_tag(orphan.info.run_id, "outcome", "interrupted")
                client.set_terminated(orphan.info.run_id, "KILLED")
        else:
            raise ValueError(f"unknown spooled call {op!r} in {self.path}")

    def _rewrite(self, remaining: list[dict[str, Any]]) -> None:
        if not remaining:  # all sent: leave nothing behind (one writer per spool, so the lock can go too)
            self.path.unlink(missing_ok=True)
            if self.files.exists():
                shutil.rmtree(self.files, ignore_errors=True)
            self.path.with_suffix(".lock").unlink(missing_ok=True)
            return
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(e) + "\n" for e in remaining))
        os.replace(tmp, self.path)


@contextlib.contextmanager
def _temporary_directory() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        yield directory


def spool_files(directory: str | os.PathLike) -> list[Path]:
    """The spool files under ``directory`` (a spool directory or a sweep's storage directory)."""
    directory = Path(directory)
    if (directory / SPOOL_DIRNAME).is_dir():
        directory = directory / SPOOL_DIRNAME
    return sorted(directory.glob("*.jsonl")) if directory.is_dir() else []


def resend(directory: str | os.PathLike, tracking_uri: str | None = None, attempts: int = 3) -> int:
    """Send everything spooled under ``directory``; returns how many calls are still unsent."""
    left = 0
    client = MlflowClient(tracking_uri) if tracking_uri else None
    if tracking_uri:
        bound_http_retries(tracking_uri)
    # Trials' spools first: the sweep's own (closing runs left RUNNING, then the parent) comes last.
    for path in sorted(spool_files(directory), key=lambda p: p.name.startswith("sweep-")):
        spool = Spool(path, tracking_uri or "")
        left += spool.flush(client, attempts=attempts)
    return left


@dataclass(frozen=True)
class TrialTracking:
    """What a trial needs to find its MLflow run: plain data, shipped to the trial's process."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str
    tags: tuple[tuple[str, str], ...] = ()  # sweep-wide tags (preset, dataset, study)
    spool_dir: str = ""  # where unsent tracking calls are kept (see Spool); empty: a temporary directory


class TrialRun:
    """The one MLflow run of a Tune trial, created on first use and reopened on retries and restores.

    Opening needs the store (it retries with back-off, then raises: Tune retries the trial). After that,
    no call blocks training for long: a call the store does not take within ``attempts`` tries is spooled,
    and later calls wait for a back-off period before trying the store again.
    """

    def __init__(self, tracking: TrialTracking, trial_id: str, run_name: str, tags: dict[str, str],
                 params: dict[str, Any], attempts: int = 3):
        bound_http_retries(tracking.tracking_uri)
        self.client = MlflowClient(tracking.tracking_uri)
        self.tracking = tracking
        self.attempts = attempts
        spool_dir = Path(tracking.spool_dir) if tracking.spool_dir else Path(
            os.environ.get("TMPDIR", "/tmp")) / "resnet-studies-spool"
        self.spool = Spool(spool_dir / f"{trial_id}.jsonl", tracking.tracking_uri)
        self._retry_at, self._backoff = 0.0, 1.0
        self.run_id, self.last_logged_step, self.attempt = with_retries(
            lambda: self._open(trial_id, run_name, tags, params), "open trial run")

    def _open(self, trial_id: str, run_name: str, tags: dict[str, str], params: dict[str, Any]) -> tuple[str, int, int]:
        t = self.tracking
        # What an earlier attempt of this trial could not send goes first, so the history below is complete.
        if self.spool.flush(self.client, attempts=1):
            raise MlflowException(f"tracking store {t.tracking_uri} is unreachable; spooled calls in "
                                  f"{self.spool.path} are unsent")
        found = find_trial_run(self.client, t.experiment_id, t.parent_run_id, trial_id)
        if found:
            run_id = found.info.run_id
            attempt = int(found.data.tags.get("attempts", "1")) + 1
            self.client.log_batch(run_id, tags=[RunTag("outcome", "running"), RunTag("attempts", str(attempt))])
            self.client.update_run(run_id, status="RUNNING")
            history = self.client.get_metric_history(run_id, PROGRESS_METRIC)
            return run_id, max((m.step for m in history), default=-1), attempt
        all_tags = {**dict(t.tags), **tags, "role": ROLE_TRIAL, "trial_id": trial_id,
                    "mlflow.parentRunId": t.parent_run_id, "outcome": "running", "attempts": "1"}
        run = self.client.create_run(t.experiment_id, run_name=run_name, tags=all_tags)
        self.client.log_batch(run.info.run_id, params=[Param(k, _param_value(v)) for k, v in params.items()])
        return run.info.run_id, -1, 1

    def _call(self, what: str, action: Callable[[], Any], entry: dict[str, Any], attempts: int | None = None) -> bool:
        """Do one tracking call, or spool it (after what is already spooled). True if it reached the store."""
        return self._attempt(what, action, lambda: self.spool.append({**entry, "run_id": self.run_id}), attempts)

    def _attempt(self, what: str, action: Callable[[], Any], keep: Callable[[], None], attempts: int | None = None) -> bool:
        if self.spool.pending():  # keep the order: nothing overtakes what is already spooled
            if time.monotonic() < self._retry_at or self.spool.flush(self.client, attempts=1):
                keep()
                self._failed(what, None)
                return False
        try:
            with_retries(action, what, attempts=attempts or self.attempts)
        except (MlflowException, sqlite3.OperationalError, OSError) as exc:
            if not is_transient(exc):
                raise
            keep()
            self._failed(what, exc)
            return False
        self._backoff = 1.0
        return True

    def _failed(self, what: str, exc: BaseException | None) -> None:
        if exc is not None or time.monotonic() >= self._retry_at:
            log.warning("MLflow %s: tracking store %s unreachable%s; kept in %s, re-sent when it is back "
                        "(or run: python -m sweeps.resend %s)", what, self.tracking.tracking_uri,
                        f" ({_short(exc)})" if exc else "", self.spool.path, self.spool.path.parent)
        if time.monotonic() >= self._retry_at:
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, 60.0)

    def log_metrics(self, step: int, metrics: dict[str, float]) -> bool:
        """Log one evaluation's metrics at ``step`` unless that step is already in the run; True if logged.

        A step that could not reach the store is spooled and counts as logged (it is sent later).
        """
        if step <= self.last_logged_step:
            return False
        now = int(time.time() * 1000)
        batch = [Metric(key, float(value), now, step) for key, value in metrics.items()]
        # PROGRESS_METRIC goes last: a batch that dies half-way is then re-sent whole on the next attempt.
        batch.sort(key=lambda m: m.key == PROGRESS_METRIC)
        entry = {"op": "metrics", "metrics": [[m.key, m.value, m.timestamp, m.step] for m in batch]}
        self._call("log metrics", lambda: self.client.log_batch(self.run_id, metrics=batch), entry)
        self.last_logged_step = step
        return True

    def set_tags(self, tags: dict[str, str]) -> None:
        tags = {k: str(v) for k, v in tags.items()}
        self._call("set tags", lambda: self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in tags.items()]),
                   {"op": "tags", "tags": tags})

    def log_dict(self, data: dict[str, Any], artifact_file: str) -> None:
        with _temporary_directory() as directory:
            path = Path(directory) / Path(artifact_file).name
            path.write_text(json.dumps(data, indent=2))
            self.log_file(path, str(Path(artifact_file).parent) if Path(artifact_file).parent != Path(".") else None)

    def log_file(self, path: str | os.PathLike, artifact_path: str | None = None) -> None:
        path = Path(path)

        def keep() -> None:
            kept = self.spool.keep_file(path, path.name)
            self.spool.append({"op": "artifact", "run_id": self.run_id, "file": kept, "name": path.name,
                               "artifact_path": artifact_path})

        self._attempt("log artifact", lambda: self.client.log_artifact(self.run_id, str(path), artifact_path), keep)

    def finish(self, outcome: str) -> bool:
        """Close the run with a true status: FINISHED when completed, FAILED when diverged or crashed.

        Returns False when the store was unreachable: the end is then spooled with everything before it.
        """
        tags = {"outcome": outcome}
        if outcome == "diverged":
            tags["diverged"] = "true"
        status = RunStatus.to_string(RunStatus.FINISHED if outcome == "completed" else RunStatus.FAILED)
        if self.spool.pending():  # one last, slightly more patient try to deliver what waits
            self._retry_at = 0.0
            self.spool.flush(self.client, attempts=self.attempts)
        self.set_tags(tags)
        end_time = int(time.time() * 1000)
        return self._call("finish run", lambda: self.client.set_terminated(self.run_id, status, end_time),
                          {"op": "status", "status": status, "end_time": end_time})


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return text[:6000]


def _short(exc: BaseException | None) -> str:
    text = str(exc).splitlines()[0] if exc is not None and str(exc) else type(exc).__name__
    return text[:300]
