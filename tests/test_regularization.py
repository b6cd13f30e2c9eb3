"""The regularisation search, for real: Ray Tune with ASHA and the Optuna searcher, a real MLflow SQLite store and
a real Optuna RDB storage, a driver SIGKILLed mid-search and resumed. Kept short by tiny configs (synthetic
data, depth 8, batch 32, 24 iterations with lr drops at 12 and 18, an evaluation every 4, ASHA's one rung at
20 that keeps the best quarter, 4-6 trials), not by mocks.
"""

from __future__ import annotations

import json
import pickle
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from mlflow.tracking import MlflowClient
from optuna.trial import TrialState
from ray.tune import ExperimentAnalysis

from dashboards import varied_runs
from dashboards.loader import load_experiment
from dashboards.optuna_search import MIN_IMPORTANCE_TRIALS, rung_survival, search_trials
from dashboards.report import build_report
from sweeps.driver.search.asha import AshaRungs, asha_scheduler
from sweeps.cli import plan_from_argv, study_arg_parser
from sweeps.driver.plan import check_plan
from sweeps.regularization import STUDY, main
from sweeps.driver.search.stages import run_search
from sweeps.driver.search.settings import last_lr_drop
from sweeps.driver.search.searcher import FullBudgetOptunaSearch, judge
from sweeps.trial.identity import trial_meta
from support import REPO
from support.faults import write_faults
from support.plans import store_args, tiny_args
from support.processes import driver_env, kill_driver, terminated_in_saved_state, wait_for

TINY = tiny_args("--depth", "8", "--set", "data.val_size=128", "--grace-period", "20", "--reduction-factor", "4",
                 "--top-k", "1", "--confirm-seeds", "1", iterations=24, eval_every=4)
METRICS = ("train/error", "val/error", "test/error", "opt/lr")


def search_runs(client: MlflowClient, experiment: str, stage: str) -> dict[str, list]:
    """Trial runs of one stage by run name (a list, so that a duplicate run would show)."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs: dict[str, list] = {}
    for run in client.search_runs([experiment_id], f"tags.stage = '{stage}'", max_results=1000):
        runs.setdefault(run.info.run_name, []).append(run)
    return runs


def studies(tmp_path: Path) -> dict[str, optuna.Study]:
    """The Optuna studies in the search's storage (beside the MLflow store), by net."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    return {s.study_name.split("/")[1]: optuna.load_study(study_name=s.study_name, storage=storage)
            for s in optuna.get_all_study_summaries(storage)}


def assert_steps_unique(client: MlflowClient, run) -> None:
    for metric in METRICS:
        steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
        assert steps == sorted(set(steps)), (run.info.run_name, metric, steps)


# --- bad input and --help ----------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, message", [
    (["--knobs", "weight_decay,momentum"], r"unknown knob 'momentum' in --knobs; choose from \['weight_decay', "),
    (["--weight-decay", "1e-3,1e-4"], r"--weight-decay 1e-3,1e-4: the search range is empty; give LOW,HIGH with LOW <"),
    (["--weight-decay", "-1e-5,1e-2"], r"--weight-decay -1e-5,1e-2: optim.weight_decay must be >= 0"),
    (["--num-samples", "0"], r"--num-samples must be >= 1; got 0"),
    (["--head-dropout", "0,1.5"], r"--head-dropout 0,1.5: model.head_dropout must be in \[0, 1\); got 1.5"),
    (["--set", "data.val_size=0"], r"needs a validation split: data.val_size must be > 0"),
    # the smoke preset's lr drops at 200 and 300 of 400 iterations: ASHA's first rung must come after 300
    (["--grace-period", "300"], r"--grace-period 300: ASHA's first rung must lie after the last lr drop at iteration "
                                r"300 \(optim.milestones \[200, 300\]\), .* give a grace period in \[301, 400\]"),
    (["--grace-period", "500"], r"--grace-period 500: .*within the 400 training iterations; give a grace period in "
                                r"\[301, 400\]"),
    (["--iterations", "1000"], r"--grace-period 350: .*after the last lr drop at iteration 750 .*\[751, 1000\]"),
])
def test_bad_input_exits_2_naming_the_value_before_anything_is_created(tmp_path, monkeypatch, capsys, flags, message):
    monkeypatch.chdir(tmp_path)
    assert main(["--preset", "smoke", *flags]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []  # no MLflow store, Tune directory or Optuna storage


def test_help_documents_every_flag():
    parser = study_arg_parser(STUDY)
    text = parser.format_help()
    for action in parser._actions:
        assert action.help, action.option_strings
        for flag in action.option_strings:
            assert flag in text
    for flag in ("--depth", "--families", "--knobs", "--weight-decay", "--label-smoothing", "--head-dropout",
                 "--augment", "--num-samples", "--search-seed", "--grace-period", "--reduction-factor",
                 "--optuna-storage", "--top-k", "--confirm-seeds", "--resume"):
        assert flag in text
    assert "--seeds " not in text  # a search's seeds are --confirm-seeds


def test_presets_search_on_a_validation_split_with_the_same_budget_for_every_family():
    for preset in ("smoke", "paper"):
        plan = plan_from_argv(STUDY, ["--preset", preset])
        assert plan.base["data.val_size"] > 0 and plan.search.metric == "val/error"
        assert [a["model.residual"] for a in plan.cell_overrides] == [False, True]
    plan = plan_from_argv(STUDY, ["--preset", "paper"])
    assert plan.base["data.val_size"] == 5000 and plan.base["model.depth"] == 56


@pytest.mark.parametrize("preset, milestones, rungs, iterations", [
    ("smoke", [200, 300], [350], 400), ("paper", [32_000, 48_000], [56_000], 64_000)])
def test_every_rung_of_a_preset_lies_after_the_last_lr_drop_on_an_evaluation(preset, milestones, rungs, iterations):
    """ASHA compares trials only where they train at their final lr, and the parent run says so per rung."""
    plan = plan_from_argv(STUDY, ["--preset", preset])
    base, search = plan.base, plan.search
    assert base["optim.iterations"] == iterations and base["optim.milestones"] == milestones
    assert search.rungs(iterations) == rungs and all(r > last_lr_drop(milestones, iterations) for r in rungs)
    assert all(r % base["run.eval_every"] == 0 for r in rungs)  # compared at the rung, not at a later evaluation
    params = plan.extra_params
    assert params["search.rungs"] == rungs and params["search.lr_milestones"] == milestones
    assert params["search.rung_milestones"] == {r: milestones for r in rungs}


def test_asha_rungs_are_kept_across_a_driver_restart():
    """Tune restores the searcher but not the scheduler: AshaRungs carries ASHA's rung records across, so a
    trial after --resume is measured against the trials before it."""
    search = plan_from_argv(STUDY, ["--preset", "smoke"]).search

    def scheduler(state: dict | None = None):
        asha = asha_scheduler(search, 400)
        if state is not None:
            AshaRungs(asha).set_state(pickle.loads(pickle.dumps(state)))  # as Tune keeps it, pickled
        return asha

    good, bad = SimpleNamespace(trial_id="good"), SimpleNamespace(trial_id="bad")
    before = scheduler()
    before.on_trial_add(None, good)
    assert before.on_trial_result(None, good, {"iteration": 350, "val/error": 5.0}) == "CONTINUE"
    for asha, decision in ((scheduler(AshaRungs(before).get_state()), "STOP"), (scheduler(), "CONTINUE")):
        asha.on_trial_add(None, bad)
        assert asha.on_trial_result(None, bad, {"iteration": 350, "val/error": 50.0}) == decision


@pytest.mark.parametrize("result, error, expected", [
    ({"status": "completed", "val/error": 7.5}, False, (TrialState.COMPLETE, 7.5, "completed")),
    ({"status": "running", "val/error": 30.0}, False, (TrialState.PRUNED, None, "stopped_early")),  # ASHA's stop
    ({"status": "diverged"}, False, (TrialState.FAIL, None, "diverged")),
    ({"status": "completed", "val/error": 7.5}, True, (TrialState.FAIL, None, "failed")),
    (None, False, (TrialState.FAIL, None, "failed")),
])
def test_only_a_trial_that_reached_its_last_evaluation_is_complete(result, error, expected):
    assert judge(result, error, "val/error") == expected


def test_a_restored_searcher_reissues_what_the_dead_driver_asked_for_and_refuses_strangers(tmp_path):
    """Tune's saved searcher state can lag behind the Optuna storage: a trial asked for after the save (its Tune
    trial is lost with the driver) is handed, same parameters, to the next new Tune trial, which adopts its run."""
    search = plan_from_argv(STUDY, ["--preset", "smoke"]).search
    url = f"sqlite:///{tmp_path / 'optuna.db'}"

    def searcher() -> FullBudgetOptunaSearch:
        return FullBudgetOptunaSearch(search.knobs(), url, "s", 0, 2, "plain-20", "val/error", str)

    first = searcher()
    first.suggest("a")
    first.on_trial_complete("a", {"status": "completed", "val/error": 5.0, "iteration": 400})
    first.suggest("b")
    first.save(str(tmp_path / "searcher.pkl"))  # what Tune saved: a finished, b running
    lost = first.suggest("c")  # asked after that save
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    again = restored.suggest("d")
    assert trial_meta(again).name == "plain-20 trial 2" and trial_meta(again).adopts == "c"
    assert {k: again[k] for k in search.space} == {k: lost[k] for k in search.space}
    new = restored.suggest("e")
    assert trial_meta(new).name == "plain-20 trial 3" and trial_meta(new).adopts is None
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == 4 and study.user_attrs["tune_restores"] == 1
    assert study.trials[2].user_attrs["tune_trial_id"] == "d"
    with pytest.raises(RuntimeError, match="never suggested"):  # Tune restored trials, but not this searcher
        searcher().on_trial_result("b", {"iteration": 100, "val/error": 9.0})


def test_a_finished_optuna_trial_links_to_its_mlflow_run_page_where_a_ui_is_known(tmp_path):
    search = plan_from_argv(STUDY, ["--preset", "smoke"]).search
    searcher = FullBudgetOptunaSearch(search.knobs(), f"sqlite:///{tmp_path / 'optuna.db'}", "s", 0, 2, "plain-20",
                                      "val/error", str, run_url=lambda run_id: f"http://ui:5000/#/runs/{run_id}")
    searcher.suggest("a")
    searcher.on_trial_complete("a", {"status": "completed", "val/error": 5.0, "iteration": 400,
                                     "mlflow_run_id": "r1"})
    (trial,) = searcher._ot_study.get_trials()
    assert trial.user_attrs["mlflow_run_id"] == "r1" and trial.user_attrs["mlflow_run_url"] == "http://ui:5000/#/runs/r1"


# --- a tiny search where ASHA stops some trials -------------------------------------------------------------

@pytest.fixture(scope="module")
def asha_search(ray_runtime, tmp_path_factory):
    """One family, six trials one at a time (so ASHA's decisions are the same on every run), confirm stage."""
    tmp_path = tmp_path_factory.mktemp("asha")
    plan = plan_from_argv(STUDY, [*TINY, *store_args(tmp_path, "asha"), "--families", "residual",
                                  "--num-samples", "6", "--max-concurrent", "1", "--cpus-per-trial", "1"])
    check_plan(plan)
    results = run_search(plan)
    return tmp_path, plan, results, MlflowClient(plan.tracking_uri)


def test_asha_stopped_trials_are_recorded_as_stopped_early_not_completed(asha_search):
    tmp_path, plan, results, client = asha_search
    assert not results.errors and results.status == "FINISHED"
    runs = search_runs(client, "asha", "search")
    assert sorted(runs) == [f"residual-8 trial {n}" for n in range(6)] and all(len(r) == 1 for r in runs.values())
    study = studies(tmp_path)["residual-8"]
    assert len(study.trials) == 6
    stopped = {name: r[0] for name, r in runs.items() if r[0].data.tags["outcome"] == "stopped_early"}
    assert stopped, "ASHA stopped no trial: the test needs a search where it does"
    for name, run in runs.items():
        run = run[0]
        trial = study.trials[int(run.data.tags["optuna_trial"])]
        assert trial.user_attrs["tune_trial_id"] == run.data.tags["trial_id"]
        assert trial.params["optim.weight_decay"] == pytest.approx(float(run.data.params["optim.weight_decay"]))
        last = max(m.step for m in client.get_metric_history(run.info.run_id, "val/error"))
        # Every run ends FINISHED: an ASHA stop is a decision of the search, not a fault (KILLED is for
        # interruptions); its outcome, iteration and reason say it stopped early.
        assert run.info.status == "FINISHED"
        if name in stopped:  # PRUNED at its last value, not COMPLETE
            assert trial.state == TrialState.PRUNED and trial.user_attrs["outcome"] == "stopped_early"
            assert run.data.tags["stopped_at_iteration"] == str(last) == "20"  # the rung, after the drop at 18
            assert run.data.tags["stop_reason"] == trial.user_attrs["stop_reason"]
        else:
            assert trial.state == TrialState.COMPLETE and last == 24 and run.data.tags["outcome"] == "completed"
        assert trial.value == pytest.approx(run.data.metrics["val/error"])


def test_the_optuna_study_holds_every_evaluation_and_why_each_pruned_trial_stopped(asha_search):
    """What optuna-dashboard shows: each trial's validation error at every evaluation iteration (4, 8, ... up to
    where it stopped) equal to its MLflow history, and for a pruned trial, where and why ASHA stopped it."""
    tmp_path, _, _, client = asha_search
    study = studies(tmp_path)["residual-8"]
    runs = {r[0].data.tags["optuna_trial"]: r[0] for r in search_runs(client, "asha", "search").values()}
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned and len(pruned) < len(study.trials)
    for trial in study.trials:
        history = client.get_metric_history(runs[str(trial.number)].info.run_id, "val/error")
        last = max(m.step for m in history)
        assert sorted(trial.intermediate_values) == list(range(4, last + 1, 4))  # every evaluation
        assert trial.intermediate_values == pytest.approx({m.step: m.value for m in history})
    for trial in pruned:
        assert trial.user_attrs["stop_reason"] == (
            "ASHA stopped it at rung 1 of 1 (iteration 20; compared at iteration 20, 2 iterations after the last "
            "lr drop at 18): its val/error there was outside the best 1/4 of the values the trials before it "
            "recorded at that rung")
    assert all("stop_reason" not in t.user_attrs for t in study.trials if t.state == TrialState.COMPLETE)


def test_optuna_dashboard_names_the_objective_and_links_each_trial_to_its_mlflow_run(asha_search):
    """It showed "Objective 0" and nothing that leads back to the run in MLflow."""
    tmp_path, plan, _, client = asha_search
    study = studies(tmp_path)["residual-8"]
    assert study.metric_names == [plan.search.metric]
    runs = {r[0].data.tags["optuna_trial"]: r[0] for r in search_runs(client, "asha", "search").values()}
    assert {t.user_attrs["mlflow_run_id"] for t in study.trials} == {r.info.run_id for r in runs.values()}
    assert all(t.user_attrs["mlflow_run_id"] == runs[str(t.number)].info.run_id for t in study.trials)
    assert all("mlflow_run_url" not in t.user_attrs for t in study.trials)  # a local store: no UI address known


def test_the_parent_run_says_where_each_rung_lies_against_the_lr_drops(asha_search):
    _, _, _, client = asha_search
    parent = client.search_runs([client.get_experiment_by_name("asha").experiment_id], "tags.role = 'sweep'")[0]
    assert json.loads(parent.data.params["search.rungs"]) == [20]
    assert json.loads(parent.data.params["search.rung_milestones"]) == {"20": [12, 18]}
    assert json.loads(parent.data.params["search.lr_milestones"]) == [12, 18]


def test_importance_uses_full_budget_trials_only_and_says_how_many(asha_search, monkeypatch):
    tmp_path, plan, _, client = asha_search
    seen = []
    real = varied_runs.importance
    monkeypatch.setattr(varied_runs, "importance", lambda table, *a, **k: seen.append(table) or real(table, *a, **k))
    report = build_report("asha", plan.tracking_uri, tmp_path / "report.html", log_to_parent=False).read_text()
    runs = search_runs(client, "asha", "search")
    full = {r[0].info.run_id for r in runs.values() if r[0].data.tags["outcome"] == "completed"}
    stopped = len(runs) - len(full)
    assert re.search(rf"{len(full)} full-budget trials[^<]*\b{stopped} trial\S* stopped early", report)
    if len(full) >= MIN_IMPORTANCE_TRIALS:  # enough for fANOVA: it saw exactly the full-budget trials
        assert set(seen[-1]["run_id"]) == full
    assert 'id="fig-search-history"' in report and "best found" in report
    last_steps = [max(m.step for m in client.get_metric_history(r[0].info.run_id, "train/error")) for r in runs.values()]
    survived = rung_survival(search_trials(load_experiment("asha", plan.tracking_uri).runs, plan.search.space),
                             plan.search.rungs(24), 24).iloc[0]
    assert [survived[c] for c in ("20", "24 (full)")] == [sum(s >= m for s in last_steps) for m in (20, 24)]


def test_confirm_stage_retrains_the_best_and_the_default_recipe(asha_search):
    tmp_path, plan, results, client = asha_search
    confirm = search_runs(client, "asha", "confirm")
    assert sorted(confirm) == ["residual-8 default seed 1", "residual-8 top1 seed 1"]
    best = min((r[0] for r in search_runs(client, "asha", "search").values()
                if r[0].data.tags["outcome"] == "completed"),
               key=lambda r: (r.data.metrics["val/error"], int(r.data.tags["optuna_trial"])))  # ties: the earlier
    top1 = confirm["residual-8 top1 seed 1"][0]
    assert top1.data.tags["optuna_trial"] == best.data.tags["optuna_trial"] and top1.data.tags["seed"] == "1"
    for key in plan.search.space:
        assert top1.data.params[key] == best.data.params[key]
    default = confirm["residual-8 default seed 1"][0]
    assert default.data.params["optim.weight_decay"] == "0.0001" and default.data.params["model.head_dropout"] == "0.0"
    assert all(r[0].info.status == "FINISHED" and "test/error" in r[0].data.metrics for r in confirm.values())


# --- the driver killed mid-search, then --resume ------------------------------------------------------------

def kill_when_three_plain_trials_finished(command: list[str], tmp_path: Path, ray_tmp: str) -> None:
    """Start the driver, wait until plain-8 trial 2 hangs and the other three are finished in Optuna and Tune
    saved its state after that, then SIGKILL the driver and its Ray."""
    experiment_dir = tmp_path / "ray_results" / "killed" / "search-plain-8"

    def finished_in_optuna() -> int:
        found = studies(tmp_path) if (tmp_path / "optuna.db").exists() else {}
        return sum(t.state.is_finished() for t in found["plain-8"].trials) if "plain-8" in found else 0

    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen(command, cwd=tmp_path, env=driver_env(ray_tmp), stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for((tmp_path / "markers" / "0-hang.1").exists, 300, "plain-8 trial 2 to hang", first, log)
        wait_for(lambda: finished_in_optuna() == 3, 300, "the other plain trials to finish", first, log)
        wait_for(lambda: len(terminated_in_saved_state(experiment_dir)) == 3, 120,
                 "Tune to save the three finished trials as TERMINATED", first, log)
    finally:
        kill_driver(first, ray_tmp)


def test_killed_search_resumes_with_its_searcher_and_exact_trial_counts(tmp_path, ray_tmp):
    """SIGKILL the driver while plain-8 trial 2 hangs and its other trials have finished; --resume finishes the
    search with exactly --num-samples trials per family in Tune, Optuna and MLflow, nothing run twice."""
    args = [*TINY, *store_args(tmp_path, "killed"), "--families", "plain,residual", "--num-samples", "4",
            "--max-concurrent", "2", "--cpus-per-trial", "1"]
    spec = write_faults(tmp_path, [{"trial": "plain-8 trial 2", "kind": "hang", "after": 4}])  # before any rung
    command = [sys.executable, str(REPO / "tests" / "support" / "faulty_sweep.py"), str(spec), "regularization", *args]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    kill_when_three_plain_trials_finished(command, tmp_path, ray_tmp)
    before = {name: (r[0].data.tags["attempts"], [(m.step, m.timestamp) for m in
                                                  client.get_metric_history(r[0].info.run_id, "val/error")])
              for name, r in search_runs(client, "killed", "search").items() if name != "plain-8 trial 2"}
    assert sorted(before) == ["plain-8 trial 0", "plain-8 trial 1", "plain-8 trial 3"]

    resumed = subprocess.run(command + ["--resume"], cwd=tmp_path, env=driver_env(ray_tmp), capture_output=True,
                             text=True, timeout=600, start_new_session=True)
    assert resumed.returncode == 0, resumed.stdout[-5000:] + resumed.stderr[-5000:]

    found = studies(tmp_path)
    runs = search_runs(client, "killed", "search")
    for net in ("plain-8", "residual-8"):
        assert len(ExperimentAnalysis(str(tmp_path / "ray_results" / "killed" / f"search-{net}")).trials) == 4  # Tune
        assert [t.number for t in found[net].trials] == [0, 1, 2, 3]  # Optuna
        assert all(t.state.is_finished() for t in found[net].trials)
        assert sorted(n for n in runs if n.startswith(net)) == [f"{net} trial {i}" for i in range(4)]  # MLflow
    assert all(len(r) == 1 for r in runs.values())
    assert found["plain-8"].user_attrs["tune_restores"] == 1  # the searcher was restored, not started afresh
    for name, (attempts, history) in before.items():  # finished before the kill: not rerun, runs untouched
        run = runs[name][0]
        assert run.data.tags["attempts"] == attempts == "1"
        assert [(m.step, m.timestamp) for m in client.get_metric_history(run.info.run_id, "val/error")] == history
    hung = runs["plain-8 trial 2"][0]
    assert hung.data.tags["attempts"] == "2" and hung.data.tags["resumed_from_iteration"] == "4"
    assert hung.info.status == "FINISHED" and hung.data.tags["outcome"] in ("completed", "stopped_early")
    for run in [r[0] for r in runs.values()] + [r[0] for r in search_runs(client, "killed", "confirm").values()]:
        assert_steps_unique(client, run)
    for net, study in found.items():  # the restored searcher goes on recording every evaluation
        for trial in study.trials:
            run = runs[f"{net} trial {trial.number}"][0]
            logged = [m.step for m in client.get_metric_history(run.info.run_id, "val/error")]
            assert sorted(trial.intermediate_values) == logged, (net, trial.number)
    assert len(search_runs(client, "killed", "confirm")) == 4  # (top1 + default) x 1 seed x 2 families
