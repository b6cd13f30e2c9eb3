"""The tracking server goes away mid-sweep (docs/failure-modes.md): a real `mlflow server` subprocess,
stopped and restarted on the same port while a real trial trains under Ray Tune.

Training and Tune checkpoints go on; what the server misses is spooled and arrives when it is back; if it
is still gone when the sweep ends, the sweep says so and `python -m sweeps.resend` delivers the rest.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from support import REPO
from support.faults import FaultHooks, write_faults
from sweeps.driver.grid import run_sweep
from tracking.store import TrackingError
from support.plans import plan_for, tiny_args
from support.processes import free_port, stop_group, wait_for
from support.logged_runs import METRICS, steps

BIN = Path(sys.executable).parent
TINY = tiny_args()
STEPS = [3, 6, 9, 12]  # TINY's evaluations


class MlflowServer:
    """`mlflow server` on a fixed port, in its own process group; stop() kills it like a crash would."""

    def __init__(self, directory: Path):
        self.directory, self.port = directory, free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.db = directory / "server.db"
        self.process: subprocess.Popen | None = None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def start(self) -> None:
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # no job runner: starts faster
        log = open(self.directory / "server.log", "a")
        self.process = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.db}", "--artifacts-destination",
             str(self.directory / "artifacts"), "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for(self.healthy, 180, "the MLflow server", self.process, self.directory / "server.log")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_group(self.process, signal.SIGKILL)
        wait_for(lambda: not self.healthy(), 30, "the MLflow server to be gone")


def spooled_steps(spool: Path) -> set[int]:
    entries = [json.loads(line) for line in spool.read_text().splitlines()]
    return {step for e in entries if e["op"] == "metrics" for *_, step in e["metrics"]}


def sweep_in_background(plan, spec: Path) -> tuple[threading.Thread, dict]:
    """``run_sweep`` with the faults of ``spec`` in a thread; its results or error land in the returned dict."""
    outcome: dict = {}

    def sweep() -> None:
        try:
            outcome["results"] = run_sweep(plan, hooks=FaultHooks.from_file(spec))
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=sweep, daemon=True)
    thread.start()
    return thread, outcome


@pytest.fixture
def server(tmp_path):
    server = MlflowServer(tmp_path)
    yield server
    if server.process is not None and server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=30)


def test_tracking_server_outage_loses_no_metric(ray_runtime, tmp_path, server, monkeypatch):
    """Item 8, both ways: the server is down from iteration 3 to 6 and comes back (the missed step arrives
    with the next one), then goes down at 9 for good (the sweep ends with a clear error, the rest is kept
    in the spool and `python -m sweeps.resend` delivers it once the server is back)."""
    for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")):
        monkeypatch.setenv(name, value)  # what run_sweep would set; restored after the test
    server.start()
    trial = "residual-8 seed 0"
    releases = {n: tmp_path / f"release{n}" for n in (3, 6, 9)}
    spec = write_faults(tmp_path, [{"trial": trial, "kind": "hold", "after": n, "release": str(path), "timeout": 300}
                                   for n, path in releases.items()])
    plan = plan_for([*TINY, "--experiment", "outage", "--tracking-uri", server.uri, "--storage-path",
                     str(tmp_path / "ray_results"), "--depths", "8", "--families", "residual", "--seeds", "1",
                     "--cpus-per-trial", "1"])
    spool_dir = Path(plan.spool_dir)
    held = {n: tmp_path / "markers" / f"{i}-hold.1" for i, n in enumerate(releases)}
    thread, outcome = sweep_in_background(plan, spec)
    client = MlflowClient(server.uri)

    wait_for(held[3].exists, 300, "iteration 3")
    server.stop()                                           # gone while the trial trains 4..6
    releases[3].touch()
    wait_for(held[6].exists, 300, "iteration 6 (trained and checkpointed while the server was down)")
    spooled = spool_dir / f"{json.loads(held[3].read_text())['trial_id']}.jsonl"
    assert spooled_steps(spooled) == {6}                    # what the server missed is kept on disk
    assert len(list((tmp_path / "ray_results" / "outage").glob("*/checkpoint_*"))) == 2  # Tune went on

    server.start()                                          # back on the same port
    releases[6].touch()
    wait_for(held[9].exists, 300, "iteration 9")
    (run,) = client.search_runs([client.get_experiment_by_name("outage").experiment_id], "tags.role = 'trial'")
    assert steps(client, run) == [3, 6, 9]                  # the missed step arrived with the next one
    assert not spooled.exists()

    server.stop()                                           # gone for good
    releases[9].touch()
    thread.join(timeout=300)
    assert not thread.is_alive()
    error = outcome.get("error")
    assert isinstance(error, TrackingError), outcome
    assert "could not be reached at the end of the sweep" in str(error) and "Nothing is lost" in str(error)
    assert f"python -m sweeps.resend {spool_dir} --tracking-uri {server.uri}" in str(error)
    assert spooled_steps(spooled) == {12}                   # step 12, artifacts and the run's end, in order
    ops = [json.loads(line)["op"] for line in spooled.read_text().splitlines()]
    assert ops[0] == "metrics" and "artifact" in ops and ops[-2:] == ["tags", "status"]

    server.start()
    resend = [sys.executable, "-m", "sweeps.resend", str(spool_dir), "--tracking-uri", server.uri]
    sent = subprocess.run(resend, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    assert not list(spool_dir.glob("*.jsonl"))

    run = client.get_run(run.info.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
    for metric in METRICS:
        assert steps(client, run, metric) == STEPS, metric
    with sqlite3.connect(server.db) as connection:  # every row once, counted in the server's own store
        rows = connection.execute("select key, step, count(*) from metrics where run_uuid = ? group by key, step",
                                  (run.info.run_id,)).fetchall()
    assert len(rows) == len(METRICS) * len(STEPS) and {count for *_, count in rows} == {1}
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "environment.json", "probes", "model"} <= artifacts
    assert {a.path for a in client.list_artifacts(run.info.run_id, "model")} == {"model/final_weights.pt"}
    (parent,) = client.search_runs([run.info.experiment_id], "tags.role = 'sweep'")
    assert parent.info.status == "FINISHED"

    again = subprocess.run(resend, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "nothing to send" in again.stdout


def test_a_trial_that_starts_during_an_outage_waits_for_the_server(ray_runtime, tmp_path, server, monkeypatch):
    """The server is down when the second trial starts, for longer than a tracking call's retries last: the
    trial waits for it (tracking/trial_run.py OPEN_PATIENCE) instead of failing, so it spends none of
    --max-failures (0 here), and then trains and logs every step once."""
    for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")):
        monkeypatch.setenv(name, value)
    server.start()
    first, second = "plain-8 seed 0", "residual-8 seed 0"  # deepest first, then as listed: plain before residual
    release = tmp_path / "release"
    spec = write_faults(tmp_path, [{"trial": first, "kind": "hold", "after": 12, "release": str(release),
                                    "timeout": 300},
                                   {"trial": second, "kind": "hold", "after": 3, "release": str(release),
                                    "timeout": 300}])
    plan = plan_for([*TINY, "--experiment", "late", "--tracking-uri", server.uri, "--storage-path",
                     str(tmp_path / "ray_results"), "--depths", "8", "--families", "plain,residual", "--seeds", "1",
                     "--cpus-per-trial", "1", "--max-concurrent", "1", "--max-failures", "0"])
    first_held, second_held = (tmp_path / "markers" / f"{i}-hold.1" for i in range(2))
    thread, outcome = sweep_in_background(plan, spec)
    wait_for(first_held.exists, 300, "the first trial's last evaluation")
    server.stop()
    release.touch()  # the first trial ends (its end is spooled); the second one starts and needs its run
    deadline = time.time() + 60  # longer than a tracking call's 8 retries (about 40 s)
    while time.time() < deadline:
        assert not second_held.exists() and thread.is_alive(), outcome  # it cannot train without its run
        time.sleep(1)
    server.start()
    thread.join(timeout=300)
    assert not thread.is_alive() and "error" not in outcome, outcome
    assert not outcome["results"].errors
    client = MlflowClient(server.uri)
    runs = client.search_runs([client.get_experiment_by_name("late").experiment_id], "tags.role = 'trial'")
    late = next(r for r in runs if r.info.run_name == second)
    assert late.info.status == "FINISHED" and late.data.tags["attempts"] == "1"  # no retry was spent
    for run in runs:
        assert steps(client, run) == STEPS


def test_a_spool_on_another_nodes_disk_keeps_the_sweep_open_and_says_how_to_send_it(ray_runtime, tmp_path, server,
                                                                                     monkeypatch):
    """The store misses a trial's last evaluation and the trial's spool is on a disk the driver cannot read (a
    worker's own disk, when the sweep's storage is not shared: simulated by moving the file away). The driver
    closes nothing, says on which node the calls wait and how to send them; sent from there, then the driver's
    own spool, every step is in the run once and the runs end FINISHED."""
    for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")):
        monkeypatch.setenv(name, value)
    server.start()
    trial = "residual-8 seed 0"
    releases = {n: tmp_path / f"release{n}" for n in (9, 12)}
    spec = write_faults(tmp_path, [{"trial": trial, "kind": "hold", "after": n, "release": str(path), "timeout": 300}
                                   for n, path in releases.items()])
    plan = plan_for([*TINY, "--experiment", "elsewhere", "--tracking-uri", server.uri, "--storage-path",
                     str(tmp_path / "ray_results"), "--depths", "8", "--families", "residual", "--seeds", "1",
                     "--cpus-per-trial", "1"])
    held = {n: tmp_path / "markers" / f"{i}-hold.1" for i, n in enumerate(releases)}
    thread, outcome = sweep_in_background(plan, spec)
    wait_for(held[9].exists, 300, "iteration 9")
    server.stop()
    releases[9].touch()
    wait_for(held[12].exists, 300, "the last evaluation, reported with its spool")
    spooled = Path(plan.spool_dir) / f"{json.loads(held[9].read_text())['trial_id']}.jsonl"
    node_disk = tmp_path / "node-disk"  # the worker's own disk
    node_disk.mkdir()
    for path in (spooled, spooled.with_suffix(".files")):
        path.rename(node_disk / path.name)
    server.start()
    releases[12].touch()
    thread.join(timeout=300)
    assert not thread.is_alive()
    error = outcome.get("error")
    assert isinstance(error, TrackingError), outcome
    message = str(error)
    assert "nodes' own disks" in message and f"({trial}, " in message, message
    assert f"python -m sweeps.resend {spooled.parent} --tracking-uri {server.uri}" in message
    client = MlflowClient(server.uri)
    experiment_id = client.get_experiment_by_name("elsewhere").experiment_id
    (run,) = client.search_runs([experiment_id], "tags.role = 'trial'")
    (parent,) = client.search_runs([experiment_id], "tags.role = 'sweep'")
    assert run.info.status == "RUNNING" and parent.info.status == "RUNNING"  # nothing closed as KILLED
    assert steps(client, run) == [3, 6, 9]

    for path in (node_disk / spooled.name, node_disk / spooled.with_suffix(".files").name):  # on that node
        path.rename(spooled.parent / path.name)
    for directory in (spooled.parent, plan.spool_dir):  # the node's command, then the driver's
        sent = subprocess.run([sys.executable, "-m", "sweeps.resend", str(directory), "--tracking-uri", server.uri],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
        assert sent.returncode == 0, sent.stdout + sent.stderr
    run, parent = client.get_run(run.info.run_id), client.get_run(parent.info.run_id)
    assert run.info.status == "FINISHED" and parent.info.status == "FINISHED"
    for metric in METRICS:
        assert steps(client, run, metric) == STEPS, metric
