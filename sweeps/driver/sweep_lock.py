"""One driver per sweep, held by a lock on its storage: ``<storage-path>/<experiment>/driver.lock``.

The parent run's heartbeat tells other hosts that a driver lives, but a heartbeat cannot be written while the
tracking store is down, and the sweeps wait out outages longer than its timeout: a live driver would look dead,
and a second command could mark its runs KILLED or resume the sweep beside it. The lock does not depend on the
store. The driver holds an exclusive ``flock`` on the file from before its parent run opens until the sweep ends;
the kernel drops it when the process dies, however it dies (on NFS, the server does, once the client's lease
ends). Storage that is not a local folder (``s3://``) has no lock: the heartbeat alone guards it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from tracking.spool import SpoolFileError, open_own_file
from tracking.sweep_run import ConcurrentSweepError


class SweepPlan(Protocol):
    """What the lock reads of a sweep's plan (sweeps/driver/plan.py checks the lock before anything starts)."""

    sweep_id: str
    is_local_storage: bool

LOCK_FILE = "driver.lock"


def lock_path(plan: SweepPlan) -> Path | None:
    return Path(plan.sweep_id) / LOCK_FILE if plan.is_local_storage else None


def check_sweep_unlocked(plan: SweepPlan) -> None:
    """Refuse (ConcurrentSweepError) when a live driver holds this sweep's lock. Reads only: takes the lock for
    a moment if it can, and creates nothing."""
    path = lock_path(plan)
    if path is None or not path.exists():
        return
    try:
        fd = open_own_file(path, os.O_RDWR)
    except SpoolFileError as exc:  # a link or another user's file planted there
        raise ValueError(f"the sweep's lock file: {exc}") from None
    try:
        _take_or_refuse(fd, path)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def holding_sweep_lock(plan: SweepPlan) -> Iterator[None]:
    """Hold this sweep's lock for the body (nothing for storage that is not a local folder); raises
    ConcurrentSweepError, before the body, when another live driver holds it."""
    path = lock_path(plan)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_own_file(path, os.O_RDWR | os.O_CREAT)
    try:
        _take_or_refuse(fd, path)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())  # for the refusal's message
        yield
    finally:
        os.close(fd)  # releases the lock; the file stays (removing it could let two drivers lock two files)


def _take_or_refuse(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
        raise ConcurrentSweepError(
            f"another driver of this sweep is running ({holder} holds {path}): one driver per sweep, even while "
            f"the tracking store is unreachable and its heartbeat is old; wait for it to end, or stop it first "
            f"(Ctrl-C, ray job stop) and then --resume") from None
