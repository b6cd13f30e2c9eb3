"""The README's cluster path for real: start a Ray head node, `ray job submit` a tiny sweep, check MLflow."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from support.processes import free_port, stop_group

pytestmark = pytest.mark.ray  # a Ray head node started by the test

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture
def head_node():
    """A real Ray head node in its own process group (so stopping it leaves other Ray runtimes alone)."""
    temp_dir = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's unix socket paths have a length limit
    # Ray clusters require an auth token by default (~/.ray/auth_token); clients send it in "token" mode.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token", "RAY_JOB_STOP_WAIT_TIME_S": "120"}  # as cluster/start-head.sh sets it
    env.pop("RAY_ADDRESS", None)
    for _ in range(3):  # a port free_port() found may be taken before Ray binds it (other runtimes on the machine)
        process, log, address = start_head(env, Path(temp_dir))
        try:
            if wait_for_job_server(process, env, address, Path(temp_dir)):
                yield address, env, Path(temp_dir)
                return
        finally:
            stop_group(process, timeout=3)  # then SIGKILL: a blocking `ray start` takes ~30 s to stop by itself
            log.close()
    pytest.fail("the Ray head node lost its ports three times:\n" + (Path(temp_dir) / "head.log").read_text())


def start_head(env: dict, temp_dir: Path):
    """``ray start --head --block`` on fresh loopback ports: the process, its open log, its dashboard address."""
    dashboard = free_port()
    command = [str(BIN / "ray"), "start", "--head", "--block", "--port", str(free_port()), "--num-cpus", "2",
               "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
               "--ray-client-server-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
               "--metrics-export-port", str(free_port()), "--temp-dir", str(temp_dir), "--disable-usage-stats"]
    log = open(temp_dir / "head.log", "w")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return process, log, f"http://127.0.0.1:{dashboard}"


def wait_for_job_server(process: subprocess.Popen, env: dict, address: str, temp_dir: Path) -> bool:
    """True once the head answers ``ray job list``; False if it exited because a port was taken; fails otherwise."""
    deadline = time.time() + 120
    while time.time() < deadline:
        if ray(env, "job", "list", "--address", address).returncode == 0:
            return True
        if process.poll() is not None:
            head_log = (temp_dir / "head.log").read_text()
            assert "Failed to start the grpc server" in head_log or "already in use" in head_log, head_log
            return False
        time.sleep(2)
    pytest.fail("the Ray head node's job server did not come up:\n" + (temp_dir / "head.log").read_text())


def ray(env: dict, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "ray"), *args], env=env, capture_output=True, text=True, timeout=timeout)


def submit(address: str, env: dict, argv: list[str]) -> str:
    """Submit the depth study with ``argv`` as a job (no wait); returns its id. A head that answers the Jobs API
    before its job agent is up refuses with "No available agent" (a loaded machine): asked again for a minute."""
    deadline = time.time() + 60
    while True:
        result = ray(env, "job", "submit", "--address", address, "--working-dir", str(REPO), "--no-wait", "--",
                     "python", "sweeps/depth_vs_error.py", *argv)
        if result.returncode == 0 or "No available agent" not in result.stderr or time.time() > deadline:
            break
        time.sleep(3)
    assert result.returncode == 0, result.stdout + result.stderr
    return re.search(r"raysubmit_\w+", result.stdout + result.stderr).group(0)


def wait_for_end(address: str, env: dict, job_id: str, timeout: float = 400) -> tuple[str, str]:
    """The job's final status line and its logs."""
    deadline, status = time.time() + timeout, ""
    while time.time() < deadline:
        status = ray(env, "job", "status", "--address", address, job_id).stdout
        if re.search(r"succeeded|failed|stopped", status, re.I):
            break
        time.sleep(3)
    return status, ray(env, "job", "logs", "--address", address, job_id).stdout


def test_ray_job_submit_runs_the_imagenet_smoke_preset_on_a_head_node(head_node, tmp_path):
    """The ImageNet smoke preset (shortened) as a job: streamed JPEGs on the head node's CPU, centre-crop and 10-crop
    errors in MLflow, and a report with the Table 2 section."""
    address, env, _ = head_node
    store, data, report = tmp_path / "mlflow.db", tmp_path / "digits-imagenet", tmp_path / "report.html"
    subprocess.run([sys.executable, "-m", "resnet_core.imagenet.sample", str(data)], check=True, cwd=REPO,
                   capture_output=True, timeout=300)
    job_id = submit(address, env, ["--preset", "imagenet-smoke", "--data-dir", str(data), "--depths", "18",
                                   "--iterations", "4", "--eval-every", "2", "--set", "run.data_workers=0",
                                   "--experiment", "job", "--tracking-uri", f"sqlite:///{store}", "--storage-path",
                                   str(tmp_path / "rr"), "--report-path", str(report)])
    status, logs = wait_for_end(address, env, job_id)
    assert re.search(r"succeeded", status, re.I), status + logs
    # The sweep's own first line comes right after Ray's "Running entrypoint ..." line
    lines = logs.splitlines()
    entry = next(i for i, line in enumerate(lines) if line.startswith("Running entrypoint"))
    assert lines[entry + 1].startswith("preset: imagenet-smoke (--preset given)"), logs[:1000]
    assert any(line.startswith("security: ray: cluster") and "token authentication" in line for line in lines), logs
    # Tune's live table names trials as their MLflow runs, with iteration, test error, images/s and minutes left.
    header = next(line for line in lines if "Trial name" in line and "eta_min" in line)
    assert all(column in header for column in ("iteration", "test/error", "perf/images_per_sec", "eta_min")), header
    assert any(line.lstrip("│ ").startswith("plain-18 seed 0") and "TERMINATED" in line for line in lines), logs
    assert "train_trial_" not in logs
    assert any(line.startswith("forecast: 2 trials ≈ ") and "CPU core-hours" in line for line in lines), logs

    client = MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("job").experiment_id])
    trials = [r for r in runs if r.data.tags.get("role") == "trial"]
    assert sorted(r.info.run_name for r in trials) == ["plain-18 seed 0", "residual-18 seed 0"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    artifacts = {a.path for a in client.list_artifacts(trials[0].info.run_id)}
    assert "config.json" in artifacts and (tmp_path / "mlartifacts").is_dir()  # beside the store, not in the job's temp dir
    assert all([m.step for m in client.get_metric_history(r.info.run_id, "train/error")] == [2, 4] for r in trials)
    assert all({"test/top5_error", "test/error_10crop", "test/top5_error_10crop"} <= set(r.data.metrics)
               for r in trials)
    html = report.read_text()
    assert 'id="imagenet-tables"' in html and 'id="imagenet-smoke"' in html  # Table 2, and what a smoke shows


def test_ray_job_stop_ends_the_sweep_as_interrupted_and_resume_finishes_it(head_node, tmp_path):
    """`ray job stop` sends the driver SIGTERM (then SIGKILL after RAY_JOB_STOP_WAIT_TIME_S): the sweep saves
    its state, closes its trial runs and the parent run as KILLED and exits 4; `--resume` finishes it in the
    same runs, every evaluation logged once."""
    address, env, _ = head_node
    store = tmp_path / "mlflow.db"
    argv = ["--preset", "smoke", "--dataset", "synthetic", "--depths", "8", "--families", "plain", "--seeds", "1",
            "--iterations", "2000", "--eval-every", "100", "--set", "optim.batch_size=32", "--experiment", "stopped",
            "--tracking-uri", f"sqlite:///{store}", "--storage-path", str(tmp_path / "rr"), "--no-report"]
    job_id = submit(address, env, argv)

    def evaluations_logged() -> int:  # read-only: an MlflowClient here could race the driver creating the tables
        try:
            with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
                return db.execute("SELECT COUNT(*) FROM metrics WHERE key = 'train/error'").fetchone()[0]
        except sqlite3.OperationalError:
            return 0

    deadline = time.time() + 300
    while evaluations_logged() < 2:
        assert time.time() < deadline, wait_for_end(address, env, job_id, timeout=1)
        time.sleep(1)
    client = MlflowClient(f"sqlite:///{store}")
    (trial,) = client.search_runs([client.get_experiment_by_name("stopped").experiment_id], "tags.role = 'trial'")
    stop = ray(env, "job", "stop", "--address", address, job_id)
    assert stop.returncode == 0, stop.stdout + stop.stderr
    status, logs = wait_for_end(address, env, job_id)
    assert re.search(r"stopped", status, re.I), status
    assert "SIGTERM received" in logs and "continue it with the same command and --resume" in logs, logs[-3000:]
    assert "SIGTERM received at time" not in logs  # Ray's native handler (a stack dump and an abort) did not run
    assert client.get_run(trial.info.run_id).info.status == "KILLED"
    (parent,) = client.search_runs([trial.info.experiment_id], "tags.role = 'sweep'")
    assert parent.info.status == "KILLED"

    resumed = submit(address, env, [*argv, "--resume"])
    status, logs = wait_for_end(address, env, resumed)
    assert re.search(r"succeeded", status, re.I), status + logs[-3000:]
    runs = client.search_runs([trial.info.experiment_id])
    assert {r.info.run_id for r in runs} == {trial.info.run_id, parent.info.run_id}  # the same two runs
    assert {r.info.status for r in runs} == {"FINISHED"}
    steps = [m.step for m in client.get_metric_history(trial.info.run_id, "train/error")]
    assert sorted(steps) == list(range(100, 2001, 100))
