"""The tracking calls a trial or a sweep makes, as one table: each call is a plain-data *entry*.

An entry is a JSON-able dict ``{"op": ..., "run_id": ..., ...}``. ``send(client, entry)`` performs it. The
same entry is sent live and, when the store was unreachable, written to the spool and sent later
(``spool.Spool``), so no call is written twice. Runs in the driver and in trial processes alike.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from tracking.store import filter_value

Entry = dict[str, Any]


def metrics_entry(run_id: str, step: int, metrics: dict[str, float], last_key: str) -> Entry:
    """One evaluation's metrics at ``step``, timestamped now (re-sending is then idempotent).

    ``last_key`` goes last in the batch: a batch that dies half-way is re-sent whole on the next attempt.
    """
    now = int(time.time() * 1000)
    ordered = sorted(metrics.items(), key=lambda item: item[0] == last_key)
    return {"op": "metrics", "run_id": run_id, "metrics": [[k, float(v), now, step] for k, v in ordered]}


def tags_entry(run_id: str, tags: dict[str, Any], attempt: int | None = None) -> Entry:
    """``attempt``: the trial attempt that set them (a run's end), so that a resend after a later attempt skips them."""
    return {"op": "tags", "run_id": run_id, "tags": {k: str(v) for k, v in tags.items()},
            **({"attempt": attempt} if attempt is not None else {})}


def artifact_entry(run_id: str, path: str | Path, artifact_path: str | None) -> Entry:
    """Log the file at ``path`` under its own name in ``artifact_path`` (None: the run's root)."""
    return {"op": "artifact", "run_id": run_id, "path": str(path), "name": Path(path).name,
            "artifact_path": artifact_path}


def dataset_entry(run_id: str, name: str, digest: str, source_type: str, source: str) -> Entry:
    """The data the run trains on, as an MLflow dataset input (context "training")."""
    return {"op": "dataset", "run_id": run_id, "name": name, "digest": digest, "source_type": source_type,
            "source": source}


def status_entry(run_id: str, status: str, attempt: int | None = None) -> Entry:
    return {"op": "status", "run_id": run_id, "status": status, "end_time": int(time.time() * 1000),
            **({"attempt": attempt} if attempt is not None else {})}


def close_orphans_entry(parent_run_id: str, experiment_id: str) -> Entry:
    """Close the sweep's trial runs still RUNNING (sent last, once everything else has arrived)."""
    return {"op": "close_orphans", "run_id": parent_run_id, "experiment_id": experiment_id}


def _send_metrics(client: MlflowClient, entry: Entry) -> None:
    client.log_batch(entry["run_id"], metrics=[Metric(k, float(v), int(ts), int(step))
                                               for k, v, ts, step in entry["metrics"]])


def _send_tags(client: MlflowClient, entry: Entry) -> None:
    client.log_batch(entry["run_id"], tags=[RunTag(k, v) for k, v in entry["tags"].items()])


def _send_artifact(client: MlflowClient, entry: Entry) -> None:
    source = Path(entry["path"])
    if source.name == entry["name"]:
        client.log_artifact(entry["run_id"], str(source), entry["artifact_path"])
        return
    with tempfile.TemporaryDirectory() as directory:  # a spooled copy: log it under its original name
        named = Path(directory) / entry["name"]
        shutil.copyfile(source, named)
        client.log_artifact(entry["run_id"], str(named), entry["artifact_path"])


# What a SQL store says when two inserts of one row race, as a tracking server relays it (SQLite; PostgreSQL;
# MySQL; SQL Server). A local store's error also carries SQLAlchemy's IntegrityError as its cause.
DUPLICATE_KEY = ("UNIQUE constraint failed", "duplicate key value violates unique constraint", "Duplicate entry",
                 "Violation of UNIQUE KEY constraint", "Cannot insert duplicate key")


def is_duplicate_key(exc: BaseException) -> bool:
    """Whether ``exc`` says a row was inserted twice (whichever database the store runs on)."""
    from sqlalchemy.exc import IntegrityError

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, IntegrityError) or any(text in str(seen) for text in DUPLICATE_KEY):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _send_dataset(client: MlflowClient, entry: Entry) -> None:
    dataset = Dataset(entry["name"], entry["digest"], entry["source_type"], entry["source"])
    inputs = [DatasetInput(dataset, [InputTag("mlflow.data.context", "training")])]
    try:
        client.log_inputs(entry["run_id"], inputs)
    except MlflowException as exc:
        # The trials of a sweep log the same data set as they start, often at the same moment. MLflow's SQL store
        # looks the data set up, then inserts it: of two racing inserts one fails on the unique key, and nothing of
        # that call is kept. The data set is there now, so the same call again only links it to this run.
        if not is_duplicate_key(exc):
            raise
        client.log_inputs(entry["run_id"], inputs)


def _send_status(client: MlflowClient, entry: Entry) -> None:
    client.set_terminated(entry["run_id"], entry["status"], entry.get("end_time"))


def _send_close_orphans(client: MlflowClient, entry: Entry) -> None:
    close_running_children(client, entry["experiment_id"], entry["run_id"])


OPERATIONS: dict[str, Callable[[MlflowClient, Entry], None]] = {
    "metrics": _send_metrics, "tags": _send_tags, "artifact": _send_artifact, "dataset": _send_dataset,
    "status": _send_status, "close_orphans": _send_close_orphans,
}


def check_entry(entry: Entry) -> None:
    """Refuse an entry that a forged spool line could turn against the machine resending it: an unknown call,
    or an artifact whose file names are not plain names (an absolute or ``..`` path would read or write any
    file the resending user can). Raises ValueError naming the bad value."""
    if entry.get("op") not in OPERATIONS:
        raise ValueError(f"unknown tracking call {entry.get('op')!r}; known: {sorted(OPERATIONS)}")
    if entry["op"] != "artifact":
        return
    for key in ("path", "name"):
        value = str(entry.get(key, ""))
        if value in ("", ".", "..") or Path(value).name != value:
            raise ValueError(f"spooled artifact {key} {value!r} is not a plain file name")
    folder = entry.get("artifact_path")
    if folder is not None and (Path(folder).is_absolute() or ".." in Path(folder).parts):
        raise ValueError(f"spooled artifact_path {folder!r} must be relative, without '..'")


def send(client: MlflowClient, entry: Entry) -> None:
    """Perform one tracking call (raises MLflow's or the OS's error when the store does not take it)."""
    if entry["op"] not in OPERATIONS:
        raise ValueError(f"unknown tracking call {entry['op']!r}; known: {sorted(OPERATIONS)}")
    OPERATIONS[entry["op"]](client, entry)


def close_running_children(client: MlflowClient, experiment_id: str, parent_run_id: str) -> list[str]:
    """Mark the parent's child runs still RUNNING as KILLED, outcome ``interrupted``; returns their ids.

    Call only when none of them can still be running (their trials are gone). A resumed trial reopens its run.
    """
    runs = client.search_runs([experiment_id], f"tags.mlflow.parentRunId = {filter_value(parent_run_id)} "
                                               f"and attributes.status = 'RUNNING'", max_results=10_000)
    for run in runs:
        client.set_tag(run.info.run_id, "outcome", "interrupted")
        client.set_terminated(run.info.run_id, "KILLED")
    return [run.info.run_id for run in runs]


def param_value(value: Any) -> str:
    """An MLflow param value: lists and dicts as JSON, cut to MLflow's length limit."""
    text = json.dumps(value) if isinstance(value, (list, tuple, dict)) else str(value)
    return text[:6000]
