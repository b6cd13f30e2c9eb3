"""Tests for resnet_core.checkpoint: atomic writes, weights_only loading, refusal of bad files."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path

import pytest
import torch

from resnet_core.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)


def _state(value: float = 1.0) -> dict:
    """A checkpoint-shaped dict: tensors, nested dicts, lists and scalars."""
    return {
        "config": {"model.depth": 8, "optim.milestones": [10, 20]},
        "iteration": 7,
        "model": {"w": torch.full((3, 3), value), "b": torch.arange(3)},
        "generator": torch.ByteTensor([1, 2, 3]),
        "warmup_active": True,
    }


class _CreatesFile:
    """Unpickling this object would create ``path`` (a stand-in for arbitrary code execution)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (open, (str(self.path), "w"))


class _RunsShell:
    """Unpickling this object would run a shell command through os.system."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):  # noqa: ANN204
        return (os.system, (f"touch '{self.path}'",))


def _leftovers(directory: Path, keep: Path) -> list[Path]:
    return [p for p in directory.iterdir() if p != keep]


def test_round_trip(tmp_path: Path) -> None:
    path = save_checkpoint(_state(2.5), tmp_path / "sub" / "ckpt.pt")  # creates the directory
    assert path == tmp_path / "sub" / "ckpt.pt"
    state = load_checkpoint(path)
    assert state["format_version"] == FORMAT_VERSION
    assert torch.equal(state["model"]["w"], torch.full((3, 3), 2.5))
    assert torch.equal(state["model"]["b"], torch.arange(3))
    assert state["config"] == {"model.depth": 8, "optim.milestones": [10, 20]}
    assert state["iteration"] == 7 and state["warmup_active"] is True


def test_save_leaves_no_temp_file_and_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(_state(1.0), path)
    save_checkpoint(_state(3.0), path)
    assert _leftovers(tmp_path, path) == []
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((3, 3), 3.0))


def test_failed_save_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    save_checkpoint(_state(1.0), path)
    before = path.read_bytes()
    bad = {**_state(9.0), "lock": threading.Lock()}  # torch.save fails part-way through (after the tensors)
    with pytest.raises(Exception):
        save_checkpoint(bad, path)
    assert path.read_bytes() == before
    assert _leftovers(tmp_path, path) == []  # the temp file was removed
    assert torch.equal(load_checkpoint(path)["model"]["w"], torch.full((3, 3), 1.0))


def test_failed_first_save_leaves_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pt"
    with pytest.raises(Exception):
        save_checkpoint({"lock": threading.Lock()}, path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("payload", [_CreatesFile, _RunsShell])
@pytest.mark.parametrize("writer", ["torch.save", "pickle"])
def test_malicious_pickle_is_refused_without_running(tmp_path: Path, payload: type, writer: str) -> None:
    marker = tmp_path / "pwned"
    evil = {"format_version": FORMAT_VERSION, "iteration": 1, "model": payload(marker)}
    path = tmp_path / "evil.pt"
    if writer == "torch.save":
        torch.save(evil, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(evil, f)

    # The payload is real: an unsafe load does run it.
    if writer == "torch.save":
        torch.load(path, weights_only=False)
    else:
        with open(path, "rb") as f:
            pickle.load(f)
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError, match="refused") as refused:
        load_checkpoint(path)
    assert not marker.exists()
    # One line, and not torch's advice to re-run with weights_only=False, which would run the payload.
    assert "\n" not in str(refused.value) and "weights_only=False" not in str(refused.value)
    with pytest.raises(CheckpointError):
        load_latest_checkpoint([path])
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0, 10, 100, 0.5, -1])
def test_truncated_checkpoint_is_refused(tmp_path: Path, keep: float) -> None:
    good = save_checkpoint(_state(), tmp_path / "good.pt")
    data = good.read_bytes()
    cut = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)


def test_an_empty_checkpoint_says_so(tmp_path: Path) -> None:
    """It was refused with an empty reason (torch raises a bare EOFError)."""
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"empty.pt.*refused: the file is empty \(0 bytes"):
        load_checkpoint(tmp_path / "empty.pt")


def test_missing_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


@pytest.mark.parametrize("obj", [[1, 2, 3], torch.zeros(3), {"model": {}}, {"format_version": 999}])
def test_non_checkpoint_is_refused(tmp_path: Path, obj: object) -> None:
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    torch.load(path, weights_only=True)  # readable, just not ours
    with pytest.raises(CheckpointError, match="not a resnet_core checkpoint"):
        load_checkpoint(path)


def test_load_latest_falls_back_to_previous_good(tmp_path: Path) -> None:
    old = save_checkpoint(_state(1.0), tmp_path / "ckpt_10.pt")
    new = save_checkpoint(_state(2.0), tmp_path / "ckpt_20.pt")
    path, state = load_latest_checkpoint([old, new])
    assert path == new and torch.equal(state["model"]["w"], torch.full((3, 3), 2.0))

    new.write_bytes(new.read_bytes()[:200])  # the newest got truncated
    path, state = load_latest_checkpoint([old, new])
    assert path == old and torch.equal(state["model"]["w"], torch.full((3, 3), 1.0))

    path, _ = load_latest_checkpoint([old, new, tmp_path / "missing.pt"])
    assert path == old


def test_load_latest_raises_listing_every_failure(tmp_path: Path) -> None:
    truncated = tmp_path / "a.pt"
    truncated.write_bytes(b"PK\x03\x04garbage")
    other = tmp_path / "b.pt"
    torch.save([1], other)
    with pytest.raises(CheckpointError) as info:
        load_latest_checkpoint([truncated, other, tmp_path / "c.pt"])
    message = str(info.value)
    assert "a.pt" in message and "b.pt" in message and "c.pt" in message
    with pytest.raises(CheckpointError, match="no checkpoint given"):
        load_latest_checkpoint([])
