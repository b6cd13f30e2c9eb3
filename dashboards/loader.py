"""Read one MLflow experiment (as docs/tracking.md describes it) into tidy pandas DataFrames.

Tables:
- ``runs``: one row per trial run — identity (run_id, name, status, outcome), the sweep's tags as typed
  columns (family, depth, shortcut, seed, ...), key params (lr, weight_decay, iterations), times, and every
  tag / param / final metric under MLflow's own ``tags.`` / ``params.`` / ``metrics.`` column names.
- ``history``: long format ``run_id, metric, step, value`` — every logged point.
- ``responses``: long format ``run_id, layer_index, layer, std, iteration`` — the final evaluation of
  ``probes/layer_response_std.json`` (Fig. 7).

Metric histories are fetched in bulk (one query per metric for many runs) when the store offers it, because
one ``get_metric_history`` call per run and metric is thousands of round trips for a large sweep.
"""

from __future__ import annotations

import gc
import json
import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import urlparse

import pandas as pd

RESPONSE_ARTIFACT = "probes/layer_response_std.json"
_BULK_CHUNK = 200  # run ids per bulk query: well under SQLite's bound-parameter limit
_THREADS = 8  # concurrent per-run requests where no bulk API exists (tracking servers)


class ExperimentNotFoundError(LookupError):
    """The named experiment is not in the store; the message lists the ones that are."""


@dataclass
class ExperimentData:
    """Everything the report needs from one experiment, read once."""

    name: str
    experiment_id: str
    tracking_uri: str
    sweeps: pd.DataFrame  # parent runs (tag role=sweep): the one reported first, then the others newest first
    runs: pd.DataFrame  # trial runs of the reported sweep, one row each
    history: pd.DataFrame  # run_id, metric, step, value
    responses: pd.DataFrame  # run_id, layer_index, layer, std, iteration
    missing_probes: list[str] = field(default_factory=list)  # run ids without the response artifact
    other_runs: int = 0  # trial runs of the experiment's other sweeps (or of none), not reported
    unreadable_probes: dict[str, str] = field(default_factory=dict)  # run id -> why its artifact could not be read


    @property
    def parent_run_id(self) -> str | None:
        """The reported sweep (parent) run, where the report is logged."""
        return None if self.sweeps.empty else str(self.sweeps["run_id"].iloc[0])

    @property
    def sweep_tags(self) -> dict[str, str]:
        """Tags of the reported sweep run (study, preset, dataset, recipe), or {} when there is none."""
        if self.sweeps.empty:
            return {}
        row = self.sweeps.iloc[0]
        return {c[len("tags."):]: row[c] for c in self.sweeps.columns if c.startswith("tags.") and pd.notna(row[c])}


def default_tracking_uri() -> str:
    """``MLFLOW_TRACKING_URI`` when set, else the sweep's embedded default ``sqlite:///<cwd>/mlflow.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd().resolve() / 'mlflow.db'}"


def open_client(tracking_uri: str | None = None):
    """An ``MlflowClient`` for the URI; a SQLite file that does not exist is an error, not a new empty store."""
    from mlflow.tracking import MlflowClient

    from tracking.store import masked_uri

    uri = tracking_uri or default_tracking_uri()
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite" and parsed.path and not Path(parsed.path).exists():
        raise FileNotFoundError(f"no MLflow store at {parsed.path} (tracking URI {masked_uri(uri)}); "
                                f"pass --tracking-uri or set MLFLOW_TRACKING_URI")
    return MlflowClient(uri)


def find_experiment(client, name: str):
    """The experiment called ``name``; otherwise an error listing the experiments that exist."""
    from tracking.store import masked_uri

    experiment = client.get_experiment_by_name(name)
    if experiment is None or experiment.lifecycle_stage != "active":
        names = sorted(e.name for e in client.search_experiments())
        listing = ", ".join(repr(n) for n in names) if names else "(none)"
        raise ExperimentNotFoundError(
            f"no experiment named {name!r} at {masked_uri(client.tracking_uri)}; experiments there: {listing}")
    return experiment


def load_experiment(experiment: str, tracking_uri: str | None = None, *,
                    metrics: Iterable[str] | Callable[[pd.DataFrame], Iterable[str]] | None = None,
                    sweep_run: str | None = None) -> ExperimentData:
    """Read the trial runs of one sweep of an experiment (its newest, or the parent run ``sweep_run``), their
    metric histories (all, or only ``metrics``: names, or a function of the runs table that names them, so
    that a history is fetched only for experiments that need it) and layer responses. Trials of other sweeps
    are not pooled with them: a sweep run again would otherwise double the seeds of every verdict. An
    experiment without sweep runs (runs logged by hand) is read whole."""
    client = open_client(tracking_uri)
    exp = find_experiment(client, experiment)
    all_runs = search_all_runs(client, exp.experiment_id)
    table = runs_table(all_runs)
    is_sweep = table["role"].eq("sweep")
    sweeps = table[is_sweep].sort_values("start_time", ascending=False).reset_index(drop=True)
    sweeps = reported_first(sweeps, sweep_run, exp.name)
    runs = table[~is_sweep]
    if not sweeps.empty:
        mine = runs["parent_run_id"].eq(sweeps["run_id"].iloc[0])
        other_runs, runs = int((~mine).sum()), runs[mine]
    else:
        other_runs = 0
    runs = runs.reset_index(drop=True)

    trial_ids = set(runs["run_id"])
    trial_runs = [r for r in all_runs if r.info.run_id in trial_ids]
    if callable(metrics):
        metrics = metrics(runs)
    keys = sorted({k for r in trial_runs for k in r.data.metrics}) if metrics is None else list(metrics)
    history = fetch_histories(client, runs["run_id"].tolist(), keys)
    responses, missing, unreadable = fetch_layer_responses(client, trial_runs)

    last = history.groupby("run_id")["step"].max() if not history.empty else pd.Series(dtype="int64")
    runs["last_step"] = runs["run_id"].map(last).astype("Int64")
    return ExperimentData(exp.name, exp.experiment_id, client.tracking_uri, sweeps, runs, history, responses, missing,
                          other_runs, unreadable)


def reported_first(sweeps: pd.DataFrame, sweep_run: str | None, experiment: str) -> pd.DataFrame:
    """The sweep runs with the reported one first: ``sweep_run`` if given (an error lists the valid ones),
    else the newest."""
    if sweep_run is None:
        return sweeps
    chosen = sweeps["run_id"].eq(sweep_run)
    if not chosen.any():
        listing = ", ".join(f"{r.run_id} ({r.name})" for r in sweeps.itertuples()) or "(none)"
        raise ExperimentNotFoundError(f"no sweep run {sweep_run!r} in experiment {experiment!r}; its sweep runs, "
                                      f"newest first: {listing}")
    return pd.concat([sweeps[chosen], sweeps[~chosen]]).reset_index(drop=True)


def search_all_runs(client, experiment_id: str) -> list:
    """Every run of the experiment (all pages), oldest first."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], max_results=1000, page_token=token,
                                  order_by=["attributes.start_time ASC"])
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def runs_table(runs: list) -> pd.DataFrame:
    """One row per run: typed identity and sweep columns first, then ``tags.*``, ``params.*``, ``metrics.*``."""
    rows = []
    for run in runs:
        info, data = run.info, run.data
        tags, params = data.tags, data.params
        row = {
            "run_id": info.run_id,
            "name": info.run_name or tags.get("mlflow.runName", info.run_id),
            "status": info.status,
            "outcome": _outcome(tags.get("outcome"), info.status),
            "role": tags.get("role", ""),
            "parent_run_id": tags.get("mlflow.parentRunId"),
            "family": tags.get("family"),
            "depth": tags.get("depth", params.get("model.depth")),
            "shortcut": tags.get("shortcut"),
            "seed": tags.get("seed", params.get("run.seed")),
            # layout: "cifar" / "imagenet"; logged as model_family / model.family before the rename
            "layout": _first(tags.get("layout"), tags.get("model_family"), params.get("model.layout"),
                             params.get("model.family")),
            "dataset": tags.get("dataset", params.get("data.dataset")),
            "preset": tags.get("preset"),
            "trial_id": tags.get("trial_id"),
            "lr": params.get("optim.lr"),
            "weight_decay": params.get("optim.weight_decay"),
            "iterations": params.get("optim.iterations", params.get("iterations")),
            "start_time": info.start_time,
            "end_time": info.end_time,
        }
        row.update({f"tags.{k}": v for k, v in tags.items() if not k.startswith("mlflow.")})
        row.update({f"params.{k}": v for k, v in params.items()})
        row.update({f"metrics.{k}": v for k, v in data.metrics.items()})
        rows.append(row)
    table = pd.DataFrame(rows, columns=_BASE_COLUMNS if not rows else None)
    for column in ("depth", "seed", "iterations"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("Int64")
    for column in ("lr", "weight_decay"):
        table[column] = pd.to_numeric(table[column], errors="coerce").astype("float64")
    for column in ("start_time", "end_time"):
        table[column] = pd.to_datetime(table[column], unit="ms", utc=True)
    table["duration_s"] = (table["end_time"] - table["start_time"]).dt.total_seconds()
    metric_cols = [c for c in table.columns if c.startswith("metrics.")]
    table[metric_cols] = table[metric_cols].astype("float64")
    return table


_BASE_COLUMNS = ["run_id", "name", "status", "outcome", "role", "parent_run_id", "family", "depth", "shortcut",
                 "seed", "layout", "dataset", "preset", "trial_id", "lr", "weight_decay", "iterations",
                 "start_time", "end_time"]


def _first(*values: str | None) -> str | None:
    """The first value that is set."""
    return next((v for v in values if v), None)


def _outcome(tag: str | None, status: str) -> str:
    """The sweep's outcome tag; for runs without one, derived from the MLflow status."""
    if tag:
        return tag
    return {"FINISHED": "completed", "FAILED": "failed", "KILLED": "interrupted", "RUNNING": "running",
            "SCHEDULED": "running"}.get(status, status.lower())


def fetch_histories(client, run_ids: list[str], keys: Iterable[str]) -> pd.DataFrame:
    """All logged points of ``keys`` for ``run_ids`` as a long DataFrame (run_id, metric, step, value).

    Uses the store's bulk query (SQL stores: one query per metric and 200 runs) when it exists, else one
    ``get_metric_history`` call per run and metric, run concurrently.
    """
    keys = list(keys)
    store = _tracking_store(client)
    columns: dict[str, list] = {"run_id": [], "metric": [], "step": [], "value": []}

    def add(run_id: str, key: str, step: int, value: float) -> None:
        columns["run_id"].append(run_id)
        columns["metric"].append(key)
        columns["step"].append(step)
        columns["value"].append(value)

    if store is not None and hasattr(store, "get_metric_history_bulk"):
        with _gc_paused():
            for key in keys:
                for start in range(0, len(run_ids), _BULK_CHUNK):
                    chunk = run_ids[start:start + _BULK_CHUNK]
                    for item in store.get_metric_history_bulk(run_ids=chunk, metric_key=key, max_results=2**62):
                        add(item.run_id, key, item.step, item.value)
    else:
        pairs = [(run_id, key) for run_id in run_ids for key in keys]
        with ThreadPoolExecutor(_THREADS) as pool:
            for (run_id, key), points in zip(pairs, pool.map(lambda p: client.get_metric_history(*p), pairs)):
                for m in points:
                    add(run_id, key, m.step, m.value)
    history = pd.DataFrame(columns).astype({"run_id": "str", "metric": "str", "step": "int64", "value": "float64"})
    # Several values at one step (a retried evaluation): keep the last logged, as MLflow's "latest" does.
    history = history.drop_duplicates(["run_id", "metric", "step"], keep="last")
    return history.sort_values(["run_id", "metric", "step"], kind="stable").reset_index(drop=True)


def _tracking_store(client):
    """The client's backend store, or None. MLflow exposes the bulk history query only on the store, through a
    private attribute: fenced here, and without it the histories come from the public per-run calls."""
    return getattr(getattr(client, "_tracking_client", None), "store", None)


def _artifact_repository() -> Callable | None:
    """MLflow's internal ``get_artifact_repository`` (it skips the client's per-call run lookup), or None."""
    try:
        from mlflow.store.artifact import artifact_repository_registry as registry
    except ImportError:
        return None
    return getattr(registry, "get_artifact_repository", None)


def _artifact_reader(client) -> Callable[[Any, str], str]:
    """``read(run, path) -> local file`` for a run's artifact: through MLflow's artifact repository, fenced in
    ``_artifact_repository``; without it, the public ``download_artifacts``."""
    repository = _artifact_repository()
    if repository is None:
        return lambda run, path: client.download_artifacts(run.info.run_id, path)
    return lambda run, path: repository(run.info.artifact_uri, tracking_uri=client.tracking_uri).download_artifacts(path)


def fetch_layer_responses(client, runs: list) -> tuple[pd.DataFrame, list[str], dict[str, str]]:
    """The final evaluation of each run's layer-response artifact; the ids of runs that lack it (absent or not
    usable); and why it could not be read where the store failed otherwise (a refused or failed download)."""
    read = _artifact_reader(client)

    def load(run) -> tuple[dict | None, str | None]:
        try:
            return json.loads(Path(read(run, RESPONSE_ARTIFACT)).read_text()), None
        except json.JSONDecodeError:
            return None, None  # there, but not JSON: unusable, as a payload of the wrong shape
        except Exception as exc:  # noqa: BLE001 - absent, or the store failed: told apart below
            return None, None if _is_absent(exc) else (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]

    with _quiet_downloads(), ThreadPoolExecutor(_THREADS) as pool:
        loaded = list(pool.map(load, runs))

    frames, missing, unreadable = [], [], {}
    for run, (payload, problem) in zip(runs, loaded):
        parsed = _final_responses(run.info.run_id, payload)
        if problem is not None:
            unreadable[run.info.run_id] = problem
        elif parsed is None:
            missing.append(run.info.run_id)
        else:
            frames.append(parsed)
    columns = ["run_id", "layer_index", "layer", "std", "iteration"]
    responses = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)
    return responses.astype({"run_id": "str", "layer_index": "int64", "layer": "str", "std": "float64",
                             "iteration": "int64"}), missing, unreadable


def _is_absent(exc: Exception) -> bool:
    """Whether a download failed because the artifact is not there (not because the store failed)."""
    if isinstance(exc, FileNotFoundError) or getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":
        return True
    return getattr(getattr(exc, "response", None), "status_code", None) == 404


def _final_responses(run_id: str, payload: dict | None) -> pd.DataFrame | None:
    """Rows for the last evaluation in a ``{"layers", "iterations", "std"}`` payload; None if unusable."""
    try:
        layers, stds = payload["layers"], payload["std"][-1]
        iteration = int(payload["iterations"][-1])
    except (TypeError, KeyError, IndexError, ValueError):
        return None
    if len(layers) != len(stds) or not layers:
        return None
    return pd.DataFrame({"run_id": run_id, "layer_index": range(len(layers)), "layer": layers,
                         "std": [float(s) for s in stds], "iteration": iteration})


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector while a bulk query builds ~10^5 short-lived ORM objects.

    Why: each batch of new objects triggers a collection that walks every live object, which made the
    500-run bulk fetch 2–3× slower; reference counting still frees the objects as usual meanwhile.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@contextmanager
def _quiet_downloads() -> Iterator[None]:
    """Silence MLflow's per-download progress bars (hundreds of them for a large sweep)."""
    key = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(key)
    os.environ[key] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = previous
