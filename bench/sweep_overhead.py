"""What Ray Tune and MLflow add to a sweep, measured against bare training in the same run.

1. reference: every trial of the sweep trained with bare ``resnet_core.fit`` calls, ``--concurrency`` at a
   time in a process pool (one torch thread each, the sweep's order): the simplest way to run the same
   trainings side by side, with the same contention for memory bandwidth. Measured first and again last;
   the mean is the reference;
2. logging: the same, with each trial logged to an MLflow SQLite store exactly as a sweep trial logs it;
3. sweep: the real ``sweeps/depth_vs_error.py`` command (embedded Ray, Tune checkpoints, MLflow, no report).

    python bench/sweep_overhead.py --seeds 2 --iterations 1500   # the smoke sweep itself (~25 min)
    python bench/sweep_overhead.py                               # 4 short trials (~4 min)

Prints the logging overhead (2 vs 1) and the sweep overhead (3 vs 1), each as a share of the measured wall
time (target on the smoke sweep: <= 10 %).
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resnet_core import TrainConfig, fit  # noqa: E402
from sweeps.cli import plan_from_argv  # noqa: E402
from sweeps.depth_vs_error import STUDY  # noqa: E402
from tracking.sweep_run import start_parent_run  # noqa: E402
from tracking.trial_run import TrialRun, TrialTracking  # noqa: E402
from sweeps.trial.identity import run_name, run_tags  # noqa: E402


def bare(flat_config: dict) -> None:
    for _ in fit(TrainConfig.from_dict(flat_config)):
        pass


def logged(job: tuple[dict, TrialTracking, str]) -> None:
    flat_config, tracking, trial_id = job
    config = TrainConfig.from_dict(flat_config)
    run = TrialRun(tracking, trial_id, run_name(config), run_tags(config), flat_config)
    for result in fit(config):
        run.log_metrics(result.iteration, result.metrics)
    run.finish("completed")


def pool_wall_time(function, jobs: list, concurrency: int) -> float:
    start = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(concurrency) as pool:
        pool.map(function, jobs, chunksize=1)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once (= CPUs here)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    sweep_args = ["--preset", "smoke", "--seeds", str(args.seeds), "--iterations", str(args.iterations),
                  "--max-concurrent", str(args.concurrency), "--no-report", "--storage-path", str(work / "rr")]

    plan = plan_from_argv(STUDY, [*sweep_args, "--tracking-uri", f"sqlite:///{work / 'reference.db'}"])
    configs = [config.to_dict() for config in plan.configs()]

    first_reference = pool_wall_time(bare, configs, args.concurrency)

    experiment_id, parent = start_parent_run(plan.tracking_uri, "bench", "bench", "bench", {}, {})
    tracking = TrialTracking(plan.tracking_uri, experiment_id, parent)
    with_logging = pool_wall_time(logged, [(c, tracking, f"bench-{i}") for i, c in enumerate(configs)],
                                  args.concurrency)

    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "sweeps" / "depth_vs_error.py"), *sweep_args,
                    "--tracking-uri", f"sqlite:///{work / 'sweep.db'}"], check=True, cwd=work,
                   stdout=subprocess.DEVNULL)
    sweep = time.perf_counter() - start
    # The reference again, last: this brackets the other two, so a drift in the machine's speed during
    # the run (on a shared VM, several %) shows as a difference between the two references.
    last_reference = pool_wall_time(bare, configs, args.concurrency)
    reference = (first_reference + last_reference) / 2

    print(f"{len(configs)} trials x {args.iterations} iterations (smoke preset), {args.concurrency} at a time")
    print(f"bare fit, process pool        : {reference:7.1f} s wall (reference: mean of {first_reference:.1f} s "
          f"first and {last_reference:.1f} s last)")
    print(f"fit + MLflow logging, pool    : {with_logging:7.1f} s wall -> logging overhead "
          f"{100 * (1 - reference / with_logging):+.1f} % of the wall time (ratio {with_logging / reference:.3f})")
    print(f"the sweep command (Ray Tune)  : {sweep:7.1f} s wall -> sweep + tracking overhead "
          f"{100 * (1 - reference / sweep):+.1f} % of the wall time (ratio {sweep / reference:.3f}; target <= 10 %)")


if __name__ == "__main__":
    main()
