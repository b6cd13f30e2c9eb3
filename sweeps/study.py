"""What a study is: plain data saying what varies, its presets, and which report sections apply.

A study file (``sweeps/depth_vs_error.py``, ...) declares a ``GridStudy``; the shared machinery turns it into a
command line (``sweeps.cli``), a checked plan (``sweeps.plan``) and a Ray Tune run (``sweeps.runner``).
Nothing here imports Ray or MLflow.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

# The TrainConfig fields every study offers as flags (help, type and validation come from resnet_core.config).
CONFIG_FLAGS = ("data.dataset", "data.data_dir", "optim.iterations", "run.eval_every", "model.shortcut")


@dataclass(frozen=True)
class Axis:
    """One thing a grid varies: its CLI flag, and what each value sets in the TrainConfig.

    A value sets ``{key: value}``, or, for an axis with ``settings``, the overrides listed for it (e.g. family
    "plain" sets ``model.residual=False``). Given on the command line, an axis with ``settings`` keeps only the
    given values of the preset's grid; any other axis replaces the preset's values.
    """

    name: str  # one trial's value is called this, e.g. "family", "depth" (as its MLflow tag)
    flag: str  # comma-separated values on the command line, e.g. "--families"
    help: str
    key: str = ""
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    kind: type = str

    def overrides(self, value: Any) -> dict[str, Any]:
        return dict(self.settings[value]) if self.settings else {self.key: value}

    def parse(self, text: str) -> tuple[Any, ...]:
        """Values from a comma-separated flag; raises ValueError naming the flag, the value and the choices."""
        try:
            values = tuple(self.kind(v.strip()) for v in text.split(",") if v.strip())
        except ValueError:
            raise ValueError(f"{self.flag} must be comma-separated {self.kind.__name__}s; got {text!r}") from None
        if not values:
            raise ValueError(f"{self.flag} is empty")
        for value in values:
            if self.settings and value not in self.settings:
                raise ValueError(f"unknown {self.name} {value!r} in {self.flag}; choose from {list(self.settings)}")
        return values


@dataclass(frozen=True)
class Preset:
    """A study's default grid and recipe.

    ``grid`` is a list of blocks, each mapping axis names to values; a block's trials are the product of its
    values (so plain and residual nets can have different depths). ``cell_overrides`` are (match, overrides)
    pairs for particular cells, e.g. the warm-up of ResNet-110.
    """

    name: str
    description: str
    config: dict[str, Any]  # flat TrainConfig overrides shared by every trial
    grid: tuple[dict[str, tuple[Any, ...]], ...]
    seeds: int
    cpus_per_trial: float
    gpus_per_trial: float
    cell_overrides: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = ()
    recipe: str = "reduced"  # "paper" when this is the paper's full recipe (see sweeps.plan.recipe_of)


@dataclass(frozen=True)
class GridStudy:
    """A study that trains every cell of a grid with several seeds."""

    name: str
    description: str
    axes: tuple[Axis, ...]
    presets: dict[str, Preset]
    report_sections: tuple[str, ...] = ()  # of dashboards.report.SECTIONS; empty: every section
    config_flags: tuple[str, ...] = CONFIG_FLAGS

    def preset(self, name: str) -> Preset:
        if name not in self.presets:
            raise ValueError(f"unknown preset {name!r}; choose one of {sorted(self.presets)}")
        return self.presets[name]

    def cells(self, preset: Preset, chosen: dict[str, tuple[Any, ...]]) -> list[dict[str, Any]]:
        """The grid's cells (axis name -> value), with the axes given on the command line in ``chosen``."""
        axes = {axis.name: axis for axis in self.axes}
        cells: list[dict[str, Any]] = []
        for block in preset.grid:
            values = dict(block)
            for name, given in chosen.items():  # a flag changes the blocks that vary its axis
                if name in values:
                    values[name] = tuple(v for v in values[name] if v in given) if axes[name].settings else given
            for combination in itertools.product(*values.values()):
                cell = dict(zip(values, combination))
                if cell not in cells:
                    cells.append(cell)
        for name, given in chosen.items():
            missing = [v for v in given if all(cell.get(name) != v for cell in cells)]
            if missing:
                raise ValueError(f"the {preset.name} preset of {self.name} has no {name} {missing[0]!r} trials "
                                 f"(given in {axes[name].flag})")
        return cells

    def trial_overrides(self, preset: Preset, cell: dict[str, Any]) -> dict[str, Any]:
        """The flat TrainConfig overrides of one cell: its axes' settings, then the preset's cell overrides."""
        axes = {axis.name: axis for axis in self.axes}
        overrides: dict[str, Any] = {}
        for name, value in cell.items():
            overrides.update(axes[name].overrides(value))
        for match, extra in preset.cell_overrides:
            if all(cell.get(k) == v for k, v in match.items()):
                overrides.update(extra)
        return overrides

    def main(self, argv: list[str] | None = None) -> int:
        """Run this study's command line (``python sweeps/<study>.py ...``); returns the exit code."""
        from sweeps.cli import main

        return main(self, argv)


FAMILY = Axis("family", "--families", "plain and/or residual nets",
              settings={"plain": {"model.residual": False}, "residual": {"model.residual": True}})
DEPTH = Axis("depth", "--depths", "network depths, e.g. 20,32,44,56 (6n+2 for the CIFAR layout)",
             key="model.depth", kind=int)
SHORTCUT = Axis("shortcut", "--options", "shortcut options of the residual nets (paper §3.3): A identity + zero-pad, "
                "B projection where the shape changes, C projection everywhere",
                settings={option: {"model.shortcut": option} for option in ("A", "B", "C")})
