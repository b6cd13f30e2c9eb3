"""Run a search study's checked plan: per net, an Optuna search under ASHA; then a confirm stage. Driver only.

Every stage is one Tune run in the sweep's directory (``<storage-path>/<experiment>/<stage>``), all inside the
sweep's one parent MLflow run:

- ``search-<net>`` (one per family, e.g. ``search-residual-56``): ``FullBudgetOptunaSearch`` (TPE seeded by
  ``--search-seed``) with ASHA on the training iteration, ``--num-samples`` trials scored on validation error.
  One Tune run and one Optuna study per family, with the same budget and sampler seed, rather than one run with
  family as a dimension: TPE then cannot spend more trials on one family, ASHA never stops a plain trial for
  being plain (it compares trials of one net only), and each family's best error is found like for like.
- ``confirm``: each family's top-k configurations (validation error of full-budget trials) and its default
  recipe, each retrained with seeds 1..N (the search used seed 0) at full budget; reported on test error.

On ``--resume`` a stage with Tune state is restored: finished trials are not rerun, unfinished ones continue,
the searcher keeps its Optuna study and sampler; a stage that never started starts.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import Counter
from functools import partial
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ray import tune
from ray.tune.search import ConcurrencyLimiter

from sweeps.driver.search.asha import AshaRungs, asha_scheduler
from sweeps.driver.plan import save_plan
from sweeps.driver.search.settings import SearchPlan
from sweeps.driver.search.searcher import FullBudgetOptunaSearch
from sweeps.driver.sweep import (TrackedSweep, completed_results, end_of_sweep, mlflow_run_url, parent_status,
                                 points_tuner, run_config, trial_settings, tracked_sweep)
from sweeps.trial.progress import COMPLETED, ITERATION, RUNNING, reported_status
from sweeps.trial.trainable import TrialHooks
from resnet_core.config import config_net_name
from sweeps.trial.identity import META_KEY, TrialMeta, trial_config, trial_meta
from tracking.sweep_run import mark_trial_run, wait_until_closed


@dataclass
class SearchResults:
    """The Tune results of a search: each net's search trials, and the confirm stage's trials."""

    searched: dict[str, list[tune.Result]]
    confirmed: list[tune.Result]
    interrupted: bool = False  # a stage ended with trials unfinished (the driver was stopped)

    @property
    def errors(self) -> list[BaseException]:
        return [r.error for r in self.all() if r.error is not None]

    def all(self) -> list[tune.Result]:
        return [r for results in self.searched.values() for r in results] + self.confirmed

    @property
    def status(self) -> str:
        """The parent run's status: KILLED when a stage was cut short."""
        return parent_status(bool(self.errors), self.interrupted)


def run_search(plan: SearchPlan, hooks: TrialHooks | None = None) -> SearchResults:
    """Run a checked search plan on the connected cluster: the searches, the confirm stage, the report."""
    save_plan(plan)  # on --resume the same settings (check_plan compared them)
    with tracked_sweep(plan, hooks) as sweep:
        started = time.time()
        results = _run_stages(plan, sweep)
        sweep.status = results.status
        print_search_summary(plan, results, time.time() - started)
    end_of_sweep(plan, sweep.experiment_id)
    return results


def _run_stages(plan: SearchPlan, sweep: TrackedSweep) -> SearchResults:
    """Each net's search, then the confirm stage; a stage cut short (the driver stopped) ends the run."""
    results = SearchResults({}, [])
    for cell in plan.cell_overrides:
        net = config_net_name(trial_config({**plan.base, **cell}))
        results.searched[net], finished = _search_stage(plan, sweep, cell, net)
        if not finished:
            results.interrupted = True
            return results
    confirm = partial(_confirm_tuner, plan, sweep, results)
    results.confirmed, finished = _fit_stage(plan, sweep, "confirm", confirm)
    results.interrupted = not finished
    return results


def _fit_stage(plan: SearchPlan, sweep: TrackedSweep, name: str, new_tuner: Callable[[], tune.Tuner],
               resume_errored: bool = True) -> tuple[list[tune.Result], bool]:
    """Run one stage (restored on --resume when it has Tune state); returns its results and whether every
    trial ended (False when the driver was stopped part-way)."""
    path = f"{plan.sweep_id}/{name}"
    if plan.resume and tune.Tuner.can_restore(path):
        print(f"--resume: continuing stage {name}", flush=True)
        tuner = tune.Tuner.restore(path, sweep.trainable, resume_unfinished=True, resume_errored=resume_errored)
    else:
        tuner = new_tuner()
    grid = tuner.fit()
    sweep.results.extend(grid)
    return list(grid), grid.num_terminated + grid.num_errors == len(grid)


STOPPED_CLOSE_WAIT = 30.0  # seconds, in all, for the trials ASHA stopped to close their own runs


def _search_stage(plan: SearchPlan, sweep: TrackedSweep, cell: dict[str, Any],
                  net: str) -> tuple[list[tune.Result], bool]:
    """One net's search; its trials ASHA stopped then end in MLflow as FINISHED with ``outcome=stopped_early``,
    ``stopped_at_iteration`` and ``stop_reason``: a decision of the search, not a fault.

    The trial itself cannot tell an ASHA stop from a driver that is stopping (both end it at a report), so it
    closes its run as KILLED (``outcome=stopped``); only the driver knows, here. Errored trials are not retried
    on --resume: Optuna already holds them as FAIL.
    """
    name = f"search-{net}"
    results, finished = _fit_stage(plan, sweep, name, partial(_search_tuner, plan, sweep, cell, net, name),
                                   resume_errored=False)
    iterations = plan.base["optim.iterations"]
    stopped = [r for r in results if r.error is None and reported_status(r.metrics) == RUNNING]
    wait_until_closed(sweep.tracking, [r.metrics["trial_id"] for r in stopped], STOPPED_CLOSE_WAIT)
    for result in stopped:  # after the trials' own close, so that the driver's words are the last ones
        stopped_at = result.metrics[ITERATION]
        mark_trial_run(sweep.tracking, result.metrics["trial_id"], "stopped_early", "FINISHED",
                       {"stopped_at_iteration": stopped_at,
                        "stop_reason": plan.search.stop_reason(stopped_at, iterations)}, only_running=False)
    return results, finished


def study_name(plan: SearchPlan, sweep: TrackedSweep, net: str) -> str:
    """The Optuna study of one net's search: unique to the sweep (its parent run), the same on --resume."""
    return f"{plan.experiment}/{net}/{sweep.parent_run_id[:8]}"


def startup_trials(num_samples: int) -> int:
    """Random trials before TPE models the results: a third of the budget, 2 to 10 (Optuna's default is 10,
    which would leave a budget of 10 or fewer a random search)."""
    return max(2, min(10, num_samples // 3))


def _search_tuner(plan: SearchPlan, sweep: TrackedSweep, cell: dict[str, Any], net: str, name: str) -> tune.Tuner:
    """One net's search: the seeded TPE searcher on its Optuna study, ASHA on the training iteration."""
    search = plan.search
    iterations = plan.base["optim.iterations"]
    searcher = FullBudgetOptunaSearch(search.knobs(), search.optuna_storage, study_name(plan, sweep, net),
                                      search.search_seed, startup_trials(search.num_samples), net, search.metric,
                                      partial(search.stop_reason, iterations=iterations),
                                      partial(mlflow_run_url, plan, sweep.experiment_id))
    scheduler = asha_scheduler(search, iterations)
    return tune.Tuner(
        sweep.trainable,
        param_space={**plan.base, **cell, "run.seed": plan.seeds[0]},  # one seed: one validation split for all
        tune_config=tune.TuneConfig(
            search_alg=ConcurrencyLimiter(searcher, plan.max_concurrent) if plan.max_concurrent else searcher,
            scheduler=scheduler, num_samples=search.num_samples, **trial_settings()),
        run_config=run_config(plan, sweep, name, plan.sweep_id, callbacks=[AshaRungs(scheduler)]))


def _confirm_tuner(plan: SearchPlan, sweep: TrackedSweep, results: SearchResults) -> tune.Tuner:
    """The confirm stage: each net's best configurations and its default recipe, seeds 1..N, full budget."""
    points = [point for cell, (net, searched) in zip(plan.cell_overrides, results.searched.items())
              for point in confirm_points(plan, cell, net, searched)]
    return points_tuner(plan, sweep, points, "confirm", plan.sweep_id)


def confirm_points(plan: SearchPlan, cell: dict[str, Any], net: str,
                   searched: list[tune.Result]) -> list[dict[str, Any]]:
    """The confirm trials of one net, as param-space overrides named ``<net> top1 seed 1``, ``<net> default ...``."""
    search = plan.search
    candidates = [(f"top{i}", {"optuna_trial": trial_meta(r.config).tags["optuna_trial"]},
                   {key: r.config[key] for key in search.space})
                  for i, r in enumerate(best_trials(searched, search.metric, search.top_k), start=1)]
    candidates.append(("default", {}, {key: plan.base[key] for key in search.space}))
    points = []
    for label, tags, values in candidates:
        for seed in range(1, search.confirm_seeds + 1):
            meta = TrialMeta(f"{net} {label} seed {seed}", {"stage": "confirm", "candidate": label, **tags})
            points.append({**cell, **values, "run.seed": seed, META_KEY: meta})
    return points


def best_trials(results: list[tune.Result], metric: str, k: int) -> list[tune.Result]:
    """The ``k`` full-budget trials with the lowest final ``metric`` (ties: the earlier Optuna trial)."""
    full = completed_results(results, metric)
    full.sort(key=lambda r: (r.metrics[metric], int(trial_meta(r.config).tags["optuna_trial"])))
    return full[:k]


def print_search_summary(plan: SearchPlan, results: SearchResults, elapsed: float) -> None:
    """Per net: how its search trials ended and the best found; then the confirm stage's test errors."""
    print(f"\nsearch finished in {elapsed:.0f}s ({len(results.errors)} trial(s) errored)")
    for net, searched in results.searched.items():
        print(f"  {net}: {_search_line(searched, plan.search.space, plan.search.metric)}")
    by_candidate: dict[str, list[float]] = {}
    for r in results.confirmed:
        by_candidate.setdefault(trial_meta(r.config).name.rsplit(" seed ", 1)[0], []).append(
            (r.metrics or {}).get("test/error", math.nan))
    if by_candidate:
        print("  confirm stage, test error (%), mean ± std over seeds:")
    for name, errors in by_candidate.items():
        spread = f"{statistics.stdev(errors):.2f}" if len(errors) > 1 else "—"
        print(f"    {name:<28} {statistics.mean(errors):6.2f} ± {spread}  (n={len(errors)})")


def _search_line(searched: list[tune.Result], space: dict[str, Any], metric: str) -> str:
    """How one net's search trials ended, and its best full-budget configuration by ``metric``."""
    ends = Counter("error" if r.error else reported_status(r.metrics) or "not run" for r in searched)
    line = (f"{len(searched)} trials, {ends.pop(COMPLETED, 0)} at full budget, {ends.pop(RUNNING, 0)} stopped "
            f"early by ASHA" + "".join(f", {n} {status}" for status, n in ends.items()))
    best = best_trials(searched, metric, 1)
    if not best:
        return line + "; no full-budget trial"
    trial = best[0]
    shown = ", ".join(f"{key.split('.', 1)[1]}={_short(trial.config[key])}" for key in space)
    return line + f"; best: {trial_meta(trial.config).name}, {metric} {trial.metrics[metric]:.2f}% ({shown})"


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)
