"""Command line for one training run: ``python -m resnet_core.train --depth 56 --plain --dataset digits``.

Every ``TrainConfig`` field is a flag (``--help`` lists them with the paper's defaults); the parser pieces are
reusable by the sweep scripts.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from resnet_core.checkpoint import CheckpointError
from resnet_core.config import TrainConfig, scaled_milestones
from resnet_core.data import DatasetUnavailableError
from resnet_core.trainer import fit, resolve_device, resolve_precision


def add_config_arguments(parser: argparse.ArgumentParser, defaults: TrainConfig | None = None) -> None:
    """One ``--flag`` per config field (help from the field's metadata); sweeps reuse this."""
    defaults = defaults or TrainConfig()
    for section in TrainConfig.SECTIONS:
        group = parser.add_argument_group(section)
        for f in dataclasses.fields(getattr(defaults, section)):
            default = getattr(getattr(defaults, section), f.name)
            flag = "--" + f.name.replace("_", "-")
            help_text = f.metadata.get("help", "") + " (default: %(default)s)"
            key = f"{section}.{f.name}"
            if isinstance(default, bool):
                group.add_argument(flag, dest=key, action=argparse.BooleanOptionalAction, default=None,
                                   help=f.metadata.get("help", "") + f" (default: {default})")
            elif isinstance(default, tuple):
                group.add_argument(flag, dest=key, default=None, metavar="I,J",
                                   help=f.metadata.get("help", ""))
            else:
                group.add_argument(flag, dest=key, type=type(default), default=None,
                                   help=help_text.replace("%(default)s", str(default)))
    parser.add_argument("--plain", dest="model.residual", action="store_false", default=None,
                        help="shorthand for --no-residual: the plain twin of the residual net")


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """The config the command line asked for: ``base`` (defaults) overridden by every flag given.

    When --iterations is given without --milestones, the milestones follow the paper's proportions.
    """
    flat = (base or TrainConfig()).to_dict()
    given = {k: v for k, v in vars(args).items() if "." in k and v is not None}
    flat.update(given)
    if "optim.iterations" in given and "optim.milestones" not in given:
        flat["optim.milestones"] = list(scaled_milestones(int(given["optim.iterations"])))
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

    name = f"{'resnet' if config.model.residual else 'plain'}-{config.model.depth}"
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
