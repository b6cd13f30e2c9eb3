"""Command line for one training run: ``python -m resnet_core.train --depth 56 --plain --dataset digits``.

Every ``TrainConfig`` field is a flag (``--help`` lists them with the paper's defaults); the parser pieces are
reusable by the sweep scripts.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from resnet_core.checkpoint import CheckpointError
from resnet_core.config import TrainConfig, apply_overrides, config_net_name
from resnet_core.data import DatasetUnavailableError
from resnet_core.device import resolve_device, resolve_precision
from resnet_core.trainer import fit


def flag_name(key: str) -> str:
    """The command-line flag of a flat config key: ``"run.eval_every"`` -> ``"--eval-every"``."""
    return "--" + key.split(".", 1)[1].replace("_", "-")


def add_config_arguments(parser: argparse.ArgumentParser, keys: Iterable[str] | None = None,
                         default_help: str | None = None) -> None:
    """Add one ``--flag`` per flat config key (all when ``keys`` is None), grouped by section.

    The one place that turns config fields into flags, for this CLI and the sweep CLIs alike. Help text and
    type come from the field; ``dest`` is the flat key and the default None, so ``overrides_from_args`` sees
    only what the user gave. ``default_help`` (e.g. "the preset's") replaces the field's default in the help
    where the caller's defaults differ from the config's. ``--plain`` comes with ``model.residual``.
    """
    wanted = _known_keys(keys)
    defaults = TrainConfig()
    for section in TrainConfig.SECTIONS:
        values = getattr(defaults, section)
        fields = [f for f in dataclasses.fields(values) if f"{section}.{f.name}" in wanted]
        if not fields:
            continue
        group = parser.add_argument_group(section)
        for f in fields:
            key, default = f"{section}.{f.name}", getattr(values, f.name)
            group.add_argument(flag_name(key), dest=key, default=None, help=_flag_help(f, default, default_help),
                               **_flag_kind(key, default))
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


def _flag_kind(key: str, default: Any) -> dict[str, Any]:
    """How a flag parses, from its field's type: --x/--no-x for a bool, a string for a list (TrainConfig
    converts and checks it), else the type itself (so argparse refuses --depth abc, naming the flag)."""
    if isinstance(default, bool):
        return {"action": argparse.BooleanOptionalAction}
    if isinstance(default, tuple):
        return {"metavar": "I,J"}
    return {"type": type(default), "metavar": key.split(".", 1)[1].upper()}


def _flag_help(f: dataclasses.Field, default: Any, default_help: str | None) -> str:
    """The field's help text ending "(default: ...)": ``default_help``, the field's description of its
    default, or the default itself."""
    shown = default_help or f.metadata.get("default_help") or str(default)
    return f"{f.metadata.get('help', '')} (default: {shown})".replace("%", "%%")  # argparse %-formats help


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flat config keys the user actually gave on the command line, with their values."""
    known = TrainConfig().to_dict()
    return {key: value for key, value in vars(args).items() if key in known and value is not None}


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """The config the command line asked for: ``base`` (default: the paper's recipe) with every flag given
    applied by ``apply_overrides`` (so --iterations without --milestones keeps the paper's proportions)."""
    flat = apply_overrides((base or TrainConfig()).to_dict(), overrides_from_args(args))
    return TrainConfig.from_dict(flat)


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m resnet_core.train",
        description="Train one plain or residual net (He et al. 2016). Defaults are the paper's CIFAR-10 "
                    "recipe; e.g. `python -m resnet_core.train --depth 56 --plain --dataset digits "
                    "--iterations 600 --eval-every 100`.",
    )
    add_config_arguments(parser)
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="save a checkpoint here at every evaluation (atomically)")
    parser.add_argument("--resume", type=Path, default=None, help="continue from this checkpoint")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from tqdm import tqdm

    name = config_net_name(config)
    device = resolve_device(config.run.device)
    print(f"training {name} on {config.data.dataset} for {config.optim.iterations} iterations "
          f"(device {device}, {resolve_precision(config.run.precision, device)})")
    bar = tqdm(total=config.optim.iterations, disable=args.no_progress, unit="it", dynamic_ncols=True)
    start, last, first_error = time.perf_counter(), None, None
    try:
        for result in fit(config, resume=args.resume):
            bar.update(result.iteration - bar.n)
            m = result.metrics
            if first_error is None and "train/error" in m:
                first_error = m["train/error"]
            summary = "  ".join(f"{k}={v:.4g}" for k, v in m.items())
            bar.write(f"[{result.iteration:>6}] {summary}")
            if args.checkpoint and result.status != "diverged":  # keep the last good checkpoint, not NaN weights
                result.save_checkpoint(args.checkpoint)
            last = result
    except (ValueError, CheckpointError, DatasetUnavailableError) as exc:
        bar.close()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar.close()
    if last is None:
        return 1
    print(f"\n{name} {last.status} at iteration {last.iteration} in {time.perf_counter() - start:.1f}s")
    if last.status == "diverged":
        print("  the loss became non-finite: the run diverged (try a lower --lr or --warmup)")
        return 1
    m = last.metrics
    print(f"  training error {first_error:.2f}% (first evaluation) -> {m['train/error']:.2f}% (last)")
    print(f"  test error {m['test/error']:.2f}%   throughput {m['perf/images_per_sec']:.0f} images/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
