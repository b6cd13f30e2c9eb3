"""The depth sweep through real Ray Tune into a real MLflow SQLite store (tiny configs, synthetic data)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

from resnet_core import TrainConfig
from resnet_core.device import resolve_precision
from sweeps import depth_vs_error
from sweeps.driver.grid import run_sweep
from support.plans import plan_for, store_args, tiny_args
from support.logged_runs import METRICS

TINY = tiny_args("--depths", "8,14", "--families", "plain,residual", "--seeds", "1", "--cpus-per-trial", "1",
                 eval_every=4)


def sweep_args(tmp_path: Path, *extra: str) -> list[str]:
    """TINY into a store under ``tmp_path``, then ``extra``."""
    return [*TINY, *store_args(tmp_path), *extra]


@pytest.fixture(scope="module")
def tiny_sweep(ray_runtime, tmp_path_factory):
    """One real sweep (2 families x 2 depths, 1 seed, 2 at a time), shared by the assertions below."""
    tmp_path = tmp_path_factory.mktemp("sweep")
    plan = plan_for(sweep_args(tmp_path, "--experiment", "tiny", "--max-concurrent", "2"))
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
    assert client.get_experiment_by_name("tiny").tags["mlflow.experimentKind"] == "custom_model_development"
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
        # every package that computes a result is recorded with its version, not only the framework
        assert all(env["packages"][name] for name in ("torchcodec", "optuna", "pandas", "scipy", "plotly",
                                                      "scikit-learn", "resnet-depth-studies"))
        assert "git_commit" in env and env["device"].startswith("cpu")
        # Given no GPU, a trial computes on the CPU with the GPUs hidden; fp32 there is IEEE fp32 (TF32 off).
        assert env["cuda_visible_devices"] == "" and env["tf32_cudnn"] is False and env["deterministic"] is False


def test_every_trial_run_records_its_data_as_an_mlflow_dataset_input(tiny_sweep):
    """So the MLflow UI's Dataset column and dataset filters work: one input per run, the same digest for runs
    on the same data and split."""
    from resnet_core.config import DataConfig
    from resnet_core.data_identity import data_identity

    _, _, client, runs = tiny_sweep
    expected = data_identity(DataConfig(dataset="synthetic"))
    for run in children(runs):
        (dataset,) = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert (dataset.dataset.name, dataset.dataset.digest, dataset.dataset.source_type) == (
            "synthetic", expected.digest, "code")
        assert [(t.key, t.value) for t in dataset.tags] == [("mlflow.data.context", "training")]
    assert data_identity(DataConfig(dataset="synthetic", val_size=100)).digest != expected.digest


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
    (["--depths", "20,21"], "6n+2"),
    (["--families", "plain,wide"], "unknown family 'wide'"),
    (["--iterations", "0"], "optim.iterations must be > 0"),
    (["--iterations", "-5"], "optim.iterations must be > 0"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--set", "optim.lr=-1"], "optim.lr must be > 0"),
])
def test_bad_input_fails_before_anything_starts(tmp_path, capsys, argv, message):
    code = depth_vs_error.main(sweep_args(tmp_path, *argv))
    assert code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


@pytest.mark.parametrize("argv, bad, valid", [
    (["--dataset", "mnist"], "mnist", ["'cifar10'", "'digits'", "'imagenet'"]),
    (["--shortcut", "D"], "D", ["'A'", "'B'", "'C'"]),
])
def test_an_enumerated_config_flag_refuses_a_value_outside_its_choices(tmp_path, capsys, argv, bad, valid):
    """The config fields' choices are the flags' choices (resnet_core/flags.py), as in the single-run CLI."""
    with pytest.raises(SystemExit) as exit_:
        depth_vs_error.main(sweep_args(tmp_path, *argv))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"invalid choice: '{bad}'" in err and all(v in err for v in valid)
    assert not (tmp_path / "mlflow.db").exists()


def test_an_unknown_preset_is_refused_naming_the_valid_ones(tmp_path, capsys):
    """The presets are the flag's choices, so help and shell completion show them too."""
    with pytest.raises(SystemExit) as exit_:
        depth_vs_error.main(sweep_args(tmp_path, "--preset", "huge"))
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "invalid choice: 'huge'" in err and "'smoke'" in err and "'paper'" in err
    assert not (tmp_path / "mlflow.db").exists()


def test_unavailable_dataset_and_unreachable_server_fail_before_anything_starts(tmp_path, capsys):
    code = depth_vs_error.main(sweep_args(tmp_path, "--dataset", "cifar10", "--data-dir", str(tmp_path / "nodata")))
    err = capsys.readouterr().err
    assert code == 2 and "CIFAR-10 not found" in err and "--data-dir" in err
    code = depth_vs_error.main([*TINY, "--tracking-uri", "http://127.0.0.1:9", "--storage-path", str(tmp_path / "rr")])
    assert code == 2 and "unreachable" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "rr").exists()


def test_no_preset_picks_smoke_on_a_cluster_without_gpus(ray_runtime, tmp_path, capsys):
    code = depth_vs_error.main(sweep_args(tmp_path, "--seeds", "-1")[2:])  # drop "--preset smoke"
    out = capsys.readouterr()
    assert out.out.splitlines()[0].startswith("preset: smoke (the Ray cluster has no GPU)")
    assert code == 2 and "--seeds must be >= 1" in out.err


def test_a_trial_no_node_can_hold_is_refused_before_anything_starts(ray_runtime, tmp_path, capsys):
    """As a new user would try it: --gpus-per-trial 2 on a machine without GPUs would leave every trial PENDING.
    (run.device=auto: the smoke preset computes on the CPU, and a CPU trial asking for GPUs is refused earlier.)"""
    code = depth_vs_error.main(sweep_args(tmp_path, "--gpus-per-trial", "2", "--set", "run.device=auto"))
    err = capsys.readouterr().err
    assert code == 2
    assert "each trial asks for 1 CPU, 2 GPU" in err and "0 GPU" in err and "does not autoscale" in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


@pytest.fixture
def autoscaler_config(ray_runtime):
    """Publish an autoscaler's node groups in the real GCS, as `ray up` and KubeRay's autoscaler do; removed after."""
    from ray._raylet import GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, GCS_AUTOSCALER_STATE_NAMESPACE
    from ray.core.generated import autoscaler_pb2
    from ray.experimental import internal_kv

    def publish(gpus_per_node: float) -> None:
        config = autoscaler_pb2.ClusterConfig()
        group = config.node_group_configs.add(name="gpu-workers", max_count=4)
        group.resources.update({"CPU": 8, "GPU": gpus_per_node})
        internal_kv._internal_kv_put(GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, config.SerializeToString(),
                                     namespace=GCS_AUTOSCALER_STATE_NAMESPACE)

    yield publish
    internal_kv._internal_kv_del(GCS_AUTOSCALER_CLUSTER_CONFIG_KEY, namespace=GCS_AUTOSCALER_STATE_NAMESPACE)


def test_multi_worker_trials_at_once_count_the_nodes_an_autoscaler_may_start(autoscaler_config, tmp_path):
    """The limit is set at the start: counting only the nodes alive, a group at 0 replicas ran one trial at a time
    all sweep. Here the 4 CPUs alive hold 2 trials of 2 workers × 1 CPU, and 4 nodes of 8 CPUs 16 more."""
    from sweeps.driver.resources import concurrent_trials

    plan = plan_for(sweep_args(tmp_path, "--workers-per-trial", "2", "--cpus-per-trial", "2"))
    assert concurrent_trials(plan) == 2
    autoscaler_config(gpus_per_node=0)
    assert concurrent_trials(plan) == 2 + 16


def test_an_autoscaler_that_can_add_a_fitting_node_is_not_refused(autoscaler_config, tmp_path):
    import ray

    from sweeps.driver.resources import check_trial_fits

    plan = plan_for(sweep_args(tmp_path, "--gpus-per-trial", "2", "--set", "run.device=auto"))
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    autoscaler_config(gpus_per_node=4)
    check_trial_fits(plan, nodes)  # the autoscaler can start a node with 4 GPUs: the trials wait for it
    autoscaler_config(gpus_per_node=1)
    with pytest.raises(ValueError, match="no autoscaler can add what is missing"):
        check_trial_fits(plan, nodes)


def test_a_multi_worker_trial_fits_when_the_nodes_together_hold_its_workers(autoscaler_config, tmp_path):
    """4 workers of one GPU: two nodes of 2 GPUs hold them (Ray Train spreads workers over nodes), one does not;
    an autoscaler that may add two more such nodes makes room."""
    from sweeps.driver.resources import check_trial_fits

    plan = plan_for(sweep_args(tmp_path, "--workers-per-trial", "4", "--gpus-per-trial", "4", "--cpus-per-trial", "8",
                               "--set", "run.device=auto"))
    node = {"CPU": 8.0, "GPU": 2.0}
    check_trial_fits(plan, [node, node])
    with pytest.raises(ValueError, match=r"each trial is 4 workers \(--workers-per-trial\) of 1.99 CPU, 1 GPU each"):
        check_trial_fits(plan, [node])
    autoscaler_config(gpus_per_node=2)  # up to 4 nodes of 8 CPUs, 2 GPUs
    check_trial_fits(plan, [node])


def test_a_cluster_that_autoscales_from_its_head_alone_needs_shared_storage(autoscaler_config, tmp_path):
    """One node alive, but an autoscaler may add GPU workers: their trials could not reach a SQLite store or a
    local checkpoint directory, so the sweep is refused before it starts, as on a cluster of several nodes."""
    from sweeps.driver.resources import check_cluster

    plan = plan_for(sweep_args(tmp_path))
    check_cluster(plan)  # a fixed one-node cluster: local storage is fine
    autoscaler_config(gpus_per_node=1)
    with pytest.raises(ValueError, match="may start more nodes") as caught:
        check_cluster(plan)
    assert "tracking store" in str(caught.value) and "--storage-path" in str(caught.value)


def test_without_ray_private_state_api_the_cluster_is_not_refused(ray_runtime, tmp_path, monkeypatch, caplog):
    """The autoscaler's node groups are read through a private Ray API; if it is gone, we cannot tell: warn, go on."""
    import ray._private.state
    from sweeps.driver.resources import check_cluster

    plan = plan_for(sweep_args(tmp_path, "--gpus-per-trial", "2", "--set", "run.device=auto"))
    monkeypatch.delattr(ray._private.state.GlobalState, "get_cluster_config")
    check_cluster(plan)
    assert "cannot tell whether this Ray cluster autoscales" in caplog.text


def test_resume_with_other_settings_is_refused_naming_them(tiny_sweep, tmp_path):
    plan = tiny_sweep[0]
    argv = [*TINY, "--tracking-uri", plan.tracking_uri, "--storage-path", plan.storage_path, "--experiment", "tiny",
            "--max-concurrent", "2", "--resume"]
    with pytest.raises(ValueError) as refused:
        plan_for([*argv, "--seeds", "2", "--iterations", "16"])
    message = str(refused.value)
    assert "seeds: [0] then, [0, 1] now" in message and "optim.iterations: 12 then, 16 now" in message
    assert "--max-failures" not in message
    same = plan_for([*argv, "--report-path", str(tmp_path / "elsewhere.html")])  # a safe change is accepted
    assert same.resume and same.seeds == [0]


def test_unauthenticated_plain_http_tracking_on_the_network_is_refused(tmp_path, capsys, monkeypatch):
    for name in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    argv = [*TINY, "--tracking-uri", "http://10.255.255.1:5000", "--storage-path", str(tmp_path / "rr")]
    assert depth_vs_error.main(argv) == 2
    err = capsys.readouterr().err
    assert "plain http and no credentials" in err and "--insecure-tracking" in err
    assert not (tmp_path / "rr").exists()
    # With credentials, the refusal is gone (this address is never contacted: the reachability check fails fast).
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "user")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "secret")
    from sweeps.cli import plan_from_argv
    from sweeps.depth_vs_error import STUDY
    from sweeps.driver.security import check_tracking_security

    check_tracking_security(plan_from_argv(STUDY, argv), insecure=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    check_tracking_security(plan_from_argv(STUDY, argv), insecure=True)  # --insecure-tracking: the user's call


def test_a_ray_cluster_without_token_auth_is_refused_unless_insecure_ray(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "10.255.255.1:6379")  # never contacted: refused before connecting
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    assert depth_vs_error.main(sweep_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "without token authentication" in err and "--insecure-ray" in err and "10.255.255.1:6379" in err
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()
    from sweeps.driver.security import check_ray_security

    check_ray_security(insecure=True)  # --insecure-ray: the user's call
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    check_ray_security(insecure=False)
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.delenv("RAY_AUTH_MODE")
    check_ray_security(insecure=False)  # the embedded local Ray


def test_too_little_disk_space_where_the_sweep_writes_is_refused_before_it_starts(tmp_path, capsys, monkeypatch):
    import shutil
    from collections import namedtuple

    real = shutil.disk_usage
    usage = namedtuple("usage", "total used free")
    full = str(tmp_path)

    def almost_full(path):
        return usage(10 << 30, (10 << 30) - (200 << 20), 200 << 20) if str(path).startswith(full) else real(path)

    monkeypatch.setattr(shutil, "disk_usage", almost_full)
    assert depth_vs_error.main(sweep_args(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "only 0.20 GiB free at" in err and str(tmp_path) in err and "at least 1 GiB" in err
    assert not (tmp_path / "ray_results").exists() and not (tmp_path / "mlflow.db").exists()


def _serve_directory(directory: Path):
    """An HTTP server on 127.0.0.1 serving ``directory``, counting requests; returns (server, its base URL)."""
    import functools
    import http.server
    import threading

    class Counting(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):
            self.server.requests.append(self.path)
            super().do_GET()

        def copyfile(self, source, destination):
            try:
                super().copyfile(source, destination)
            except BrokenPipeError:  # torchvision reads only the headers of a first request (redirects)
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Counting, directory=str(directory)))
    server.requests = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_the_driver_downloads_cifar_once_before_any_trial(cifar_dir, tmp_path, monkeypatch):
    """data.download=true: the driver fetches the archive once (not each trial), checked by md5; a failed
    download stops the sweep with a message naming the URL, before anything starts."""
    import hashlib
    import tarfile

    from torchvision.datasets import CIFAR10

    from sweeps.driver.plan import download_data

    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "cifar-10-python.tar.gz", "w:gz") as archive:
        archive.add(cifar_dir / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    server, base = _serve_directory(served)
    try:
        monkeypatch.setattr(CIFAR10, "url", f"{base}/cifar-10-python.tar.gz")
        monkeypatch.setattr(CIFAR10, "tgz_md5", hashlib.md5((served / "cifar-10-python.tar.gz").read_bytes()).hexdigest())
        target = tmp_path / "data"
        flags = ["--dataset", "cifar10", "--data-dir", str(target), "--set", "data.download=true"]
        plan = plan_for(sweep_args(tmp_path, *flags))
        assert len(plan.configs()) == 4  # four trials, one data set
        download_data(plan)
        fetched = len(server.requests)  # torchvision asks twice: for redirects, then the file
        assert fetched and set(server.requests) == {"/cifar-10-python.tar.gz"}
        assert sorted(p.name for p in (target / "cifar-10-batches-py").iterdir()) == sorted(
            p.name for p in (cifar_dir / "cifar-10-batches-py").iterdir())
        download_data(plan)  # there and verified: nothing fetched again
        assert len(server.requests) == fetched

        monkeypatch.setattr(CIFAR10, "url", f"{base}/missing.tar.gz")
        monkeypatch.setattr(CIFAR10, "filename", "missing.tar.gz")
        elsewhere = tmp_path / "elsewhere"
        plan = plan_for(sweep_args(tmp_path / "other", "--dataset", "cifar10", "--data-dir", str(elsewhere),
                                   "--set", "data.download=true"))
        with pytest.raises(ValueError, match="The download failed") as caught:
            download_data(plan)
        assert str(elsewhere) in str(caught.value)
    finally:
        server.shutdown()
