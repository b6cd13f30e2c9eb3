"""The paper's ImageNet lr rule, "divided by 10 when the error plateaus" (§3.4), made explicit.

At each evaluation the validation error (of images held out of the *training* set; the official val set is
the test set and never decides anything) is compared with the best so far: an improvement of at least
``threshold`` error points resets the count, anything less adds one; after ``patience`` evaluations without
an improvement the lr is multiplied by gamma once more and the count starts again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


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
