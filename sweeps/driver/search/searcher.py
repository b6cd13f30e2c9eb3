"""Ray Tune's OptunaSearch, truthful about early-stopped trials and whole across driver restarts. Driver only.

Truthful: Ray's OptunaSearch tells Optuna that every trial Tune ends without an error is COMPLETE, with its last
value. A trial ASHA stopped after a fraction of its budget would then count as a finished one: its early
validation error would enter TPE's model and the parameter importances as if it were final. Here a trial is
COMPLETE only when its last report was its last evaluation (``status`` "completed"); one Tune stopped before
that is PRUNED (Optuna's state for early-stopped trials: its samplers rank them below completed ones, its
importance evaluators leave them out); a diverged or crashed one is FAIL. Each Optuna trial records its Tune
trial id and outcome as user attributes, and intermediate values go in at their training iteration.

Whole: the study lives in an RDB storage. Tune saves this searcher with its experiment state and, on
``--resume``, restores it (``restore``); the restored searcher is reconciled with the storage, which may be
ahead of Tune's saved state: a trial the dead driver asked for after that state was saved (its Tune trial is
lost) is re-issued, with the same parameters, to the next trial Tune creates, which continues the lost
trial's MLflow run; so a search ends with exactly ``num_samples`` trials in Tune, Optuna and MLflow. A searcher
that Tune did not restore while restoring its trials (Ray once fell back to a fresh searcher silently) fails
loudly instead of searching on with a fresh sampler.

Intermediate values: Tune hands every report but the last to ``on_trial_result`` (also through
``ConcurrencyLimiter``), and the last one, the report at which ASHA stopped a trial or its final evaluation,
only to ``on_trial_complete``; both record it, so each Optuna trial holds its ``val/error`` at every evaluation
iteration (tests/test_regularization.py reads them back from the storage).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from sweeps.study import Knob
from tracking.search_params import optuna_distribution
from sweeps.trial.progress import COMPLETED, DIVERGED, ITERATION, MLFLOW_RUN, RUNNING, reported_status
from sweeps.trial.identity import META_KEY, TrialMeta

TUNE_TRIAL_ID = "tune_trial_id"  # user attribute of each Optuna trial: the Tune trial it ran as
OUTCOME = "outcome"  # user attribute of each finished Optuna trial: as the MLflow tag (docs/tracking.md)
STOP_REASON = "stop_reason"  # user attribute of a PRUNED trial: why and where ASHA stopped it, in words
RESTORES = "tune_restores"  # user attribute of the study: how often Tune restored its searcher
MLFLOW_RUN_URL = "mlflow_run_url"  # user attribute of each finished Optuna trial, beside its MLflow run id


def distribution(knob: Knob) -> BaseDistribution:
    """The Optuna distribution a knob is drawn from (the rule: tracking/search_params.py)."""
    return optuna_distribution(knob.kind, knob.values)


def judge(result: dict[str, Any] | None, error: bool, metric: str) -> tuple[TrialState, float | None, str]:
    """How a Tune trial ended, for Optuna: (state, value, outcome) from its last report."""
    result = result or {}
    value, status = result.get(metric), reported_status(result)
    if error or status is None:
        return TrialState.FAIL, None, "failed"
    if status == COMPLETED and isinstance(value, (int, float)) and math.isfinite(value):
        return TrialState.COMPLETE, float(value), "completed"
    if status == RUNNING:  # Tune stopped it at an evaluation before its last: ASHA's early stop
        return TrialState.PRUNED, None, "stopped_early"
    return TrialState.FAIL, None, DIVERGED if status == DIVERGED else "failed"


class FullBudgetOptunaSearch(OptunaSearch):
    """OptunaSearch (TPE, seeded) on an RDB storage that records early-stopped trials as PRUNED."""

    def __init__(self, knobs: list[Knob], storage_url: str, study_name: str, seed: int, startup_trials: int,
                 net: str, metric: str, stop_reason: Callable[[int], str],
                 run_url: Callable[[str], str | None] | None = None):
        """``stop_reason``: the words for a trial stopped early at an iteration (``SearchSettings.stop_reason``);
        ``run_url``: the MLflow UI page of a run id, or None (a function Tune can pickle with the searcher)."""
        super().__init__(space={knob.key: distribution(knob) for knob in knobs}, metric=metric, mode="min",
                         sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials),
                         study_name=study_name, storage=optuna.storages.RDBStorage(storage_url))
        self._ot_study.set_metric_names([metric])  # optuna-dashboard shows it instead of "Objective 0"
        self._run_url = run_url
        self._net = net  # names trials, e.g. "residual-56 trial 3"
        self._stop_reason = stop_reason
        self._reissue: list[int] = []  # numbers of Optuna trials whose Tune trials a dead driver lost
        self._reconciled = False

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self._reconciled:  # a stage whose driver died before Tune first saved this searcher
            self._reconcile()
        adopts = self._reissued(trial_id) if self._reissue and trial_id not in self._ot_trials else None
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials[trial_id]
        if trial_id not in self._completed_trials:
            ot_trial.set_user_attr(TUNE_TRIAL_ID, trial_id)
        tags = {"stage": "search", "optuna_study": self._study_name, "optuna_trial": str(ot_trial.number)}
        return {**config, META_KEY: TrialMeta(f"{self._net} trial {ot_trial.number}", tags, adopts)}

    def _reissued(self, trial_id: str) -> str | None:
        """Hand a lost trial's Optuna trial to Tune trial ``trial_id``; returns the lost Tune trial's id."""
        number = self._reissue.pop(0)
        frozen = next(t for t in self._ot_study.get_trials(deepcopy=False) if t.number == number)
        self._ot_trials[trial_id] = optuna.trial.Trial(self._ot_study, frozen._trial_id)  # Optuna's own handle
        if frozen.state.is_finished():  # it finished too: its rerun is not told again
            self._completed_trials.add(trial_id)
        return frozen.user_attrs.get(TUNE_TRIAL_ID)

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        self._known(trial_id)
        if trial_id not in self._completed_trials:
            self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict[str, Any] | None) -> None:
        """Record a report's value as an intermediate value at its training iteration (if it has one)."""
        value = (result or {}).get(self.metric)
        if isinstance(value, (int, float)) and math.isfinite(value) and ITERATION in result:
            self._ot_trials[trial_id].report(float(value), int(result[ITERATION]))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self._known(trial_id)
        if trial_id in self._completed_trials:
            return
        self._report(trial_id, result)  # Tune hands the last report here, not to on_trial_result
        state, value, outcome = judge(result, error, self.metric)
        ot_trial = self._ot_trials[trial_id]
        ot_trial.set_user_attr(OUTCOME, outcome)
        if run_id := (result or {}).get(MLFLOW_RUN):
            ot_trial.set_user_attr(MLFLOW_RUN, run_id)
            if self._run_url and (url := self._run_url(run_id)):
                ot_trial.set_user_attr(MLFLOW_RUN_URL, url)
        if state == TrialState.PRUNED:
            ot_trial.set_user_attr(STOP_REASON, self._stop_reason(int(result[ITERATION])))
        self._ot_study.tell(ot_trial, value, state=state)
        self._completed_trials.add(trial_id)

    def _known(self, trial_id: str) -> None:
        if trial_id not in self._ot_trials:
            raise RuntimeError(
                f"Tune reports trial {trial_id}, which the Optuna search {self._study_name!r} never suggested: "
                f"Tune restored the trials of this search but not its searcher's state. Refusing to search on "
                f"with a fresh sampler; the study is kept in its storage")

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._reconcile()
        self._ot_study.set_user_attr(RESTORES, self._ot_study.user_attrs.get(RESTORES, 0) + 1)

    def _reconcile(self) -> None:
        """Match this searcher with its study's storage: Optuna trials finished there are finished here;
        those this searcher does not know (asked after its state was saved) are re-issued, in order."""
        known = {trial.number: trial_id for trial_id, trial in self._ot_trials.items()}
        self._reissue = []
        for frozen in self._ot_study.get_trials(deepcopy=False):
            if frozen.number not in known:
                self._reissue.append(frozen.number)
            elif frozen.state.is_finished():
                self._completed_trials.add(known[frozen.number])
        self._reconciled = True
