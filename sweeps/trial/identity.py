"""A trial's identity: its TrainConfig from Tune's config, its readable name, and its MLflow tags.

Used in the driver (naming trials in Tune's table and the summary) and in trial processes (tagging runs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resnet_core import TrainConfig
from resnet_core.config import config_net_name, family_name
from resnet_core.device import resolve_device, resolve_precision

META_KEY = "trial"  # optional param-space key holding a TrialMeta


@dataclass(frozen=True)
class TrialMeta:
    """What names and tags a trial where its config alone cannot: a search's ``residual-56 trial 3``.

    One value in Tune's config (not a dict: Tune would take a dict's entries for search dimensions).
    """

    name: str
    tags: dict[str, str] = field(default_factory=dict)  # MLflow tags on top of run_tags, e.g. {"stage": "search"}
    adopts: str | None = None  # an earlier Tune trial id whose MLflow run this trial continues (a re-issued one)


def trial_meta(config: dict[str, Any]) -> TrialMeta | None:
    return config.get(META_KEY)


def trial_config(config: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a trial: Tune's config is flat TrainConfig keys (and, maybe, its TrialMeta)."""
    return TrainConfig.from_dict({k: v for k, v in config.items() if k != META_KEY})


def run_name(config: TrainConfig) -> str:
    """Readable run name, e.g. ``plain-56 seed 1`` or ``residual-34 B seed 0``."""
    return f"{config_net_name(config)} seed {config.run.seed}"


def run_tags(config: TrainConfig) -> dict[str, str]:
    """A trial run's tags; ``precision`` is what the run computes in on this machine ("auto" resolved)."""
    m = config.model
    precision = resolve_precision(config.run.precision, resolve_device(config.run.device))
    return {"family": family_name(config), "depth": str(m.depth), "shortcut": m.shortcut if m.residual else "none",
            "seed": str(config.run.seed), "dataset": config.data.dataset, "layout": m.layout,
            "precision": precision}


def trial_name(config: dict[str, Any]) -> str:
    """The name of the trial with Tune config ``config``: its TrialMeta's, else ``run_name``."""
    meta = trial_meta(config)
    return meta.name if meta else run_name(trial_config(config))


def trial_tags(config: dict[str, Any]) -> dict[str, str]:
    """The MLflow tags of the trial with Tune config ``config``: ``run_tags`` and its TrialMeta's tags."""
    meta = trial_meta(config)
    return {**run_tags(trial_config(config)), **{k: str(v) for k, v in (meta.tags if meta else {}).items()}}
