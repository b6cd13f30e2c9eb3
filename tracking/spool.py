"""The spool: tracking calls the store did not take, kept in order in a JSONL file and re-sent later.

Each line is one entry of ``operations`` (an artifact's file is copied next to the spool). Entries carry
their original timestamps, so sending twice logs nothing twice. Spools may live on shared storage, so a
line is never trusted: it is sent only to the spool's own tracking store (never to a URI the line names),
and an artifact line naming anything but a plain file in the spool is refused (``operations.check_entry``), as is
one whose file or folder is a symbolic link. Every spool file (the ``.jsonl``, its ``.lock``, its ``.rejected``) is
opened with ``O_NOFOLLOW`` and used only if it is a regular file of the current user (``SpoolFileError`` otherwise,
naming the path); other files are written only as new files, so a planted link is never written through. A line
that cannot be parsed, that ``check_entry`` refuses or that the store rejects as a bad request moves to
``<spool>.rejected`` (logged with its line number and why) and the lines behind it go on. Trials spool their own calls (one file per trial); the driver spools the sweep's end.
``python -m sweeps.resend`` sends what is left. Within one process, a thread may append while another flushes
(a trial's background sender, ``sender.Sender``): the line is added at once and the flush keeps it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import json
import logging
import os
import shutil
import stat
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from mlflow.tracking import MlflowClient

from tracking.operations import Entry, check_entry, send
from tracking.store import STORE_ERRORS, bound_http_retries, is_transient, short_error, with_retries

log = logging.getLogger(__name__)

SPOOL_DIRNAME = "tracking_spool"  # under the sweep's storage directory


def node_spool_root() -> Path:
    """Where spools go on a node's own disk when the sweep's storage is not a local folder: this user's cache,
    never a folder all users share."""
    return Path.home() / ".cache" / "resnet-studies" / SPOOL_DIRNAME


class Spool:
    """The unsent tracking calls of one run (or of the sweep's end), in order, in ``path`` (JSONL)."""

    def __init__(self, path: str | os.PathLike, tracking_uri: str):
        self.path = Path(path)
        self.files = self.path.with_suffix(".files")
        self.tracking_uri = tracking_uri
        self._mutex = threading.Lock()  # this process's appends against its own flush's reading and rewriting
        self._flushing = False  # this process holds the lock and flushes: an append goes on, and is kept
        self._own_runs: set[str] = set()  # runs seen to be this spool's (``_check_owner``)

    @property
    def rejected(self) -> Path:
        """Where lines that can never be sent are set aside (``<spool>.rejected``)."""
        return self.path.with_name(self.path.name + ".rejected")

    def _lock_fd(self) -> int:
        """The spool's lock file, opened (created) without following a link. It is never removed: removing a
        lock file another process has opened lets a third lock a new file of the same name, so two hold "the"
        lock at once; one empty file per spool is the price."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return open_own_file(self.path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = self._lock_fd()
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def pending(self) -> bool:
        """Whether anything waits here (a link or other non-file counts: flushing it then says why it is refused)."""
        try:
            info = os.lstat(self.path)
        except (FileNotFoundError, NotADirectoryError):  # nothing was ever spooled here
            return False
        return not stat.S_ISREG(info.st_mode) or info.st_size > 0

    def count(self) -> int:
        """How many calls wait in the spool."""
        return len(self.entries()) if self.pending() else 0

    def entries(self) -> list[Entry]:
        """The readable entries, in order (a line that cannot be parsed is left out)."""
        entries = []
        for line in self._read()[0]:
            with contextlib.suppress(ValueError):
                entries.append(_parsed(line))
        return entries

    def _read(self, offset: int = 0) -> tuple[list[bytes], int]:
        """The lines from byte ``offset`` on, and where the file ends."""
        try:
            fd = open_own_file(self.path, os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return [], offset
        with os.fdopen(fd, "rb") as f:
            f.seek(offset)
            data = f.read()
        return [line for line in data.split(b"\n") if line.strip()], offset + len(data)

    def append(self, entry: Entry) -> None:
        """Keep ``entry`` (an artifact's file is copied here first: the original may be temporary).

        Never waits for this process's own flush (it keeps the line); waits while another process holds the spool.
        """
        while True:
            with self._mutex:
                if self._flushing:
                    self._write(entry)
                    return
                fd = self._lock_fd()
                try:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:  # another process flushes (or this one is about to): try again
                        pass
                    else:
                        try:
                            self._write(entry)
                        finally:
                            fcntl.flock(fd, fcntl.LOCK_UN)
                        return
                finally:
                    os.close(fd)
            time.sleep(0.01)

    def _write(self, entry: Entry) -> None:
        if entry["op"] == "artifact":
            self.files.mkdir(parents=True, exist_ok=True)
            if self.files.is_symlink():
                raise SpoolFileError(f"refused spool folder {self.files}: it is a symbolic link")
            kept = self.files / f"{len(list(self.files.iterdir())):04d}-{entry['name']}"
            with open(entry["path"], "rb") as source, _new_file(kept, "wb") as copy:
                shutil.copyfileobj(source, copy)
            entry = {**entry, "path": kept.name}  # relative: the spool directory may be moved before resend
        # No URI in the line: it is sent only to this spool's own store.
        _append_line(self.path, json.dumps(entry).encode())

    def flush(self, client: MlflowClient | None = None, attempts: int = 1) -> int:
        """Send the spooled calls in order; stop at the first the store does not take for now. Returns how many
        are left.

        Never raises because the store is down, nor for a line: one that cannot be parsed, that ``check_entry``
        refuses, or that the store rejects as a bad request moves to ``rejected`` and the rest goes on. Raises
        SpoolFileError when a spool file itself may not be used (a link, another user's, unreadable). Every call
        goes to this spool's tracking store (``client`` None: a client of ``tracking_uri``).
        """
        if not self.pending():
            return 0
        if client is None:
            bound_http_retries(self.tracking_uri)
            client = MlflowClient(self.tracking_uri)
        with self._locked():
            with self._mutex:
                self._flushing = True
                try:
                    lines, read_to = self._read()
                except BaseException:
                    self._flushing = False
                    raise
            done = 0  # lines done: sent, or set aside
            try:
                for number, line in enumerate(lines, 1):
                    problem = self._deliver(client, line, attempts)
                    if problem is not None:
                        self._set_aside(number, line, problem)
                    done += 1
            except STORE_ERRORS as exc:  # only transient ones reach here (``_deliver``)
                log.warning("tracking store still unreachable (%s); %d spooled call(s) kept in %s",
                            short_error(exc), len(lines) - done, self.path)
            finally:
                with self._mutex:  # keep what this process appended meanwhile, behind what is left
                    self._flushing = False
                    self._rewrite(lines[done:] + self._read(read_to)[0])
            return len(lines) - done

    def _deliver(self, client: MlflowClient, line: bytes, attempts: int) -> str | None:
        """Send one spooled line: None when the store took it, else why it can never be sent. Raises the store's
        error when it is unreachable or busy (retrying later may succeed)."""
        try:
            call = self._checked(_parsed(line))
            with_retries(lambda: self._check_owner(client, call), "check a spooled call's run", attempts=attempts)
            superseded = with_retries(lambda: _superseded(client, call), "compare a spooled call", attempts=attempts)
            if superseded:
                log.info("skipped a spooled call in %s: %s", self.path, superseded)
                return None
            with_retries(lambda: send(client, call), "re-send spooled call", attempts=attempts)
        except STORE_ERRORS as exc:
            if is_transient(exc):
                raise
            return f"the tracking store rejected it: {short_error(exc)}"
        except (ValueError, KeyError, TypeError, AttributeError) as exc:  # a malformed or forged line
            return f"{type(exc).__name__}: {exc}"
        return None

    def _check_owner(self, client: MlflowClient, entry: Entry) -> None:
        """Refuse (ValueError) a call for a run that is not this spool's: a sweep's spool (``sweep-<parent run
        id>``) may name only its parent run and that run's experiment, a trial's spool (``<trial id>``) only the
        run tagged with its trial id. A forged line must not change another run the resending user may write."""
        if self.path.stem.startswith("sweep-"):
            parent = self.path.stem.removeprefix("sweep-")
            if entry["run_id"] != parent:
                raise ValueError(f"names run {entry['run_id']!r}; this sweep spool's run is {parent!r}")
            if entry["op"] == "close_orphans" and entry["experiment_id"] != client.get_run(parent).info.experiment_id:
                raise ValueError(f"names experiment {entry['experiment_id']!r}, not its parent run's")
            return
        if entry["run_id"] in self._own_runs:
            return
        trial_id = client.get_run(entry["run_id"]).data.tags.get("trial_id")
        if trial_id != self.path.stem:
            raise ValueError(f"names run {entry['run_id']!r}, whose trial is {trial_id!r}, not this spool's "
                             f"{self.path.stem!r}")
        self._own_runs.add(entry["run_id"])

    def _set_aside(self, number: int, line: bytes, problem: str) -> None:
        """Move line ``number`` (it can never be sent) to ``rejected``, and say so."""
        _append_line(self.rejected, line)
        log.error("spooled call on line %d of %s can never be sent (%s); moved to %s, the rest goes on",
                  number, self.path, problem, self.rejected)

    def _checked(self, entry: Entry) -> Entry:
        """``entry`` as it may be sent (an artifact's file found in this spool's folder, never through a symbolic
        link); ValueError naming what a forged line got wrong (``check_entry``)."""
        check_entry(entry)
        if entry["op"] != "artifact":
            return entry
        path = _unlinked(self.files / entry["path"])
        try:  # a local file, so a missing or unreadable one is this line's fault, not the store's
            os.close(open_own_file(path, os.O_RDONLY))
        except (OSError, SpoolFileError) as exc:
            raise ValueError(f"spooled artifact file {path} cannot be read: {exc}") from None
        return {**entry, "path": str(path)}

    def _rewrite(self, remaining: list[bytes]) -> None:
        """Keep only the ``remaining`` lines (nothing left: the spool and its files go; the lock file stays)."""
        if not remaining:
            self.path.unlink(missing_ok=True)
            shutil.rmtree(self.files, ignore_errors=True)
            return
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.unlink(missing_ok=True)
        with _new_file(tmp, "wb") as f:
            f.write(b"".join(line + b"\n" for line in remaining))
        os.replace(tmp, self.path)  # replaces a link planted at the path, never writes through it


# Spools may lie on storage other users write to: a symbolic link planted there must not make the resending user
# upload a file it may read (a spooled artifact linked to its SSH key) or overwrite one it may write (a link
# where a copy or the rewritten spool goes).

class SpoolFileError(Exception):
    """A spool file may not be used: a link, not a regular file, another user's, or it cannot be opened. A local
    problem, not an outage of the store (deliberately no OSError, which the store's retries take for one)."""


def open_own_file(path: Path, flags: int) -> int:
    """``path`` opened with ``flags`` (owner-only if created), never through a symbolic link, and only if it is a
    regular file of the current user; SpoolFileError naming the path otherwise. FileNotFoundError (or NotADirectoryError)
    as is when ``flags`` do not create, and a full disk's OSError as is."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o600)
    except (FileNotFoundError, NotADirectoryError):
        if not flags & os.O_CREAT:
            raise
        raise SpoolFileError(f"cannot create {path}: its folder is missing") from None
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):  # a full disk: the sender logs its calls as LOST, goes on
            raise
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise SpoolFileError(f"refused {path}: {why}") from None
    info = os.fstat(fd)
    why = ("it is not a regular file" if not stat.S_ISREG(info.st_mode) else
           f"it belongs to uid {info.st_uid}, not to this user ({os.getuid()})" if info.st_uid != os.getuid() else None)
    if why:
        os.close(fd)
        raise SpoolFileError(f"refused {path}: {why}")
    return fd


def _append_line(path: Path, line: bytes) -> None:
    """Append ``line`` to ``path`` (created owner-only), synced; on a line of its own even if the last one was cut
    short by a kill mid-append (the torn line alone is then unreadable, not this one too)."""
    fd = open_own_file(path, os.O_RDWR | os.O_APPEND | os.O_CREAT)
    try:
        size = os.fstat(fd).st_size
        torn = size > 0 and os.pread(fd, 1, size - 1) != b"\n"
        os.write(fd, (b"\n" if torn else b"") + line + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)


def _superseded(client: MlflowClient, entry: Entry) -> str | None:
    """Why the run already holds something newer than ``entry`` (None if it does not): a run's end from an
    attempt older than the run's latest (a node's spool resent after a retry elsewhere finished the trial), or
    an evaluation step the run already has (redone by that retry, with other values and times)."""
    if entry["op"] in ("status", "tags") and "attempt" in entry:
        latest = int(client.get_run(entry["run_id"]).data.tags.get("attempts", "1"))
        if int(entry["attempt"]) < latest:
            return f"the end of attempt {entry['attempt']}; the run is at attempt {latest}"
    if entry["op"] == "metrics" and entry["metrics"]:
        key, _, _, step = entry["metrics"][-1]  # the batch's last key: present only if the batch arrived whole
        if any(m.step == step for m in client.get_metric_history(entry["run_id"], key)):
            return f"step {step} of {key} is already in the run"
    return None


def _parsed(line: bytes) -> Entry:
    """One spool line as an entry; ValueError when it is not a JSON object with an ``op``."""
    entry = json.loads(line.decode())
    if not isinstance(entry, dict) or "op" not in entry:
        raise ValueError(f"not a tracking call: {line[:80]!r}")
    return entry


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


@dataclasses.dataclass
class Resent:
    """What ``send_spools`` did: calls still unsent (the store did not take them for now), lines set aside in
    ``*.rejected`` files (they can never be sent), and spool files refused (a local problem, logged)."""

    left: int = 0
    set_aside: int = 0
    refused: list[Path] = dataclasses.field(default_factory=list)


def send_spools(directory: str | os.PathLike, tracking_uri: str, attempts: int = 3) -> Resent:
    """Send everything spooled under ``directory`` to ``tracking_uri`` (the sweep's own store, never one a spool
    line names). A spool file that may not be used is refused with an error in the log and the later ones go on."""
    bound_http_retries(tracking_uri)
    client = MlflowClient(tracking_uri)
    done = Resent()
    # Trials' spools first: the sweep's own (closing runs left RUNNING, then the parent) comes last.
    for path in sorted(spool_files(directory), key=lambda p: p.name.startswith("sweep-")):
        spool = Spool(path, tracking_uri)
        before = _line_count(spool.rejected)
        try:
            done.left += spool.flush(client, attempts=attempts)
        except SpoolFileError as exc:
            log.error("%s; its calls are not sent (a local file problem, not the tracking store)", exc)
            done.refused.append(path)
        done.set_aside += _line_count(spool.rejected) - before
    return done


def resend(directory: str | os.PathLike, tracking_uri: str, attempts: int = 3) -> int:
    """Send everything spooled under ``directory`` (``send_spools``); returns how many calls the store has not
    taken yet. Lines set aside and refused files are not counted: no retry of the store would send them."""
    return send_spools(directory, tracking_uri, attempts).left


def _line_count(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n") if not path.is_symlink() else 0
    except OSError:
        return 0
