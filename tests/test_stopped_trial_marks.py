"""A trial ASHA stopped closes its own run (KILLED, ``stopped``) from its process, sometimes after its stage has
returned; the driver's mark (FINISHED, ``stopped_early``) must still be the last word (a real SQLite store).
Seen in a fresh-clone run: the last trial of the ASHA search ended KILLED / ``stopped``."""

from __future__ import annotations

import threading
import time

from mlflow.tracking import MlflowClient

from tracking.sweep_run import mark_trial_run, wait_until_closed
from tracking.trial_run import TrialRun, TrialTracking


def _sweep(tmp_path) -> tuple[MlflowClient, TrialTracking]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("asha")
    parent = client.create_run(experiment, tags={"role": "sweep"}).info.run_id
    return client, TrialTracking(uri, experiment, parent, spool_dir=str(tmp_path / "spool"))


def test_the_drivers_mark_lands_after_a_late_close_of_the_trial_itself(tmp_path):
    client, tracking = _sweep(tmp_path)
    run = TrialRun(tracking, "t5", "residual-8 trial 5", {}, {"model.depth": 8})
    closing = threading.Timer(1.0, run.finish, args=("stopped",))  # the trial process, still ending
    closing.start()
    started = time.monotonic()
    assert wait_until_closed(tracking, ["t5"], timeout=20) == []
    assert time.monotonic() - started >= 0.9  # it waited for the trial's own close
    closing.join()
    assert mark_trial_run(tracking, "t5", "stopped_early", "FINISHED", {"stopped_at_iteration": 20},
                          only_running=False)
    ended = client.get_run(run.run_id)
    assert ended.info.status == "FINISHED" and ended.data.tags["outcome"] == "stopped_early"


def test_a_trial_that_never_closes_its_run_is_waited_for_only_until_the_timeout(tmp_path):
    _, tracking = _sweep(tmp_path)
    TrialRun(tracking, "t1", "residual-8 trial 1", {}, {"model.depth": 8})  # its process died: never closed
    started = time.monotonic()
    assert wait_until_closed(tracking, ["t1", "unknown"], timeout=1.0, poll=0.2) == ["t1"]
    assert time.monotonic() - started < 5
