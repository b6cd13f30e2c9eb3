"""The ``search.*`` params of a search's parent run: one schema for the driver that writes them and the report
that reads them back (docs/tracking.md). Plain Python: no MLflow, so the report imports it freely."""

from __future__ import annotations

import json
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
