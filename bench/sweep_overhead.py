"""What Ray Tune and MLflow add to a sweep, measured against bare training in the same run.

1. reference: every trial of the sweep trained with plain ``resnet_core.fit`` calls, one at a time
   (``--concurrency`` processes' worth of work: the reference wall time is the sum divided by it);
2. logging: the same trainings with each evaluation logged to an MLflow SQLite store as a sweep logs it;
3. sweep: the real ``sweeps/depth_vs_error.py`` run (embedded Ray, Tune checkpoints, MLflow, no report).

    python bench/sweep_overhead.py                       # the smoke preset's grid with 1 seed
    python bench/sweep_overhead.py --seeds 2 --iterations 600

Prints the logging overhead (2 vs 1) and the sweep overhead (3 vs 1 / concurrency); target <= 10 %.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from resnet_core import fit, load_dataset  # noqa: E402
from sweeps.cli import build_plan, study_arg_parser  # noqa: E402
from sweeps.presets import get_preset  # noqa: E402
from sweeps.tracking import TrialRun, TrialTracking, start_parent_run  # noqa: E402
from sweeps.trainable import run_name, run_tags  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--iterations", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=2, help="trials at once in the sweep (= CPUs here)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sweep-bench-"))
    sweep_args = ["--preset", "smoke", "--seeds", str(args.seeds), "--iterations", str(args.iterations),
                  "--max-concurrent", str(args.concurrency), "--no-report", "--storage-path", str(work / "rr")]

    plan = build_plan("depth_vs_error", study_arg_parser("depth_vs_error", "").parse_args(
        [*sweep_args, "--tracking-uri", f"sqlite:///{work / 'reference.db'}"]), get_preset("smoke"))
    configs = plan.configs()
    data = load_dataset(configs[0].data, "cpu", seed=0)

    bare = 0.0
    for config in configs:
        start = time.perf_counter()
        for _ in fit(config, dataset=data):
            pass
        bare += time.perf_counter() - start

    experiment_id, parent = start_parent_run(plan.tracking_uri, "bench", "bench", "bench", {}, {})
    tracking = TrialTracking(plan.tracking_uri, experiment_id, parent)
    logged = 0.0
    for index, config in enumerate(configs):
        start = time.perf_counter()
        run = TrialRun(tracking, f"bench-{index}", run_name(config), run_tags(config), config.to_dict())
        for result in fit(config, dataset=data):
            run.log_metrics(result.iteration, result.metrics)
        run.finish("completed")
        logged += time.perf_counter() - start

    start = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "sweeps" / "depth_vs_error.py"), *sweep_args,
                    "--tracking-uri", f"sqlite:///{work / 'sweep.db'}"], check=True, cwd=work,
                   stdout=subprocess.DEVNULL)
    sweep = time.perf_counter() - start

    reference = bare / args.concurrency
    print(f"{len(configs)} trials x {args.iterations} iterations (smoke preset), concurrency {args.concurrency}")
    print(f"bare training, sum of trials   : {bare:7.1f} s  -> reference wall {reference:.1f} s")
    print(f"training + MLflow logging, sum : {logged:7.1f} s  -> logging overhead {100 * (logged / bare - 1):+.1f} %")
    print(f"Ray Tune sweep, wall           : {sweep:7.1f} s  -> sweep overhead {100 * (sweep / reference - 1):+.1f} % "
          f"(ratio {sweep / reference:.2f})")


if __name__ == "__main__":
    main()
