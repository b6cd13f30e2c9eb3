"""Experiment names and paths with quotes, spaces and non-ASCII letters, end to end: a real sweep into a real
SQLite store, its resume and its report (MLflow's search filters have no escape for a quote inside a quoted
value, so each value is quoted with the quote character it does not hold)."""

from __future__ import annotations


import pytest
from mlflow.tracking import MlflowClient
from mlflow.utils.search_utils import SearchUtils

from dashboards import report
from sweeps import depth_vs_error
from tracking.store import filter_value
from tracking.trial_run import TrialTracking, find_trial_run
from support.plans import store_args, tiny_args

EXPERIMENT = "bob's sweep"


@pytest.mark.parametrize("text", ["plain", "bob's sweep", 'say "hi"', "/home/o'neil ü/ray_results/x", ""])
def test_filter_value_quotes_any_value_mlflow_then_reads_back_unchanged(text):
    parsed = SearchUtils.parse_search_filter(f"tags.a = {filter_value(text)} and tags.b = {filter_value(text)}")
    assert [p["value"] for p in parsed] == [text, text]


def test_filter_value_refuses_a_value_holding_both_quote_kinds():
    with pytest.raises(ValueError, match="both"):
        filter_value("""bob's "sweep\"""")


def test_a_name_holding_both_quote_kinds_is_refused_before_anything_is_created(tmp_path, capsys):
    argv = [*tiny_args("--depths", "8", "--families", "plain", "--seeds", "1"), *store_args(tmp_path),
            "--experiment", """bob's "sweep\""""]
    assert depth_vs_error.main(argv) == 2
    assert "--experiment" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


@pytest.fixture(scope="module")
def quoted_sweep(ray_runtime, tmp_path_factory):
    """One real sweep (plain-8, 1 seed, 12 iterations) named ``bob's sweep``, everything under ``o'neil ü``."""
    home = tmp_path_factory.mktemp("names") / "o'neil ü"
    home.mkdir()
    argv = [*tiny_args("--depths", "8", "--families", "plain", "--seeds", "1", "--cpus-per-trial", "1",
                       eval_every=4), *store_args(home, EXPERIMENT)]
    code = depth_vs_error.main(argv)
    return home, argv, code


def test_the_sweep_runs_to_the_end_and_its_trial_run_is_found_by_its_trial_id(quoted_sweep):
    home, _, code = quoted_sweep
    assert code == 0
    client = MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id])
    [parent] = [r for r in runs if r.data.tags.get("role") == "sweep"]
    [trial] = [r for r in runs if r.data.tags.get("role") == "trial"]
    assert parent.info.status == "FINISHED" and trial.info.status == "FINISHED"
    assert parent.data.tags["sweep_id"] == str(home / "ray_results" / EXPERIMENT)
    tracking = TrialTracking(f"sqlite:///{home / 'mlflow.db'}", experiment.experiment_id, parent.info.run_id)
    assert find_trial_run(client, tracking, trial.data.tags["trial_id"]).info.run_id == trial.info.run_id


def test_resuming_the_finished_sweep_is_accepted(quoted_sweep):
    _, argv, code = quoted_sweep
    assert code == 0
    assert depth_vs_error.main([*argv, "--resume"]) == 0


def test_the_report_builds(quoted_sweep, tmp_path):
    home, _, code = quoted_sweep
    assert code == 0
    out = tmp_path / "report.html"
    assert report.main(["--experiment", EXPERIMENT, "--tracking-uri", f"sqlite:///{home / 'mlflow.db'}",
                        "--out", str(out)]) == 0
    assert "bob&#x27;s sweep" in out.read_text() or "bob's sweep" in out.read_text()
