"""The GPU proof's packing section: k processes training ResNet-20 at once on one device, their aggregate images/s,
without and (where ``nvidia-cuda-mps-control`` runs) with NVIDIA MPS: what ``gpus_per_trial`` should be."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue as queue_module
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from bench.gpu_proof_cifar import proof_config
from bench.gpu_proof_measure import Deadline, Sizes
from bench.trainer_throughput import cifar_shaped_dataset
from resnet_core import TrainConfig, fit
from resnet_core.device import resolve_device


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
