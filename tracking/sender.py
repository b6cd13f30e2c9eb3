"""The background sender: a trial's tracking calls leave the training thread, so a slow or hung tracking server
holds training up for at most ``WAIT`` seconds per call (docs/failure-modes.md).

One daemon thread per trial run takes entries (``operations``) from a queue, in order, and sends them with
retries; a call the store does not take is spooled (``spool.Spool``) and every later call goes behind it, to be
sent, in order, once the store answers again. A call waits for its own send only while the store keeps up
(nothing was queued or in flight when it was made), and then at most ``WAIT``: with a prompt store the calls
behave as if made on the training thread (spool counts, warnings and errors come at once).

When a send has been in flight longer than ``WAIT``, the queue is long, or the run is closed with calls still
waiting, the training thread itself moves the call in flight and the queue into the spool ("takes over"): they
are on disk within ``WAIT``, so a trial killed during an outage loses nothing. A call taken over while in flight
may then reach the store twice, live and from the spool; that logs nothing twice, because an entry carries its
own timestamps (the SQL store keeps one row per metric key, timestamp, step and value; tags, the end status and
artifacts are simply set again to the same thing).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mlflow.tracking import MlflowClient

from tracking import operations
from tracking.operations import Entry
from tracking.spool import Spool
from tracking.store import STORE_ERRORS, is_transient, short_error, with_retries

log = logging.getLogger(__name__)

# The longest a tracking call holds the training thread, in seconds: a call waits for its send at most this
# long, and finish() waits at most this long for everything still queued (the rest goes to the spool).
WAIT = 5.0
# More calls than this waiting in memory (a store far slower than training): the queue goes to the spool.
MAX_QUEUED = 1000


@dataclass(eq=False)
class _Call:
    """One queued tracking call; ``staged``: the folder holding this call's own link or copy of an artifact."""

    what: str
    entry: Entry
    staged: Path | None = None
    done: bool = False  # sent, spooled, or given up on (the training thread stops waiting)


class Sender:
    """Sends one run's tracking calls on a background thread, in order, spooling what the store does not take."""

    def __init__(self, spool: Spool, client: Callable[[], MlflowClient], attempts: int, where: str):
        """``client``: returns the client to send with (read at each send); ``where``: the store, for messages."""
        self.spool, self._client, self.attempts, self.where = spool, client, attempts, where
        self._lock = threading.Condition()
        self._queue: deque[_Call] = deque()
        self._in_flight: _Call | None = None
        self._since = 0.0  # when the call in flight was taken from the queue
        self._taken = False  # the training thread spooled the call in flight: its outcome no longer counts
        self._closing = False  # finish(): send what is queued, try the spool once more, then end
        self._closed = False  # the training thread has stopped waiting: what it submits now is spooled
        self._error: BaseException | None = None  # a call the store rejected: raised on the training thread
        self._retry_at, self._backoff, self._flush_attempts = 0.0, 1.0, 1
        self._staging = Path(tempfile.mkdtemp(prefix="resnet-studies-outbox-"))
        self.thread = threading.Thread(target=self._run, name="tracking-sender", daemon=True)
        self.thread.start()

    # --- the training thread ---

    def submit(self, what: str, entry: Entry, wait: bool = True) -> None:
        """Queue one call. ``wait``: wait for it (at most ``WAIT``) if the store has been keeping up."""
        call = self._staged(what, entry) if entry["op"] == "artifact" else _Call(what, entry)
        if call is None:
            return
        with self._lock:
            if self._error is not None and call.staged is not None:
                shutil.rmtree(call.staged, ignore_errors=True)
            self._raise_rejected()
            stuck = self._in_flight is not None and time.monotonic() - self._since > WAIT
            if self._closed or stuck or len(self._queue) >= MAX_QUEUED:
                self._take_over("" if self._closed else "the tracking store is slow to answer", call)
                return
            keeping_up = not self._queue and self._in_flight is None
            self._queue.append(call)
            self._lock.notify_all()
            if wait and keeping_up:
                self._lock.wait_for(lambda: call.done, timeout=WAIT)

    def retry_now(self, attempts: int) -> None:
        """Let the next call try the spool at once, with ``attempts`` tries (the run's end: one more patient try)."""
        with self._lock:
            self._retry_at, self._flush_attempts = 0.0, attempts

    def close(self) -> bool:
        """Wait at most ``WAIT`` for the queued calls and one more try of the spool, then spool what is left and
        stop waiting. True if everything reached the store.

        Raises the error of a call the store rejected (a bad request), as that call itself would have.
        """
        with self._lock:
            self._closing = True
            self._lock.notify_all()
        self.thread.join(timeout=WAIT)
        with self._lock:
            left = self._take_over("the tracking store did not take the run's last calls in time")
            self._closed = True
            self._raise_rejected()
        return not left and not self.spool.pending()

    def _staged(self, what: str, entry: Entry) -> _Call | None:
        """The artifact call with its own link (or copy) of the file: the caller's may be temporary."""
        self._staging.mkdir(exist_ok=True)  # the thread removes it when it ends (a call after finish())
        folder = Path(tempfile.mkdtemp(dir=self._staging))
        kept = folder / entry["name"]
        try:
            try:
                os.link(entry["path"], kept)
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(entry["path"], kept)
        except OSError as error:
            shutil.rmtree(folder, ignore_errors=True)
            log.error("MLflow %s: LOST, its file cannot be read (%s)", what, error)
            return None
        return _Call(what, {**entry, "path": str(kept)}, folder)

    def _take_over(self, why: str, new: _Call | None = None) -> int:
        """Spool the call in flight (unless already), the queue and ``new``, in order (under the lock); how many."""
        calls = [self._in_flight] if self._in_flight is not None and not self._taken else []
        calls += [*self._queue, *([new] if new else [])]
        self._queue.clear()
        newly_taken = self._in_flight is not None and not self._taken
        self._taken = self._in_flight is not None
        for call in calls:
            self._append(call, keep_staged=call is self._in_flight)
        if why and (newly_taken or new is None) and calls:  # once per stuck send, not for each call behind it
            log.warning("MLflow: %s (%s): %d call(s) kept in %s, re-sent when it answers (or run: python -m "
                        "sweeps.resend %s)", why, self.where, len(calls), self.spool.path, self.spool.path.parent)
        if calls:
            self._retry_at = time.monotonic() + self._backoff
        self._lock.notify_all()
        return len(calls)

    def _raise_rejected(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    # --- both threads, under the lock ---

    def _append(self, call: _Call, keep_staged: bool = False) -> None:
        """Spool ``call``. If the spool cannot be written either (a full disk), the call is lost: said in the
        trial's log, and training goes on (its checkpoints are Tune's, not the spool's)."""
        try:
            self.spool.append(call.entry)
        except OSError as error:
            log.error("MLflow %s: LOST, neither sent nor kept: the tracking store %s is unreachable and the spool "
                      "%s cannot be written (%s)", call.what, self.where, self.spool.path, error)
        call.done = True
        if not keep_staged and call.staged is not None:
            shutil.rmtree(call.staged, ignore_errors=True)

    # --- the sender's thread ---

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._queue or self._closing)
                if not self._queue:
                    last_try = not self._closed  # finish() still waits: the spool may go now
                    break
                call = self._queue.popleft()
                self._in_flight, self._since, self._taken = call, time.monotonic(), False
            try:
                self._handle(call)
            except BaseException as error:  # noqa: BLE001 - a rejected call: the training thread raises it
                with self._lock:
                    self._error = error
            with self._lock:
                call.done, self._in_flight = True, None
                self._lock.notify_all()
            if call.staged is not None:
                shutil.rmtree(call.staged, ignore_errors=True)
        if last_try and self.spool.pending():
            try:
                self._flush()
            except BaseException as error:  # noqa: BLE001 - a rejected call: the training thread raises it
                with self._lock:
                    self._error = error
        shutil.rmtree(self._staging, ignore_errors=True)

    def _handle(self, call: _Call) -> None:
        """Send ``call``, or spool it behind what is spooled already (nothing overtakes the spool)."""
        if self.spool.pending():
            if time.monotonic() < self._retry_at or self._flush():
                self._keep(call, None)
                return
        with self._lock:
            if self._taken:  # spooled meanwhile by the training thread: the flush above may have sent it already
                return
        try:
            with_retries(lambda: operations.send(self._client(), call.entry), call.what, attempts=self.attempts)
        except STORE_ERRORS as exc:
            if not is_transient(exc):
                raise
            self._keep(call, exc)
            return
        self._backoff = 1.0

    def _flush(self) -> int:
        """Send the spool (its own lock: this process may go on appending meanwhile); how many calls are left."""
        with self._lock:
            attempts, self._flush_attempts = self._flush_attempts, 1
        return self.spool.flush(self._client(), attempts=attempts)

    def _keep(self, call: _Call, exc: BaseException | None) -> None:
        with self._lock:
            if self._taken:  # the training thread has spooled it already
                return
            self._append(call, keep_staged=True)  # the thread removes the staged file once the call is done
            now = time.monotonic()
            if exc is not None or now >= self._retry_at:
                log.warning("MLflow %s: tracking store %s unreachable%s; kept in %s, re-sent when it is back "
                            "(or run: python -m sweeps.resend %s)", call.what, self.where,
                            f" ({short_error(exc)})" if exc else "", self.spool.path, self.spool.path.parent)
            if now >= self._retry_at:
                self._retry_at = now + self._backoff
                self._backoff = min(self._backoff * 2, 60.0)
