"""The depth sweep through real Ray Tune into a real MLflow SQLite store (tiny configs, synthetic data)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from resnet_core import TrainConfig
from resnet_core.trainer import resolve_precision
from sweeps import depth_vs_error
from sweeps.runner import run_sweep
from plans import plan_for

TINY = ["--preset", "smoke", "--dataset", "synthetic", "--depths", "8,14", "--families", "plain,residual",
        "--seeds", "1", "--iterations", "12", "--eval-every", "4", "--cpus-per-trial", "1", "--no-report",
        "--set", "optim.batch_size=32", "--set", "run.probe_images=16"]
METRICS = {"train/error", "train/loss", "test/error", "test/loss", "opt/lr", "perf/images_per_sec",
           "probe/grad_norm", "probe/response_std_mean"}


def tiny_args(tmp_path: Path, *extra: str) -> list[str]:
    return [*TINY, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--storage-path",
            str(tmp_path / "ray_results"), *extra]


@pytest.fixture(scope="module")
def tiny_sweep(ray_runtime, tmp_path_factory):
    """One real sweep (2 families x 2 depths, 1 seed, 2 at a time), shared by the assertions below."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    plan = plan_for(tiny_args(tmp_path, "--experiment", "tiny", "--max-concurrent", "2"))
    results = run_sweep(plan)
    client = MlflowClient(plan.tracking_uri)
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    return plan, results, client, runs


def children(runs):
    return [r for r in runs if r.data.tags.get("role") == "trial"]


def test_one_parent_and_one_child_run_per_trial(tiny_sweep):
    plan, results, client, runs = tiny_sweep
    assert not results.errors
    parents = [r for r in runs if r.data.tags.get("role") == "sweep"]
    assert len(parents) == 1 and len(runs) == 5
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["preset"] == "smoke" and parent.data.tags["recipe"] == "reduced"
    trials = children(runs)
    assert sorted(r.info.run_name for r in trials) == [
        "plain-14 seed 0", "plain-8 seed 0", "residual-14 seed 0", "residual-8 seed 0"]
    assert {r.data.tags["mlflow.parentRunId"] for r in trials} == {parent.info.run_id}
    assert {r.info.status for r in trials} == {"FINISHED"}
    assert len({r.data.tags["trial_id"] for r in trials}) == 4


def test_child_runs_carry_params_tags_and_full_metric_histories(tiny_sweep):
    plan, _, client, runs = tiny_sweep
    for run in children(runs):
        tags, params = run.data.tags, run.data.params
        family, depth = run.info.run_name.split()[0].split("-")
        assert tags["family"] == family and tags["depth"] == depth and tags["seed"] == "0"
        assert tags["shortcut"] == ("A" if family == "residual" else "none")
        assert tags["dataset"] == "synthetic" and tags["preset"] == "smoke" and tags["outcome"] == "completed"
        assert params["run.precision"] == "auto" and tags["precision"] == resolve_precision("auto", torch.device("cpu"))
        config = TrainConfig.from_dict({k: json.loads(v) if k == "optim.milestones" else v for k, v in params.items()})
        assert set(params) == set(TrainConfig().to_dict())
        assert config.model.depth == int(depth) and config.model.residual == (family == "residual")
        assert config.optim.iterations == 12 and config.optim.batch_size == 32
        assert METRICS <= set(run.data.metrics)
        for metric in METRICS:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, metric)]
            assert steps == [4, 8, 12], (metric, steps)


def test_child_runs_have_artifacts(tiny_sweep):
    _, _, client, runs = tiny_sweep
    for run in children(runs):
        names = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert {"config.json", "environment.json", "probes", "model"} <= names
        probes = json.loads(Path(client.download_artifacts(run.info.run_id, "probes/layer_response_std.json")).read_text())
        depth = int(run.data.tags["depth"])
        assert probes["iterations"] == [4, 8, 12] and len(probes["layers"]) == depth - 1
        assert all(len(row) == depth - 1 for row in probes["std"])
        env = json.loads(Path(client.download_artifacts(run.info.run_id, "environment.json")).read_text())
        assert env["trial_id"] == run.data.tags["trial_id"] and env["packages"]["torch"]
        assert "git_commit" in env and env["device"].startswith("cpu")


def test_trials_reuse_the_processes_of_finished_ones(tiny_sweep):
    # 4 trials, at most 2 at a time: Tune runs them in 2 processes (no Python/torch/MLflow start per trial).
    _, _, client, runs = tiny_sweep
    pids = [json.loads(Path(client.download_artifacts(run.info.run_id, "environment.json")).read_text())["pid"]
            for run in children(runs)]
    assert len(pids) == 4 and len(set(pids)) <= 2, pids


def test_concurrent_trials_lose_and_duplicate_no_metric(tiny_sweep):
    """Four trials logged at once into one SQLite file: count every metric row in the store itself."""
    plan, _, _, runs = tiny_sweep
    db = plan.tracking_uri[len("sqlite:///"):]
    with sqlite3.connect(db) as connection:
        for run in children(runs):
            rows = connection.execute("select key, step, count(*) from metrics where run_uuid = ? group by key, step",
                                      (run.info.run_id,)).fetchall()
            assert len(rows) == len(METRICS) * 3
            assert {count for _, _, count in rows} == {1}


@pytest.mark.parametrize("argv, message", [
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--depths", "20,21"], "6n+2"),
    (["--families", "plain,wide"], "unknown family 'wide'"),
    (["--iterations", "0"], "optim.iterations must be > 0"),
    (["--iterations", "-5"], "optim.iterations must be > 0"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--dataset", "imagenet"], "data.dataset='imagenet' is not valid"),
    (["--set", "optim.lr=-1"], "optim.lr must be > 0"),
    (["--shortcut", "D"], "model.shortcut='D' is not valid"),
])
def test_bad_input_fails_before_anything_starts(tmp_path, capsys, argv, message):
    code = depth_vs_error.main(tiny_args(tmp_path, *argv))
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def test_unavailable_dataset_and_unreachable_server_fail_before_anything_starts(tmp_path, capsys):
    code = depth_vs_error.main(tiny_args(tmp_path, "--dataset", "cifar10", "--data-dir", str(tmp_path / "nodata")))
    err = capsys.readouterr().err
    assert code == 2 and "CIFAR-10 not found" in err and "--data-dir" in err
    code = depth_vs_error.main([*TINY, "--tracking-uri", "http://127.0.0.1:9", "--storage-path", str(tmp_path / "rr")])
    assert code == 2 and "unreachable" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "rr").exists()


def test_no_preset_picks_smoke_on_a_cluster_without_gpus(ray_runtime, tmp_path, capsys):
    code = depth_vs_error.main(tiny_args(tmp_path, "--seeds", "-1")[2:])  # drop "--preset smoke"
    out = capsys.readouterr()
    assert out.out.splitlines()[0].startswith("preset: smoke (the Ray cluster has no GPU)")
    assert code == 2 and "--seeds must be >= 1" in out.err
