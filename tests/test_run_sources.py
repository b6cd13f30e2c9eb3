"""What the MLflow UI shows of a sweep's runs beyond metrics: Source, Version and User columns, the parent's
description, each trial's system metrics; and where to look, printed when the sweep starts (a real sweep into a
real SQLite store)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps import depth_vs_error
from support.plans import store_args, tiny_args

SCRIPT = "sweeps/depth_vs_error.py"


@pytest.fixture(scope="module")
def sourced_sweep(ray_runtime, tmp_path_factory):
    """The user's command, `python sweeps/depth_vs_error.py ...`, with system metrics sampled every 0.5 s and a
    secret-looking flag that must not reach the description."""
    tmp_path = tmp_path_factory.mktemp("sources")
    argv = [*tiny_args("--depths", "8", "--families", "plain,residual", "--seeds", "1", "--cpus-per-trial", "1",
                       iterations=300, eval_every=100),
            *store_args(tmp_path, "sources"), "--system-metrics-every", "0.5"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [SCRIPT, *argv])
        code = depth_vs_error.main(argv)
    assert code == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("sources")
    return client, client.search_runs([experiment.experiment_id]), argv


def test_trial_and_parent_runs_carry_source_version_and_user(sourced_sweep):
    """Runs made with MlflowClient.create_run get none of these by themselves: the UI's columns were empty."""
    import getpass
    import subprocess

    client, runs, _ = sourced_sweep
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                            cwd=Path(__file__).parents[1]).stdout.strip()
    assert len(runs) == 3
    for run in runs:
        tags = run.data.tags
        assert tags["mlflow.source.name"] == SCRIPT and tags["mlflow.source.type"] == "LOCAL"
        assert tags["mlflow.source.git.commit"] == commit and tags["mlflow.user"] == getpass.getuser()


def test_the_parent_run_describes_the_sweep_and_its_command(sourced_sweep):
    _, runs, argv = sourced_sweep
    (parent,) = [r for r in runs if r.data.tags.get("role") == "sweep"]
    note = parent.data.tags["mlflow.note.content"]
    assert "depth_vs_error study, preset smoke" in note and "--system-metrics-every 0.5" in note
    assert f"python {SCRIPT} --preset smoke" in note


def test_each_trial_logs_system_metrics_through_mlflows_monitor(sourced_sweep):
    client, runs, _ = sourced_sweep
    for run in (r for r in runs if r.data.tags.get("role") == "trial"):
        system = {key for key in run.data.metrics if key.startswith("system/")}
        assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system, system
        history = client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
        assert len(history) >= 2 and all(0 <= point.value <= 100 * 64 for point in history)


def test_no_system_metrics_when_turned_off(ray_runtime, tmp_path):
    argv = [*tiny_args("--depths", "8", "--families", "plain", "--seeds", "1", iterations=12),
            *store_args(tmp_path), "--system-metrics-every", "0"]
    assert depth_vs_error.main(argv) == 0
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("depth_vs_error").experiment_id])
    trial = next(r for r in runs if r.data.tags.get("role") == "trial")
    assert trial.data.metrics and not any(key.startswith("system/") for key in trial.data.metrics)


def test_a_negative_interval_is_refused_before_anything_starts(tmp_path, capsys):
    argv = [*tiny_args(), *store_args(tmp_path), "--system-metrics-every", "-1"]
    assert depth_vs_error.main(argv) == 2
    assert "--system-metrics-every must be >= 0 (0: off); got -1" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists()


def test_the_sweep_says_where_its_runs_appear_when_it_starts(ray_runtime, tmp_path, capfd):
    """The MLflow address was printed only when the sweep ended; Tune printed a `tensorboard` command for a
    logger whose package is not installed."""
    argv = [*tiny_args("--depths", "8", "--families", "plain", "--seeds", "1", iterations=12),
            *store_args(tmp_path), "--system-metrics-every", "0"]
    assert depth_vs_error.main(argv) == 0
    out = capfd.readouterr().out
    first = out.index("MLflow: mlflow ui --backend-store-uri sqlite:///")
    assert first < out.index("plain-8 seed 0"), out[:2000]  # before Tune's first table of trials
    assert "tensorboard" not in out.lower()
