"""Multi-worker trials (``--workers-per-trial``, sweeps/trial/workers.py): a real Ray runtime runs a trial as two
Ray Train workers (gloo on this CPU) inside a real Tune sweep, into a real MLflow store; one worker process is
killed mid-trial (tests/support/faults.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps.driver.grid import run_sweep
from support.faults import FaultHooks, write_faults
from support.plans import plan_for, store_args, tiny_args
from support.logged_runs import METRICS, steps, trial_runs

STEPS = [3, 6, 9, 12]  # tiny_args()'s evaluations


def test_a_two_worker_trial_killed_mid_way_resumes_in_its_one_run(ray_runtime, tmp_path):
    """Rank 0's process is SIGKILLed after its report at iteration 6: Ray Train restarts both workers from the last
    checkpoint it registered, rank 0 reopens the same MLflow run, and every step is logged exactly once."""
    plan = plan_for([*tiny_args(), *store_args(tmp_path, "workers"), "--depths", "8", "--families", "residual",
                     "--seeds", "1", "--workers-per-trial", "2", "--cpus-per-trial", "1"])
    spec = write_faults(tmp_path, [{"trial": "residual-8 seed 0", "kind": "sigkill", "after": 6}])
    (result,) = run_sweep(plan, hooks=FaultHooks.from_file(spec))
    assert result.error is None and result.metrics["iteration"] == 12 and result.metrics["status"] == "completed"
    assert (tmp_path / "markers" / "0-sigkill.1").exists()  # the fault did fire

    client = MlflowClient(plan.tracking_uri)
    (run,) = trial_runs(client, "workers")["residual-8 seed 0"]
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
    # Ray Train registers a reported checkpoint when its controller next polls the workers: a worker killed right
    # after its report at 6 may leave 3 as the newest registered one. Either way the run goes on, and the steps
    # it redoes are not logged again.
    assert run.data.tags["attempts"] == "2" and run.data.tags["resumed_from_iteration"] in ("3", "6")
    assert run.data.tags["workers"] == "2" and run.data.tags["worker_batch_size"] == "16"
    assert run.data.params["optim.batch_size"] == "32"  # the whole batch; each worker trains on its half
    for metric in METRICS:
        assert steps(client, run, metric) == STEPS, metric
    assert result.metrics["train/images"] == 3 * 32  # summed over both workers' halves
    (parent,) = client.search_runs([run.info.experiment_id], "tags.role = 'sweep'")
    assert parent.info.status == "FINISHED" and parent.data.params["workers_per_trial"] == "2"


@pytest.mark.parametrize("flags, message", [
    (["--workers-per-trial", "0"], "--workers-per-trial must be >= 1; got 0"),
    (["--workers-per-trial", "2", "--gpus-per-trial", "1", "--set", "run.device=auto"],
     "--gpus-per-trial 1 does not split into 2 workers of whole GPUs"),
    (["--workers-per-trial", "3"], "optim.batch_size=32 does not split evenly among --workers-per-trial 3"),
])
def test_workers_that_cannot_split_a_trial_are_refused_before_anything_starts(tmp_path, flags, message):
    with pytest.raises(ValueError, match=message):
        plan_for([*tiny_args(), *store_args(tmp_path), *flags])
    assert not (tmp_path / "mlflow.db").exists()


def test_multi_worker_trials_run_as_many_at_once_as_the_nodes_hold(ray_runtime, tmp_path):
    """Tune starts only the multi-worker trials that have room (the rest wait PENDING, not inside Ray Train): on
    this 4-CPU runtime, trials of 1 CPU as 2 workers make 4 at once, trials of 2 CPUs make 2 (each trial holds
    exactly its CPUs: its coordinator's 0.01 CPU comes out of its workers')."""
    from sweeps.driver.resources import concurrent_trials

    def limit(*flags: str) -> int:
        return concurrent_trials(plan_for([*tiny_args(), *store_args(tmp_path), *flags]))

    assert limit("--workers-per-trial", "2", "--cpus-per-trial", "1") == 4
    assert limit("--workers-per-trial", "2", "--cpus-per-trial", "2") == 2
    assert limit("--workers-per-trial", "2", "--cpus-per-trial", "1", "--max-concurrent", "5") == 5
    assert limit("--cpus-per-trial", "1") == 0  # single-process trials: Tune itself waits for room


def test_a_search_offers_no_multi_worker_trials(tmp_path, capsys):
    """A search trains each trial in one process: its command line has no --workers-per-trial (it was offered in
    --help, then every value > 1 refused)."""
    from sweeps import regularization
    from sweeps.cli import study_arg_parser

    assert "--workers-per-trial" not in study_arg_parser(regularization.STUDY).format_help()
    argv = [*tiny_args("--workers-per-trial", "2", iterations=400), *store_args(tmp_path)]
    with pytest.raises(SystemExit) as exit_:
        regularization.main(argv)
    assert exit_.value.code == 2 and "unrecognized arguments: --workers-per-trial" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_a_two_worker_trial_whose_newest_checkpoint_is_corrupt_resumes_from_the_older_one(ray_runtime, tmp_path):
    """Rank 0 truncates the newest checkpoint Ray Train registered (iteration 6, named ``checkpoint_<date>``) and
    raises: the retried trial refuses it for the older one beside it (3), not a fresh start, ends FINISHED, logs
    every step exactly once, and the deterministic error costs one retry, not one per level."""
    plan = plan_for([*tiny_args(), *store_args(tmp_path, "workers"), "--depths", "8", "--families", "residual",
                     "--seeds", "1", "--workers-per-trial", "2", "--cpus-per-trial", "1",
                     "--system-metrics-every", "0.5"])
    spec = write_faults(tmp_path, [{"trial": "residual-8 seed 0", "kind": "corrupt_checkpoint", "after": 6}])
    (result,) = run_sweep(plan, hooks=FaultHooks.from_file(spec))
    assert result.error is None and result.metrics["iteration"] == 12 and result.metrics["status"] == "completed"
    corrupted = json.loads((tmp_path / "markers" / "0-corrupt_checkpoint.1").read_text())["checkpoint"]
    assert re.fullmatch(r"checkpoint_\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d\.\d+", Path(corrupted).name)  # Ray Train's

    client = MlflowClient(plan.tracking_uri)
    (run,) = trial_runs(client, "workers")["residual-8 seed 0"]
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
    assert run.data.tags["checkpoint_refused"].startswith(f"{Path(corrupted).name}: ")
    assert run.data.tags["resumed_from_iteration"] == "3"
    assert run.data.tags["attempts"] == "2"  # one Tune retry: Ray Train's own FailureConfig retries nothing
    for metric in METRICS:
        assert steps(client, run, metric) == STEPS, metric
    # Each worker samples its own machine: rank 0 as a single-process trial does, rank 1 under its own prefix.
    sampled = set(client.get_run(run.info.run_id).data.metrics)
    assert "system/cpu_utilization_percentage" in sampled, sorted(sampled)
    assert "system/worker_1/cpu_utilization_percentage" in sampled, sorted(sampled)

