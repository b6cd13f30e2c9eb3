"""Named sweep presets: plain data saying which nets to train, on what, for how long, with what resources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from resnet_core.config import scaled_milestones


@dataclass(frozen=True)
class Preset:
    """A study's default grid and recipe. ``grid`` maps a family ("plain"/"residual") to its depths."""

    name: str
    description: str
    config: dict[str, Any]  # flat TrainConfig overrides shared by every trial
    grid: dict[str, tuple[int, ...]]
    seeds: int
    cpus_per_trial: float
    gpus_per_trial: float
    depth_overrides: dict[int, dict[str, Any]] = field(default_factory=dict)  # e.g. warm-up for ResNet-110
    recipe: str = "reduced"  # "paper" when this is the paper's full CIFAR-10 recipe


def _schedule(iterations: int, eval_every: int) -> dict[str, Any]:
    return {"optim.iterations": iterations, "optim.milestones": list(scaled_milestones(iterations)),
            "run.eval_every": eval_every}


PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        description="offline digits data, a scaled-down schedule, CPU: shows degradation in minutes",
        # 1500 iterations: a 56-layer ResNet needs them to fit the training set as well as a 20-layer one
        # (after 600 it still trailed by ~1 pp); 8x8 digits make that affordable on two cores.
        config={"data.dataset": "digits", "run.device": "cpu", "run.probe_images": 128,
                "run.eval_batch_size": 512, **_schedule(1500, 125)},
        grid={"plain": (20, 56), "residual": (20, 56)},
        seeds=2,
        cpus_per_trial=1,
        gpus_per_trial=0,
    ),
    "paper": Preset(
        name="paper",
        description="CIFAR-10 with the paper's full recipe (64k iterations, lr 0.1 ÷10 at 32k and 48k)",
        config={"data.dataset": "cifar10", "run.probe_images": 256, **_schedule(64_000, 1000)},
        grid={"plain": (20, 32, 44, 56), "residual": (20, 32, 44, 56, 110)},
        seeds=1,
        cpus_per_trial=1,
        gpus_per_trial=0.2,  # several small nets share one GPU
        depth_overrides={110: {"optim.warmup": True}},
        recipe="paper",
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]
