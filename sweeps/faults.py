"""Fault injection for the failure tests (tests/test_faults*.py, docs/failure-modes.md). Off by default.

Set ``RESNET_STUDIES_FAULTS`` to a JSON file before starting a sweep; the driver reads it once and ships it
to every trial (so it works for trials on any node, and needs nothing in the TrainConfig)::

    {"markers": "/tmp/faults",                 # where fired faults leave marker files
     "faults": [{"trial": "plain-8 seed 0",    # run name of the trial to hit
                 "kind": "raise",              # see KINDS
                 "after": 6,                   # at the first evaluation at or past this iteration
                 "times": 1,                   # how often it fires in total (across retries)
                 "release": "/tmp/go"}]}       # "hold" only: wait until this file exists

A fault fires at most ``times`` times: each firing creates a marker file ``<index>-<kind>.<n>`` with
O_EXCL before acting, so a retried trial does not crash again forever. The marker holds JSON with the
trial id, the iteration and what the fault did, for the test to check.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

FAULTS_ENV = "RESNET_STUDIES_FAULTS"
KINDS = (
    "raise",                         # an exception after the evaluation is reported (a crash)
    "sigkill",                       # the trial's process kills itself (OOM killer, preempted node)
    "hang",                          # the trial stops making progress (for killing the driver mid-sweep)
    "hold",                          # wait for the "release" file (a sync point for tests)
    "corrupt_checkpoint",            # truncate the newest persisted checkpoint, then crash
    "malicious_checkpoint",          # replace the newest persisted checkpoint by a code-running pickle, then crash
    "kill_during_checkpoint_write",  # SIGKILL half-way through writing the checkpoint file
)


def load_fault_spec() -> dict[str, Any] | None:
    """The fault spec named by ``RESNET_STUDIES_FAULTS`` (read in the driver), or None."""
    path = os.environ.get(FAULTS_ENV)
    if not path:
        return None
    spec = json.loads(Path(path).read_text())
    for fault in spec.get("faults", []):
        if fault.get("kind") not in KINDS:
            raise ValueError(f"{FAULTS_ENV}: unknown fault kind {fault.get('kind')!r}; choose from {list(KINDS)}")
    return spec


class Exploit:
    """A pickle that runs a shell command when loaded without ``weights_only`` (what an attacker would plant)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class TrialFaults:
    """The faults aimed at one trial (a no-op when there are none)."""

    def __init__(self, spec: dict[str, Any] | None, trial_name: str, trial_id: str):
        spec = spec or {}
        self.markers = Path(spec.get("markers", "."))
        self.faults = [(i, f) for i, f in enumerate(spec.get("faults", [])) if f.get("trial") == trial_name]
        self.trial_id = trial_id

    def _fire(self, kinds: tuple[str, ...], iteration: int, **details: Any) -> tuple[dict, Path] | None:
        for index, fault in self.faults:
            if fault["kind"] not in kinds or iteration < fault.get("after", 0):
                continue
            for n in range(1, int(fault.get("times", 1)) + 1):
                marker = self.markers / f"{index}-{fault['kind']}.{n}"
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    continue
                with os.fdopen(fd, "w") as f:
                    json.dump({"trial_id": self.trial_id, "iteration": iteration, "pid": os.getpid(),
                               "time": time.time(), **details}, f)
                    f.flush()
                    os.fsync(f.fileno())
                return fault, marker
        return None

    @contextlib.contextmanager
    def checkpoint_write(self, iteration: int, directory: str | os.PathLike) -> Iterator[None]:
        """Around the trainable's checkpoint write: maybe die half-way through writing the file."""
        if not self.faults or not self._fire(("kill_during_checkpoint_write",), iteration, directory=str(directory)):
            yield
            return
        real_save = torch.save

        def half_then_die(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            data = buffer.getvalue()
            handle = open(f, "wb") if isinstance(f, (str, os.PathLike)) else f
            handle.write(data[: len(data) // 2])
            handle.flush()
            os.fsync(handle.fileno())
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = half_then_die
        try:
            yield
        finally:
            torch.save = real_save

    def after_report(self, iteration: int, checkpoint_dir: str | None, checkpoint_file: str) -> None:
        """After an evaluation was reported to Tune (with its checkpoint persisted in ``checkpoint_dir``).

        A "hold" is waited out first; then at most one fault that ends the attempt fires.
        """
        if not self.faults:
            return
        held = self._fire(("hold",), iteration)
        if held is not None:
            release = Path(held[0]["release"])
            deadline = time.time() + float(held[0].get("timeout", 600))
            while not release.exists() and time.time() < deadline:
                time.sleep(0.1)
        fired = self._fire(("raise", "sigkill", "hang", "corrupt_checkpoint", "malicious_checkpoint"),
                           iteration, checkpoint=checkpoint_dir)
        if fired is None:
            return
        fault, marker = fired
        kind = fault["kind"]
        if kind == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if kind == "hang":
            while True:
                time.sleep(60)
        if kind in ("corrupt_checkpoint", "malicious_checkpoint"):
            path = Path(checkpoint_dir or "") / checkpoint_file
            if kind == "corrupt_checkpoint":
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 2])
            else:
                pwned = marker.with_name(marker.name + ".pwned")
                torch.save({"model": Exploit(f"touch {shlex.quote(str(pwned))}")}, path)
        raise RuntimeError(f"injected fault {kind!r} at iteration {iteration} (marker {marker})")
