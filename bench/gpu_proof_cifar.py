"""The GPU proof's CIFAR sections: training images/s per depth and precision (eager, or with CUDA graphs) on random
CIFAR-shaped images with the paper's recipe, and the checkpoint -> resume round trip."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from bench.gpu_proof_measure import Deadline, Sizes, measure_rows
from bench.gpu_proof_report import format_row
from bench.trainer_throughput import cifar_shaped_dataset
from resnet_core import TrainConfig, fit, load_checkpoint
from resnet_core.checkpoint import tensors_in
from resnet_core.device import prepare_device

FULL_RUN = 64_000  # iterations of the paper's recipe
TARGET_MINUTES = {20: 2.0, 56: 4.0}  # per full run on one H100 (issue 20)
PRECISIONS = ("fp32", "tf32", "bf16")
# CUDA-graph cells in the order they are worth measuring: the depths with targets first, the fast bf16 and the
# preset's fp32 before tf32.
GRAPH_ORDER = [(d, p) for d in (8, 20, 56, 110) for p in ("bf16", "fp32")] + [(d, "tf32") for d in (20, 56, 110)]


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


def full_run_projection(images_per_s: float, config: TrainConfig) -> dict[str, Any]:
    """The 64k-iteration wall time at that speed, and on a GPU its target (the targets are a GPU's)."""
    target = TARGET_MINUTES.get(config.model.depth) if torch.device(config.run.device).type == "cuda" else None
    return {"full_run_min": FULL_RUN * config.optim.batch_size / images_per_s / 60, "target_min": target}


def throughput(device: torch.device, sizes: Sizes, cells: list[tuple[int, str]], compile_mode: str | None,
               deadline: Deadline, dataset: Any, table: list[dict]) -> dict[str, int]:
    """One measurement per (depth, precision) cell, appended to ``table`` as it ends; returns the counts."""
    jobs = [({"depth": depth, "precision": precision, "mode": compile_mode or "eager"},
             proof_config(device, sizes, depth, precision, compile_mode)) for depth, precision in cells]
    needed = sizes.compile_estimate_s if compile_mode else 10
    return measure_rows(jobs, dataset, deadline, needed, table, full_run_projection, format_row)


def round_trip(device: torch.device, sizes: Sizes, dataset: Any) -> dict[str, Any]:
    """Checkpoint after the first window, read it back as a CPU machine would, resume: on the same device
    (deterministic: bit for bit?) and on the CPU (must continue)."""
    config = proof_config(device, sizes, 20, "fp32", **{"run.deterministic": True})
    straight = [r.metrics["train/loss"] for r in fit(config, dataset=dataset)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ckpt.pt"
        next(fit(config, dataset=dataset)).save_checkpoint(path)
        raw = torch.load(path, weights_only=True)  # no map_location
        devices = sorted({t.device.type for t in tensors_in(raw)})
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
