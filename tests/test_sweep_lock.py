"""One driver per sweep, even when the tracking store was down long enough for a live driver's heartbeat to look
dead (issue 30, item 4): the lock on ``<storage>/<experiment>/driver.lock`` refuses a second driver and keeps
the first one's runs open; the kernel frees it when the holder dies."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from sweeps import depth_vs_error
from sweeps.cli import plan_from_argv
from sweeps.depth_vs_error import STUDY
from sweeps.driver.sweep_lock import check_sweep_unlocked
from tracking import sweep_run
from tracking.store import experiment_id_for
from tracking.sweep_run import ConcurrentSweepError
from support.plans import store_args, tiny_args

ARGS = tiny_args("--depths", "8", "--families", "plain", "--seeds", "1")
OUTAGE = 6 * 60  # longer than the heartbeat's timeout, shorter than the outages a sweep waits out

HOLD = """
import sys, time
from types import SimpleNamespace
from sweeps.driver.sweep_lock import holding_sweep_lock
with holding_sweep_lock(SimpleNamespace(sweep_id=sys.argv[1], is_local_storage=True)):
    print("holding", flush=True)
    time.sleep(600)
"""


@pytest.fixture
def live_driver(tmp_path):
    """A process holding the sweep's lock as a driver does (sweeps.driver.sweep_lock), and that sweep's parent
    run and one trial run RUNNING in a real store, the parent's heartbeat last written ``OUTAGE`` seconds ago."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    sweep_dir = tmp_path / "ray_results" / "locked"
    client = MlflowClient(uri)
    experiment_id = experiment_id_for(client, "locked", create=True)
    parent = client.create_run(experiment_id, tags={
        "role": sweep_run.ROLE_SWEEP, "sweep_id": str(sweep_dir), "driver_host": "head-node", "driver_pid": "1",
        sweep_run.HEARTBEAT_TAG: f"{time.time() - OUTAGE:.0f}"}).info.run_id
    trial = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent, "role": "trial"}).info.run_id
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(sweep_dir)], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline() == "holding\n"
        yield client, parent, trial, holder
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("resume", [False, True], ids=["rerun", "resume"])
def test_a_second_driver_is_refused_after_an_outage_and_the_live_sweep_stays_running(
        live_driver, tmp_path, capsys, resume):
    """Without the lock, the old heartbeat made the sweep look interrupted: a rerun marked its runs KILLED, and
    --resume would have driven the same trials beside the live driver."""
    client, parent, trial, holder = live_driver
    argv = [*ARGS, *store_args(tmp_path, "locked"), *(["--resume"] if resume else [])]
    assert depth_vs_error.main(argv) == 2
    err = capsys.readouterr().err
    assert f"another driver of this sweep is running (pid {holder.pid} on " in err
    assert str(tmp_path / "ray_results" / "locked" / "driver.lock") in err
    assert client.get_run(parent).info.status == "RUNNING" and client.get_run(trial).info.status == "RUNNING"
    assert "outcome" not in client.get_run(trial).data.tags
    assert len(client.search_runs([client.get_run(parent).info.experiment_id])) == 2  # no new parent


def test_the_lock_is_free_once_its_holder_dies(live_driver, tmp_path):
    _, _, _, holder = live_driver
    plan = plan_from_argv(STUDY, [*ARGS, *store_args(tmp_path, "locked")])
    with pytest.raises(ConcurrentSweepError):
        check_sweep_unlocked(plan)
    holder.kill()  # as kill -9: no cleanup runs, the kernel drops the lock
    holder.wait()
    check_sweep_unlocked(plan)  # no error: the next command may close or resume the sweep


def test_a_link_planted_at_the_lock_is_refused(tmp_path, capsys):
    victim = tmp_path / "victim"
    victim.write_text("untouched")
    (tmp_path / "ray_results" / "planted").mkdir(parents=True)
    (tmp_path / "ray_results" / "planted" / "driver.lock").symlink_to(victim)
    assert depth_vs_error.main([*ARGS, *store_args(tmp_path, "planted")]) == 2
    err = capsys.readouterr().err
    assert "the sweep's lock file: refused" in err and "it is a symbolic link" in err
    assert victim.read_text() == "untouched" and not (tmp_path / "mlflow.db").exists()
