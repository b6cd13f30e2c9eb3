"""The machinery every sweep shares, grid or search: the parent MLflow run around its Tune runs, the Tuner
settings, trial names, closing dead trials' runs, and the end of a sweep (spool, report, MLflow hint). Driver only.

Failures and how a sweep survives them: docs/failure-modes.md. In short: a crashed or killed trial is
retried from its last checkpoint (``FailureConfig``); a killed driver is continued with ``--resume``
(``Tuner.restore``), which reuses the parent run and each trial's run; a diverged trial ends as
``diverged`` and is not retried.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from mlflow.exceptions import MlflowException
from ray import tune
from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback
from ray.tune.search import BasicVariantGenerator

from sweeps.driver.forecast import SweepForecast
from sweeps.driver.plan import COORDINATOR_CPUS, SweepPlan
from sweeps.driver.resources import concurrent_trials, worker_placement
from sweeps.driver.security import scrubbed
from sweeps.driver.sweep_lock import holding_sweep_lock
from tracking import operations
from tracking.run_source import source_tags, sweep_description
from tracking.spool import Spool, resend
from tracking.store import TrackingError, bound_http_retries, is_transient, sqlite_path
from tracking.sweep_run import (HEARTBEAT_EVERY, close_orphaned_trial_runs, finish_run, heartbeat,
                                       mark_trial_run_failed, start_parent_run)
from tracking.trial_run import TrialTracking
from sweeps.trial.trainable import TrialHooks, train_trial
from sweeps.trial.workers import Workers, train_on_workers
from sweeps.trial.identity import META_KEY, trial_name
from sweeps.trial.progress import COMPLETED, SPOOL, UNSENT, reported_status

log = logging.getLogger(__name__)


@dataclass
class TrackedSweep:
    """A sweep whose parent run is open: what its Tune runs need, and the status the parent run will end with."""

    experiment_id: str
    parent_run_id: str
    tracking: TrialTracking
    trainable: Any  # train_trial with its resources and parameters bound, for tune.Tuner
    status: str = "FAILED"  # the body of tracked_sweep sets the true one
    results: list[tune.Result] = field(default_factory=list)  # of every Tune run so far: what trials left unsent


@contextlib.contextmanager
def tracked_sweep(plan: SweepPlan, hooks: TrialHooks | None = None) -> Iterator[TrackedSweep]:
    """The parent MLflow run around a sweep's Tune runs (the body's), closed with the status the body sets.

    At the end, whatever happened: what trials spooled is delivered, runs left RUNNING are closed, the parent
    run ends with ``sweep.status`` (KILLED on Ctrl-C). Raises TrackingError after the body when the store could
    not take everything (what it missed is spooled, see docs/failure-modes.md).
    """
    bound_http_retries(plan.tracking_uri)
    if (store := sqlite_path(plan.tracking_uri)) is not None:
        store.parent.mkdir(parents=True, exist_ok=True)
    source = source_tags(sys.argv, git_state()["git_commit"])
    with holding_sweep_lock(plan):
        experiment_id, parent_run_id = _open_parent_run(plan, source)
        print_where_to_look(plan, experiment_id)
        tracking = TrialTracking(plan.tracking_uri, experiment_id, parent_run_id, spool_dir=plan.spool_dir,
                                 tags=(("preset", plan.preset), ("study", plan.study), *source.items()),
                                 system_metrics_every=plan.system_metrics_every)
        sweep = TrackedSweep(experiment_id, parent_run_id, tracking, trainable(plan, tracking, hooks))
        try:
            yield sweep
        except KeyboardInterrupt:
            sweep.status = "KILLED"
            raise
        finally:
            tracking_problem = _close_tracking(plan, sweep)
    if tracking_problem:
        raise TrackingError(tracking_problem)


def trainable(plan: SweepPlan, tracking: TrialTracking, hooks: TrialHooks | None) -> Any:
    """The trial function with its parameters and resources bound: one process holding the trial's CPUs and GPUs,
    or (``--workers-per-trial`` > 1) a coordinator whose Ray Train workers hold them (sweeps/trial/workers.py)."""
    bound = {"tracking": tracking, "sweep_env": {**git_state(), "argv": scrubbed(sys.argv)}, "hooks": hooks}
    if plan.workers_per_trial == 1:
        return tune.with_resources(tune.with_parameters(train_trial, **bound),
                                   {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})
    request = plan.worker_request
    workers = Workers(plan.workers_per_trial, request["CPU"], request["GPU"], plan.sweep_id, worker_placement(plan))
    return tune.with_resources(tune.with_parameters(train_on_workers, workers=workers, **bound),
                               {"cpu": COORDINATOR_CPUS})


def end_of_sweep(plan: SweepPlan, experiment_id: str) -> None:
    """Build the report (unless --no-report) and say where the MLflow UI shows the runs."""
    if plan.report:
        _build_report(plan)
    print_mlflow_hint(plan, experiment_id)


def _open_parent_run(plan: SweepPlan, source: dict[str, str]) -> tuple[str, str]:
    """Create the parent run (or reopen it on --resume, closing the trial runs the dead driver left open)."""
    params = {"depths": sorted({a.get("model.depth", plan.base["model.depth"]) for a in plan.cell_overrides}),
              "seeds": len(plan.seeds), "cpus_per_trial": plan.cpus_per_trial, "gpus_per_trial": plan.gpus_per_trial,
              **({"workers_per_trial": plan.workers_per_trial} if plan.workers_per_trial > 1 else {}),
              **plan.extra_params, **plan.base}
    tags = {"study": plan.study, "preset": plan.preset, "recipe": plan.recipe, "dataset": str(plan.base["data.dataset"]),
            "report_sections": ",".join(plan.report_sections), **source,
            **sweep_description(plan.study, plan.preset, plan.recipe, scrubbed(sys.argv))}
    experiment_id, parent_run_id = start_parent_run(plan.tracking_uri, plan.experiment, plan.sweep_id,
                                                    f"sweep {plan.study} {plan.preset}", tags, params,
                                                    resume=plan.resume)
    if plan.resume:  # the earlier driver is dead (check_plan made sure), so are its trials
        closed = close_orphaned_trial_runs(plan.tracking_uri, experiment_id, parent_run_id)
        if closed:
            print(f"closed {len(closed)} trial run(s) left RUNNING by the previous driver; their trials resume")
    return experiment_id, parent_run_id


def points_tuner(plan: SweepPlan, sweep: TrackedSweep, points: list[dict[str, Any]], name: str | None = None,
                 storage_path: str | None = None) -> tune.Tuner:
    """A Tuner that runs each of ``points`` (overrides of the plan's shared config) once, in order."""
    # Trials are listed explicitly rather than as grid_search, so Tune's live table shows no parameter columns:
    # the trial name ("plain-56 seed 1") says it all. A point must override keys of the param space, which
    # Tune warns about once per key and trial: expected here, so not shown.
    logging.getLogger("ray.tune.search.variant_generator").setLevel(logging.ERROR)
    return tune.Tuner(
        sweep.trainable,
        param_space={**plan.base, META_KEY: None},  # a point may name its trial (sweeps.trial.identity.TrialMeta)
        tune_config=tune.TuneConfig(
            # max_concurrent here, not as TuneConfig's max_concurrent_trials: that would wrap the generator in a
            # ConcurrencyLimiter, which creates trials only as slots free, so no finished trial's process is reused.
            search_alg=BasicVariantGenerator(points_to_evaluate=points, max_concurrent=concurrent_trials(plan)),
            num_samples=len(points), **trial_settings()),
        run_config=run_config(plan, sweep, name, storage_path))


def trial_settings() -> dict[str, Any]:
    """TuneConfig settings every sweep shares: trials named as their MLflow runs, processes reused."""
    # reuse_actors: a trial runs in the process of a finished one instead of a new process, saving the
    # ~5 s of Python, torch and MLflow start-up per trial (13 s of a 61 s 4-trial sweep on 2 cores).
    return {"reuse_actors": True, "trial_name_creator": _trial_name, "trial_dirname_creator": _trial_dirname}


def run_config(plan: SweepPlan, sweep: TrackedSweep, name: str | None = None, storage_path: str | None = None,
               callbacks: Iterable[tune.Callback] = ()) -> tune.RunConfig:
    """Where a Tune run keeps its state (default: the sweep's own), its retries, checkpoints and callbacks.

    Tune's own loggers are its JSON and CSV files only: its TensorBoard logger needs tensorboardX, which is not
    installed, yet Tune would print a `tensorboard` command for it (TUNE_DISABLE_AUTO_CALLBACK_LOGGERS=0 and
    ``pip install tensorboardX`` bring it back). MLflow is where the runs are.
    """
    own_loggers = os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1") == "1"
    return tune.RunConfig(
        name=name or plan.experiment, storage_path=storage_path or plan.storage_path, verbose=1,
        failure_config=tune.FailureConfig(max_failures=plan.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        callbacks=[CloseDeadTrialRuns(sweep.tracking), DriverHeartbeat(sweep.tracking),
                   SweepForecast(plan.gpus_per_trial, plan.cpus_per_trial),
                   *([JsonLoggerCallback(), CSVLoggerCallback()] if own_loggers else []), *callbacks])


def _trial_name(trial: tune.experiment.Trial) -> str:
    return trial_name(trial.config)


def _trial_dirname(trial: tune.experiment.Trial) -> str:
    return f"{_trial_name(trial).replace(' ', '-')}-{trial.trial_id}"


class CloseDeadTrialRuns(tune.Callback):
    """Close the MLflow run of a trial whose process died without closing it (SIGKILL, OOM killer, lost node),
    so it does not stay RUNNING. A retry reopens it."""

    def __init__(self, tracking: TrialTracking):
        self.tracking = tracking

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(trial)

    def _close(self, trial: Any) -> None:
        try:
            mark_trial_run_failed(self.tracking, trial.trial_id)
        except Exception as exc:  # tracking trouble must not stop the sweep
            log.warning("could not close the MLflow run of trial %s: %s", trial.trial_id, exc)


class DriverHeartbeat(tune.Callback):
    """Renew the driver's heartbeat on the parent run while Tune runs, so that a command on another host can
    tell a live driver from a dead one (tracking.sweep_run)."""

    def __init__(self, tracking: TrialTracking):
        self.tracking = tracking
        self.last = time.monotonic()

    def on_step(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() - self.last < HEARTBEAT_EVERY:
            return
        self.last = time.monotonic()
        try:
            heartbeat(self.tracking.tracking_uri, self.tracking.parent_run_id)
        except Exception as exc:  # an unreachable store must not stop the sweep; the next beat tries again
            log.warning("could not renew the driver's heartbeat: %s", exc)


def unsent_elsewhere(results: Iterable[tune.Result]) -> list[tuple[str, str, int, str]]:
    """(trial, node, unsent calls, spool file) of each trial whose last report says its spool still holds calls
    in a file this driver cannot see: on a node's own disk, when the sweep's storage is not a shared directory."""
    found = []
    for result in results:
        metrics = result.metrics or {}
        count, path = int(metrics.get(UNSENT, 0)), str(metrics.get(SPOOL, ""))
        if count and not Path(path).exists():
            found.append((trial_name(result.config), str(metrics.get("node_ip", "?")), count, path))
    return found


def git_state() -> dict[str, Any]:
    """The commit and dirty flag of the code the sweep runs (best effort: a job's working dir has no .git)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "-C", str(root), "status", "--porcelain"], capture_output=True,
                                    text=True, check=True, timeout=10).stdout.strip())
        return {"git_commit": commit, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}


def completed_results(results: Iterable[tune.Result], metric: str) -> list[tune.Result]:
    """The trials that trained their whole budget without error and end with a finite ``metric``: the only
    ones a best trial is chosen from (diverged, errored, stopped-early and unfinished trials never count)."""
    return [r for r in results if r.error is None and reported_status(r.metrics) == COMPLETED
            and isinstance(r.metrics.get(metric), (int, float)) and math.isfinite(r.metrics[metric])]


def parent_status(errored: bool, unfinished: bool) -> str:
    """The parent run's true status: FAILED if a trial errored, KILLED if the sweep was cut short, else FINISHED."""
    return "FAILED" if errored else "KILLED" if unfinished else "FINISHED"


def _close_tracking(plan: SweepPlan, sweep: TrackedSweep) -> str | None:
    """Deliver what trials spooled, close runs left RUNNING, close the parent run with the sweep's status.

    Never raises for an unreachable store, nor closes anything while a trial's spool is out of reach: returns a
    message saying where the unsent calls are kept and how to send them.
    """
    uri, left, experiment_id, parent_run_id = plan.tracking_uri, 0, sweep.experiment_id, sweep.parent_run_id
    elsewhere = unsent_elsewhere(sweep.results)
    try:
        left = resend(plan.spool_dir, plan.tracking_uri, attempts=3)
        if not left and not elsewhere:
            close_orphaned_trial_runs(uri, experiment_id, parent_run_id, attempts=3)
            finish_run(uri, parent_run_id, sweep.status, attempts=3)
            return None
    except (MlflowException, OSError) as exc:
        if not is_transient(exc):
            raise
    spool = Spool(Path(plan.spool_dir) / f"sweep-{parent_run_id}.jsonl", uri)
    spool.append(operations.close_orphans_entry(parent_run_id, experiment_id))
    spool.append(operations.status_entry(parent_run_id, sweep.status))
    resend_here = f"python -m sweeps.resend {plan.spool_dir} --tracking-uri {uri}"
    if elsewhere:
        nodes = "\n".join(f"    on node {node} ({name}, {count} call(s)): python -m sweeps.resend {Path(path).parent} "
                          f"--tracking-uri {uri}" for name, node, count, path in elsewhere)
        return (f"{len(elsewhere)} trial(s) ended with tracking calls the store {uri} did not take, kept on their "
                f"nodes' own disks, which this driver cannot read (the sweep's storage is not a shared directory). "
                f"Nothing is lost, and the sweep's runs stay open until they arrive: send them from each node,\n"
                f"{nodes}\nthen close the sweep here with:\n    {resend_here}")
    return (f"the tracking store {uri} could not be reached at the end of the sweep, so some tracking calls "
            f"(metrics, tags, run ends) are unsent. Nothing is lost: they are kept in {plan.spool_dir}, and Tune's "
            f"results and checkpoints are complete. When the store is back, send them with:\n"
            f"    {resend_here}")


def print_where_to_look(plan: SweepPlan, experiment_id: str) -> None:
    """At the start: where the runs appear as they train (MLflow) and the Ray dashboard, when there is one."""
    print_mlflow_hint(plan, experiment_id)
    with contextlib.suppress(Exception):  # an embedded Ray without its dashboard has no address
        if dashboard := ray._private.worker.get_dashboard_url():
            print(f"Ray dashboard: http://{dashboard}", flush=True)


def mlflow_ui_base(plan: SweepPlan) -> str | None:
    """Where an MLflow UI shows this sweep's store: --mlflow-ui-url, or the tracking server (which serves the UI
    itself); None for a local store nobody serves yet."""
    server = plan.tracking_uri if plan.tracking_uri.startswith(("http://", "https://")) else None
    return plan.mlflow_ui_url or server


def mlflow_run_url(plan: SweepPlan, experiment_id: str, run_id: str) -> str | None:
    from dashboards.mlflow_ui import run_url

    base = mlflow_ui_base(plan)
    return run_url(base, experiment_id, run_id) if base else None


def print_mlflow_hint(plan: SweepPlan, experiment_id: str) -> None:
    """How to browse the runs: the `mlflow ui` command and the address of this experiment's training runs."""
    from dashboards.mlflow_ui import experiment_url

    base = mlflow_ui_base(plan)
    command = "" if base else f"mlflow ui --backend-store-uri {plan.tracking_uri}, then open "
    print(f"\nMLflow: {command}{experiment_url(base or 'http://127.0.0.1:5000', experiment_id)}", flush=True)


def _build_report(plan: SweepPlan) -> None:
    from dashboards.report import build_report

    path = build_report(plan.experiment, tracking_uri=plan.tracking_uri, out=plan.report_path,
                        mlflow_ui_url=plan.mlflow_ui_url)
    print(f"\nreport: {Path(path).resolve()}")
