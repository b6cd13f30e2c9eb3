"""The GPU proof: everything the first minutes on a GPU must show, in one run of at most 8 minutes.

    python bench/gpu_proof.py proof.json                     # on a GPU machine (H100 / H200): about 7 minutes
    python bench/gpu_proof.py proof.json --device cpu --quick  # the same code path at tiny sizes, on a CPU

Needs only Python with PyTorch (2.11-2.14), torchvision and numpy: it imports ``resnet_core`` and never Ray,
MLflow, Optuna or plotly, and uses no network. Every training goes through ``resnet_core.fit`` with the
paper's recipe (SGD momentum 0.9; CIFAR batch 128, ImageNet batch 256; ``--quick`` uses CIFAR batch 16 and
ResNet-50 batch 4 at 64x64) on random images held on the device.
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
5. ResNet-50 (the paper's ImageNet net, option B) at batch 256 on random 224x224 images, eager, in bf16,
   tf32 and fp32: training images/s, peak memory, and 90 epochs of ImageNet's 1.28 M images projected;
6. JPEG decode: ImageNet-sized JPEGs (500x375, quality 90) decoded on one CPU thread (torchcodec,
   torchvision.io), by ``train_view`` (decode + crop + resize + flip, per image), and on a CUDA device by
   nvJPEG a whole batch per call; then how many CPU cores the ResNet-50 step rate needs to be fed;
7. throughput with CUDA graphs (``run.compile_mode=reduce-overhead``), most useful cells first, while the
   time guard allows (each includes its compile time, reported apart);
8. ResNet-50 bf16 with CUDA graphs, if the time guard still allows (not with ``--quick``).

A time guard (``--budget-s``) stops what is left and writes what was measured. Prints a table; writes one JSON.
The sections live beside this file: gpu_proof_measure.py (sizes, time guard, one timed run), gpu_proof_packing.py,
gpu_proof_cifar.py (3, 4, 7), gpu_proof_resnet50.py (5, 8), gpu_proof_decode.py (6), gpu_proof_report.py (table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_proof_cifar import GRAPH_ORDER, PRECISIONS, proof_config, round_trip, throughput  # noqa: E402
from bench.gpu_proof_decode import input_feed, jpeg_decode  # noqa: E402
from bench.gpu_proof_measure import Deadline, Sizes, TimeGuard, section  # noqa: E402
from bench.gpu_proof_packing import packing  # noqa: E402
from bench.gpu_proof_report import print_summary  # noqa: E402
from bench.gpu_proof_resnet50 import resnet50_eager, resnet50_graphs  # noqa: E402
from bench.trainer_throughput import cifar_shaped_dataset  # noqa: E402
from resnet_core.device import CUBLAS_DETERMINISTIC, device_record, prepare_device, resolve_device  # noqa: E402

FULL = Sizes(batch=128, window=200, depths=(20, 56, 110), packing=(1, 2, 3, 5), graph_cells=9, compile_estimate_s=75,
             imagenet_batch=256, imagenet_resolution=224, imagenet_window=25, imagenet_graphs=True, jpegs=256)
QUICK = Sizes(batch=16, window=3, depths=(8, 14, 20), packing=(1, 2), graph_cells=1, compile_estimate_s=30,
              imagenet_batch=4, imagenet_resolution=64, imagenet_window=2, imagenet_graphs=False, jpegs=16)


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


def run_proof(device: torch.device, sizes: Sizes, deadline: Deadline, report: dict[str, Any]) -> None:
    section(report, "environment", lambda: environment(device))
    section(report, "packing", lambda: packing(device, sizes, deadline, with_mps=False))
    if device.type == "cuda":
        section(report, "packing_mps", lambda: packing(device, sizes, deadline, with_mps=True))
    report["environment"]["device_record"] = device_record(prepare_device(proof_config(device, sizes, 20, "fp32").run))
    dataset = cifar_shaped_dataset(device)
    cells = [(d, p) for d in sizes.depths for p in PRECISIONS]
    table, steps = report["throughput"], report["resnet50_rows"]
    section(report, "eager", lambda: throughput(device, sizes, cells, None, deadline, dataset, table))
    section(report, "round_trip", lambda: round_trip(device, sizes, dataset))
    section(report, "resnet50", lambda: resnet50_eager(device, sizes, deadline, steps))
    section(report, "jpeg_decode", lambda: jpeg_decode(device, sizes.jpegs, deadline))
    report["input_feed"] = input_feed(report["jpeg_decode"], steps)
    graph_cells = [c for c in GRAPH_ORDER if c[0] in sizes.depths][: sizes.graph_cells]
    section(report, "cuda_graphs", lambda: throughput(device, sizes, graph_cells, "reduce-overhead", deadline,
                                                      dataset, table))
    section(report, "resnet50_graphs", lambda: resnet50_graphs(device, sizes, deadline, steps))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the JSON file to write")
    parser.add_argument("--device", default="auto", help="auto (CUDA where present), cuda or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the same code path in ~1 minute on a CPU")
    parser.add_argument("--budget-s", type=float, default=None, help="time guard (default: 450 s, 150 s with --quick)")
    args = parser.parse_args(argv)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)  # before cuBLAS starts: the round trip
    device = resolve_device(args.device)
    sizes = QUICK if args.quick else FULL
    budget = args.budget_s or (150.0 if args.quick else 450.0)
    report: dict[str, Any] = {"sizes": sizes.__dict__, "budget_s": budget, "seconds": {}, "throughput": [],
                              "resnet50_rows": [], "stopped_by_time_guard": False}
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
