"""A trial's identity: its TrainConfig from Tune's config, its readable name, and its MLflow tags.

Used in the driver (naming trials in Tune's table and the summary) and in trial processes (tagging runs).
"""

from __future__ import annotations

from typing import Any

from resnet_core import TrainConfig
from resnet_core.config import family_name
from resnet_core.trainer import resolve_device, resolve_precision

ARCH_KEY = "arch"  # param-space key holding the per-cell overrides (family, depth, ...)


def trial_config(config: dict[str, Any]) -> TrainConfig:
    """The TrainConfig of a trial: Tune's config is flat TrainConfig keys plus an ``arch`` dict of overrides."""
    flat = {k: v for k, v in config.items() if k != ARCH_KEY}
    flat.update(config.get(ARCH_KEY, {}))
    return TrainConfig.from_dict(flat)


def run_name(config: TrainConfig) -> str:
    """Readable run name, e.g. ``plain-56 seed 1`` or ``residual-34 B seed 0``."""
    m = config.model
    option = f" {m.shortcut}" if m.residual and m.shortcut != "A" else ""
    return f"{family_name(config)}-{m.depth}{option} seed {config.run.seed}"


def run_tags(config: TrainConfig) -> dict[str, str]:
    """A trial run's tags; ``precision`` is what the run computes in on this machine ("auto" resolved)."""
    m = config.model
    precision = resolve_precision(config.run.precision, resolve_device(config.run.device))
    return {"family": family_name(config), "depth": str(m.depth), "shortcut": m.shortcut if m.residual else "none",
            "seed": str(config.run.seed), "dataset": config.data.dataset, "layout": m.layout,
            "precision": precision}
