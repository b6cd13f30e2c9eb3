"""The spool: tracking calls the store did not take, kept in order in a JSONL file and re-sent later.

Each line is one entry of ``operations`` (an artifact's file is copied next to the spool). Entries carry
their original timestamps, so sending twice logs nothing twice. Spools may live on shared storage, so a
line is never trusted: it is sent only to the spool's own tracking store (never to a URI the line names),
and an artifact line naming anything but a plain file in the spool is refused (``operations.check_entry``), as is
one whose file or folder is a symbolic link; files are written only as new files, so a planted link is never
written through. Trials spool their own calls (one file per trial); the driver spools the sweep's end.
``python -m sweeps.resend`` sends what is left. Within one process, a thread may append while another flushes
(a trial's background sender, ``sender.Sender``): the line is added at once and the flush keeps it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from mlflow.tracking import MlflowClient

from sweeps.tracking.operations import Entry, check_entry, send
from sweeps.tracking.store import STORE_ERRORS, bound_http_retries, is_transient, short_error, with_retries

log = logging.getLogger(__name__)

SPOOL_DIRNAME = "tracking_spool"  # under the sweep's storage directory


class Spool:
    """The unsent tracking calls of one run (or of the sweep's end), in order, in ``path`` (JSONL)."""

    def __init__(self, path: str | os.PathLike, tracking_uri: str):
        self.path = Path(path)
        self.files = self.path.with_suffix(".files")
        self.tracking_uri = tracking_uri
        self._mutex = threading.Lock()  # this process's appends against its own flush's reading and rewriting
        self._flushing = False  # this process holds the lock and flushes: an append goes on, and is kept

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def pending(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def count(self) -> int:
        """How many calls wait in the spool."""
        return len(self.entries()) if self.pending() else 0

    def entries(self) -> list[Entry]:
        return self._read()[0]

    def _read(self, offset: int = 0) -> tuple[list[Entry], int]:
        """The entries from byte ``offset`` on, and where the file ends."""
        if not self.path.exists():
            return [], offset
        with open(self.path, "rb") as f:
            f.seek(offset)
            data = f.read()
        entries = []
        for line in data.decode().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut short by a kill mid-append: its call is lost, not the rest
                log.warning("skipping an unreadable line in %s", self.path)
        return entries, offset + len(data)

    def append(self, entry: Entry) -> None:
        """Keep ``entry`` (an artifact's file is copied here first: the original may be temporary).

        Never waits for this process's own flush (it keeps the line); waits while another process holds the spool.
        """
        while True:
            with self._mutex:
                if self._flushing:
                    self._write(entry)
                    return
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.path.with_suffix(".lock"), "a") as lock:
                    try:
                        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:  # another process flushes (or this one is about to): try again
                        pass
                    else:
                        try:
                            self._write(entry)
                        finally:
                            fcntl.flock(lock, fcntl.LOCK_UN)
                        return
            time.sleep(0.01)

    def _write(self, entry: Entry) -> None:
        if entry["op"] == "artifact":
            self.files.mkdir(parents=True, exist_ok=True)
            kept = self.files / f"{len(list(self.files.iterdir())):04d}-{entry['name']}"
            with open(entry["path"], "rb") as source, _new_file(kept, "wb") as copy:
                shutil.copyfileobj(source, copy)
            entry = {**entry, "path": kept.name}  # relative: the spool directory may be moved before resend
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")  # no URI: a line is sent only to this spool's own store
            f.flush()
            os.fsync(f.fileno())

    def flush(self, client: MlflowClient | None = None, attempts: int = 1) -> int:
        """Send the spooled calls in order; stop at the first that fails. Returns how many are left.

        Raises only for a permanent error (a call the store rejects), never because the store is down.
        Every call goes to this spool's tracking store (``client`` None: a client of ``tracking_uri``); a line
        ``check_entry`` refuses is dropped with an error in the log.
        """
        if not self.pending():
            return 0
        if client is None:
            bound_http_retries(self.tracking_uri)
            client = MlflowClient(self.tracking_uri)
        with self._locked():
            with self._mutex:
                self._flushing = True
                entries, read_to = self._read()
            sent = 0  # entries done: sent, or refused
            try:
                for entry in entries:
                    try:
                        call = self._checked(entry)
                    except ValueError as exc:
                        log.error("refused a spooled call in %s, not sent: %s", self.path, exc)
                    else:
                        with_retries(lambda: send(client, call), "re-send spooled call", attempts=attempts)
                    sent += 1
            except STORE_ERRORS as exc:
                if not is_transient(exc):
                    raise
                log.warning("tracking store still unreachable (%s); %d spooled call(s) kept in %s",
                            short_error(exc), len(entries) - sent, self.path)
            finally:
                with self._mutex:  # keep what this process appended meanwhile, behind what is left
                    self._flushing = False
                    self._rewrite(entries[sent:] + self._read(read_to)[0])
            return len(entries) - sent

    def _checked(self, entry: Entry) -> Entry:
        """``entry`` as it may be sent (an artifact's file found in this spool's folder, never through a symbolic
        link); ValueError naming what a forged line got wrong (``check_entry``)."""
        check_entry(entry)
        if entry["op"] != "artifact":
            return entry
        return {**entry, "path": str(_unlinked(self.files / entry["path"]))}

    def _rewrite(self, remaining: list[Entry]) -> None:
        if not remaining:  # all sent: leave nothing behind (one writer per spool, so the lock can go too)
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.files, ignore_errors=True)
            self.path.with_suffix(".lock").unlink(missing_ok=True)
            return
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.unlink(missing_ok=True)
        with _new_file(tmp, "w") as f:
            f.write("".join(json.dumps(e) + "\n" for e in remaining))
        os.replace(tmp, self.path)


# Spools may lie on storage other users write to: a symbolic link planted there must not make the resending user
# upload a file it may read (a spooled artifact linked to its SSH key) or overwrite one it may write (a link
# where a copy or the rewritten spool goes).

def _unlinked(path: Path) -> Path:
    """``path`` if neither it nor its folder is a symbolic link; ValueError (the call is refused) otherwise."""
    if path.is_symlink() or path.parent.is_symlink():
        raise ValueError(f"spooled artifact {path} is reached through a symbolic link")
    return path


def _new_file(path: Path, mode: str):
    """``path`` opened for writing as a new file, owner-only: fails if anything, a link included, is there."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), mode)


def spool_files(directory: str | os.PathLike) -> list[Path]:
    """The spool files under ``directory`` (a spool directory or a sweep's storage directory)."""
    directory = Path(directory)
    if (directory / SPOOL_DIRNAME).is_dir():
        directory = directory / SPOOL_DIRNAME
    return sorted(directory.glob("*.jsonl")) if directory.is_dir() else []


def resend(directory: str | os.PathLike, tracking_uri: str, attempts: int = 3) -> int:
    """Send everything spooled under ``directory`` to ``tracking_uri`` (the sweep's own store, never one a
    spool line names); returns how many calls are still unsent."""
    bound_http_retries(tracking_uri)
    client = MlflowClient(tracking_uri)
    # Trials' spools first: the sweep's own (closing runs left RUNNING, then the parent) comes last.
    paths = sorted(spool_files(directory), key=lambda p: p.name.startswith("sweep-"))
    return sum(Spool(path, tracking_uri).flush(client, attempts=attempts) for path in paths)
