"""The ``search.*`` params of a search's parent run: one schema for the driver that writes them and the report
that reads them back (docs/tracking.md), and what the budget they record lets a search expect. Plain Python: no
MLflow, so the report imports it freely."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna.distributions import BaseDistribution

PREFIX = "search."
# Every field, in order; all but TEXT_FIELDS are numbers, lists or dicts, logged as JSON (operations.param_value).
FIELDS = ("space", "num_samples", "search_seed", "grace_period", "reduction_factor", "top_k", "confirm_seeds",
          "optuna_storage", "lr_milestones", "metric", "rungs", "rung_milestones")
TEXT_FIELDS = ("optuna_storage", "metric")


def search_params(values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` (one per field of FIELDS) as the parent run's params; raises ValueError naming a missing or
    unknown field, so the writer cannot drift from what the report reads."""
    if set(values) != set(FIELDS):
        raise ValueError(f"search params: missing {sorted(set(FIELDS) - set(values))}, "
                         f"unknown {sorted(set(values) - set(FIELDS))}")
    return {PREFIX + name: values[name] for name in FIELDS}


def read_search_params(params: Mapping[str, str]) -> dict[str, Any]:
    """The ``search.*`` fields among a run's params (MLflow's strings, keys without ``params.``), decoded;
    fields an older sweep did not log are left out."""
    found = {key[len(PREFIX):]: text for key, text in params.items() if key.startswith(PREFIX)}
    return {name: text if name in TEXT_FIELDS else json.loads(text) for name, text in found.items() if name in FIELDS}


def optuna_distribution(kind: str, values: Sequence[Any]) -> BaseDistribution:
    """The Optuna distribution of one entry of ``space`` (a kind, and a range or the choices): what the searcher
    draws from and what the report's importance reads trials against. Optuna is imported only here."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if kind == "choice":
        return CategoricalDistribution(list(values))
    return FloatDistribution(float(values[0]), float(values[1]), log=kind == "loguniform")


def expected_full_budget(num_samples: int, reduction_factor: float, rungs: int = 1) -> float:
    """About how many of ``num_samples`` trials of one net ASHA lets train to the full budget, with ``rungs`` rungs.

    At a rung ASHA lets the first trial through and each later one that is no worse than the (1 − 1/F) quantile
    of the values the trials before it recorded there (Ray's AsyncHyperBand cutoff), so of k trials arriving in
    random order 1 + (k − 1)/F pass on average, rung after rung. With one rung, 32 trials and F = 2 that is 16.5
    (a simulation of Ray's rule: 16.5, and 20 or more in 14 % of searches). A sampler whose later trials are
    better than its first lets more through; a count to plan on, not a promise.
    """
    passed = float(num_samples)
    for _ in range(rungs):
        passed = 1 + (passed - 1) / reduction_factor if passed >= 1 else passed
    return passed


def samples_for_full_budget(wanted: int, reduction_factor: float, rungs: int = 1) -> int:
    """The fewest trials per net whose ``expected_full_budget`` is at least ``wanted``."""
    return max(wanted, math.ceil((wanted - 1) * reduction_factor ** rungs + 1 - 1e-9))
