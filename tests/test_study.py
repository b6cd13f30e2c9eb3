"""A study is a short declarative file: grids from presets and flags, the worked example in the docs, and
the rule that test-only fault injection stays out of the installed package."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps.cli import plan_from_argv, study_arg_parser
from sweeps.depth_vs_error import STUDY
from tracking import operations
from tracking.spool import Spool, resend

REPO = Path(__file__).resolve().parents[1]


def cells(argv: list[str]) -> list[tuple]:
    plan = plan_from_argv(STUDY, ["--preset", *argv])
    return [(c.model.residual, c.model.depth, c.run.seed, c.optim.warmup) for c in plan.configs()]


def test_paper_grid_has_per_family_depths_warmup_for_110_and_three_seeds():
    trials = cells(["paper"])
    assert len(trials) == (4 + 5) * 3
    assert {(r, d) for r, d, _, _ in trials} == {(False, d) for d in (20, 32, 44, 56)} | {(True, d) for d in (20, 32, 44, 56, 110)}
    assert {w for r, d, _, w in trials if (r, d) == (True, 110)} == {True}
    assert not any(w for r, d, _, w in trials if d != 110)
    assert trials[0][1] == 110  # deepest first


def test_axis_flags_filter_categories_and_replace_values():
    # --families keeps the preset's depths of the family chosen; --depths replaces them in every block.
    assert {(r, d) for r, d, _, _ in cells(["paper", "--families", "plain"])} == {(False, d) for d in (20, 32, 44, 56)}
    assert {(r, d) for r, d, _, _ in cells(["paper", "--depths", "8,14"])} == {(r, d) for r in (False, True) for d in (8, 14)}
    with pytest.raises(ValueError, match=r"unknown family 'wide' in --families; choose from \['plain', 'residual'\]"):
        cells(["smoke", "--families", "wide"])


def test_iterations_scale_milestones_in_one_place():
    plan = plan_from_argv(STUDY, ["--preset", "smoke", "--iterations", "400"])
    assert plan.base["optim.milestones"] == [200, 300]
    plan = plan_from_argv(STUDY, ["--preset", "smoke", "--set", "optim.iterations=800"])
    assert plan.base["optim.milestones"] == [400, 600]


def test_recipe_is_paper_exactly_when_the_training_fields_are_the_papers(tmp_path):
    paper = ["--preset", "paper", "--data-dir", str(tmp_path), "--cpus-per-trial", "4"]
    assert plan_from_argv(STUDY, paper).recipe == "paper"          # paths and threads are not the recipe
    assert plan_from_argv(STUDY, [*paper, "--depths", "20,56"]).recipe == "paper"  # fewer nets, same recipe
    assert plan_from_argv(STUDY, [*paper, "--eval-every", "500"]).recipe == "paper"
    for change in (["--iterations", "32000"], ["--set", "optim.weight_decay=5e-4"], ["--shortcut", "B"],
                   ["--set", "run.precision=bf16"], ["--dataset", "cifar100"]):
        assert plan_from_argv(STUDY, [*paper, *change]).recipe == "reduced", change
    assert plan_from_argv(STUDY, ["--preset", "smoke"]).recipe == "reduced"


def test_study_flags_come_from_the_config_metadata():
    help_text = study_arg_parser(STUDY).format_help()
    for flag in ("--dataset", "--data-dir", "--iterations", "--eval-every", "--shortcut", "--families", "--depths"):
        assert flag in help_text
    assert "(default: the preset's)" in help_text
    with pytest.raises(SystemExit) as exit_:  # the field's choices are the flag's: argparse refuses the rest
        plan_from_argv(STUDY, ["--preset", "smoke", "--dataset", "mnist"])
    assert exit_.value.code == 2


def test_the_worked_example_in_the_architecture_doc_is_a_working_study(tmp_path):
    """docs/architecture.md shows a whole new grid study; run its code as a user would copy it."""
    text = (REPO / "docs" / "architecture.md").read_text()
    (code,) = re.findall(r"```python\n(\"\"\"The width study.*?)```", text, re.S)
    assert len(code.splitlines()) <= 60
    namespace: dict = {"__name__": "width_study", "__file__": str(REPO / "sweeps" / "width.py")}
    exec(compile(code, "width_study.py", "exec"), namespace)
    study = namespace["STUDY"]
    plan = plan_from_argv(study, ["--preset", "smoke", "--widths", "1,2", "--storage-path", str(tmp_path)])
    widths = sorted({(c.model.width, c.model.depth, c.model.residual) for c in plan.configs()})
    assert widths == [(1.0, 20, True), (1.0, 56, True), (2.0, 20, True), (2.0, 56, True)]


def test_fault_injection_is_not_in_the_installed_package():
    assert not (REPO / "sweeps" / "faults.py").exists()
    for folder in ("sweeps", "resnet_core", "dashboards"):
        for path in (REPO / folder).glob("**/*.py"):
            source = path.read_text()
            assert "torch.save =" not in source and "os.system" not in source and "__reduce__" not in source, path


def test_every_tracking_operation_replays_from_the_spool(tmp_path):
    """The same entries that are sent live are kept in the spool and replayed, into a real SQLite store."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("ops", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment_id).info.run_id
    child = client.create_run(experiment_id, tags={"mlflow.parentRunId": parent, "trial_id": "trial"}).info.run_id
    artifact = tmp_path / "note.json"
    artifact.write_text('{"a": 1}')
    spool = Spool(tmp_path / "spool" / "trial.jsonl", uri)  # the trial's, then the sweep's own
    sweep_spool = Spool(tmp_path / "spool" / f"sweep-{parent}.jsonl", uri)
    for entry in (operations.metrics_entry(child, 5, {"train/error": 12.5, "test/error": 20.0}, "train/error"),
                  operations.tags_entry(child, {"outcome": "completed"}),
                  operations.artifact_entry(child, artifact, "probes"),
                  operations.dataset_entry(child, "digits", "f900fd833f21cdd9", "code", "sklearn"),
                  operations.dataset_entry(child, "digits", "f900fd833f21cdd9", "code", "sklearn")):  # twice: once
        spool.append(entry)
    for entry in (operations.close_orphans_entry(parent, experiment_id), operations.status_entry(parent, "FINISHED")):
        sweep_spool.append(entry)
    artifact.unlink()  # the spool kept its own copy
    assert spool.flush() == 0 and not spool.path.exists()
    assert sweep_spool.flush() == 0 and not sweep_spool.path.exists() and not spool.rejected.exists()
    run = client.get_run(child)
    assert run.data.metrics == {"train/error": 12.5, "test/error": 20.0}
    assert [m.step for m in client.get_metric_history(child, "train/error")] == [5]
    assert run.data.tags["outcome"] == "interrupted"  # closed as an orphan after its tags arrived
    assert run.info.status == "KILLED" and client.get_run(parent).info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(child, "probes")] == ["probes/note.json"]
    (dataset,) = run.inputs.dataset_inputs
    assert (dataset.dataset.name, dataset.dataset.digest) == ("digits", "f900fd833f21cdd9")
    assert {(t.key, t.value) for t in dataset.tags} == {("mlflow.data.context", "training")}
    with pytest.raises(ValueError, match=r"unknown tracking call 'frobnicate'"):
        operations.send(client, {"op": "frobnicate", "run_id": child})


def test_trials_logging_one_data_set_at_the_same_moment_all_get_it(tmp_path):
    """A sweep's trials log the same data set as they start: eight at once, five times, into one SQLite store.
    MLflow's store looks a data set up, then inserts it, so racing inserts fail on its unique key (seen in a
    9-trial sweep, which then retried a trial); every run must still get its one data set input, no call fails."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("datasets")
    failures: list[str] = []
    runs: list[str] = []
    for round_ in range(5):
        batch = [client.create_run(experiment_id).info.run_id for _ in range(8)]
        runs += batch
        start = threading.Barrier(len(batch))

        def log(run_id: str, digest: str = f"digest{round_}") -> None:
            own = MlflowClient(uri)  # a trial's own client, as in its own process
            start.wait()
            try:
                operations.send(own, operations.dataset_entry(run_id, "synthetic", digest, "code", "synthetic"))
            except Exception as exc:  # noqa: BLE001 - any failure is the finding
                failures.append(str(exc)[:200])

        threads = [threading.Thread(target=log, args=(run_id,)) for run_id in batch]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert failures == []
    assert all(len(client.get_run(run_id).inputs.dataset_inputs) == 1 for run_id in runs)


def test_a_duplicate_row_is_recognised_on_every_database_a_server_may_run_on(tmp_path):
    """The race retry knew only SQLite's and PostgreSQL's words. A real SQLite duplicate insert (the error a local
    store chains as its cause) and the messages MySQL and SQL Server send through a tracking server."""
    import sqlalchemy
    from mlflow.exceptions import MlflowException

    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'race.db'}")
    with engine.begin() as db:
        db.execute(sqlalchemy.text("CREATE TABLE datasets (digest TEXT PRIMARY KEY)"))
        db.execute(sqlalchemy.text("INSERT INTO datasets VALUES ('f900')"))
    try:
        with engine.begin() as db:
            db.execute(sqlalchemy.text("INSERT INTO datasets VALUES ('f900')"))
    except sqlalchemy.exc.IntegrityError as integrity:
        try:
            raise MlflowException("the store could not log the inputs") from integrity
        except MlflowException as wrapped:
            assert operations.is_duplicate_key(wrapped)
    for relayed in ("(pymysql.err.IntegrityError) (1062, \"Duplicate entry 'f900-digits' for key 'datasets.PRIMARY'\")",
                    "Violation of UNIQUE KEY constraint 'uq_dataset'. Cannot insert duplicate key in object 'datasets'"):
        assert operations.is_duplicate_key(MlflowException(relayed))
    assert not operations.is_duplicate_key(MlflowException("Run 'abc' not found"))


def test_a_forged_spool_line_is_never_trusted(tmp_path):
    """Spools may sit on shared storage. A forged line that names another store, or an artifact outside the
    spool (an absolute path, a ``..`` name), is not followed: the honest lines reach the spool's own store,
    the forged artifact is refused, and no file outside the store's artifacts is read or written."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("forged", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(experiment_id, tags={"trial_id": "trial"}).info.run_id
    secret = tmp_path / "secret.txt"
    secret.write_text("the driver's private file")
    spool_dir = tmp_path / "ray_results" / "forged" / "tracking_spool"
    spool = Spool(spool_dir / "trial.jsonl", uri)
    spool.append(operations.metrics_entry(run, 3, {"train/error": 50.0}, "train/error"))
    forged = [
        {"op": "metrics", "run_id": run, "metrics": [["train/error", 40.0, 1, 6]], "uri": "http://203.0.113.9:5000"},
        {"op": "artifact", "run_id": run, "path": str(secret), "name": "secret.txt", "artifact_path": None},
        {"op": "artifact", "run_id": run, "path": "0000-x", "name": "../../../escaped.txt", "artifact_path": None},
        {"op": "artifact", "run_id": run, "path": "0000-x", "name": "x.txt", "artifact_path": "../../outside"},
    ]
    with spool.path.open("a") as f:
        f.write("".join(json.dumps(line) + "\n" for line in forged))
    (spool.files).mkdir(parents=True, exist_ok=True)
    (spool.files / "0000-x").write_text("planted")

    assert resend(spool_dir, uri) == 0 and not spool.path.exists()
    assert sorted(m.step for m in client.get_metric_history(run, "train/error")) == [3, 6]  # our store, not the named
    assert client.list_artifacts(run) == []  # every forged artifact refused
    assert not any(tmp_path.rglob("escaped.txt")) and not any(tmp_path.rglob("outside"))
    with pytest.raises(ValueError, match="not a plain file name"):
        operations.check_entry(forged[1])


def test_a_symbolic_link_planted_in_a_spool_is_never_followed(tmp_path):
    """A writer to the shared volume links a spooled artifact to a file only the resending user may read, and
    plants links where the spool copies a file and where it rewrites itself: the linked file is not uploaded,
    the files the links point at are neither read into the store nor overwritten, the honest calls arrive."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    run = client.create_run(client.create_experiment("links", artifact_location=(tmp_path / "a").as_uri()),
                            tags={"trial_id": "trial"}).info.run_id
    secret, victim = tmp_path / "id_rsa", tmp_path / "victim.txt"
    secret.write_text("private key")
    victim.write_text("untouched")
    spool = Spool(tmp_path / "spool" / "trial.jsonl", uri)
    spool.append(operations.metrics_entry(run, 3, {"train/error": 50.0}, "train/error"))
    spool.files.mkdir(parents=True)
    (spool.files / "0000-key.txt").symlink_to(secret)  # an artifact line naming it: refused
    (spool.files / "0002-note.txt").symlink_to(victim)  # where the next copy goes (2 files there): not written through
    with spool.path.open("a") as f:
        f.write(json.dumps({"op": "artifact", "run_id": run, "path": "0000-key.txt", "name": "key.txt",
                            "artifact_path": None}) + "\n")
    note = tmp_path / "note.txt"
    note.write_text("honest")
    with pytest.raises(FileExistsError):
        spool.append(operations.artifact_entry(run, note, None))
    assert victim.read_text() == "untouched"

    down = Spool(spool.path, "http://127.0.0.1:9")  # nothing listens: the calls stay, the spool is rewritten
    spool.path.with_suffix(".jsonl.tmp").symlink_to(victim)
    assert down.flush(attempts=1) == 2
    assert victim.read_text() == "untouched" and not spool.path.is_symlink()

    assert spool.flush() == 0
    assert [m.step for m in client.get_metric_history(run, "train/error")] == [3]
    assert client.list_artifacts(run) == []  # the linked key was refused


def test_a_spool_that_cannot_be_written_loses_the_call_with_an_error_but_not_the_trial(tmp_path, monkeypatch, caplog):
    """The store is unreachable and the spool's disk is full (here: its directory cannot be created): the call
    is lost, said in the log as LOST, and the trial goes on instead of crashing mid-training."""
    from tracking.trial_run import TrialRun, TrialTracking

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("full")
    parent = client.create_run(experiment_id).info.run_id
    (tmp_path / "full-disk").write_text("")  # a file where the spool's directory should go
    run = TrialRun(TrialTracking(uri, experiment_id, parent, spool_dir=str(tmp_path / "full-disk" / "spool")),
                   "trial-1", "plain-8 seed 0", {}, {"model.depth": 8}, attempts=1)
    run.client = MlflowClient("http://127.0.0.1:9")  # the store goes away (nothing listens on port 9)
    assert run.log_metrics(3, {"train/error": 50.0}) is True  # counted as handled: training goes on
    run.set_tags({"outcome": "completed"})
    assert "LOST, neither sent nor kept" in caplog.text and "full-disk" in caplog.text
    assert not run.spool.pending()


def test_the_forecast_adds_measured_paces_and_estimates_unstarted_trials_by_depth():
    from sweeps.driver.forecast import TrialPace, forecast_line, remaining_seconds

    running = TrialPace(iterations=1000, depth=20, first=(100, 12.0), latest=(300, 32.0))  # 0.1 s/iteration
    waiting = TrialPace(iterations=1000, depth=56)  # 0.1 / 20 per layer x 56 = 0.28 s/iteration
    finished = TrialPace(iterations=1000, depth=20, first=(100, 10.0), latest=(1000, 100.0), done=True)
    spent, left = remaining_seconds([running, waiting, finished])
    assert spent == 132.0
    assert abs(left - (700 * 0.1 + 1000 * 0.28)) < 1e-9
    assert remaining_seconds([waiting]) is None  # nothing measured yet: no forecast
    line = forecast_line([running, waiting, finished], running=2, gpus_per_trial=0.5, cpus_per_trial=2, now=0.0)
    assert f"{(132 + 350) * 0.5 / 3600:.2f} GPU-hours" in line and "3 min left at 2 trial(s)" in line
    cpu = forecast_line([running, waiting], running=1, gpus_per_trial=0, cpus_per_trial=2, now=0.0)
    assert "CPU core-hours" in cpu and "6 min left at 1 trial(s)" in cpu


def test_a_trials_minutes_left_come_from_its_own_pace(monkeypatch):
    import math

    import sweeps.trial.trainable as trainable

    clock = iter([100.0, 130.0, 190.0])
    monkeypatch.setattr(trainable.time, "monotonic", lambda: next(clock))
    pace = trainable.Pace(iterations=1000)
    assert math.isnan(pace.minutes_left(100))  # at the first evaluation: no pace yet
    assert pace.minutes_left(200) == round(800 * 0.3 / 60, 1)  # 30 s per 100 iterations
    assert pace.minutes_left(400) == round(600 * 0.3 / 60, 1)


def test_the_imagenet_presets_are_the_papers_tables_2_and_3():
    from sweeps.shortcut_options import STUDY as SHORTCUTS

    def nets(study, preset):
        plan = plan_from_argv(study, ["--preset", preset])
        # The paper's 8 GPUs per net: 8 workers of one GPU, 32 images each (its BatchNorm batch).
        assert (plan.workers_per_trial, plan.worker_request["GPU"], plan.base["optim.batch_size"]) == (8, 1, 256)
        return sorted((("residual" if c.model.residual else "plain"), c.model.depth, c.model.shortcut)
                      for c in plan.configs()), plan.configs()[0]

    table2, config = nets(STUDY, "imagenet")
    assert table2 == [("plain", 18, "A"), ("plain", 34, "A"), ("residual", 18, "A"), ("residual", 34, "A")]
    assert (config.data.dataset, config.data.recipe, config.optim.batch_size, config.optim.iterations,
            config.optim.schedule) == ("imagenet", "paper", 256, 600_000, "plateau")
    table3, config = nets(SHORTCUTS, "imagenet")
    residual = [net for net in table3 if net[0] == "residual"]
    assert ("plain", 34, "B") in table3 and len(table3) == 7
    assert residual == [("residual", 34, "A"), ("residual", 34, "B"), ("residual", 34, "C"),
                        ("residual", 50, "B"), ("residual", 101, "B"), ("residual", 152, "B")]
    assert config.model.bottleneck_stride == "1x1"  # the paper's (Caffe's) bottleneck


def test_the_imagenet_smoke_preset_runs_end_to_end(ray_runtime, tmp_path, capsys):
    """On the generated ImageNet-layout set, shortened: every trial completes and logs top-5 and 10-crop."""
    import subprocess
    import sys

    from sweeps import depth_vs_error

    data = tmp_path / "digits-imagenet"
    subprocess.run([sys.executable, "-m", "resnet_core.imagenet.sample", str(data)], check=True, cwd=REPO,
                   capture_output=True, timeout=300)
    code = depth_vs_error.main(["--preset", "imagenet-smoke", "--data-dir", str(data), "--depths", "18",
                                "--iterations", "4", "--eval-every", "2", "--set", "run.data_workers=0",
                                "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage-path",
                                str(tmp_path / "ray_results"), "--no-report"])
    assert code == 0, capsys.readouterr()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("depth_vs_error")
    runs = client.search_runs([experiment.experiment_id], "tags.role = 'trial'")
    assert sorted(r.info.run_name for r in runs) == ["plain-18 seed 0", "residual-18 seed 0"]
    for run in runs:
        assert run.info.status == "FINISHED"
        assert {"test/error", "test/top5_error", "test/error_10crop", "test/top5_error_10crop"} <= set(run.data.metrics)
        (dataset,) = run.inputs.dataset_inputs
        assert dataset.dataset.name == "imagenet" and dataset.dataset.source == str(data)
