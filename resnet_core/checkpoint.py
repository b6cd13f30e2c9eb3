"""Checkpoint files: written atomically, read only with ``weights_only=True``.

A checkpoint is a plain dict of tensors and Python scalars (model, optimiser, schedule and RNG state,
iteration, the flat config), so ``torch.load(..., weights_only=True)`` can read it and a malicious pickle
cannot run code on load.
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
from pathlib import Path
from collections.abc import Callable
from typing import Any

import torch

FORMAT_VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or not one of ours."""


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically: a temp file in the same directory, fsync, then rename.

    A crash mid-write leaves either the old file or none, never a half-written one under ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({**state, "format_version": FORMAT_VERSION}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _sync_directory(path.parent)  # the rename itself survives a power loss only once its folder is synced
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def device_neutral(state: Any) -> Any:
    """``state`` with every tensor in it on the CPU (nested dicts, lists and tuples), so that a checkpoint made
    on a GPU loads on any machine. CPU tensors are returned as they are, not copied."""
    if isinstance(state, torch.Tensor):
        return state.cpu()
    if isinstance(state, dict):
        return {key: device_neutral(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(device_neutral(value) for value in state)
    return state


def tensors_in(state: Any) -> list[torch.Tensor]:
    """Every tensor in ``state`` (nested dicts, lists and tuples): what ``device_neutral`` moves, for checking it."""
    if isinstance(state, torch.Tensor):
        return [state]
    if isinstance(state, dict):
        return [t for value in state.values() for t in tensors_in(value)]
    if isinstance(state, (list, tuple)):
        return [t for value in state for t in tensors_in(value)]
    return []


def saved_device_type(state: dict[str, Any]) -> str:
    """The type of device a checkpoint was made on; checkpoints from before it was recorded tell by their
    generator state (CUDA's Philox state is 16 bytes, the CPU's Mersenne Twister state 5056)."""
    if "device" in state:
        return str(state["device"])
    return "cuda" if state["generator"].numel() == 16 else "cpu"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; raise CheckpointError for anything unreadable."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist") from None
    except Exception as exc:  # truncated zip, bad magic, or a pickle asking for a forbidden global
        raise CheckpointError(f"checkpoint {str(path)!r} is corrupt or unsafe and was refused: "
                              f"{_refusal_reason(path, exc)}") from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {str(path)!r} is not a resnet_core checkpoint (format {FORMAT_VERSION})")
    return state


def _refusal_reason(path: Path, exc: Exception) -> str:
    """Why torch could not load ``path``, in one line, without torch's advice to retry with weights_only=False
    (which would run whatever code the file holds)."""
    if path.is_file() and path.stat().st_size == 0:
        return "the file is empty (0 bytes: its write was cut short)"
    if isinstance(exc, pickle.UnpicklingError):
        asked = re.search(r"[^.\n]*GLOBAL [^\s.]+(?:\.[^\s.]+)*[^.\n]*", str(exc))  # what the file asked to load
        return (f"it holds Python objects that weights_only=True does not load"
                f"{f' ({asked[0].strip()})' if asked else ''}; load it only if you trust where it came from, never "
                f"by turning weights_only off here")
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_latest_checkpoint(paths: list[str | os.PathLike], map_location: str | torch.device = "cpu",
                           on_skip: Callable[[Path, CheckpointError], None] | None = None) -> tuple[Path, dict[str, Any]]:
    """Load the newest readable checkpoint from ``paths`` (oldest first), skipping corrupt ones.

    ``on_skip(path, error)`` is called for each refused checkpoint (to log why a run fell back).
    Raises CheckpointError when none can be read, listing why each was refused.
    """
    errors = []
    for path in reversed(paths):
        try:
            return Path(path), load_checkpoint(path, map_location)
        except CheckpointError as exc:
            errors.append(str(exc))
            if on_skip is not None:
                on_skip(Path(path), exc)
    raise CheckpointError("no readable checkpoint: " + "; ".join(errors) if errors else "no checkpoint given")
