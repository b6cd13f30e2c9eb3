"""One sweep per experiment at a time: a second sweep of a running experiment is refused before it starts,
also when the first one's driver runs on another host (its heartbeat), and when two drivers race."""

from __future__ import annotations

import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps import depth_vs_error
from sweeps.cli import plan_from_argv
from sweeps.depth_vs_error import STUDY
from sweeps.driver.sweep_lock import check_sweep_unlocked
from tracking import sweep_run
from tracking.store import experiment_id_for
from tracking.sweep_run import ConcurrentSweepError, start_parent_run
from support.plans import store_args, tiny_args
from support.processes import driver_env, kill_driver, sweep_command, wait_for

LONG = tiny_args("--depths", "8", "--families", "plain", "--seeds", "1", iterations=5000, eval_every=50)


def sweep_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    return client.search_runs([client.get_experiment_by_name(experiment).experiment_id], "tags.role = 'sweep'")


def evaluations_logged(store: Path) -> int:
    """Read-only: an MlflowClient here could race the driver creating the tables."""
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
            return db.execute("SELECT COUNT(*) FROM metrics WHERE key = 'train/error'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def test_a_second_sweep_of_a_running_experiment_is_refused_before_it_starts(tmp_path, ray_tmp, capsys):
    store = tmp_path / "mlflow.db"
    log = tmp_path / "first.log"
    first = subprocess.Popen(sweep_command(*LONG, *store_args(tmp_path, "busy")), env=driver_env(ray_tmp),
                             stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: evaluations_logged(store) >= 1, 300, "the first sweep's trial to log", first, log)
        with pytest.raises(ConcurrentSweepError, match=f"pid {first.pid} on .* holds .*driver.lock"):  # its lock
            check_sweep_unlocked(plan_from_argv(STUDY, [*LONG, *store_args(tmp_path, "busy")]))
        # Another storage path: another sweep, not a resume of the first; the same experiment.
        second = [*LONG, "--experiment", "busy", "--tracking-uri", f"sqlite:///{store}", "--storage-path",
                  str(tmp_path / "elsewhere")]
        assert depth_vs_error.main(second) == 2
        message = capsys.readouterr().err
        assert "another sweep of experiment 'busy' is running" in message and "its driver on this host is alive" in message
        assert len(sweep_runs(f"sqlite:///{store}", "busy")) == 1  # no second parent run
        assert not (tmp_path / "elsewhere").exists()
    finally:
        kill_driver(first, ray_tmp)


@pytest.fixture
def store(tmp_path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    experiment_id_for(MlflowClient(uri), "shared", create=True)
    return uri


def other_hosts_sweep(uri: str, beat_seconds_ago: float) -> str:
    """A RUNNING parent run whose driver runs on another host and last beat ``beat_seconds_ago``."""
    client = MlflowClient(uri)
    experiment_id = client.get_experiment_by_name("shared").experiment_id
    run = client.create_run(experiment_id, run_name="sweep elsewhere", tags={
        "role": sweep_run.ROLE_SWEEP, "sweep_id": "s3://bucket/shared", "driver_host": "another-host",
        "driver_pid": "1", sweep_run.HEARTBEAT_TAG: f"{time.time() - beat_seconds_ago:.0f}"})
    return run.info.run_id


def test_a_live_driver_on_another_host_blocks_and_a_silent_one_does_not(store):
    other = other_hosts_sweep(store, beat_seconds_ago=30)
    with pytest.raises(ConcurrentSweepError, match=f"parent run {other}; its driver runs on another-host"):
        start_parent_run(store, "shared", "/local/shared", "sweep here", {}, {})
    assert [r.info.run_id for r in sweep_runs(store, "shared")] == [other]  # the refused claim was withdrawn

    MlflowClient(store).set_tag(other, sweep_run.HEARTBEAT_TAG, f"{time.time() - sweep_run.HEARTBEAT_TIMEOUT - 60:.0f}")
    _, mine = start_parent_run(store, "shared", "/local/shared", "sweep here", {}, {})
    assert {r.info.run_id for r in sweep_runs(store, "shared")} == {other, mine}


def test_of_two_racing_drivers_at_most_one_runs(store, monkeypatch):
    """Driver B claims between driver A's claim and A's look for rivals: A must see B and withdraw."""
    real = sweep_run.running_sweeps
    raced = {}

    def b_claims_first(uri: str, experiment: str):
        if not raced:
            raced["b"] = other_hosts_sweep(uri, beat_seconds_ago=0)
        return real(uri, experiment)

    monkeypatch.setattr(sweep_run, "running_sweeps", b_claims_first)
    with pytest.raises(ConcurrentSweepError):
        start_parent_run(store, "shared", "/local/shared", "sweep A", {}, {})
    assert [r.info.run_id for r in sweep_runs(store, "shared")] == [raced["b"]]
