"""Sweeps for tests: the flags of a tiny sweep (seconds on two cores), where it stores, and a checked plan of the
depth study from flags, as its command line builds it."""

from __future__ import annotations

from pathlib import Path

from sweeps.cli import plan_from_argv
from sweeps.depth_vs_error import STUDY
from sweeps.driver.plan import SweepPlan, check_plan


def plan_for(argv: list[str]) -> SweepPlan:
    plan = plan_from_argv(STUDY, argv)
    check_plan(plan)
    return plan


def tiny_args(*extra: str, iterations: int = 12, eval_every: int = 3, report: bool = False) -> list[str]:
    """The flags of a sweep of tiny trials: the smoke preset on synthetic data, batch 32, 16 probe images,
    ``iterations`` evaluated every ``eval_every``; ``extra`` flags after them (a later flag wins)."""
    return ["--preset", "smoke", "--dataset", "synthetic", "--iterations", str(iterations), "--eval-every",
            str(eval_every), "--set", "optim.batch_size=32", "--set", "run.probe_images=16",
            *([] if report else ["--no-report"]), *extra]


def store_args(tmp_path: Path, experiment: str | None = None) -> list[str]:
    """An MLflow SQLite store and Tune storage under ``tmp_path`` (and the experiment, when given)."""
    return [*(["--experiment", experiment] if experiment else []), "--tracking-uri",
            f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage-path", str(tmp_path / "ray_results")]
