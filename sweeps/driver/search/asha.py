"""ASHA for a search stage: the scheduler, and its rung records kept across driver restarts. Driver only.

Where the rungs lie: after the lr schedule's last drop, never before it (``search_plan`` refuses a grace
period at or before the last milestone). Stronger weight decay or label smoothing tends to look worse while
the lr is high and better once it has dropped, so a rung before the last drop compares trials at a learning
rate none of them finishes with, and stops, and tells TPE as PRUNED, exactly the configurations the search is
asking about. The two ways out were:

- every rung a complete, shorter schedule (each trial's milestones scaled to the rung it trains toward): a
  trial cannot change its schedule half-way, so this needs one trial per configuration and rung, i.e.
  restarting survivors from scratch, which Tune's one trial per configuration does not do and which costs
  more than ASHA saves;
- every trial trains the full schedule, with the paper's milestones of the full budget (the same recipe
  the confirm stage retrains), and ASHA compares trials only after its last drop. Chosen: what is compared
  is what is finished and confirmed. The price: ASHA can stop at most the part of training after the last
  drop (the last 25 % with milestones at 50 % and 75 %); it prunes a tail of training, not most of it.

Tune saves the searcher with its experiment state, but not the scheduler: restored from ``--resume``, ASHA would
start with empty rungs and let the next trial through every rung unchallenged. A callback's state is saved and
restored with the experiment (``get_state`` / ``set_state``), so ``AshaRungs`` carries the rungs across.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import tune
from ray.tune.schedulers import ASHAScheduler

from sweeps.driver.search.settings import SearchSettings
from sweeps.trial.progress import ITERATION

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
