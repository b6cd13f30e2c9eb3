"""The GPU proof: everything the first minutes on a GPU must show, in one run of at most 8 minutes.

    python bench/gpu_proof.py proof.json                     # on a GPU machine (H100 / H200): about 7 minutes
    python bench/gpu_proof.py proof.json --device cpu --quick  # the same code path at tiny sizes, on a CPU

Needs only Python with PyTorch (2.11-2.14), torchvision and numpy: it imports ``resnet_core`` and never Ray,
MLflow, Optuna or plotly, and uses no network. Every training goes through ``resnet_core.fit`` with the
paper's recipe (SGD momentum 0.9, batch 128; ``--quick`` uses batch 32) on random CIFAR-shaped images.
In this order, each section recorded as it ends (a failing one records its error and the next runs):

1. environment: torch, CUDA, cuDNN, the NVIDIA driver, the GPU, TF32 settings, MPS;
2. packing: k = 1, 2, 3, 5 processes of ResNet-20 (the paper preset's fp32) on one device: aggregate
   images/s, without and (where ``nvidia-cuda-mps-control`` runs) with NVIDIA MPS. Before anything in this
   process touches the GPU: MPS waits for non-MPS CUDA processes to exit;
3. throughput: per depth 20/56/110 and precision fp32/tf32/bf16, eager: training images/s (fit's own,
   synchronised), the projected 64k-iteration wall time against the targets, peak memory, and the GPU time
   of the timed window by CUDA events beside its wall time;
4. a checkpoint -> resume round trip: saved device-neutral (a plain ``torch.load`` reads it on any machine),
   resumed on the same device with ``run.deterministic`` (bit for bit?) and on the CPU (continues);
5. throughput with CUDA graphs (``run.compile_mode=reduce-overhead``), most useful cells first, while the
   time guard allows (each includes its compile time, reported apart).

A time guard (``--budget-s``) stops what is left and writes what was measured. Prints a table; writes one JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import queue as queue_module
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch._dynamo.utils import counters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.trainer_throughput import cifar_shaped_dataset  # noqa: E402
from resnet_core import TrainConfig, fit, load_checkpoint  # noqa: E402
from resnet_core.device import (CUBLAS_DETERMINISTIC, device_record, prepare_device, resolve_device,  # noqa: E402
                                resolve_precision)

FULL_RUN = 64_000  # iterations of the paper's recipe
TARGET_MINUTES = {20: 2.0, 56: 4.0}  # per full run on one H100 (issue 20)
PRECISIONS = ("fp32", "tf32", "bf16")
# CUDA-graph cells in the order they are worth measuring: the depths with targets first, the fast bf16 and the
# preset's fp32 before tf32.
GRAPH_ORDER = [(d, p) for d in (8, 20, 56, 110) for p in ("bf16", "fp32")] + [(d, "tf32") for d in (20, 56, 110)]


@dataclass(frozen=True)
class Sizes:
    """How much each measurement runs: ``window`` iterations warm up, then ``window`` are timed."""

    batch: int
    window: int
    depths: tuple[int, ...]
    packing: tuple[int, ...]
    graph_cells: int  # how many CUDA-graph cells at most (the time guard may allow fewer)
    compile_estimate_s: float  # what one compiled cell costs at least; not started with less left


FULL = Sizes(batch=128, window=200, depths=(20, 56, 110), packing=(1, 2, 3, 5), graph_cells=9, compile_estimate_s=75)
QUICK = Sizes(batch=16, window=3, depths=(8, 14, 20), packing=(1, 2), graph_cells=1, compile_estimate_s=30)


class TimeGuard(Exception):
    """The budget is spent: stop and report what was measured."""


class Deadline:
    """The run's time budget; ``left()`` seconds remain. SIGALRM raises TimeGuard at the end, mid-measurement."""

    def __init__(self, budget_s: float):
        self.end = time.monotonic() + budget_s
        signal.signal(signal.SIGALRM, self._expired)
        signal.alarm(max(1, int(budget_s)))

    def left(self) -> float:
        return self.end - time.monotonic()

    @staticmethod
    def _expired(signum: int, frame: Any) -> None:
        raise TimeGuard("the time guard stopped this measurement")


# --- one measurement: fit on random CIFAR-shaped data ---


def proof_config(device: torch.device, sizes: Sizes, depth: int, precision: str, compile_mode: str | None = None,
                 **extra: Any) -> TrainConfig:
    """The paper's recipe for two windows of ``sizes.window`` iterations (an evaluation after each)."""
    return TrainConfig().replace(**{
        "model.depth": depth, "optim.batch_size": sizes.batch, "optim.iterations": 2 * sizes.window,
        "optim.milestones": [FULL_RUN], "run.eval_every": sizes.window, "run.probe_images": 0,
        "run.device": str(device), "run.precision": precision, "run.compile": compile_mode is not None,
        "run.compile_mode": compile_mode or "default",
        "run.threads": 1 if device.type == "cpu" else 0,  # one thread: CPU timings that a busy machine disturbs less
        **extra})


class GpuClock:
    """The GPU time between two points of the host's program, by CUDA events (None on a CPU)."""

    def __init__(self, device: torch.device):
        self.events = [torch.cuda.Event(enable_timing=True) for _ in range(2)] if device.type == "cuda" else None

    def mark(self, index: int) -> None:
        if self.events:
            self.events[index].record()

    def seconds(self) -> float | None:
        if not self.events:
            return None
        self.events[1].synchronize()
        return self.events[0].elapsed_time(self.events[1]) / 1000


def measure(config: TrainConfig, dataset: Any) -> dict[str, Any]:
    """Train ``config``: the first window warms up (and compiles), the second is timed by fit (training only),
    by the wall clock and by CUDA events (both including the short evaluation at its end)."""
    device = torch.device(config.run.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    counters.clear()
    clock, start = GpuClock(device), time.perf_counter()
    results = fit(config, dataset=dataset)
    next(results)
    first_s = time.perf_counter() - start
    clock.mark(0)
    tic = time.perf_counter()
    last = list(results)[-1]
    clock.mark(1)
    gpu_s = clock.seconds()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall_s = time.perf_counter() - tic
    images_per_s = last.metrics["perf/images_per_sec"]
    return {"images_per_s": images_per_s, "full_run_min": FULL_RUN * config.optim.batch_size / images_per_s / 60,
            "first_window_s": first_s, "timed_wall_s": wall_s, "timed_gpu_s": gpu_s,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
            "precision_used": resolve_precision(config.run.precision, device), "device": device.type,
            # Inductor's count of graphs it could not capture in CUDA graphs (they ran without): 0 is the proof.
            "cudagraph_skips": counters["inductor"]["cudagraph_skips"] if config.run.compile else None}


# --- sections ---


def environment(device: torch.device) -> dict[str, Any]:
    """What this machine is, without creating a CUDA context (MPS must start before this process has one)."""
    import numpy
    import torchvision

    smi = shutil.which("nvidia-smi")
    gpus = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total,clocks.max.sm,compute_mode",
                           "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip() if smi else None
    return {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": numpy.__version__, "host": platform.node(), "cpus": os.cpu_count(), "device": str(device),
            "nvidia_smi": gpus, "mps_control": shutil.which("nvidia-cuda-mps-control")}


def packing_worker(config: dict[str, Any], barrier: Any, results: Any) -> None:
    """One packed process: warm up, wait for the others, train the timed window, send its images/s."""
    try:
        train = TrainConfig.from_dict(config)
        dataset = cifar_shaped_dataset(resolve_device(train.run.device))
        run = fit(train, dataset=dataset)
        next(run)
        barrier.wait(timeout=300)
        start = time.time()
        last = list(run)[-1]
        results.put({"images_per_s": last.metrics["perf/images_per_sec"], "start": start, "end": time.time()})
    except BaseException as exc:  # noqa: BLE001 -- sent to the parent, which reports it
        results.put({"error": f"{type(exc).__name__}: {exc}"})


def pack(k: int, config: TrainConfig, timeout_s: float) -> dict[str, Any]:
    """k processes training ``config`` at once on one device: their aggregate images/s (all the timed images
    over the time from the first start to the last end)."""
    ctx = mp.get_context("spawn")  # CUDA cannot be forked
    barrier, queue = ctx.Barrier(k), ctx.Queue()
    workers = [ctx.Process(target=packing_worker, args=(config.to_dict(), barrier, queue), daemon=True)
               for _ in range(k)]
    for worker in workers:
        worker.start()
    got = []
    try:
        while len(got) < k and "error" not in (got[-1] if got else {}):
            got.append(queue.get(timeout=timeout_s))
    except queue_module.Empty:
        got.append({"error": f"no result within {timeout_s:.0f} s (under MPS, a non-MPS CUDA process on the GPU "
                             f"makes its clients wait)"})
    finally:
        barrier.abort()  # a worker that failed leaves the others waiting: release them
        for worker in workers:
            worker.join(timeout=5)
            if worker.is_alive():
                worker.kill()
    if errors := [g["error"] for g in got if "error" in g]:
        return {"k": k, "error": errors[0]}
    images = k * config.run.eval_every * config.optim.batch_size
    span = max(g["end"] for g in got) - min(g["start"] for g in got)
    return {"k": k, "aggregate_images_per_s": images / span, "per_process": [g["images_per_s"] for g in got]}


@contextlib.contextmanager
def mps_daemon(directory: Path) -> Iterator[str | None]:
    """NVIDIA MPS for the processes started inside (its pipe and log directories in the environment they
    inherit); yields None when it started, else why not. Stopped again at the end."""
    control = shutil.which("nvidia-cuda-mps-control")
    if control is None:
        yield "nvidia-cuda-mps-control is not installed"
        return
    env = {"CUDA_MPS_PIPE_DIRECTORY": str(directory / "pipe"), "CUDA_MPS_LOG_DIRECTORY": str(directory / "log")}
    for path in env.values():
        Path(path).mkdir(parents=True, exist_ok=True)
    saved = dict(os.environ)
    os.environ.update(env)
    started = subprocess.run([control, "-d"], capture_output=True, text=True, timeout=30)
    try:
        yield None if started.returncode == 0 else f"nvidia-cuda-mps-control -d failed: {started.stderr.strip()}"
    finally:
        if started.returncode == 0:
            subprocess.run([control], input="quit\n", capture_output=True, text=True, timeout=30)
        os.environ.clear()
        os.environ.update(saved)


def packing(device: torch.device, sizes: Sizes, deadline: Deadline, with_mps: bool) -> dict[str, Any]:
    """Aggregate images/s of k packed processes, each k while the budget allows."""
    config = proof_config(device, sizes, 20, "fp32")
    with tempfile.TemporaryDirectory() as tmp, (mps_daemon(Path(tmp)) if with_mps else contextlib.nullcontext()) as why:
        if with_mps and why:
            return {"mps": False, "skipped": why}
        runs: list[dict[str, Any]] = []
        for k in sizes.packing:
            if runs and "error" in runs[-1]:
                runs.append({"k": k, "skipped": f"k={runs[-1]['k']} failed"})
            elif deadline.left() < 60:
                runs.append({"k": k, "skipped": "time guard"})
            else:
                runs.append(pack(k, config, timeout_s=min(90.0, deadline.left() - 10)))
    single = next((r["aggregate_images_per_s"] for r in runs if r.get("k") == 1 and "aggregate_images_per_s" in r), None)
    for run in runs:
        if single and "aggregate_images_per_s" in run:
            run["vs_one_process"] = run["aggregate_images_per_s"] / single
    return {"mps": with_mps, "depth": 20, "precision": "fp32", "runs": runs}


def throughput(device: torch.device, sizes: Sizes, cells: list[tuple[int, str]], compile_mode: str | None,
               deadline: Deadline, dataset: Any, table: list[dict]) -> dict[str, int]:
    """One measurement per (depth, precision) cell, appended to ``table`` as it ends; returns the counts."""
    mode = compile_mode or "eager"
    for depth, precision in cells:
        row = {"depth": depth, "precision": precision, "mode": mode}
        needed = sizes.compile_estimate_s if compile_mode else 10
        if deadline.left() < needed:
            table.append({**row, "skipped": "time guard"})
            continue
        try:
            row.update(measure(proof_config(device, sizes, depth, precision, compile_mode), dataset))
        except TimeGuard:
            table.append({**row, "skipped": "time guard (stopped while measuring)"})
            raise
        except Exception as exc:  # noqa: BLE001 -- recorded; the next cell runs
            row["error"] = f"{type(exc).__name__}: {exc}"[:500]
        table.append(row)
        print(format_row(row), flush=True)
    rows = table[-len(cells):] if cells else []
    return {"measured": sum("images_per_s" in r for r in rows), "not_measured": sum("images_per_s" not in r for r in rows)}


def round_trip(device: torch.device, sizes: Sizes, dataset: Any) -> dict[str, Any]:
    """Checkpoint after the first window, read it back as a CPU machine would, resume: on the same device
    (deterministic: bit for bit?) and on the CPU (must continue)."""
    config = proof_config(device, sizes, 20, "fp32", **{"run.deterministic": True})
    straight = [r.metrics["train/loss"] for r in fit(config, dataset=dataset)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.pt"
        next(fit(config, dataset=dataset)).save_checkpoint(path)
        raw = torch.load(path, weights_only=True)  # no map_location
        devices = sorted({t.device.type for t in _tensors(raw)})
        same = [r.metrics["train/loss"] for r in fit(config, resume=path, dataset=dataset)]
        record = {"saved_on": raw.get("device"), "tensor_devices_in_file": devices,
                  "same_device_bit_for_bit": same == straight[1:], "straight_loss": straight[-1],
                  "resumed_loss": same[-1] if same else None}
        if device.type != "cpu":
            # A few iterations past the checkpoint: enough to show it continues (a longer run is a resumable change).
            cpu_config = config.replace(**{"run.device": "cpu", "optim.iterations": sizes.window + 5})
            on_cpu = list(fit(cpu_config, resume=load_checkpoint(path), dataset=cifar_shaped_dataset("cpu")))
            record["cpu_resume"] = {"iteration": on_cpu[-1].iteration, "loss": on_cpu[-1].metrics["train/loss"],
                                    "continued": on_cpu[-1].status == "completed"}
    prepare_device(config.replace(**{"run.deterministic": False}).run)  # back to the fast settings
    return record


def _tensors(obj: Any) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for value in obj.values() for t in _tensors(value)]
    if isinstance(obj, (list, tuple)):
        return [t for value in obj for t in _tensors(value)]
    return []


# --- report ---


def format_row(row: dict[str, Any]) -> str:
    head = f"ResNet-{row['depth']:<3} {row['precision']:<4} {row['mode']:<15}"
    if "skipped" in row or "error" in row:
        return f"{head} {row.get('skipped') or row['error']}"
    gpu = f"{row['timed_gpu_s']:.2f}" if row["timed_gpu_s"] is not None else "n/a"
    memory = f"{row['peak_memory_gib']:.2f}" if row["peak_memory_gib"] is not None else "n/a"
    target = TARGET_MINUTES.get(row["depth"]) if row["device"] == "cuda" else None  # the targets are a GPU's
    verdict = f" (target {target:.0f}: {'met' if row['full_run_min'] <= target else 'missed'})" if target else ""
    skips = f"  cudagraph skips {row['cudagraph_skips']}" if row.get("cudagraph_skips") is not None else ""
    return (f"{head} {row['images_per_s']:9.0f} img/s  64k in {row['full_run_min']:7.2f} min{verdict:<17}"
            f" first window {row['first_window_s']:6.1f} s  timed wall {row['timed_wall_s']:.2f} s"
            f" / CUDA events {gpu} s  peak {memory} GiB{skips}")


def print_summary(report: dict[str, Any]) -> None:
    print("\n== throughput (training images/s; 64k iterations projected at that speed) ==")
    for row in report["throughput"]:
        print(format_row(row))
    for name in ("packing", "packing_mps"):
        section = report.get(name)
        if section is None:
            continue
        print(f"\n== {name}: k processes of ResNet-20 fp32 on one device ==")
        for run in section.get("runs", []):
            shown = (f"{run['aggregate_images_per_s']:9.0f} img/s aggregate, {run.get('vs_one_process', 1):.2f}x one"
                     if "aggregate_images_per_s" in run else run.get("skipped") or run.get("error"))
            print(f"k={run['k']}: {shown}")
        if "skipped" in section or "error" in section:
            print(section.get("skipped") or section.get("error"))
    print("\n== checkpoint round trip ==")
    print(json.dumps(report.get("round_trip"), indent=1))


def section(report: dict[str, Any], name: str, work: Callable[[], Any]) -> None:
    """Run one section into ``report[name]``; an error is recorded and the next section runs (not the guard)."""
    start = time.perf_counter()
    try:
        report[name] = work()
    except TimeGuard:
        report[name] = {"skipped": "time guard"}
        raise
    except Exception as exc:  # noqa: BLE001
        report[name] = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
    report["seconds"][name] = round(time.perf_counter() - start, 1)
    print(f"[{name}: {report['seconds'][name]} s]", flush=True)


def run_proof(device: torch.device, sizes: Sizes, deadline: Deadline, report: dict[str, Any]) -> None:
    section(report, "environment", lambda: environment(device))
    section(report, "packing", lambda: packing(device, sizes, deadline, with_mps=False))
    if device.type == "cuda":
        section(report, "packing_mps", lambda: packing(device, sizes, deadline, with_mps=True))
    report["environment"]["device_record"] = device_record(prepare_device(proof_config(device, sizes, 20, "fp32").run))
    dataset = cifar_shaped_dataset(device)
    cells = [(d, p) for d in sizes.depths for p in PRECISIONS]
    table = report["throughput"]
    section(report, "eager", lambda: throughput(device, sizes, cells, None, deadline, dataset, table))
    section(report, "round_trip", lambda: round_trip(device, sizes, dataset))
    graph_cells = [c for c in GRAPH_ORDER if c[0] in sizes.depths][: sizes.graph_cells]
    section(report, "cuda_graphs", lambda: throughput(device, sizes, graph_cells, "reduce-overhead", deadline,
                                                      dataset, table))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the JSON file to write")
    parser.add_argument("--device", default="auto", help="auto (CUDA where present), cuda or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the same code path in ~2 minutes on a CPU")
    parser.add_argument("--budget-s", type=float, default=None, help="time guard (default: 450 s, 150 s with --quick)")
    args = parser.parse_args(argv)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)  # before cuBLAS starts: the round trip
    device = resolve_device(args.device)
    sizes = QUICK if args.quick else FULL
    budget = args.budget_s or (150.0 if args.quick else 450.0)
    report: dict[str, Any] = {"sizes": sizes.__dict__, "budget_s": budget, "seconds": {}, "throughput": [],
                              "stopped_by_time_guard": False}
    print(f"GPU proof on {device}, {'quick' if args.quick else 'full'} sizes, time guard {budget:.0f} s", flush=True)
    start, deadline = time.perf_counter(), Deadline(budget)
    try:
        run_proof(device, sizes, deadline, report)
    except TimeGuard:
        report["stopped_by_time_guard"] = True
        print("the time guard stopped the proof: writing what was measured", flush=True)
    finally:
        signal.alarm(0)
    report["seconds"]["total"] = round(time.perf_counter() - start, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print_summary(report)
    print(f"\nwrote {args.out} after {report['seconds']['total']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
