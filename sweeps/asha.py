"""ASHA for a search stage: the scheduler, and its rung records kept across driver restarts. Driver only.

Tune saves the searcher with its experiment state, but not the scheduler: restored from ``--resume``, ASHA would
start with empty rungs and let the next trial through every rung unchallenged. A callback's state is saved and
restored with the experiment (``get_state`` / ``set_state``), so ``AshaRungs`` carries the rungs across.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from sweeps.search import SearchSettings
from sweeps.searcher import ITERATION

log = logging.getLogger(__name__)


def asha_scheduler(search: SearchSettings, iterations: int) -> ASHAScheduler:
    """ASHA on the training iteration, one bracket: rungs at grace period × reduction factor^k."""
    return ASHAScheduler(time_attr=ITERATION, metric=search.metric, mode="min", max_t=iterations,
                         grace_period=search.grace_period, reduction_factor=search.reduction_factor)


class AshaRungs(tune.Callback):
    """Saves and restores ``scheduler``'s rung records (trial id → value, per rung) with the experiment.

    ASHA keeps them in private attributes (``_brackets[i]._rungs``); if a Ray version drops those, this warns
    and keeps nothing, and a resumed search runs with fresh rungs as it would without this callback.
    """

    def __init__(self, scheduler: ASHAScheduler):
        self.scheduler = scheduler

    def get_state(self) -> dict[str, Any] | None:
        try:
            return {"rungs": [[(milestone, dict(recorded)) for milestone, recorded in bracket._rungs]
                              for bracket in self.scheduler._brackets]}
        except AttributeError as exc:
            log.warning("cannot save ASHA's rungs (%s); a resumed search starts them afresh", exc)
            return None

    def set_state(self, state: dict[str, Any]) -> None:
        for bracket, rungs in zip(self.scheduler._brackets, state["rungs"]):
            bracket._rungs = [(milestone, dict(recorded)) for milestone, recorded in rungs]
