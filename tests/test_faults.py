"""Fault tolerance, every fault injected for real (docs/failure-modes.md): real Ray Tune, a real MLflow
SQLite store, real processes killed. Kept short by tiny configs (synthetic data, depth 8, batch 32, 12
iterations, an evaluation every 3), not by mocks. Faults come from tests/support/faults.py, handed to the sweep as its
trial hooks; each fires a bounded number of times, marked by a marker file.

The tracking server going away is in test_faults_tracking.py.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from mlflow.tracking import MlflowClient
from ray import tune

from resnet_core import load_checkpoint
from resnet_core.checkpoint import CheckpointError
from resnet_core.config import DataConfig
from resnet_core.data import DatasetUnavailableError, load_dataset
from sweeps import depth_vs_error
from sweeps.driver.grid import best_result, run_sweep
from support.faults import Exploit, FaultHooks, write_faults
from support.plans import plan_for, store_args, tiny_args
from support.processes import (driver_env, free_port, kill_driver, kill_ray_session, session_pids, sweep_command,
                               terminated_in_saved_state, wait_for)
from support.logged_runs import METRICS, steps, trial_runs

BIN = Path(sys.executable).parent
TINY = tiny_args()
STEPS = [3, 6, 9, 12]  # TINY's evaluations



def tune_failures(result: tune.Result) -> list[str]:
    """The failures Tune recorded for a trial (its error.txt), one text per failure."""
    error_file = Path(result.path) / "error.txt"
    text = error_file.read_text() if error_file.exists() else ""
    return [part for part in re.split(r"^Failure # \d+ .*$", text, flags=re.M) if part.strip()]


def assert_resumed_in_one_run(client: MlflowClient, runs: list, resumed_from: int, attempts: int = 2,
                              result: tune.Result | None = None) -> None:
    """One run, FINISHED, every metric at every step exactly once, and it continued from ``resumed_from``.

    With ``result``, the run must count one attempt per failure Tune recorded plus the first (at least
    ``attempts``): a loaded machine may fail a trial once more than the injected faults did."""
    assert len(runs) == 1, [r.info.run_id for r in runs]
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["outcome"] == "completed"
    assert run.data.tags["resumed_from_iteration"] == str(resumed_from)
    if result is None:
        assert run.data.tags["attempts"] == str(attempts)
    else:
        failures = tune_failures(result)
        assert len(failures) + 1 >= attempts, failures
        assert run.data.tags["attempts"] == str(len(failures) + 1), failures
    for metric in METRICS:
        assert steps(client, run, metric) == STEPS, metric


# --- one sweep, many faults ---------------------------------------------------------------------------------

NAMES = [f"{family}-{depth} seed {seed}" for family, depth in (("plain", 8), ("residual", 8), ("plain", 14))
         for seed in range(3)]
DIVERGING = [name for name in NAMES if name.startswith("plain-14")]  # lr 1e6
FAULTS = [
    {"trial": "plain-8 seed 0", "kind": "raise", "after": 6},                    # 1: a crash
    {"trial": "plain-8 seed 1", "kind": "sigkill", "after": 6},                  # 3: the process killed
    {"trial": "residual-8 seed 2", "kind": "sigkill", "after": 3, "times": 3},   # 3: ... more often than retried
    {"trial": "plain-8 seed 2", "kind": "corrupt_checkpoint", "after": 9},       # 5: newest checkpoint truncated
    {"trial": "residual-8 seed 1", "kind": "kill_during_checkpoint_write", "after": 9},  # 5
    {"trial": "residual-8 seed 0", "kind": "malicious_checkpoint", "after": 9},  # 6
]


@pytest.fixture(scope="module")
def faulty_sweep(ray_runtime, tmp_path_factory):
    """Nine trials at once into one SQLite store, six of them hit by a fault, three diverging.

    Every trial first holds after iteration 3 until all nine got there, so all nine log concurrently.
    """
    tmp_path = tmp_path_factory.mktemp("faults")
    release = tmp_path / "release"
    holds = [{"trial": name, "kind": "hold", "after": 3, "release": str(release), "timeout": 300} for name in NAMES]
    spec = write_faults(tmp_path, FAULTS + holds)
    markers = tmp_path / "markers"

    plan = plan_for([*TINY, *store_args(tmp_path, "faults"), "--depths", "8", "--families", "plain,residual",
                     "--seeds", "3", "--cpus-per-trial", "0.4", "--max-failures", "2"])
    plan.cell_overrides.append({"model.residual": False, "model.depth": 14, "optim.lr": 1e6})
    assert len(plan.configs()) == 9

    released = {}

    def release_when_all_hold() -> None:
        deadline = time.time() + 300
        while len(list(markers.glob("*-hold.1"))) < len(NAMES) and time.time() < deadline:
            time.sleep(0.2)
        released["time"] = time.time()
        release.touch()

    watcher = threading.Thread(target=release_when_all_hold, daemon=True)
    watcher.start()
    results = run_sweep(plan, hooks=FaultHooks.from_file(spec))
    watcher.join(timeout=5)
    client = MlflowClient(plan.tracking_uri)
    by_name = {trial_config_name(r.config): r for r in results}
    return SimpleNamespace(plan=plan, results=results, by_name=by_name, client=client, markers=markers,
                           runs=trial_runs(client, "faults"), released=released["time"])


def trial_config_name(config: dict) -> str:
    from sweeps.trial.identity import run_name, trial_config

    return run_name(trial_config(config))


def marker_path(s: SimpleNamespace, trial: str, n: int = 1) -> Path:
    """The marker the fault aimed at ``trial`` left at its ``n``-th firing."""
    (index,) = [i for i, fault in enumerate(FAULTS) if fault["trial"] == trial]
    return s.markers / f"{index}-{FAULTS[index]['kind']}.{n}"


def marker(s: SimpleNamespace, trial: str, n: int = 1) -> dict:
    return json.loads(marker_path(s, trial, n).read_text())


def test_crashed_trial_resumes_where_it_stopped_in_the_same_run(faulty_sweep):
    """Item 1: an exception after iteration 6; Tune retries it from its checkpoint at 6 into the same run."""
    s = faulty_sweep
    assert marker(s, "plain-8 seed 0")["iteration"] == 6
    result = s.by_name["plain-8 seed 0"]
    assert result.error is None and result.metrics["iteration"] == 12 and result.metrics["status"] == "completed"
    assert_resumed_in_one_run(s.client, s.runs["plain-8 seed 0"], resumed_from=6, result=s.by_name["plain-8 seed 0"])


def test_killed_trial_process_is_retried_and_its_run_never_stays_running(faulty_sweep):
    """Item 3: SIGKILL of the trial's own process. Retried like a crash; killed more often than
    FailureConfig allows, the trial errors and its run is closed as FAILED by the driver."""
    s = faulty_sweep
    assert marker(s, "plain-8 seed 1")["iteration"] == 6
    assert s.by_name["plain-8 seed 1"].error is None
    assert_resumed_in_one_run(s.client, s.runs["plain-8 seed 1"], resumed_from=6, result=s.by_name["plain-8 seed 1"])

    exhausted = s.by_name["residual-8 seed 2"]
    assert [marker(s, "residual-8 seed 2", n)["iteration"] for n in (1, 2, 3)] == [3, 6, 9]  # max_failures=2
    assert exhausted.error is not None
    (run,) = s.runs["residual-8 seed 2"]
    assert run.info.status == "FAILED" and run.data.tags["outcome"] == "failed"
    assert run.data.tags["attempts"] == "3"
    assert steps(s.client, run) == [3, 6, 9]


def test_diverged_trials_end_as_diverged_are_not_retried_and_never_best(faulty_sweep):
    """Item 4: lr 1e6 makes the loss non-finite: the trial ends diverged (FAILED run, diverged=true),
    is not retried, keeps its last good checkpoint, and the rest of the sweep finishes."""
    s = faulty_sweep
    for name in DIVERGING:
        result = s.by_name[name]
        assert result.error is None and result.metrics["status"] == "diverged"
        (run,) = s.runs[name]
        assert run.info.status == "FAILED"
        assert run.data.tags["outcome"] == "diverged" and run.data.tags["diverged"] == "true"
        assert run.data.tags["attempts"] == "1"  # not retried
        assert load_checkpoint(Path(result.checkpoint.path) / "checkpoint.pt")["iteration"] == 3  # last good one
    recovered = [n for n in NAMES if n not in DIVERGING and n != "residual-8 seed 2"]
    assert {s.runs[n][0].info.status for n in recovered} == {"FINISHED"}

    best = best_result(s.results)
    assert trial_config_name(best.config) in recovered
    # A diverged trial whose last reported test error is the lowest still never counts.
    completed = s.by_name[recovered[0]]
    fake_diverged = tune.Result(metrics={**completed.metrics, "status": "diverged", "test/error": 0.0},
                                checkpoint=None, error=None, path=completed.path)
    assert best_result([completed, fake_diverged]) is completed


def test_corrupt_newest_checkpoint_falls_back_to_the_previous_one(faulty_sweep):
    """Item 5: the checkpoint at 9 truncated, then a crash: the retry refuses it and resumes from 6."""
    s = faulty_sweep
    assert marker(s, "plain-8 seed 2")["iteration"] == 9
    runs = s.runs["plain-8 seed 2"]
    assert_resumed_in_one_run(s.client, runs, resumed_from=6, result=s.by_name["plain-8 seed 2"])
    assert "corrupt or unsafe" in runs[0].data.tags["checkpoint_refused"]


def test_kill_during_checkpoint_write_leaves_no_half_written_file(faulty_sweep):
    """Item 5: SIGKILL half-way through writing the checkpoint at 9. The half-written bytes are only in a
    temporary file; no checkpoint.pt is in place; the retry resumes from 6."""
    s = faulty_sweep
    fired = marker(s, "residual-8 seed 1")
    assert fired["iteration"] == 9
    directory = Path(fired["directory"])
    try:
        assert not (directory / "checkpoint.pt").exists()
        (partial,) = directory.glob(".checkpoint.pt.*.tmp")
        with pytest.raises(CheckpointError):
            load_checkpoint(partial)
    finally:
        for leftover in directory.glob("*"):  # the killed process could not clean its temporary directory
            leftover.unlink()
        directory.rmdir()
    assert_resumed_in_one_run(s.client, s.runs["residual-8 seed 1"], resumed_from=6, result=s.by_name["residual-8 seed 1"])
    trial_dir = Path(s.by_name["residual-8 seed 1"].path)
    for checkpoint in trial_dir.glob("checkpoint_*/checkpoint.pt"):
        load_checkpoint(checkpoint)  # everything Tune kept is whole


def test_malicious_checkpoint_is_refused_and_its_code_never_runs(faulty_sweep, tmp_path):
    """Item 6: the newest checkpoint replaced by a pickle that runs a shell command when unpickled."""
    s = faulty_sweep
    assert marker(s, "residual-8 seed 0")["iteration"] == 9
    planted = marker_path(s, "residual-8 seed 0")
    assert not planted.with_name(planted.name + ".pwned").exists()  # the command never ran
    runs = s.runs["residual-8 seed 0"]
    assert_resumed_in_one_run(s.client, runs, resumed_from=6, result=s.by_name["residual-8 seed 0"])
    assert "GLOBAL posix.system" in runs[0].data.tags["checkpoint_refused"]  # refused by weights_only
    # The planted file is a real exploit: unpickled without weights_only, it does run its command.
    exploit, pwned = tmp_path / "exploit.pt", tmp_path / "pwned"
    torch.save({"model": Exploit(f"touch {pwned}")}, exploit)
    torch.load(exploit, weights_only=False)
    assert pwned.exists()


def test_concurrent_trials_lose_and_duplicate_no_metric(faulty_sweep):
    """Item 10: nine trials (more than eight) logged at once into one SQLite file, crashes and retries
    included: count every metric row in the database itself."""
    s = faulty_sweep
    runs = {name: runs[0] for name, runs in s.runs.items()}
    assert sorted(runs) == sorted(NAMES)
    released_ms = s.released * 1000
    assert all(run.info.start_time < released_ms for run in runs.values())  # all open when released ...
    assert all(run.info.end_time > released_ms for run in runs.values())    # ... and all still logging after
    expected = {name: len(METRICS) * 4 for name in NAMES}
    expected["residual-8 seed 2"] = len(METRICS) * 3   # killed for good after 9
    for name in DIVERGING:
        expected[name] = len(METRICS) + 2              # step 3, then train/loss and opt/lr at divergence
    db = s.plan.tracking_uri[len("sqlite:///"):]
    with sqlite3.connect(db) as connection:
        for name, run in runs.items():
            rows = connection.execute("select key, step, count(*) from metrics where run_uuid = ? group by key, step",
                                      (run.info.run_id,)).fetchall()
            assert {count for _, _, count in rows} == {1}, name
            assert sum(count for *_, count in rows) == expected[name], name
        (total,) = connection.execute("select count(*) from metrics").fetchone()
    assert total == sum(expected.values())


# --- the driver killed ------------------------------------------------------------------------------------

def test_killed_driver_is_resumed_with_resume(tmp_path, ray_tmp):
    """Item 2: SIGKILL of the sweep's driver (its embedded Ray dies with it) while one trial is finished and
    the other is half-way; the same command with --resume finishes the sweep in the same MLflow runs."""
    args = [*TINY, *store_args(tmp_path, "killed"), "--depths", "8", "--families", "plain,residual", "--seeds", "1",
            "--cpus-per-trial", "1", "--max-concurrent", "2"]
    spec = write_faults(tmp_path, [{"trial": "residual-8 seed 0", "kind": "hang", "after": 6}])
    hang = tmp_path / "markers" / "0-hang.1"
    db = tmp_path / "mlflow.db"
    client = MlflowClient(f"sqlite:///{db}")
    experiment_dir = tmp_path / "ray_results" / "killed"

    def trial_status() -> dict[str, str]:
        if not db.exists() or client.get_experiment_by_name("killed") is None:
            return {}
        return {name: runs[0].info.status for name, runs in trial_runs(client, "killed").items()}

    log = tmp_path / "first.log"
    with open(log, "w") as out:
        first = subprocess.Popen(sweep_command(*args, faults=spec), cwd=tmp_path, env=driver_env(ray_tmp),
                                 stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(hang.exists, 300, "the residual trial to hang after iteration 6", first, log)
        wait_for(lambda: trial_status().get("plain-8 seed 0") == "FINISHED", 120, "the plain trial to finish",
                 first, log)
        wait_for(lambda: "plain-8 seed 0" in terminated_in_saved_state(experiment_dir), 60,
                 "Tune to save the plain trial as finished", first, log)
    finally:
        kill_driver(first, ray_tmp)

    before = trial_runs(client, "killed")
    assert trial_status() == {"plain-8 seed 0": "FINISHED", "residual-8 seed 0": "RUNNING"}  # orphaned
    plain_history = [(m.step, m.timestamp) for m in client.get_metric_history(before["plain-8 seed 0"][0].info.run_id,
                                                                              "train/error")]
    (parent,) = client.search_runs([client.get_experiment_by_name("killed").experiment_id], "tags.role = 'sweep'")
    assert parent.info.status == "RUNNING"

    # The same command without --resume starts nothing: it says how to continue, and closes the orphans.
    again = subprocess.run(sweep_command(*args), cwd=tmp_path, env=driver_env(ray_tmp), capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 2, again.stdout + again.stderr
    assert "was interrupted" in again.stderr and "--resume" in again.stderr
    orphan = trial_runs(client, "killed")["residual-8 seed 0"][0]
    assert orphan.info.status == "KILLED" and orphan.data.tags["outcome"] == "interrupted"
    assert client.get_run(parent.info.run_id).info.status == "KILLED"

    resumed = subprocess.run(sweep_command(*args, "--resume"), cwd=tmp_path, env=driver_env(ray_tmp),
                             capture_output=True, text=True, timeout=400, start_new_session=True)
    assert resumed.returncode == 0, resumed.stdout[-5000:] + resumed.stderr[-5000:]
    assert not session_pids(ray_tmp)

    experiment_id = client.get_experiment_by_name("killed").experiment_id
    parents = client.search_runs([experiment_id], "tags.role = 'sweep'")
    assert [p.info.run_id for p in parents] == [parent.info.run_id]  # the parent run is reused ...
    assert parents[0].info.status == "FINISHED"                      # ... and closed truly
    runs = trial_runs(client, "killed")
    assert sorted(runs) == ["plain-8 seed 0", "residual-8 seed 0"] and all(len(r) == 1 for r in runs.values())
    plain = runs["plain-8 seed 0"][0]  # finished before the kill: not rerun, its run untouched
    assert plain.data.tags["attempts"] == "1" and plain.info.status == "FINISHED"
    assert [(m.step, m.timestamp) for m in client.get_metric_history(plain.info.run_id, "train/error")] == plain_history
    assert_resumed_in_one_run(client, runs["residual-8 seed 0"], resumed_from=6)


# --- unsafe multi-node settings ---------------------------------------------------------------------------

@pytest.fixture
def two_node_cluster():
    """A real Ray cluster of two nodes on this machine: a head node and a worker node joined to it, each
    `ray start --block` in its own process group (stopped by killing those groups, never `ray stop`)."""
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token"}  # clusters require a token (~/.ray/auth_token), as in test_ray_job.py
    env.pop("RAY_ADDRESS", None)
    address = f"127.0.0.1:{free_port()}"
    head = [str(BIN / "ray"), "start", "--head", "--block", "--port", address.split(":")[1], "--num-cpus", "1",
            "--include-dashboard", "false", "--dashboard-port", str(free_port()),
            "--ray-client-server-port", str(free_port()), "--temp-dir", temp_dir, "--disable-usage-stats"]
    worker = [str(BIN / "ray"), "start", "--address", address, "--block", "--num-cpus", "1", "--disable-usage-stats"]
    processes = []
    try:
        for command in (head, worker):
            node_ports = ["--dashboard-agent-listen-port", str(free_port()), "--metrics-export-port", str(free_port())]
            log = open(Path(temp_dir) / f"node{len(processes)}.log", "w")
            processes.append(subprocess.Popen(command + node_ports, env=env, stdout=log, stderr=subprocess.STDOUT,
                                              start_new_session=True))

            def nodes_up() -> bool:
                status = subprocess.run([str(BIN / "ray"), "status", "--address", address], env=env,
                                        capture_output=True, text=True)
                return status.returncode == 0 and status.stdout.count(" node_") >= len(processes)

            wait_for(nodes_up, 180, f"{len(processes)} Ray node(s) to be up", processes[-1],
                     Path(temp_dir) / f"node{len(processes) - 1}.log")
        yield address, env
    finally:
        kill_ray_session(processes, temp_dir)
        subprocess.run(["rm", "-rf", temp_dir], check=False)


@pytest.mark.ray  # two Ray nodes started by the fixture
def test_multi_node_cluster_refuses_local_tracking_and_storage_before_anything_starts(two_node_cluster, tmp_path):
    """Item 9: on a real two-node cluster, a SQLite store and a local --storage-path are refused, with what
    to use instead, before any MLflow run or Tune directory exists."""
    address, env = two_node_cluster
    args = [*TINY, *store_args(tmp_path, "cluster"), "--depths", "8", "--seeds", "1"]
    refused = subprocess.run(sweep_command(*args), cwd=tmp_path, env={**env, "RAY_ADDRESS": address},
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    err = refused.stderr
    assert "this Ray cluster has 2 nodes" in err
    assert f"sqlite:///{tmp_path / 'mlflow.db'}" in err and "--tracking-uri http://HOST:5000" in err
    assert f"--storage-path {tmp_path / 'ray_results'}" in err and "s3://" in err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()

    # Confirming a shared mount silences only the storage complaint: the SQLite store is still refused.
    shared = subprocess.run(sweep_command(*args), cwd=tmp_path,
                            env={**env, "RAY_ADDRESS": address, "RESNET_STUDIES_SHARED_STORAGE": "1"},
                            capture_output=True, text=True, timeout=300)
    assert shared.returncode == 2 and "sqlite:///" in shared.stderr and "--storage-path" not in shared.stderr
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


# --- tampered data ----------------------------------------------------------------------------------------


def _no_unpickling(monkeypatch: pytest.MonkeyPatch) -> list:
    calls = []
    real = __import__("pickle").load
    monkeypatch.setattr("pickle.load", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


@pytest.mark.parametrize("damage", ["tampered", "truncated"])
def test_damaged_cifar_file_is_refused_before_unpickling_and_named(cifar_dir, monkeypatch, damage):
    """Item 7: one byte changed in data_batch_3 (it still unpickles) or test_batch cut short: refused by
    the md5 check before anything is unpickled, with the bad file named."""
    folder = cifar_dir / "cifar-10-batches-py"
    name = "data_batch_3" if damage == "tampered" else "test_batch"
    content = bytearray((folder / name).read_bytes())
    if damage == "tampered":
        content[content.index(b"img_2_7.png") + 4] ^= 0x01
    else:
        del content[len(content) // 2:]
    (folder / name).write_bytes(bytes(content))
    unpickled = _no_unpickling(monkeypatch)
    with pytest.raises(DatasetUnavailableError) as caught:
        load_dataset(DataConfig(dataset="cifar10", data_dir=str(cifar_dir)))
    assert repr(str(folder / name)) in str(caught.value) and "integrity check" in str(caught.value)
    assert unpickled == []


def test_damaged_cifar_file_stops_the_sweep_before_anything_starts(cifar_dir, tmp_path, capsys, monkeypatch):
    path = cifar_dir / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(path.read_bytes()[:-100])
    code = depth_vs_error.main([*TINY, *store_args(tmp_path, "data"), "--dataset", "cifar10",
                                "--data-dir", str(cifar_dir), "--depths", "8", "--seeds", "1"])
    assert code == 2 and f"{str(path)!r} failed its integrity check" in capsys.readouterr().err
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "ray_results").exists()


def test_checking_a_data_set_before_a_sweep_verifies_files_without_loading_them(cifar_dir, monkeypatch):
    """The driver's check reads checksums only: nothing is unpickled, and a missing file is named as missing."""
    from resnet_core.data import check_dataset

    unpickled = _no_unpickling(monkeypatch)
    check_dataset(DataConfig(dataset="cifar10", data_dir=str(cifar_dir)))
    assert unpickled == []
    (cifar_dir / "cifar-10-batches-py" / "data_batch_5").unlink()
    with pytest.raises(DatasetUnavailableError, match="CIFAR-10 not found"):
        check_dataset(DataConfig(dataset="cifar10", data_dir=str(cifar_dir)))
