"""The grid run: every (cell, seed) of a checked plan trained once, in one Tune run inside the sweep's parent
MLflow run; then its summary. Driver only.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from ray import tune

from sweeps.driver.plan import SweepPlan, save_plan
from sweeps.driver.sweep import (TrackedSweep, completed_results, end_of_sweep, parent_status, points_tuner,
                                 tracked_sweep)
from sweeps.trial.identity import trial_config, trial_name
from sweeps.trial.progress import COMPLETED, DIVERGED, ITERATION, STATUS, reported_status
from sweeps.trial.trainable import TrialHooks


def run_sweep(plan: SweepPlan, hooks: TrialHooks | None = None) -> tune.ResultGrid:
    """Run a checked plan (``check_plan``, ``check_cluster``) on the connected cluster; close the parent run.

    Raises TrackingError at the end when the tracking store could not take everything (what it missed is
    spooled, see docs/failure-modes.md); the Tune results are complete either way.
    """
    restoring = plan.resume and tune.Tuner.can_restore(plan.sweep_id)
    if plan.resume and not restoring:
        print(f"--resume: no earlier sweep state under {plan.sweep_id}; starting a new sweep")
    if not restoring:
        save_plan(plan)
    with tracked_sweep(plan, hooks) as sweep:
        started = time.time()
        tuner = (tune.Tuner.restore(plan.sweep_id, sweep.trainable, resume_unfinished=True, resume_errored=True)
                 if restoring else _new_tuner(plan, sweep))
        results = tuner.fit()
        sweep.results.extend(results)
        sweep.status = sweep_status(results)
        print_summary(results, time.time() - started)
    end_of_sweep(plan, sweep.experiment_id)
    return results


def _new_tuner(plan: SweepPlan, sweep: TrackedSweep) -> tune.Tuner:
    """A Tuner that runs every (cell, seed) of the plan once, deepest first, named as its MLflow run."""
    return points_tuner(plan, sweep, [{**cell, "run.seed": seed} for cell in plan.cell_overrides for seed in plan.seeds])


def sweep_status(results: Iterable[tune.Result]) -> str:
    """The parent run's status: KILLED when some trial never reached its last evaluation."""
    results = list(results)
    return parent_status(any(r.error for r in results),
                         not all(reported_status(r.metrics) in (COMPLETED, DIVERGED) for r in results))


def best_result(results: Iterable[tune.Result], metric: str = "test/error") -> tune.Result | None:
    """The completed trial with the lowest last ``metric`` (``completed_results``), or None."""
    return min(completed_results(results, metric), key=lambda r: r.metrics[metric], default=None)


def print_summary(results: tune.ResultGrid, elapsed: float) -> None:
    """One line per trial (name, status, last iteration and errors), sorted by name, and the best trial."""
    print(f"\nsweep finished in {elapsed:.0f}s: {len(results)} trials, {len(results.errors)} errored")
    rows = []
    for result in results:
        config = trial_config(result.config)
        metrics = result.metrics or {}
        status = "error" if result.error else str(metrics.get(STATUS, "not run"))
        rows.append(((config.model.residual, config.model.depth, config.model.shortcut, config.run.seed),
                     trial_name(result.config), status, metrics))
    print(f"  {'trial':<22} {'status':<10} {'iter':>6} {'train err %':>11} {'test err %':>10}")
    for _, name, status, metrics in sorted(rows, key=lambda r: r[0]):
        print(f"  {name:<22} {status:<10} {metrics.get(ITERATION, 0):>6} "
              f"{metrics.get('train/error', float('nan')):>11.2f} {metrics.get('test/error', float('nan')):>10.2f}")
    best = best_result(results)
    if best is not None:
        print(f"  best completed trial: {trial_name(best.config)}, test error "
              f"{best.metrics['test/error']:.2f}% (diverged and failed trials excluded)")
