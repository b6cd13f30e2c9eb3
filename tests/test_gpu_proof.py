"""The GPU proof (bench/gpu_proof.py) end to end on the CPU with ``--quick``: the same code path as on a GPU at tiny
sizes, so that the one script meant for the first, short GPU time cannot break unnoticed. Every section must be
in its JSON with plausible numbers, including the ResNet-50 step rate and the JPEG decode rates; the script must
import no Ray, MLflow, Optuna or plotly (the GPU machine has only torch, torchvision, numpy, pandas and scipy).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support import REPO

SECTIONS = ("environment", "packing", "eager", "round_trip", "resnet50", "jpeg_decode", "cuda_graphs",
            "resnet50_graphs")
CPU_DECODERS = ("cpu_torchcodec", "cpu_torchvision_io", "train_view_paper", "train_view_torchvision")


def proof_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}


def plausible_rate(value: object) -> bool:
    return isinstance(value, float) and 0 < value < 1e6


def test_proof_imports_no_ray_mlflow_optuna_or_plotly() -> None:
    code = "import sys, bench.gpu_proof; print([m for m in ('ray', 'mlflow', 'optuna', 'plotly') if m in sys.modules])"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=proof_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.slow
def test_quick_proof_on_cpu_measures_every_section(tmp_path: Path) -> None:
    out = tmp_path / "proof.json"
    # A budget the guard never reaches here (the run takes about half a minute), so every section must measure.
    done = subprocess.run([sys.executable, "bench/gpu_proof.py", str(out), "--device", "cpu", "--quick",
                           "--budget-s", "600"], cwd=REPO, env=proof_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())

    assert report["stopped_by_time_guard"] is False
    for name in SECTIONS:
        assert name in report and name in report["seconds"], name
        assert "error" not in report[name], (name, report[name])
    assert report["environment"]["device"] == "cpu" and report["environment"]["torch"]

    assert [run["k"] for run in report["packing"]["runs"]] == [1, 2]
    assert all(plausible_rate(run["aggregate_images_per_s"]) for run in report["packing"]["runs"])

    assert report["eager"] == {"measured": 9, "not_measured": 0}
    assert report["cuda_graphs"] == {"measured": 1, "not_measured": 0}
    rows = report["throughput"]
    assert [(r["depth"], r["mode"]) for r in rows] == [(d, "eager") for d in (8, 14, 20) for _ in range(3)] + [
        (8, "reduce-overhead")]
    for row in rows:
        assert plausible_rate(row["images_per_s"]) and row["full_run_min"] > 0 and row["timed_wall_s"] > 0, row
        assert row["target_min"] is None  # the targets are a GPU's
    assert {r["precision_used"] for r in rows if r["precision"] == "tf32"} == {"fp32"}  # no TF32 on a CPU

    trip = report["round_trip"]
    assert trip["same_device_bit_for_bit"] is True and trip["tensor_devices_in_file"] == ["cpu"]

    # ResNet-50 (the paper's option B, stride in the first 1x1) at --quick's tiny batch and resolution.
    assert report["resnet50"]["measured"] == 3 and report["resnet50"]["bottleneck_stride"] == "1x1"
    steps = report["resnet50_rows"]
    assert [(r["precision"], r["mode"], r["batch"], r["resolution"]) for r in steps] == [
        (p, "eager", 4, 64) for p in ("bf16", "tf32", "fp32")]
    for row in steps:
        assert plausible_rate(row["images_per_s"]), row
        assert row["epochs_90_h"] == pytest.approx(90 * 1_281_167 / row["images_per_s"] / 3600)
    assert "--quick" in report["resnet50_graphs"]["skipped"]

    decode = report["jpeg_decode"]
    assert decode["images"] == 16 and decode["size"] == "500x375" and 20 < decode["mean_kb"] < 400
    for name in CPU_DECODERS:
        assert plausible_rate(decode[name]["images_per_s"]) and 0 < decode[name]["ms_per_image"] < 1000, name
    for name in ("nvjpeg_torchvision_io", "nvjpeg_torchcodec"):
        assert "no CUDA device" in decode[name]["skipped"]
    feed = report["input_feed"]
    assert feed["cores_to_feed"] == pytest.approx(max(r["images_per_s"] for r in steps)
                                                  / decode["train_view_paper"]["images_per_s"])

    for heading in ("== throughput", "== packing", "== checkpoint round trip", "== ResNet-50 step rate",
                    "== JPEG decode", "train_view_paper", f"wrote {out}"):
        assert heading in done.stdout, heading
