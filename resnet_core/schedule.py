"""The learning-rate schedule: the paper's steps in iterations (§4.2), its ImageNet plateau rule (§3.4), and
the ResNet-110 warm-up (§4.2).

The plateau rule, "divided by 10 when the error plateaus", made explicit: at each evaluation the validation error (of images held out of the *training* set; the official val set is
the test set and never decides anything) is compared with the best so far: an improvement of at least
``threshold`` error points resets the count, anything less adds one; after ``patience`` evaluations without
an improvement the lr is multiplied by gamma once more and the count starts again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from resnet_core.config import TrainConfig


@dataclass
class PlateauRule:
    patience: int
    threshold: float  # error points (%)
    best: float = math.inf
    stale: int = 0  # evaluations since the last improvement (or the last drop)
    drops: int = 0  # times the lr was divided so far

    def observe(self, error_pct: float) -> bool:
        """Record one evaluation's validation error; True when it makes the lr drop."""
        if error_pct <= self.best - self.threshold:
            self.best, self.stale = error_pct, 0
            return False
        self.best = min(self.best, error_pct)
        self.stale += 1
        if self.stale < self.patience:
            return False
        self.drops, self.stale = self.drops + 1, 0
        return True

    def state_dict(self) -> dict[str, float]:
        """Plain numbers for the checkpoint."""
        return {"best": self.best, "stale": self.stale, "drops": self.drops}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.best, self.stale, self.drops = float(state["best"]), int(state["stale"]), int(state["drops"])


class LearningRate:
    """The paper's step schedule in iterations (or its ImageNet plateau rule), with the optional ResNet-110
    warm-up rule."""

    def __init__(self, config: TrainConfig, warmup_active: bool):
        self.optim = config.optim
        self.warmup_active = warmup_active
        o = self.optim
        self.plateau = PlateauRule(o.plateau_patience, o.plateau_threshold) if o.schedule == "plateau" else None

    def at(self, iteration: int) -> float:
        if self.warmup_active:
            return self.optim.warmup_lr
        passed = self.plateau.drops if self.plateau else sum(iteration >= m for m in self.optim.milestones)
        return self.optim.lr * self.optim.gamma**passed

    def observe_validation_error(self, error_pct: float) -> None:
        """The plateau rule's input: one evaluation's error on the split held out of the training set."""
        if self.plateau:
            self.plateau.observe(error_pct)

    def observe_training_error(self, error_pct: float) -> None:
        """End warm-up once the training error is below the threshold (checked on recent batches)."""
        if self.warmup_active and error_pct < self.optim.warmup_until_error:
            self.warmup_active = False
