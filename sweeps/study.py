"""What a study is: plain data saying what varies, its presets, what a search searches, and which report
sections apply. Declarations only, read by the driver and the commands: nothing here imports Ray, MLflow or Optuna.

A study file (``sweeps/depth_vs_error.py``, ...) declares a ``GridStudy``, or a ``SearchStudy`` (a grid of the
nets it searches for, plus a search space and each preset's ``SearchBudget``); ``sweeps.cli`` gives it a command
line and runs it with the driver's grid run or search stages (``sweeps.driver``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from resnet_core.config import TrainConfig
from resnet_core.flags import flag_name
from tracking.search_params import expected_full_budget

# The TrainConfig fields every study offers as flags (help, type and validation come from resnet_core.config).
CONFIG_FLAGS = ("data.dataset", "data.data_dir", "data.download", "optim.iterations", "run.eval_every",
                "model.shortcut")


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
    values (so plain and residual nets can have different depths). ``special_cells`` are (match, overrides)
    pairs: extra overrides for the cells that match, e.g. the warm-up of ResNet-110.
    """

    name: str
    description: str
    config: dict[str, Any]  # flat TrainConfig overrides shared by every trial
    grid: tuple[dict[str, tuple[Any, ...]], ...]
    seeds: int
    cpus_per_trial: float
    gpus_per_trial: float
    special_cells: tuple[tuple[dict[str, Any], dict[str, Any]], ...] = ()
    recipe: str = "reduced"  # "paper" when this is the paper's full recipe (see sweeps.driver.plan.recipe_of)
    workers_per_trial: int = 1  # > 1: each trial is that many data-parallel Ray Train workers (sweeps/trial/workers.py)


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
        for match, extra in preset.special_cells:
            if all(cell.get(k) == v for k, v in match.items()):
                overrides.update(extra)
        return overrides


FAMILY = Axis("family", "--families", "plain and/or residual nets",
              settings={"plain": {"model.residual": False}, "residual": {"model.residual": True}})
DEPTH = Axis("depth", "--depths", "network depths, e.g. 20,32,44,56 (6n+2 for the CIFAR layout)",
             key="model.depth", kind=int)
SHORTCUT = Axis("shortcut", "--options", "shortcut options of the residual nets (paper §3.3): A identity + zero-pad, "
                "B projection where the shape changes, C projection everywhere",
                settings={option: {"model.shortcut": option} for option in ("A", "B", "C")})


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

    def expected_full_budget(self, rungs: int = 1) -> float:
        """About how many of a net's trials this budget lets ASHA train to the full budget (``rungs``: how many
        rungs lie before it): see ``expected_full_budget``."""
        return expected_full_budget(self.num_samples, self.reduction_factor, rungs)


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
