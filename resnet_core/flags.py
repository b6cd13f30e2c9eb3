"""Command-line flags of the config: one ``--flag`` per ``TrainConfig`` field, read back as overrides or a config.

The one place that turns config fields into flags, shared by the single-run CLI (resnet_core/train.py) and the
sweep CLIs, so a flag has the same name, type and help everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Iterable
from typing import Any

from resnet_core.config import DATASETS, TrainConfig, apply_overrides, imagenet_recipe


def flag_name(key: str) -> str:
    """The command-line flag of a flat config key: ``"run.eval_every"`` -> ``"--eval-every"``."""
    return "--" + key.split(".", 1)[1].replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, keys: Iterable[str] | None = None,
                         default_help: str | None = None, shown: TrainConfig | None = None) -> None:
    """Add one ``--flag`` per flat config key (all when ``keys`` is None), grouped by section.

    Help text, type and choices come from the field; ``dest`` is the flat key and the default None, so
    ``overrides_from_args`` sees only what the user gave. The help shows the defaults of ``shown`` (the paper's
    CIFAR-10 recipe when None; e.g. ``base_config("imagenet")`` for the recipe an ImageNet run starts from), or
    ``default_help`` (e.g. "the preset's") where the caller's defaults are another's. ``--plain`` comes with
    ``model.residual``.
    """
    wanted = _known_keys(keys)
    defaults, field_defaults = shown or TrainConfig(), TrainConfig()
    for section in TrainConfig.SECTIONS:
        values = getattr(defaults, section)
        fields = [f for f in dataclasses.fields(values) if f"{section}.{f.name}" in wanted]
        if not fields:
            continue
        group = parser.add_argument_group(section)
        for f in fields:
            key, default = f"{section}.{f.name}", getattr(values, f.name)
            derived = default == getattr(getattr(field_defaults, section), f.name)  # the field's own default
            group.add_argument(flag_name(key), dest=key, default=None,
                               help=_flag_help(f, default, default_help, derived), **_flag_kind(key, default, f))
        if section == "model" and "model.residual" in wanted:
            group.add_argument("--plain", dest="model.residual", action="store_false", default=None,
                               help="shorthand for --no-residual: the plain twin of the residual net")


def _known_keys(keys: Iterable[str] | None) -> set[str]:
    """``keys`` as a set (all flat config keys when None); an unknown key is an error naming the valid ones."""
    known = set(TrainConfig().to_dict())
    if keys is None:
        return known
    wanted = set(keys)
    if unknown := sorted(wanted - known):
        raise ValueError(f"unknown config key(s) {unknown}; valid keys are {sorted(known)}")
    return wanted


def _flag_kind(key: str, default: Any, f: dataclasses.Field) -> dict[str, Any]:
    """How a flag parses, from its field: --x/--no-x for a bool, a string for a list (TrainConfig converts and
    checks it), one of the field's ``choices`` where it has them (argparse lists them in the usage and refuses
    anything else), else the type itself (so argparse refuses --depth abc, naming the flag)."""
    if isinstance(default, bool):
        return {"action": argparse.BooleanOptionalAction}
    if isinstance(default, tuple):
        return {"metavar": "I,J"}
    if choices := f.metadata.get("choices"):
        return {"type": type(default), "choices": choices}
    return {"type": type(default), "metavar": key.split(".", 1)[1].upper()}


def _flag_help(f: dataclasses.Field, default: Any, default_help: str | None, derived: bool = True) -> str:
    """The field's help text ending "(default: ...)": ``default_help``, the field's description of its
    default (only where ``default`` is the field's own: ``derived``), or the default itself."""
    described = f.metadata.get("default_help") if derived else None
    shown = default_help or described or _shown(default)
    return f"{f.metadata.get('help', '')} (default: {shown})".replace("%", "%%")  # argparse %-formats help


def _shown(value: Any) -> str:
    """A default as the flag would take it: a list as ``I,J`` (``none`` when empty), anything else as is."""
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value) or "none"
    return str(value)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flat config keys the user actually gave on the command line, with their values."""
    known = TrainConfig().to_dict()
    return {key: value for key, value in vars(args).items() if key in known and value is not None}


BUILT_IN_DATASETS = ("digits", "synthetic")  # read from no directory: scikit-learn's digits, random images


def refuse_unused_data_dir(given: dict[str, Any], config: dict[str, Any]) -> None:
    """ValueError when a data directory was given (``given``: the keys the user set) for a data set that reads
    none (``config``: the flat config they make): it was silently ignored, so a typo in --dataset went unnoticed."""
    if "data.data_dir" in given and config["data.dataset"] in BUILT_IN_DATASETS:
        read = [name for name in DATASETS if name not in BUILT_IN_DATASETS]
        raise ValueError(f"--data-dir {given['data.data_dir']!r} is not read by --dataset {config['data.dataset']} "
                         f"(built in); drop it, or choose a data set read from it: {read}")


def base_config(dataset: str | None = None, recipe: str | None = None) -> TrainConfig:
    """The config a run's flags apply to: the paper's CIFAR-10 recipe, or for ``dataset`` imagenet the ImageNet
    recipe ``recipe`` names (``paper`` unless given; config.IMAGENET_RECIPE_OVERRIDES)."""
    if dataset == "imagenet":
        return TrainConfig.from_dict(imagenet_recipe(recipe or "paper"))
    return TrainConfig()


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """The config the command line asked for: ``base`` with every flag given applied by ``apply_overrides``
    (so --iterations without --milestones keeps the paper's proportions); without ``base``, ``base_config``
    of the --dataset and --recipe given.
    """
    overrides = overrides_from_args(args)
    if base is None:
        base = base_config(overrides.get("data.dataset"), overrides.get("data.recipe"))
    merged = apply_overrides(base.to_dict(), overrides)
    refuse_unused_data_dir(overrides, merged)
    return TrainConfig.from_dict(merged)
