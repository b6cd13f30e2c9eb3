"""Where and in what precision a run computes: the device (``run.device``), fp32, tf32 or bf16
(``run.precision``) and whether GPU kernels must be deterministic (``run.deterministic``).

One home for these choices, so the trainer, the single-run CLI, the sweeps' trials and the benches all
resolve "auto" the same way. Nothing falls back silently: a run that was given a GPU and finds no CUDA fails
with the reason (``require_cuda``), and the record of a run (``device_record``) says what it computed on.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from resnet_core.config import RunConfig, TrainConfig

CPUINFO = Path("/proc/cpuinfo")
NVIDIA_DRIVER_VERSION = Path("/proc/driver/nvidia/version")
# The oldest Linux NVIDIA driver each CUDA major version runs on (CUDA's minor-version compatibility).
MIN_DRIVER = {"11": "450.80.02", "12": "525.60.13", "13": "580.65.06"}
# cuBLAS needs this to be deterministic (CUDA >= 10.2); read when its first handle is created.
CUBLAS_DETERMINISTIC = ":4096:8"


class CudaUnavailableError(RuntimeError):
    """A run that must compute on a GPU finds none usable (the message says why)."""


def resolve_device(name: str) -> torch.device:
    """The device ``run.device`` names: "auto" is CUDA where there is a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device={name!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return device


def prepare_device(run: RunConfig) -> torch.device:
    """The run's device, with torch's CPU threads, TF32, determinism and cuDNN autotuning set for it.

    These are process-wide settings, set at every run (a reused process may have run another config).
    """
    device = resolve_device(run.device)
    if run.threads:
        torch.set_num_threads(run.threads)
    set_tf32(resolve_precision(run.precision, device) == "tf32")
    set_deterministic(run.deterministic, device)
    return device


def set_tf32(enabled: bool) -> None:
    """TF32 for fp32 matmuls and cuDNN convolutions on, or off (IEEE fp32).

    cuDNN computes fp32 convolutions in TF32 by default on Ampere and newer GPUs; ``run.precision=fp32``
    turns that off, so "fp32" means fp32. The legacy flags, because torch's own code still reads them (mixing
    them with the newer ``fp32_precision`` setters makes those reads raise).
    """
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def set_deterministic(enabled: bool, device: torch.device) -> None:
    """Deterministic kernels (an error for an op that has none) and no cuDNN autotuning, or the fast choices.

    Autotuning (``cudnn.benchmark``) picks convolution algorithms by timing, so it is on only for CUDA runs
    that do not ask for repeatability. CPU runs are deterministic either way.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_DETERMINISTIC)
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = device.type == "cuda" and not enabled


def assigned_device(device: str, has_gpu: bool) -> str:
    """The ``run.device`` a process uses given whether its scheduler (a Ray trial's resources) assigned it a GPU.

    With a GPU it must compute on CUDA: "auto" becomes "cuda", and a missing CUDA is an error saying why
    (``require_cuda``). Without one it computes on the CPU with every GPU hidden, so nothing lands on GPU 0
    unaccounted.
    """
    check_device_assignment(device, has_gpu)
    if has_gpu:
        require_cuda()
        return "cuda" if device == "auto" else device
    hide_gpus()
    return "cpu" if device == "auto" else device


def check_device_assignment(device: str, has_gpu: bool) -> None:
    """Raise ValueError when ``run.device`` contradicts the GPU assignment (a GPU left idle, or one taken unasked)."""
    kind = device.split(":")[0]
    if has_gpu and kind not in ("auto", "cuda"):
        raise ValueError(f"run.device={device!r} but each trial is given a GPU (--gpus-per-trial > 0), which would "
                         f"sit idle; use run.device=auto or cuda, or --gpus-per-trial 0")
    if not has_gpu and kind == "cuda":
        raise ValueError(f"run.device={device!r} but each trial is given no GPU (--gpus-per-trial 0); give it one, "
                         f"or use run.device=auto or cpu")


def hide_gpus() -> None:
    """Hide every GPU from this process (effective before CUDA is first initialised, as in a fresh trial)."""
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


def require_cuda() -> None:
    """Raise CudaUnavailableError, with the reason, unless torch can use a CUDA GPU."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        available = torch.cuda.is_available()
    if not available:
        said = "; ".join(str(w.message) for w in caught)
        raise CudaUnavailableError(cuda_unavailable_reason() + (f"; torch said: {said}" if said else ""))


def cuda_unavailable_reason() -> str:
    """Why torch sees no GPU, in the terms that fix it: the build, the driver against its minimum, the devices."""
    built = torch.version.cuda
    if built is None:
        return f"this torch ({torch.__version__}) is a CPU-only build: install a CUDA build"
    driver = nvidia_driver_version()
    needed = MIN_DRIVER.get(built.split(".")[0])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    parts = [f"torch {torch.__version__} is built for CUDA {built}" + (f", which needs an NVIDIA driver >= {needed}"
                                                                      if needed else ""),
             f"the NVIDIA driver found is {driver}" if driver else "no NVIDIA driver was found "
             f"({NVIDIA_DRIVER_VERSION} is absent and nvidia-smi gave no version)",
             f"CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else "CUDA_VISIBLE_DEVICES is not set"]
    if driver and needed and _version(driver) < _version(needed):
        parts.append(f"the driver is too old: upgrade it to >= {needed}, or install a torch built for an older CUDA")
    return "no usable CUDA GPU: " + "; ".join(parts)


def nvidia_driver_version() -> str | None:
    """The loaded NVIDIA kernel driver's version (e.g. "580.65.06"), or None where there is none."""
    try:
        match = re.search(r"Kernel Module\s+(?:for \S+\s+)?([\d.]+)", NVIDIA_DRIVER_VERSION.read_text())
        if match:
            return match[1]
    except OSError:
        pass
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                 capture_output=True, text=True, timeout=20).stdout.split()
        except (OSError, subprocess.SubprocessError):
            return None
        return out[0] if out else None
    return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text))


def device_record(device: torch.device) -> dict[str, Any]:
    """What a run computes on and how, for its environment record: the device's name, the torch build, NVIDIA
    driver, CUDA runtime, cuDNN, the GPU and the TF32 / determinism settings in force (as ``prepare_device``
    left them)."""
    record: dict[str, Any] = {
        "device": device_name(device), "torch": torch.__version__, "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "nvidia_driver": nvidia_driver_version(), "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark, "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        record.update(gpu=properties.name, gpu_capability=f"{properties.major}.{properties.minor}",
                      gpu_memory_gib=round(properties.total_memory / 2**30, 1), cuda_runtime=torch.version.cuda)
    return record


def device_name(device: torch.device) -> str:
    """A readable name: the GPU's, or the CPU's with torch's thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def has_native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: CUDA GPUs from Ampere on, CPUs with AVX512-BF16 or AMX.

    Elsewhere bf16 is emulated and slower than fp32, so ``run.precision=auto`` keeps fp32 there.
    """
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_has_native_bf16()
    return False


def cpu_has_native_bf16() -> bool:
    """Whether this CPU has AVX512-BF16 or AMX instructions.

    torch answers only through private functions (``torch.cpu._is_avx512_bf16_supported`` and
    ``_is_amx_tile_supported``); where a torch version lacks them, the same flags are read from /proc/cpuinfo.
    """
    probes = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    if all(callable(probe) for probe in probes):
        return any(probe() for probe in probes)
    return bool(cpu_flags() & {"avx512_bf16", "amx_tile"})


def cpu_flags() -> set[str]:
    """The CPU feature flags listed in /proc/cpuinfo; none where there is no such file (macOS, Windows)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def resolve_precision(precision: str, device: torch.device) -> str:
    """The precision a run computes in, as its ``precision`` tag records it.

    "auto" becomes bf16 where the hardware has it natively, else fp32. "tf32" (fp32 tensors, TF32 matmuls and
    convolutions) exists on CUDA only: elsewhere the run computes in fp32 and is recorded as such.
    """
    if precision == "auto":
        return "bf16" if has_native_bf16(device) else "fp32"
    if precision == "tf32" and device.type != "cuda":
        return "fp32"
    return precision


def autocast_for(config: TrainConfig, device: torch.device) -> torch.autocast | None:
    """bf16 autocast where the config asks for it (see ``resolve_precision``); None means fp32.

    Under it the convolutions and the linear layer compute in bf16 and the activations between them are
    bf16 too: BN outputs, ReLUs and the residual additions (the shortcut stream) included. What stays fp32:
    the weights and the optimizer state, BN's affine parameters and running statistics, and the loss, which
    is computed from the logits cast to fp32.
    """
    if resolve_precision(config.run.precision, device) == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return None
