"""The GPU targets: full-recipe CIFAR-10 runs of ResNet-20 and ResNet-56 on one GPU, timed as the sweeps run them.

Each depth is trained by ``resnet_core.fit`` exactly as the depth study's paper preset trains it (64k iterations,
batch 128, lr 0.1 ÷10 at 32k and 48k, fp32 with TF32 off, an evaluation every 1000 iterations; any field can be
changed with --set). Prints per depth: wall time against the target (ResNet-20 ≤ 2 min, ResNet-56 ≤ 4 min on
one H100), training images/s, mean GPU utilisation (sampled with nvidia-smi every second), and the final test
error beside the paper's Table 6 (band ±0.5 pp). For speed alone, in minutes, run bench/gpu_proof.py first.

    python bench/gpu_recipe.py --data-dir data                       # needs the CIFAR-10 files in data/
    python bench/gpu_recipe.py --random-data --iterations 4000       # speed only: random CIFAR-shaped images
    python bench/gpu_recipe.py --random-data --set run.compile=true  # any TrainConfig field, e.g. compiled

The whole paper preset on one GPU (the depth study's third GPU target) is the sweep itself:
``time python sweeps/depth_vs_error.py --preset paper --data-dir data`` (5 trials share the GPU at a time).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.trainer_throughput import cifar_shaped_dataset  # noqa: E402
from resnet_core import DatasetUnavailableError, TrainConfig, fit  # noqa: E402
from resnet_core.config import scaled_milestones  # noqa: E402
from resnet_core.device import resolve_device, resolve_precision  # noqa: E402
from sweeps.presets import PAPER  # noqa: E402  (plain data: no Ray)

TARGET_MINUTES = {20: 2.0, 56: 4.0}
PAPER_BAND_PP = 0.5


class GpuUtilisation:
    """Samples the GPU's utilisation (%) with nvidia-smi once a second in a background thread."""

    def __init__(self, index: int):
        self.index, self.samples = index, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GpuUtilisation:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        query = ["nvidia-smi", f"--id={self.index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
        while not self._stop.wait(1.0):
            out = subprocess.run(query, capture_output=True, text=True).stdout.strip()
            if out.isdigit():
                self.samples.append(int(out))

    @property
    def mean(self) -> str:
        return f"{statistics.mean(self.samples):.0f} %" if self.samples else "n/a (no nvidia-smi)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--depths", default="20,56")
    parser.add_argument("--iterations", type=int, default=64_000, help="milestones scale with it (default: 64k)")
    parser.add_argument("--data-dir", default="data", help="directory holding the CIFAR-10 files")
    parser.add_argument("--random-data", action="store_true", help="random CIFAR-shaped images: speed only")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any TrainConfig field")
    args = parser.parse_args()
    device = resolve_device(args.device)
    overrides = dict(item.split("=", 1) for item in args.set if "=" in item)
    if len(overrides) != len(args.set):
        parser.error(f"--set expects KEY=VALUE; got {args.set}")
    base = TrainConfig().replace(**{
        **PAPER, "data.data_dir": args.data_dir, "run.device": str(device), "optim.iterations": args.iterations,
        "optim.milestones": list(scaled_milestones(args.iterations)),
        "run.eval_every": min(PAPER["run.eval_every"], args.iterations), **overrides})
    dataset = cifar_shaped_dataset(device) if args.random_data else None
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"{name}, torch {torch.__version__}, {resolve_precision(base.run.precision, device)}, "
          f"{args.iterations} iterations, {'random images' if args.random_data else 'CIFAR-10'}")
    for depth in (int(d) for d in args.depths.split(",")):
        config = base.replace(**{"model.depth": depth})
        with GpuUtilisation(device.index or 0) as gpu:
            start = time.perf_counter()
            try:
                results = list(fit(config, dataset=dataset))
            except DatasetUnavailableError as exc:
                sys.exit(f"error: {exc}")
            minutes = (time.perf_counter() - start) / 60
        speed = statistics.median(r.metrics["perf/images_per_sec"] for r in results if "perf/images_per_sec" in r.metrics)
        line = (f"ResNet-{depth}: {minutes:6.2f} min, {speed:8.0f} training images/s, "
                f"GPU utilisation {gpu.mean}")
        if depth in TARGET_MINUTES:
            if args.iterations == 64_000:
                full, how = minutes, "took"
            else:  # a projection from the training speed alone (evaluations excluded)
                full, how = 64_000 * config.optim.batch_size / speed / 60, "would train in"
            verdict = "met" if full <= TARGET_MINUTES[depth] else "missed"
            line += f"; 64k iterations {how} {full:.2f} min (target {TARGET_MINUTES[depth]:.0f}: {verdict})"
        if not args.random_data and results[-1].status == "completed":
            line += against_table6(depth, results[-1].metrics["test/error"])
        print(line, flush=True)


def against_table6(depth: int, error: float) -> str:
    """The final test error beside the paper's Table 6 (imported here: the report's module needs pandas)."""
    from dashboards.paper import TABLE6_RESNET_TEST_ERROR

    if depth not in TABLE6_RESNET_TEST_ERROR:
        return ""
    paper = TABLE6_RESNET_TEST_ERROR[depth]
    inside = abs(error - paper) <= PAPER_BAND_PP
    return f"; test error {error:.2f} % vs paper {paper:.2f} % ({'inside' if inside else 'outside'} ±0.5 pp)"


if __name__ == "__main__":
    main()
