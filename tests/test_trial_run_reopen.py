"""A trial's run reopened by a retry (a real SQLite MLflow store): what an earlier attempt left half-done is
completed, not carried on."""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from tracking.trial_run import TrialRun, TrialTracking


def test_a_reopened_run_without_params_gets_them(tmp_path):
    """The first attempt's create_run succeeded and its params batch failed (the store went away between the
    two calls): the retry found the run, tagged it attempt 2 and trained on without its params, for good."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("reopen")
    parent = client.create_run(experiment, tags={"role": "sweep"}).info.run_id
    tracking = TrialTracking(uri, experiment, parent, spool_dir=str(tmp_path / "spool"))
    half_made = client.create_run(experiment, run_name="plain-8 seed 0", tags={  # what the first attempt left
        "role": "trial", "trial_id": "t1", "mlflow.parentRunId": parent, "outcome": "running", "attempts": "1"})
    params = {"model.depth": 8, "optim.lr": 0.1}
    run = TrialRun(tracking, "t1", "plain-8 seed 0", {}, params)
    assert run.run_id == half_made.info.run_id and run.attempt == 2
    assert client.get_run(run.run_id).data.params == {"model.depth": "8", "optim.lr": "0.1"}
    run.finish("completed")


def test_a_reopened_run_keeps_the_params_it_has(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("reopen")
    parent = client.create_run(experiment, tags={"role": "sweep"}).info.run_id
    tracking = TrialTracking(uri, experiment, parent, spool_dir=str(tmp_path / "spool"))
    first = TrialRun(tracking, "t1", "plain-8 seed 0", {}, {"model.depth": 8})
    first.finish("failed")
    again = TrialRun(tracking, "t1", "plain-8 seed 0", {}, {"model.depth": 8})
    assert again.run_id == first.run_id and client.get_run(again.run_id).data.params == {"model.depth": "8"}
    again.finish("completed")
