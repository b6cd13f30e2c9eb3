"""Where and in what precision a run computes: the device (``run.device``) and bf16 or fp32 (``run.precision``).

One home for these choices, so the trainer, the single-run CLI, the sweeps' trial identity and the benches all
resolve "auto" the same way.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from resnet_core.config import RunConfig, TrainConfig

CPUINFO = Path("/proc/cpuinfo")


def resolve_device(name: str) -> torch.device:
    """The device ``run.device`` names: "auto" is CUDA where there is a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"run.device={name!r} but no CUDA device is available; use 'auto' or 'cpu'")
    return device


def prepare_device(run: RunConfig) -> torch.device:
    """The run's device, with torch's CPU thread count and cuDNN autotuning set for it."""
    device = resolve_device(run.device)
    if run.threads:
        torch.set_num_threads(run.threads)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


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
    """The precision a run computes in: "auto" becomes bf16 where the hardware has it natively, else fp32."""
    if precision == "auto":
        return "bf16" if has_native_bf16(device) else "fp32"
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
