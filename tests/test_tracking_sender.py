"""Tracking never stalls training (docs/failure-modes.md): a real `mlflow server` behind a real TCP proxy that
hangs (accepts, never answers) or answers late, in the middle of a trial's run.

A log call returns within ``sender.WAIT`` (plus slack); once the server answers again (or the spool is re-sent),
every metric is in the run exactly once and the run ends as it should.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from support.stalling_proxy import StallingProxy, start_mlflow_server, stop_mlflow_server
from tracking.sender import WAIT
from tracking.spool import resend
from tracking.trial_run import TrialRun, TrialTracking

SLACK = 1.5  # seconds: a thread switch and a local spool write on a busy machine
KEYS = ("train/loss", "test/error", "train/error")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    process, port = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    yield f"http://127.0.0.1:{port}"
    stop_mlflow_server(process)


@pytest.fixture
def proxy(server):
    proxy = StallingProxy(int(server.rsplit(":", 1)[1]))
    yield proxy
    proxy.close()


@pytest.fixture(autouse=True)
def short_requests(monkeypatch):
    """One HTTP request gives up after 8 s (production: 20 s), still well beyond the bound under test."""
    for name, value in (("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1"), ("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1"),
                        ("MLFLOW_HTTP_REQUEST_TIMEOUT", "8")):
        monkeypatch.setenv(name, value)


def open_run(server: str, proxy: StallingProxy, spool_dir: Path, name: str) -> tuple[TrialRun, MlflowClient]:
    """A trial's run, opened through the proxy while it passes; and a client that reaches the server directly."""
    client = MlflowClient(server)
    experiment_id = client.create_experiment(name)
    parent = client.create_run(experiment_id).info.run_id
    run = TrialRun(TrialTracking(proxy.uri, experiment_id, parent, spool_dir=str(spool_dir)),
                   "trial-1", "plain-8 seed 0", {}, {"model.depth": 8})
    return run, client


def metrics(step: int) -> dict[str, float]:
    return {key: 100.0 - step - i for i, key in enumerate(KEYS)}


def timed_log(run: TrialRun, step: int) -> float:
    start = time.monotonic()
    assert run.log_metrics(step, metrics(step)) is True
    return time.monotonic() - start


def assert_each_step_once(client: MlflowClient, run: TrialRun, steps: list[int]) -> None:
    for key in KEYS:
        history = client.get_metric_history(run.run_id, key)
        assert sorted((m.step, m.value) for m in history) == [(s, metrics(s)[key]) for s in steps], key


def spooled(run: TrialRun) -> list[tuple[str, int | None]]:
    """The spool's calls in order: (op, step) for metrics, (op, None) for the rest."""
    return [(e["op"], e["metrics"][0][3] if e["op"] == "metrics" else None) for e in run.spool.entries()]


def test_a_hung_server_costs_a_log_call_at_most_the_bound_and_loses_nothing(server, proxy, tmp_path):
    """The server hangs after step 1: the call of step 2 returns within WAIT, that of step 3 (its send still hung)
    at once, both on disk by then. The server answers again: finish() delivers everything, each step once
    (step 2 reaches the store both from its hung send's retry and from the spool)."""
    run, client = open_run(server, proxy, tmp_path / "spool", "hung")
    assert timed_log(run, 1) < WAIT
    proxy.hang()
    assert timed_log(run, 2) <= WAIT + SLACK
    time.sleep(0.5)  # training the next iteration
    assert timed_log(run, 3) <= SLACK  # the sender is stuck: straight to the spool
    assert spooled(run) == [("metrics", 2), ("metrics", 3)]  # on disk: a kill now would lose nothing

    proxy.pass_through()
    start = time.monotonic()
    assert run.finish("completed") is True
    assert time.monotonic() - start <= WAIT + SLACK
    assert not run.spool.pending()
    run.sender.thread.join(timeout=30)  # whatever the hung send still does has been done
    assert_each_step_once(client, run, [1, 2, 3])
    finished = client.get_run(run.run_id)
    assert finished.info.status == "FINISHED" and finished.data.tags["outcome"] == "completed"


def test_a_slow_server_costs_a_log_call_at_most_the_bound_and_logs_each_step_once(server, proxy, tmp_path):
    """Answers 3 s late (under the bound): the call waits for its send, which is in the run when it returns.
    Answers 7 s late (over it): the call returns at the bound, the next one at once; the late answer still comes
    (step 3 reaches the store live and from the spool) and finish() delivers the rest, each step once."""
    run, client = open_run(server, proxy, tmp_path / "spool", "slow")
    proxy.slow(3.0)
    assert 2.5 <= timed_log(run, 1) <= WAIT + SLACK
    assert_each_step_once(client, run, [1])  # waited for: already in the run

    proxy.slow(7.0)
    assert timed_log(run, 2) <= WAIT + SLACK
    time.sleep(0.5)
    assert timed_log(run, 3) <= SLACK
    assert spooled(run) == [("metrics", 2), ("metrics", 3)]

    proxy.pass_through()  # step 2's answer, 7 s late, still arrives
    start = time.monotonic()
    assert run.finish("completed") is True
    assert time.monotonic() - start <= WAIT + SLACK
    run.sender.thread.join(timeout=30)
    assert not run.spool.pending()
    assert_each_step_once(client, run, [1, 2, 3])
    assert client.get_run(run.run_id).info.status == "FINISHED"


def test_finish_with_a_hung_server_returns_within_the_bound_and_resend_delivers_each_call_once(
        server, proxy, tmp_path):
    """The server hangs for good before the run's end: finish() returns within WAIT and False, with everything
    in the spool, in order (the metrics, the artifact, the end's tags, the status last). Resent once the server
    answers, each call arrives once, though the hung send of step 2 was retried and got through meanwhile."""
    run, client = open_run(server, proxy, tmp_path / "spool", "hung-end")
    assert timed_log(run, 1) < WAIT
    proxy.hang()
    assert timed_log(run, 2) <= WAIT + SLACK
    run.log_dict({"iterations": [1, 2]}, "probes/grad_norms.json")  # its temporary file is gone at once
    start = time.monotonic()
    assert run.finish("completed") is False
    assert time.monotonic() - start <= WAIT + SLACK
    assert spooled(run) == [("metrics", 2), ("artifact", None), ("tags", None), ("status", None)]

    proxy.pass_through()  # the hung send of step 2 times out and is retried: it gets through, and is spooled
    run.sender.thread.join(timeout=30)
    assert resend(tmp_path / "spool", server) == 0
    assert not run.spool.pending()
    assert_each_step_once(client, run, [1, 2])
    (artifact,) = client.list_artifacts(run.run_id, "probes")
    path = client.download_artifacts(run.run_id, artifact.path, str(tmp_path))
    assert json.loads(Path(path).read_text()) == {"iterations": [1, 2]}
    finished = client.get_run(run.run_id)
    assert finished.info.status == "FINISHED" and finished.data.tags["outcome"] == "completed"


def test_a_call_spooled_while_the_spool_is_flushed_to_a_hung_server_returns_at_once_and_is_kept(
        server, proxy, tmp_path, monkeypatch):
    """The sender re-sends the spool to a server that hangs, holding the spool's lock: a call the training thread
    spools meanwhile (a stuck send taken over, the run's end) is written at once, not after the flush, and the
    flush keeps it, behind what it could not send."""
    from tracking.operations import metrics_entry
    from tracking.spool import Spool

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "3")
    client = MlflowClient(server)
    run_id = client.create_run(client.create_experiment("flush"), tags={"trial_id": "trial-1"}).info.run_id
    spool = Spool(tmp_path / "spool" / "trial-1.jsonl", proxy.uri)
    spool.append(metrics_entry(run_id, 1, {"train/error": 9.0}, "train/error"))
    proxy.hang()
    flushing = threading.Thread(target=spool.flush, args=(MlflowClient(proxy.uri),))
    flushing.start()
    time.sleep(0.5)  # the flush has taken the spool's lock and waits for an answer
    start = time.monotonic()
    spool.append(metrics_entry(run_id, 2, {"train/error": 8.0}, "train/error"))
    assert time.monotonic() - start <= SLACK and flushing.is_alive()
    flushing.join(timeout=30)
    assert [e["metrics"][0][3] for e in spool.entries()] == [1, 2]  # unsent, in order

    proxy.pass_through()
    assert spool.flush(MlflowClient(proxy.uri)) == 0
    assert sorted(m.step for m in client.get_metric_history(run_id, "train/error")) == [1, 2]
