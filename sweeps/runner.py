"""Shared sweep machinery: turn a plan into a Ray Tune run, with a parent MLflow run around it.

A study script builds a ``SweepPlan`` (what to train) and calls ``run_sweep``; everything that can be
wrong with the plan is checked by ``SweepPlan.check`` (and, once Ray is connected, ``check_cluster``)
before any trial starts or any MLflow run exists.

Failures and how a sweep survives them: docs/failure-modes.md. In short: a crashed or killed trial is
retried from its last checkpoint (``FailureConfig``); a killed driver is continued with ``--resume``
(``Tuner.restore``), which reuses the parent run and each trial's run; a diverged trial ends as
``diverged`` and is not retried.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
from mlflow.exceptions import MlflowException
from ray import tune

from resnet_core import DatasetUnavailableError, TrainConfig, load_dataset
from sweeps.faults import load_fault_spec
from sweeps.trainable import ARCH_KEY, run_name, train_trial, trial_config
from sweeps.tracking import (SPOOL_DIRNAME, Spool, TrackingError, TrialTracking, bound_http_retries,
                             check_tracking_uri, close_interrupted_sweep, close_orphaned_trial_runs,
                             earlier_sweep, finish_run, is_local_store, is_transient, mark_trial_run_failed,
                             resend, sqlite_path, start_parent_run)

log = logging.getLogger(__name__)

FAMILIES = ("plain", "residual")


@dataclass
class SweepPlan:
    """Everything a sweep needs, resolved from presets and flags (plain data)."""

    study: str
    preset: str
    recipe: str
    base: dict[str, Any]  # flat TrainConfig shared by all trials
    archs: list[dict[str, Any]]  # per-trial overrides, e.g. {"model.residual": False, "model.depth": 56}
    seeds: list[int]
    experiment: str
    tracking_uri: str
    storage_path: str
    cpus_per_trial: float
    gpus_per_trial: float
    max_concurrent: int | None = None
    max_failures: int = 2
    resume: bool = False
    report: bool = True
    report_path: str = ""
    extra_params: dict[str, Any] = field(default_factory=dict)

    def configs(self) -> list[TrainConfig]:
        """The TrainConfig of every trial (validates each one)."""
        return [trial_config({**self.base, "run.seed": seed, ARCH_KEY: arch}) for arch in self.archs for seed in self.seeds]

    def check(self) -> None:
        """Reject a plan that cannot run, before anything starts. Raises ValueError with a precise message."""
        if not self.archs or not self.seeds:
            raise ValueError("the sweep has no trials: give at least one depth, family and seed")
        configs = self.configs()
        if self.cpus_per_trial <= 0 or self.gpus_per_trial < 0:
            raise ValueError(f"--cpus-per-trial must be > 0 and --gpus-per-trial >= 0; got "
                             f"{self.cpus_per_trial}, {self.gpus_per_trial}")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError(f"--max-concurrent must be >= 1; got {self.max_concurrent}")
        for config in {c.data.dataset: c for c in configs}.values():
            try:
                load_dataset(config.data, "cpu", seed=0)
            except DatasetUnavailableError as exc:
                raise ValueError(str(exc)) from None
        try:
            check_tracking_uri(self.tracking_uri)
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None
        self.check_earlier_sweep()

    @property
    def sweep_id(self) -> str:
        """Identifies the sweep across driver restarts: its Tune experiment directory."""
        return f"{self.storage_path.rstrip('/')}/{self.experiment}"

    @property
    def spool_dir(self) -> str:
        """Where trials keep tracking calls the store did not take (sent later; see sweeps.resend)."""
        if "://" not in self.storage_path:
            return str(Path(self.sweep_id) / SPOOL_DIRNAME)
        return str(Path.home() / ".cache" / "resnet-studies" / SPOOL_DIRNAME / self.experiment)

    def check_earlier_sweep(self) -> None:
        """Refuse to start over an interrupted sweep of the same experiment and storage path without
        --resume (its progress would be abandoned), and to run beside a sweep whose driver still runs.

        The runs an interrupted sweep left RUNNING are given their true status (KILLED) here.
        """
        if (store := sqlite_path(self.tracking_uri)) is not None and not store.exists():
            return
        try:
            earlier = earlier_sweep(self.tracking_uri, self.experiment, self.sweep_id)
        except MlflowException as exc:
            raise ValueError(f"cannot read the tracking store {self.tracking_uri}: {exc}") from None
        if earlier is None:
            return
        if earlier.status == "RUNNING" and earlier.alive:
            raise ValueError(f"a sweep of experiment {self.experiment!r} under {self.storage_path} is still running "
                             f"(MLflow run {earlier.run_id}); wait for it to end, or use another --experiment")
        if earlier.interrupted and not self.resume:
            closed = close_interrupted_sweep(self.tracking_uri, self.experiment, earlier)
            note = f"; the {len(closed)} trial run(s) it left RUNNING are now marked KILLED" if closed else ""
            raise ValueError(
                f"the sweep of experiment {self.experiment!r} under {self.storage_path} was interrupted before it "
                f"finished (its driver is gone{note}). Continue it with --resume (finished trials are kept, "
                f"unfinished ones continue from their last checkpoint), or start a separate sweep with another "
                f"--experiment or --storage-path")

    def check_cluster(self) -> None:
        """A multi-node cluster needs a tracking server and shared storage that every node can reach.

        Call with Ray connected, before ``run_sweep`` creates anything. Raises ValueError naming every problem.
        """
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if len(nodes) <= 1:
            return
        problems = []
        if is_local_store(self.tracking_uri):
            problems.append(f"the tracking store {self.tracking_uri} is local to one machine (trials on other "
                            "nodes cannot write to it): start an MLflow tracking server and pass --tracking-uri "
                            "http://HOST:5000 (see cluster/README.md)")
        if "://" not in self.storage_path and not os.environ.get("RESNET_STUDIES_SHARED_STORAGE"):
            problems.append(f"--storage-path {self.storage_path} is a local directory (checkpoints written on one "
                            "node cannot be restored on another): use shared storage every node mounts, e.g. "
                            "s3://bucket/path, or an NFS path with RESNET_STUDIES_SHARED_STORAGE=1 set to confirm "
                            "the mount is shared")
        if problems:
            raise ValueError(f"this Ray cluster has {len(nodes)} nodes, so: " + "; and ".join(problems))


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


def _trial_dirname(trial: tune.experiment.Trial) -> str:
    config = trial_config(trial.config)
    family = "residual" if config.model.residual else "plain"
    return f"{family}-{config.model.depth}-seed{config.run.seed}-{trial.trial_id}"


class CloseDeadTrialRuns(tune.Callback):
    """Driver side: close the MLflow run of a trial whose process died without closing it (SIGKILL, OOM
    killer, lost node), so it does not stay RUNNING. A retry reopens it."""

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


def sweep_status(results: Iterable[tune.Result]) -> str:
    """The parent run's true status: FAILED if a trial errored, KILLED if one never finished, else FINISHED."""
    results = list(results)
    if any(r.error for r in results):
        return "FAILED"
    if all((r.metrics or {}).get("status") in ("completed", "diverged") for r in results):
        return "FINISHED"
    return "KILLED"


def best_result(results: Iterable[tune.Result], metric: str = "test/error", mode: str = "min") -> tune.Result | None:
    """The best completed trial by its last ``metric``; diverged, errored and unfinished trials never count."""
    candidates = [r for r in results if r.error is None and (r.metrics or {}).get("status") == "completed"
                  and isinstance((r.metrics or {}).get(metric), (int, float)) and math.isfinite(r.metrics[metric])]
    if not candidates:
        return None
    pick = min if mode == "min" else max
    return pick(candidates, key=lambda r: r.metrics[metric])


def run_sweep(plan: SweepPlan) -> tune.ResultGrid:
    """Run the plan on the connected Ray cluster (call ``ray.init`` first) and close the parent run.

    Raises ValueError (before anything is created) for a cluster the plan cannot run on, and TrackingError
    at the end when the tracking store could not take everything (what it missed is spooled, see
    docs/failure-modes.md); the Tune results are complete either way.
    """
    plan.check_cluster()
    bound_http_retries(plan.tracking_uri)
    experiment_dir = Path(plan.sweep_id) if "://" not in plan.storage_path else None
    sweep_id = plan.sweep_id
    restoring = plan.resume and tune.Tuner.can_restore(sweep_id)
    if plan.resume and not restoring:
        print(f"--resume: no earlier sweep state under {sweep_id}; starting a new sweep")
    params = {"depths": sorted({a["model.depth"] for a in plan.archs}), "seeds": len(plan.seeds),
              "cpus_per_trial": plan.cpus_per_trial, "gpus_per_trial": plan.gpus_per_trial, **plan.extra_params,
              **{k: v for k, v in plan.base.items()}}
    tags = {"study": plan.study, "preset": plan.preset, "recipe": plan.recipe,
            "dataset": str(plan.base.get("data.dataset", TrainConfig().data.dataset))}
    experiment_id, parent_run_id = start_parent_run(plan.tracking_uri, plan.experiment, sweep_id,
                                                    f"sweep {plan.study} {plan.preset}", tags, params,
                                                    resume=plan.resume)
    if plan.resume:  # the earlier driver is dead (start_parent_run checked), so are its trials
        closed = close_orphaned_trial_runs(plan.tracking_uri, experiment_id, parent_run_id)
        if closed:
            print(f"closed {len(closed)} trial run(s) left RUNNING by the previous driver; their trials resume")
    tracking = TrialTracking(plan.tracking_uri, experiment_id, parent_run_id,
                             tags=tuple(sorted({"preset": plan.preset, "study": plan.study}.items())),
                             spool_dir=plan.spool_dir)
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, tracking=tracking, sweep_env={**git_state(), "argv": sys.argv},
                             faults=load_fault_spec()),
        {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})

    started = time.time()
    status = "FAILED"
    tracking_problem = None
    try:
        if restoring:
            tuner = tune.Tuner.restore(sweep_id, trainable, resume_unfinished=True, resume_errored=True)
        else:
            param_space = {**plan.base, ARCH_KEY: tune.grid_search(plan.archs),
                           "run.seed": tune.grid_search(plan.seeds)}
            # reuse_actors: a trial runs in the process of a finished one instead of a new process, saving the
            # ~5 s of Python, torch and MLflow start-up per trial (13 s of a 61 s 4-trial sweep on 2 cores).
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(max_concurrent_trials=plan.max_concurrent, reuse_actors=True,
                                            trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(
                    name=plan.experiment, storage_path=plan.storage_path, verbose=1,
                    failure_config=tune.FailureConfig(max_failures=plan.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                    callbacks=[CloseDeadTrialRuns(tracking)]),
            )
        results = tuner.fit()
        status = sweep_status(results)
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        tracking_problem = _close_tracking(plan, experiment_id, parent_run_id, status)
    elapsed = time.time() - started
    _print_summary(results, elapsed)
    if experiment_dir is not None:
        (experiment_dir / "sweep.json").write_text(json.dumps(asdict(plan), indent=2, default=str))
    if tracking_problem:
        raise TrackingError(tracking_problem)
    if plan.report:
        _build_report(plan)
    print(f"\nMLflow: mlflow ui --backend-store-uri {plan.tracking_uri}   (then open http://127.0.0.1:5000)")
    return results


def _close_tracking(plan: SweepPlan, experiment_id: str, parent_run_id: str, status: str) -> str | None:
    """Deliver what trials spooled, close runs left RUNNING, close the parent run with ``status``.

    Never raises for an unreachable store: returns a message saying where the unsent calls are kept.
    """
    uri, left = plan.tracking_uri, 0
    try:
        left = resend(plan.spool_dir, attempts=3)
        if not left:
            close_orphaned_trial_runs(uri, experiment_id, parent_run_id, attempts=3)
            finish_run(uri, parent_run_id, status, attempts=3)
            return None
    except (MlflowException, OSError) as exc:
        if not is_transient(exc):
            raise
        left = max(left, 1)
    spool = Spool(Path(plan.spool_dir) / f"sweep-{parent_run_id}.jsonl", uri)
    spool.append({"op": "close_orphans", "run_id": parent_run_id, "experiment_id": experiment_id})
    spool.append({"op": "status", "run_id": parent_run_id, "status": status, "end_time": int(time.time() * 1000)})
    return (f"the tracking store {uri} could not be reached at the end of the sweep, so some tracking calls "
            f"(metrics, tags, run ends) are unsent. Nothing is lost: they are kept in {plan.spool_dir}, and Tune's "
            f"results and checkpoints are complete. When the store is back, send them with:\n"
            f"    python -m sweeps.resend {plan.spool_dir}")


def _print_summary(results: tune.ResultGrid, elapsed: float) -> None:
    print(f"\nsweep finished in {elapsed:.0f}s: {len(results)} trials, {len(results.errors)} errored")
    rows = []
    for result in results:
        config = trial_config(result.config)
        metrics = result.metrics or {}
        status = "error" if result.error else str(metrics.get("status", "not run"))
        rows.append(((config.model.residual, config.model.depth, config.run.seed), run_name(config), status, metrics))
    print(f"  {'trial':<22} {'status':<10} {'iter':>6} {'train err %':>11} {'test err %':>10}")
    for _, name, status, metrics in sorted(rows, key=lambda r: r[0]):
        print(f"  {name:<22} {status:<10} {metrics.get('iteration', 0):>6} "
              f"{metrics.get('train/error', float('nan')):>11.2f} {metrics.get('test/error', float('nan')):>10.2f}")
    best = best_result(results)
    if best is not None:
        print(f"  best completed trial: {run_name(trial_config(best.config))}, test error {best.metrics['test/error']:.2f}% (diverged and failed trials "
              f"excluded)")


def _build_report(plan: SweepPlan) -> None:
    from dashboards.report import build_report

    path = build_report(plan.experiment, tracking_uri=plan.tracking_uri, out=plan.report_path)
    print(f"\nreport: {Path(path).resolve()}")
