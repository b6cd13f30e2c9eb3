"""What bf16 autocast does to final error, against fp32, on the smoke preset's nets and several seeds.

Every net of the smoke preset (plain and residual, 20 and 56 layers, offline digits, 1500 iterations) is
trained with each seed in fp32 and in bf16 autocast, ``--concurrency`` trainings at a time (one thread
each, as the sweep runs them). Prints each net's final training and test error (mean ± standard deviation
over seeds) per precision, the difference of the means, and the summed training time per precision.

    python bench/precision_effect.py                      # 4 seeds: 32 trainings, ~35 min on 2 cores
    python bench/precision_effect.py --seeds 2 --iterations 300 --depths 20
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resnet_core import TrainConfig, fit  # noqa: E402
from resnet_core.config import config_net_name  # noqa: E402
from sweeps.cli import plan_from_argv  # noqa: E402
from sweeps.depth_vs_error import STUDY  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def train(flat_config: dict) -> tuple[dict, dict, float]:
    """One training to the end: (its config, final metrics, seconds)."""
    start = time.perf_counter()
    *_, last = fit(TrainConfig.from_dict(flat_config))
    return flat_config, last.metrics, time.perf_counter() - start


def summary(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):6.2f} ± {spread:5.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--iterations", type=int, help="default: the smoke preset's")
    parser.add_argument("--depths", help="comma-separated (default: the smoke preset's)")
    parser.add_argument("--concurrency", type=int, default=2, help="trainings at once (= CPUs here)")
    args = parser.parse_args()
    sweep_args = ["--preset", "smoke", "--seeds", str(args.seeds), "--no-report",
                  "--tracking-uri", f"sqlite:///{Path(tempfile.mkdtemp(prefix='precision-bench-')) / 'unused.db'}"]
    if args.iterations:
        sweep_args += ["--iterations", str(args.iterations)]
    if args.depths:
        sweep_args += ["--depths", args.depths]
    plan = plan_from_argv(STUDY, sweep_args)
    # Interleaved, so that both precisions meet the same machine load and start-up costs.
    jobs = [{**config.to_dict(), "run.precision": precision}
            for config in plan.configs() for precision in PRECISIONS]

    with multiprocessing.get_context("spawn").Pool(args.concurrency) as pool:
        finished = pool.map(train, jobs, chunksize=1)

    seconds = {precision: 0.0 for precision in PRECISIONS}
    errors: dict[tuple[str, str], dict[str, list[float]]] = {}
    for flat, metrics, took in finished:
        seconds[flat["run.precision"]] += took
        per_net = errors.setdefault((config_net_name(TrainConfig.from_dict(flat)), flat["run.precision"]), {"train": [], "test": []})
        per_net["train"].append(metrics["train/error"])
        per_net["test"].append(metrics["test/error"])

    iterations = jobs[0]["optim.iterations"]
    print(f"{len(jobs)} trainings: smoke nets on {jobs[0]['data.dataset']}, {iterations} iterations, "
          f"seeds 0..{args.seeds - 1}; final error % (mean ± std over seeds)")
    print(f"{'net':<12} {'precision':<9} {'train error':>15} {'test error':>15}")
    for net in dict.fromkeys(config_net_name(TrainConfig.from_dict(job)) for job in jobs):
        for precision in PRECISIONS:
            e = errors[(net, precision)]
            print(f"{net:<12} {precision:<9} {summary(e['train']):>15} {summary(e['test']):>15}")
        fp32, bf16 = errors[(net, "fp32")], errors[(net, "bf16")]
        print(f"{'':<12} {'bf16-fp32':<9} {statistics.mean(bf16['train']) - statistics.mean(fp32['train']):+15.2f} "
              f"{statistics.mean(bf16['test']) - statistics.mean(fp32['test']):+15.2f}")
    print(f"training time, summed: fp32 {seconds['fp32']:.0f} s, bf16 {seconds['bf16']:.0f} s "
          f"(bf16 {seconds['fp32'] / seconds['bf16']:.2f}x faster)")


if __name__ == "__main__":
    main()
