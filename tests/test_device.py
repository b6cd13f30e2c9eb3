"""Device rules (resnet_core/device.py): no silent CPU fallback, GPUs hidden from trials given none, honest
precision (fp32 is IEEE fp32, tf32 only on CUDA), the deterministic switch and the environment record; and,
through a real Ray node that claims a GPU torch cannot find, a trial that fails at once saying why.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from resnet_core import TrainConfig, device
from resnet_core.device import (CudaUnavailableError, assigned_device, check_device_assignment, device_record,
                                prepare_device, resolve_precision)
from support import REPO
from support.plans import plan_for, store_args, tiny_args
from support.processes import driver_env

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens where torch finds no GPU")


@pytest.fixture(autouse=True)
def restore_process_settings(monkeypatch: pytest.MonkeyPatch):
    """The rules change process-wide settings: give every test the ones it found."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", "0"))
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.use_deterministic_algorithms(saved[2])
    torch.backends.cudnn.benchmark = saved[3]


# --- which device a process given (or not given) a GPU uses ---


@needs_no_gpu
def test_a_process_given_a_gpu_without_cuda_fails_naming_build_driver_and_devices() -> None:
    with pytest.raises(CudaUnavailableError) as info:
        assigned_device("auto", has_gpu=True)
    message = str(info.value)
    assert f"built for CUDA {torch.version.cuda}" in message
    assert f">= {device.MIN_DRIVER[torch.version.cuda.split('.')[0]]}" in message
    assert "CUDA_VISIBLE_DEVICES='0'" in message


def test_an_old_driver_is_named_as_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.154.05  Thu Dec 28 2023\n")
    monkeypatch.setattr(device, "NVIDIA_DRIVER_VERSION", version)
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    reason = device.cuda_unavailable_reason()
    assert "the NVIDIA driver found is 535.154.05" in reason and "needs an NVIDIA driver >= 580" in reason
    assert "too old" in reason
    version.write_text("NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.95.05  Thu Sep 25 2025\n")
    assert "too old" not in device.cuda_unavailable_reason()


def test_a_process_given_no_gpu_computes_on_the_cpu_with_gpus_hidden() -> None:
    assert assigned_device("auto", has_gpu=False) == "cpu"
    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""
    assert assigned_device("cpu", has_gpu=False) == "cpu"


@pytest.mark.parametrize(("run_device", "has_gpu", "fragments"), [
    ("cuda", False, ["run.device='cuda'", "given no GPU", "--gpus-per-trial 0"]),
    ("cuda:1", False, ["run.device='cuda:1'", "given no GPU"]),
    ("cpu", True, ["run.device='cpu'", "given a GPU", "idle", "auto or cuda"]),
])
def test_a_device_contradicting_the_assignment_is_refused(run_device: str, has_gpu: bool, fragments: list[str]) -> None:
    for check in (check_device_assignment, assigned_device):
        with pytest.raises(ValueError) as info:
            check(run_device, has_gpu)
        assert all(fragment in str(info.value) for fragment in fragments), str(info.value)


def test_a_sweep_whose_device_contradicts_its_gpus_is_refused_before_it_starts(tmp_path: Path) -> None:
    # The smoke preset computes on the CPU: asking for a GPU per trial would leave it idle.
    with pytest.raises(ValueError, match="run.device='cpu' but each trial is given a GPU"):
        plan_for([*tiny_args("--gpus-per-trial", "1"), *store_args(tmp_path)])
    with pytest.raises(ValueError, match="run.device='cuda' but each trial is given no GPU"):
        plan_for([*tiny_args("--set", "run.device=cuda"), *store_args(tmp_path)])


# --- precision and determinism ---


def test_precision_names_what_is_computed() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_precision("fp32", cuda) == "fp32" and resolve_precision("tf32", cuda) == "tf32"
    assert resolve_precision("tf32", cpu) == "fp32"  # no TF32 on a CPU: recorded as what it computes
    with pytest.raises(ValueError, match="'fp16'.*'tf32'"):
        TrainConfig().replace(**{"run.precision": "fp16"})


@pytest.mark.parametrize(("precision", "tf32"), [("fp32", False), ("bf16", False), ("auto", False), ("tf32", False)])
def test_fp32_turns_cudnns_default_tf32_off(precision: str, tf32: bool) -> None:
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True  # cuDNN's default is TF32 on
    prepare_device(TrainConfig().replace(**{"run.precision": precision, "run.device": "cpu"}).run)
    assert torch.backends.cuda.matmul.allow_tf32 is tf32 and torch.backends.cudnn.allow_tf32 is tf32


def test_deterministic_switch_and_the_record_of_it() -> None:
    run = TrainConfig().replace(**{"run.deterministic": True, "run.device": "cpu"}).run
    record = device_record(prepare_device(run))
    assert torch.are_deterministic_algorithms_enabled() and os.environ["CUBLAS_WORKSPACE_CONFIG"]
    assert record["deterministic"] is True and record["cudnn_benchmark"] is False
    assert {"nvidia_driver", "cuda_build", "cudnn", "tf32_matmul", "tf32_cudnn", "cuda_visible_devices"} <= set(record)
    prepare_device(TrainConfig().replace(**{"run.device": "cpu"}).run)  # the next run of a reused process
    assert not torch.are_deterministic_algorithms_enabled()


def test_compile_mode_is_a_named_choice_that_needs_compile() -> None:
    assert TrainConfig().replace(**{"run.compile": True, "run.compile_mode": "reduce-overhead"}).run.compile
    with pytest.raises(ValueError, match="'cudagraphs'.*'reduce-overhead'"):
        TrainConfig().replace(**{"run.compile": True, "run.compile_mode": "cudagraphs"})
    with pytest.raises(ValueError, match="run.compile_mode='max-autotune' needs run.compile=true"):
        TrainConfig().replace(**{"run.compile_mode": "max-autotune"})


# --- a real Ray node that claims a GPU torch cannot find ---


@needs_no_gpu
def test_a_trial_given_a_gpu_torch_cannot_find_fails_fast_without_training(tmp_path: Path, ray_tmp: str) -> None:
    argv = [*tiny_args("--depths", "8", "--families", "residual", "--seeds", "1", "--gpus-per-trial", "1",
                       "--set", "run.device=auto", "--max-failures", "0"), *store_args(tmp_path, "fake-gpu")]
    start = time.monotonic()
    out = subprocess.run([sys.executable, str(REPO / "tests" / "support" / "fake_gpu_sweep.py"), *argv],
                         env=driver_env(ray_tmp), capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    errors = [p.read_text() for p in (tmp_path / "ray_results").rglob("error.txt")]
    assert errors and all("CudaUnavailableError" in e and "CUDA_VISIBLE_DEVICES='0'" in e for e in errors), errors
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fake-gpu")
    trained = [r for r in client.search_runs([experiment.experiment_id]) if r.data.metrics]
    assert trained == []  # nothing trained on the CPU in the GPU's place
    print(f"failed after {time.monotonic() - start:.0f} s")
