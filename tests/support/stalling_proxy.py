"""A real `mlflow server` behind a TCP proxy that can make it hang (accept, never answer) or answer late: the
faults a connection refused does not cover (tests/test_tracking_sender.py).

Run as a script, it measures how long one ``TrialRun.log_metrics`` call takes while the server hangs, for the
code on ``sys.path`` (docs/failure-modes.md gives the command, before and after the background sender).
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from support.processes import free_port, stop_group, wait_for

BIN = Path(sys.executable).parent


def start_mlflow_server(directory: Path) -> tuple[subprocess.Popen, int]:
    """`mlflow server` on SQLite in ``directory``, in its own process group; returns it and its port."""
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: starts faster
    log = open(directory / "server.log", "a")
    process = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{directory / 'server.db'}",
         "--artifacts-destination", str(directory / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    wait_for(healthy, 180, "the MLflow server", process, directory / "server.log")
    return process, port


def stop_mlflow_server(process: subprocess.Popen) -> None:
    stop_group(process, signal.SIGKILL)


class StallingProxy:
    """127.0.0.1:``port`` forwarded to ``upstream_port``. A new connection gets the mode of the moment: ``hang``
    (read, never forwarded nor answered), or forwarded, each chunk of an answer held the ``delay`` of the moment
    it arrived (0 unless ``slow``)."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.mode, self.delay = "pass", 0.0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def hang(self) -> None:
        """The server stops answering: new connections hang, and kept-alive ones are dropped (so clients reconnect)."""
        self._set("hang", 0.0, drop=True)

    def slow(self, delay: float) -> None:
        """The server answers ``delay`` seconds late, on every connection."""
        self._set("pass", delay, drop=False)

    def pass_through(self) -> None:
        """The server answers at once again (a hung connection stays hung; an answer already held still waits)."""
        self._set("pass", 0.0, drop=False)

    def close(self) -> None:
        self._listener.close()
        self._drop()

    def _set(self, mode: str, delay: float, drop: bool) -> None:
        self.mode, self.delay = mode, delay
        if drop:
            self._drop()

    def _drop(self) -> None:
        with self._lock:
            sockets, self._open = self._open, []
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            with self._lock:
                self._open.append(client)
            threading.Thread(target=self._serve, args=(client, self.mode), daemon=True).start()

    def _serve(self, client: socket.socket, mode: str) -> None:
        if mode == "hang":
            _drain(client)
            return
        try:
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        except OSError:
            client.close()
            return
        with self._lock:
            self._open.append(upstream)
        threading.Thread(target=_pump, args=(client, upstream, lambda: 0.0), daemon=True).start()
        _pump(upstream, client, lambda: self.delay)


def _drain(s: socket.socket) -> None:
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass


def _pump(source: socket.socket, target: socket.socket, delay: Callable[[], float]) -> None:
    """Copy ``source`` to ``target``, each chunk ``delay()`` (as it arrives) seconds after it arrived."""
    chunks: queue.Queue[tuple[float, bytes]] = queue.Queue()

    def read() -> None:
        try:
            while data := source.recv(65536):
                chunks.put((time.monotonic() + delay(), data))
        except OSError:
            pass
        chunks.put((time.monotonic(), b""))

    threading.Thread(target=read, daemon=True).start()
    while True:
        due, data = chunks.get()
        time.sleep(max(0.0, due - time.monotonic()))
        try:
            if not data:
                target.shutdown(socket.SHUT_WR)
                return
            target.sendall(data)
        except OSError:
            return


def measure_hung_log_call(directory: Path) -> float:
    """Seconds one ``log_metrics`` call takes once the tracking server hangs (after a first, healthy one)."""
    from mlflow.tracking import MlflowClient

    from tracking.trial_run import TrialRun, TrialTracking

    process, port = start_mlflow_server(directory)
    proxy = StallingProxy(port)
    try:
        client = MlflowClient(f"http://127.0.0.1:{port}")
        experiment_id = client.create_experiment("hung")
        parent = client.create_run(experiment_id).info.run_id
        run = TrialRun(TrialTracking(proxy.uri, experiment_id, parent, spool_dir=str(directory / "spool")),
                       "trial-1", "plain-8 seed 0", {}, {"model.depth": 8})
        run.log_metrics(1, {"train/error": 50.0})
        proxy.hang()
        start = time.monotonic()
        run.log_metrics(2, {"train/error": 40.0})
        return time.monotonic() - start
    finally:
        proxy.close()
        stop_mlflow_server(process)


if __name__ == "__main__":
    import tempfile

    import sweeps

    with tempfile.TemporaryDirectory() as folder:
        seconds = measure_hung_log_call(Path(folder))
    print(f"{sweeps.__file__}: log_metrics with a hung tracking server took {seconds:.1f} s")
