"""A search as the command line resolved it: plain data, part of the sweep's plan; its ASHA rungs and the
words for an early stop. Driver only."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sweeps.driver.plan import SweepPlan
from sweeps.study import METRIC, Knob


@dataclass
class SearchSettings:
    """A search as the command line resolved it (plain data, part of the sweep's plan)."""

    space: dict[str, list[Any]]  # searched TrainConfig key -> [kind, *range or choices]
    num_samples: int
    search_seed: int
    grace_period: int
    reduction_factor: float
    top_k: int
    confirm_seeds: int
    optuna_storage: str  # an RDB URL (sqlite:///...optuna.db by default)
    lr_milestones: list[int] = field(default_factory=list)  # every search trial's lr drops (optim.milestones)
    metric: str = METRIC

    def knobs(self) -> list[Knob]:
        return [Knob(key, spec[0], tuple(spec[1:])) for key, spec in self.space.items()]

    def rungs(self, iterations: int) -> list[int]:
        """The iterations at which ASHA compares trials: the milestones ASHAScheduler(brackets=1) places
        (grace period × reduction factor^k up to ``iterations``, by its own formula)."""
        count = int(math.log(iterations / self.grace_period) / math.log(self.reduction_factor) + 1)
        return [int(self.grace_period * self.reduction_factor ** k) for k in range(count)]

    def rung_milestones(self, iterations: int) -> dict[int, list[int]]:
        """Per rung, the lr drops a trial has passed when ASHA compares it there (all of them: see sweeps/driver/search/asha.py)."""
        return {rung: [m for m in self.lr_milestones if m < rung] for rung in self.rungs(iterations)}

    def stop_reason(self, iteration: int, iterations: int) -> str:
        """Why a search trial that Tune stopped at ``iteration`` (of ``iterations``) ended there, in words."""
        rungs = self.rungs(iterations)
        passed = [rung for rung in rungs if rung <= iteration]
        if not passed:  # ASHA decides only at its rungs
            return f"stopped at iteration {iteration}, before ASHA's first rung at {rungs[0]}"
        rung = passed[-1]
        drop = last_lr_drop(self.lr_milestones, iterations)
        after = f"{iteration - drop} iterations after the last lr drop at {drop}" if drop else "no lr drop before it"
        return (f"ASHA stopped it at rung {len(passed)} of {len(rungs)} (iteration {rung}; compared at iteration "
                f"{iteration}, {after}): its {self.metric} there was outside the best 1/{self.reduction_factor:g} "
                f"of the values the trials before it recorded at that rung")


def last_lr_drop(milestones: Sequence[int], iterations: int) -> int:
    """The last iteration at which the lr schedule drops during ``iterations`` of training (0: it never does).

    A milestone M lowers the lr from step M on; one at or past ``iterations`` never takes effect.
    """
    return max((m for m in milestones if m < iterations), default=0)


@dataclass
class SearchPlan(SweepPlan):
    """A search study's plan: the sweep's, and the search it runs per net (plain data, saved as sweep.json)."""

    search: SearchSettings = field(kw_only=True)
