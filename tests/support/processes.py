"""Helpers for tests that start real servers and Ray nodes as subprocesses, and stop only what they started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support import REPO


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_group(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Stop a process started with ``start_new_session=True`` and its whole group (SIGKILL if it lingers)."""
    for signal_to_send in (sig, signal.SIGKILL):
        try:
            os.killpg(process.pid, signal_to_send)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            continue
    process.wait()


def session_pids(marker_text: str) -> list[int]:
    """Processes whose command line mentions ``marker_text`` (e.g. our own Ray's temp dir)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker_text.encode() in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


def kill_ray_session(processes: list[subprocess.Popen], temp_dir: str, timeout: float = 30) -> bool:
    """SIGKILL the given process groups, then any process of the Ray session in ``temp_dir`` that left them.

    Never `ray stop`, which would stop every Ray on the machine. Returns True when nothing is left.
    """
    for process in processes:
        stop_group(process, signal.SIGKILL)
    deadline = time.time() + timeout
    while (pids := session_pids(temp_dir)) and time.time() < deadline:
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.5)
    return not session_pids(temp_dir)


def kill_driver(process: subprocess.Popen, ray_tmp: str) -> None:
    """SIGKILL a driver started with start_new_session=True and everything of its embedded Ray.

    Only what we started: its process group, then any process of its Ray session (found by the session's
    own temp dir) that left the group. Never `ray stop`, which would stop every Ray on the machine.
    """
    assert kill_ray_session([process], ray_tmp), "processes of the killed driver's Ray survived"


def sweep_command(*argv: str, faults: Path | None = None) -> list[str]:
    """The depth study's command line; with ``faults``, the same study with those faults injected."""
    if faults is not None:
        return [sys.executable, str(REPO / "tests" / "support" / "faulty_sweep.py"), str(faults), *argv]
    return [sys.executable, str(REPO / "sweeps" / "depth_vs_error.py"), *argv]


def driver_env(ray_tmp: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", **extra}
    if "RAY_ADDRESS" not in extra:
        env.pop("RAY_ADDRESS", None)
    return env


def wait_for(condition, timeout: float, what: str, process: subprocess.Popen | None = None, log: Path | None = None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the driver exited ({process.returncode}) while waiting for {what}:\n"
                        + (log.read_text()[-5000:] if log else ""))
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}" + (":\n" + log.read_text()[-5000:] if log else ""))


def terminated_in_saved_state(experiment_dir: Path) -> set[str]:
    """The trials (by name) that Tune's saved experiment state under ``experiment_dir`` records as TERMINATED.

    A trial closes its MLflow run before Tune processes its last result: a state saved in between still holds
    the trial as RUNNING, and a driver killed then would run it again on --resume. Tests that kill a driver
    after some trials finished wait for this instead of for any new save."""
    names: set[str] = set()
    for path in experiment_dir.glob("experiment_state*.json"):
        try:
            saved = [json.loads(entry[0]) for entry in json.loads(path.read_text())["trial_data"]]
        except (OSError, ValueError, KeyError):  # being rewritten
            continue
        names |= {t["custom_trial_name"] for t in saved
                  if t.get("status") == "TERMINATED" and t.get("custom_trial_name")}
    return names
