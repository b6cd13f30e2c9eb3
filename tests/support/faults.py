"""Fault injection for the failure tests (tests/test_faults*.py, docs/failure-modes.md): test-only.

A ``FaultHooks`` object is handed to the sweep as its trial hooks (``run_sweep(plan, hooks=...)``, or
``tests/support/faulty_sweep.py`` for a sweep in its own process); Tune ships it to every trial. A spec::

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

KINDS = (
    "raise",                         # an exception after the evaluation is reported (a crash)
    "sigkill",                       # the trial's process kills itself (OOM killer, preempted node)
    "hang",                          # the trial stops making progress (for killing the driver mid-sweep)
    "hold",                          # wait for the "release" file (a sync point for tests)
    "corrupt_checkpoint",            # truncate the newest persisted checkpoint, then crash
    "malicious_checkpoint",          # replace the newest persisted checkpoint by a code-running pickle, then crash
    "kill_during_checkpoint_write",  # SIGKILL half-way through writing the checkpoint file
)


class Exploit:
    """A pickle that runs a shell command when loaded without ``weights_only`` (what an attacker would plant)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class FaultHooks:
    """Trial hooks (sweeps.trial.trainable.TrialHooks) that fire the faults of a spec at the trials it names."""

    def __init__(self, spec: dict[str, Any]):
        for fault in spec.get("faults", []):
            if fault.get("kind") not in KINDS:
                raise ValueError(f"unknown fault kind {fault.get('kind')!r}; choose from {list(KINDS)}")
        self.markers = Path(spec.get("markers", "."))
        self.faults = list(enumerate(spec.get("faults", [])))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> FaultHooks:
        return cls(json.loads(Path(path).read_text()))

    def _fire(self, trial: str, kinds: tuple[str, ...], iteration: int, **details: Any) -> tuple[dict, Path] | None:
        for index, fault in self.faults:
            if fault["trial"] != trial or fault["kind"] not in kinds or iteration < fault.get("after", 0):
                continue
            for n in range(1, int(fault.get("times", 1)) + 1):
                marker = self.markers / f"{index}-{fault['kind']}.{n}"
                try:
                    fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    continue
                from ray import tune

                with os.fdopen(fd, "w") as f:
                    json.dump({"trial_id": tune.get_context().get_trial_id(), "iteration": iteration,
                               "pid": os.getpid(), "time": time.time(), **details}, f)
                    f.flush()
                    os.fsync(f.fileno())
                return fault, marker
        return None

    @contextlib.contextmanager
    def checkpoint_write(self, trial: str, iteration: int, directory: Path) -> Iterator[None]:
        """Maybe die half-way through writing the checkpoint file (torch.save is swapped in this process only)."""
        if not self._fire(trial, ("kill_during_checkpoint_write",), iteration, directory=str(directory)):
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

    def after_report(self, trial: str, iteration: int) -> None:
        """A "hold" is waited out first; then at most one fault that ends the attempt fires."""
        held = self._fire(trial, ("hold",), iteration)
        if held is not None:
            release = Path(held[0]["release"])
            deadline = time.time() + float(held[0].get("timeout", 600))
            while not release.exists() and time.time() < deadline:
                time.sleep(0.1)
        checkpoint_dir = _persisted_checkpoint()
        fired = self._fire(trial, ("raise", "sigkill", "hang", "corrupt_checkpoint", "malicious_checkpoint"),
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
            path = Path(checkpoint_dir or "") / "checkpoint.pt"
            if kind == "corrupt_checkpoint":
                data = path.read_bytes()
                path.write_bytes(data[: len(data) // 2])
            else:
                pwned = marker.with_name(marker.name + ".pwned")
                torch.save({"model": Exploit(f"touch {shlex.quote(str(pwned))}")}, path)
        raise RuntimeError(f"injected fault {kind!r} at iteration {iteration} (marker {marker})")


def _persisted_checkpoint() -> str | None:
    """The path of the newest persisted checkpoint: Tune's, or in a Ray Train worker the newest one Ray Train
    registered (waiting until it registered the one just reported, so a retry is handed that one)."""
    from ray import train, tune

    persisted = tune.get_checkpoint()
    if persisted is None:
        try:
            reported = train.get_all_reported_checkpoints()
        except RuntimeError:  # neither a Tune nor a Ray Train session
            return None
        persisted = reported[-1].checkpoint if reported else None
    return persisted.path if persisted else None


def _ship_by_value() -> None:
    """Trial processes cannot import tests/: have Ray pickle this module's classes by value instead."""
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


_ship_by_value()


def write_faults(directory: Path, faults: list[dict]) -> Path:
    markers = directory / "markers"
    markers.mkdir(parents=True, exist_ok=True)
    spec = directory / "faults.json"
    spec.write_text(json.dumps({"markers": str(markers), "faults": faults}))
    return spec
