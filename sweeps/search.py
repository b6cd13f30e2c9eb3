"""What a search study is: plain data saying which TrainConfig fields it searches, over what, and on what budget.

A search study file (``sweeps/regularization.py``) declares a ``SearchStudy``: a ``GridStudy`` whose grid is the
nets it searches for (the families), plus its search space and each preset's ``SearchBudget``. The shared
machinery gives it the command line (``sweeps.search_plan`` adds the search's flags), the checks, one Optuna search
per net under ASHA (``sweeps.search_runner``), a confirm stage and the report. Nothing here imports Ray or Optuna.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from resnet_core.config import TrainConfig
from resnet_core.train import flag_name
from sweeps.study import GridStudy, Preset

RANGES = ("loguniform", "uniform")  # a knob drawn from [low, high] (log-uniform: evenly in log space)
CHOICE = "choice"  # a knob drawn from a few values
METRIC = "val/error"  # what a search minimises: the error on the held-out validation split, never on test


@dataclass(frozen=True)
class Knob:
    """One searched TrainConfig field: ``kind`` (log-uniform, uniform or choice) and its range or choices."""

    key: str  # the TrainConfig field, e.g. "optim.weight_decay"
    kind: str
    values: tuple[Any, ...]  # (low, high) for a range, else the choices

    @property
    def name(self) -> str:
        """The knob's name in ``--knobs``: the field's name, e.g. ``weight_decay``."""
        return self.key.split(".", 1)[1]

    @property
    def flag(self) -> str:
        """The flag that overrides its range or choices, e.g. ``--weight-decay``."""
        return flag_name(self.key)

    @property
    def help(self) -> str:
        """What the knob is: its TrainConfig field's help text (resnet_core/config.py documents every option)."""
        section, name = self.key.split(".", 1)
        fields = {f.name: f for f in dataclasses.fields(getattr(TrainConfig(), section))}
        return fields[name].metadata.get("help", self.key)

    def describe(self) -> str:
        if self.kind == CHOICE:
            return f"one of {', '.join(str(v) for v in self.values)}"
        kind = "log-uniform" if self.kind == "loguniform" else self.kind
        return f"{kind} in [{self.values[0]:g}, {self.values[1]:g}]"

    def checked(self, base: dict[str, Any]) -> Knob:
        """This knob with values typed as its field, if it can be searched on top of the flat config ``base``.

        Raises ValueError naming the flag, the bad value and what is valid (an empty or reversed range, a
        log-uniform range reaching 0, a value the TrainConfig refuses, a choice of fewer than two values).
        """
        shown = f"{self.flag} {','.join(str(v) for v in self.values)}"
        values = tuple(_typed(self.key, v, base, shown) for v in self.values)
        if self.kind == CHOICE:
            if len(set(values)) < 2:
                raise ValueError(f"{shown}: a choice needs at least two different values, e.g. true,false")
            return Knob(self.key, self.kind, values)
        if self.kind not in RANGES or len(values) != 2:
            raise ValueError(f"{shown}: give a range as LOW,HIGH ({self.kind}); a knob is one of {[*RANGES, CHOICE]}")
        low, high = values
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"{shown}: the search range is empty; give LOW,HIGH with LOW < HIGH")
        if self.kind == "loguniform" and low <= 0:
            raise ValueError(f"{shown}: a log-uniform range needs 0 < LOW < HIGH; got LOW={low:g}")
        return Knob(self.key, self.kind, values)


def _typed(key: str, value: Any, base: dict[str, Any], shown: str) -> Any:
    """``value`` as the TrainConfig field ``key`` holds it, checked by TrainConfig's own validation."""
    try:
        return TrainConfig.from_dict({**base, key: value}).to_dict()[key]
    except ValueError as exc:
        raise ValueError(f"{shown}: {exc}") from None


@dataclass(frozen=True)
class SearchBudget:
    """How much a preset searches, per net: the same for every family, so their best errors compare."""

    num_samples: int  # trials per family
    grace_period: int  # iterations a trial trains before ASHA may stop it: after the schedule's last lr drop
    reduction_factor: float  # ASHA keeps about 1 / reduction_factor of the trials at each rung
    top_k: int  # best configurations (by validation error) retrained in the confirm stage
    confirm_seeds: int  # seeds of each confirm run
    search_seed: int = 0  # seeds the TPE sampler, the same for every family


@dataclass(frozen=True)
class SearchPreset(Preset):
    """A search study's preset: which nets (``grid`` over families), their recipe, and the search budget."""

    budget: SearchBudget | None = None

    def __post_init__(self) -> None:
        if self.budget is None:
            raise TypeError(f"search preset {self.name!r} needs a budget")


@dataclass(frozen=True)
class SearchStudy(GridStudy):
    """A study that searches TrainConfig fields for each net of its grid, then retrains the best ones."""

    space: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # key -> (kind, *range or choices)
    searched: tuple[str, ...] = ()  # the knobs searched unless --knobs names others

    def knobs(self) -> dict[str, Knob]:
        """Every knob the study offers, by name, with its default range or choices."""
        knobs = [Knob(key, spec[0], tuple(spec[1:])) for key, spec in self.space.items()]
        return {knob.name: knob for knob in knobs}


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
        """Per rung, the lr drops a trial has passed when ASHA compares it there (all of them: see sweeps/asha.py)."""
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
