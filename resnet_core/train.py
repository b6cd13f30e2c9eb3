"""Command line for one training run: ``python -m resnet_core.train --depth 56 --plain --dataset digits``.

Every ``TrainConfig`` field is a flag (``--help`` lists them with the paper's defaults), made by
resnet_core/flags.py, which the sweep CLIs share.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from resnet_core.checkpoint import CheckpointError
from resnet_core.config import config_net_name
from resnet_core.data import DatasetUnavailableError
from resnet_core.device import resolve_device, resolve_precision
from resnet_core.flags import add_config_arguments, config_from_args
from resnet_core.trainer import fit


def get_args_parser() -> argparse.ArgumentParser:
    """Every config flag plus the run's own: where to checkpoint, what to resume, whether to draw progress."""
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
    """Train the configured net, printing each evaluation and a summary; the exit status is 0 when it
    completed, 1 when it diverged, 2 for a bad value, checkpoint or missing data set."""
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
            if last is None and result.info:  # streamed data: its identity (fingerprint, counts) and recipe
                bar.write("data: " + "  ".join(f"{k}={v}" for k, v in result.info.items()))
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
    if "test/error_10crop" in m:
        print(f"  test top-1 / top-5 error: centre crop {m['test/error']:.2f}% / {m['test/top5_error']:.2f}%, "
              f"10-crop {m['test/error_10crop']:.2f}% / {m['test/top5_error_10crop']:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
