"""Shared sweep machinery: turn a plan into a Ray Tune run, with a parent MLflow run around it.

A study script builds a ``SweepPlan`` (what to train) and calls ``run_sweep``; everything that can be
wrong with the plan is checked by ``SweepPlan.check`` before any trial starts or any MLflow run exists.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune

from resnet_core import DatasetUnavailableError, TrainConfig, load_dataset
from sweeps.trainable import ARCH_KEY, train_trial, trial_config
from sweeps.tracking import (TrialTracking, check_tracking_uri, close_orphaned_trial_runs, finish_run,
                             is_local_store, start_parent_run)

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
        datasets = {(c.data.dataset, c.data.data_dir, c.data.download) for c in configs}
        for config in {c.data.dataset: c for c in configs}.values():
            try:
                load_dataset(config.data, "cpu", seed=0)
            except DatasetUnavailableError as exc:
                raise ValueError(str(exc)) from None
        del datasets
        try:
            check_tracking_uri(self.tracking_uri)
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None

    def check_cluster(self) -> None:
        """A multi-node cluster needs a tracking server and shared storage that every node can reach."""
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if len(nodes) <= 1:
            return
        if is_local_store(self.tracking_uri):
            raise ValueError(f"this Ray cluster has {len(nodes)} nodes but the tracking store {self.tracking_uri} is "
                             "local to one machine; start an MLflow tracking server and pass --tracking-uri "
                             "http://HOST:5000 (see cluster/README.md)")
        if "://" not in self.storage_path and not os.environ.get("RESNET_STUDIES_SHARED_STORAGE"):
            raise ValueError(f"this Ray cluster has {len(nodes)} nodes but --storage-path {self.storage_path} is a "
                             "local directory; use shared storage every node mounts (e.g. s3://bucket/path or an "
                             "NFS path, and set RESNET_STUDIES_SHARED_STORAGE=1 to confirm a shared mount)")


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


def run_sweep(plan: SweepPlan) -> tune.ResultGrid:
    """Run the plan on the connected Ray cluster (call ``ray.init`` first) and close the parent run."""
    plan.check_cluster()
    experiment_dir = Path(plan.storage_path) / plan.experiment if "://" not in plan.storage_path else None
    restoring = plan.resume and tune.Tuner.can_restore(f"{plan.storage_path.rstrip('/')}/{plan.experiment}")
    if plan.resume and not restoring:
        print(f"--resume: no earlier sweep state under {plan.storage_path}/{plan.experiment}; starting a new sweep")
    sweep_id = f"{plan.storage_path.rstrip('/')}/{plan.experiment}"
    params = {"depths": sorted({a["model.depth"] for a in plan.archs}), "seeds": len(plan.seeds),
              "cpus_per_trial": plan.cpus_per_trial, "gpus_per_trial": plan.gpus_per_trial, **plan.extra_params,
              **{k: v for k, v in plan.base.items()}}
    tags = {"study": plan.study, "preset": plan.preset, "recipe": plan.recipe,
            "dataset": str(plan.base.get("data.dataset", TrainConfig().data.dataset))}
    experiment_id, parent_run_id = start_parent_run(plan.tracking_uri, plan.experiment, sweep_id,
                                                    f"sweep {plan.study} {plan.preset}", tags, params)
    if restoring:
        closed = close_orphaned_trial_runs(plan.tracking_uri, experiment_id, parent_run_id)
        if closed:
            print(f"closed {len(closed)} trial run(s) left RUNNING by the previous driver; their trials resume")
    tracking = TrialTracking(plan.tracking_uri, experiment_id, parent_run_id,
                             tags=tuple(sorted({"preset": plan.preset, "study": plan.study}.items())))
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, tracking=tracking, sweep_env={**git_state(), "argv": sys.argv}),
        {"cpu": plan.cpus_per_trial, "gpu": plan.gpus_per_trial})

    started = time.time()
    status = "FAILED"
    try:
        if restoring:
            tuner = tune.Tuner.restore(sweep_id, trainable, resume_unfinished=True, resume_errored=True)
        else:
            param_space = {**plan.base, ARCH_KEY: tune.grid_search(plan.archs),
                           "run.seed": tune.grid_search(plan.seeds)}
            tuner = tune.Tuner(
                trainable,
                param_space=param_space,
                tune_config=tune.TuneConfig(max_concurrent_trials=plan.max_concurrent,
                                            trial_dirname_creator=_trial_dirname),
                run_config=tune.RunConfig(
                    name=plan.experiment, storage_path=plan.storage_path, verbose=1,
                    failure_config=tune.FailureConfig(max_failures=plan.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
            )
        results = tuner.fit()
        status = "FINISHED" if not results.errors else "FAILED"
    finally:
        close_orphaned_trial_runs(plan.tracking_uri, experiment_id, parent_run_id)
        finish_run(plan.tracking_uri, parent_run_id, status)
    elapsed = time.time() - started
    _print_summary(results, elapsed)
    if plan.report:
        _build_report(plan)
    print(f"\nMLflow: mlflow ui --backend-store-uri {plan.tracking_uri}   (then open http://127.0.0.1:5000)")
    if experiment_dir is not None:
        (experiment_dir / "sweep.json").write_text(json.dumps(asdict(plan), indent=2, default=str))
    return results


def _print_summary(results: tune.ResultGrid, elapsed: float) -> None:
    print(f"\nsweep finished in {elapsed:.0f}s: {len(results)} trials, {len(results.errors)} errored")
    rows = []
    for result in results:
        config = trial_config(result.config)
        metrics = result.metrics or {}
        rows.append((not config.model.residual is False, config.model.residual, config.model.depth,
                     config.run.seed, metrics))
    print(f"  {'trial':<22} {'status':<10} {'iter':>6} {'train err %':>11} {'test err %':>10}")
    for _, residual, depth, seed, metrics in sorted(rows, key=lambda r: (r[1], r[2], r[3])):
        name = f"{'residual' if residual else 'plain'}-{depth} seed {seed}"
        print(f"  {name:<22} {str(metrics.get('status', 'error')):<10} {metrics.get('iteration', 0):>6} "
              f"{metrics.get('train/error', float('nan')):>11.2f} {metrics.get('test/error', float('nan')):>10.2f}")


def _build_report(plan: SweepPlan) -> None:
    from dashboards.report import build_report

    path = build_report(plan.experiment, tracking_uri=plan.tracking_uri, out=plan.report_path)
    print(f"\nreport: {Path(path).resolve()}")
