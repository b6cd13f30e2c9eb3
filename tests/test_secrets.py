"""No secret is copied anywhere a sweep writes: passwords in URLs are refused before anything starts, the
command line recorded with each trial is scrubbed, and a real sweep run with secrets in its environment and
on its command line leaves none of them in any file it wrote (stores, Tune state and pickles, artifacts,
spool, Ray's logs)."""

from __future__ import annotations

import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from sweeps import depth_vs_error, regularization
from sweeps.driver.security import scrubbed
from support.plans import store_args, tiny_args
from support import REPO
from support.processes import driver_env


@pytest.mark.parametrize("study, flag, url, advice", [
    (depth_vs_error, "--tracking-uri", "http://alice:{pw}@127.0.0.1:9/", "MLFLOW_TRACKING_PASSWORD"),
    (regularization, "--optuna-storage", "postgresql://optuna:{pw}@db.internal/optuna", "PGPASSWORD"),
])
def test_a_password_in_a_url_is_refused_before_anything_starts(study, flag, url, advice, tmp_path, capsys):
    password = secrets.token_hex(8)
    argv = tiny_args(flag, url.format(pw=password), "--storage-path", str(tmp_path / "rr"),
                     iterations=400)  # within the search preset's ASHA grace period
    if flag != "--tracking-uri":
        argv += ["--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"]
    assert study.main(argv) == 2
    error = capsys.readouterr().err
    assert "holds a password" in error and advice in error and password not in error and "://***@" in error
    assert not (tmp_path / "rr").exists() and not (tmp_path / "mlflow.db").exists()


def test_the_recorded_command_line_is_scrubbed():
    argv = ["sweeps/x.py", "--tracking-uri", "https://u:hunter2@mlflow:5000", "--set", "x.api_key=k3y",
            "--db-password", "pw", "--depths", "8", "TOKEN=abc"]
    assert scrubbed(argv) == ["sweeps/x.py", "--tracking-uri", "https://u:***@mlflow:5000", "--set",
                              "x.api_key=***", "--db-password", "***", "--depths", "8", "TOKEN=***"]


SEARCH = ("--depth", "8", "--families", "plain", "--num-samples", "2", "--set", "data.val_size=128", "--grace-period",
          "20", "--top-k", "1", "--confirm-seeds", "1")


@pytest.mark.parametrize("study", ["depth_vs_error", "regularization"])
def test_a_sweep_leaves_no_planted_secret_in_any_file_it_writes(tmp_path, ray_tmp, study):
    """The secrets a real user has around a sweep: MLflow and PostgreSQL passwords and a token in the
    environment (for a tracking server and an Optuna database). After a real sweep in its own process (its own
    Ray, whose logs are searched too) — a grid, and a search, whose Optuna storage and Tune's pickled searcher
    state are searched as well — no file holds any of them, while the control string (the experiment's name,
    which every store must hold) is found: the search can find what is there."""
    planted = {name: f"planted-{secrets.token_hex(6)}" for name in ("MLFLOW_TRACKING_PASSWORD", "PGPASSWORD",
                                                                   "MLFLOW_TRACKING_TOKEN")}
    control = f"exp{secrets.token_hex(4)}"
    grid = ("--depths", "8", "--families", "plain", "--seeds", "1")
    argv = [*tiny_args(*(grid if study == "depth_vs_error" else SEARCH), iterations=6 if study == "depth_vs_error"
                       else 24, eval_every=3 if study == "depth_vs_error" else 4, report=True),
            *store_args(tmp_path, control), "--report-path", str(tmp_path / "report.html")]
    command = [sys.executable, str(REPO / "sweeps" / f"{study}.py"), *argv]
    done = subprocess.run(command, env=driver_env(ray_tmp, **planted), capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert client.get_experiment_by_name(control) is not None
    if study == "regularization":  # what a search adds: the Optuna storage and Tune's pickled searcher
        assert (tmp_path / "optuna.db").exists() and any((tmp_path / "ray_results").rglob("searcher-state-*.pkl"))

    def holding(text: str) -> list[Path]:
        needle = text.encode()
        return [path for root in (tmp_path, Path(ray_tmp)) for path in root.rglob("*")
                if path.is_file() and not path.is_symlink() and needle in path.read_bytes()]

    assert holding(control), "the search finds nothing at all: it would miss a secret too"
    for name, value in planted.items():
        assert not holding(value), f"{name} was copied into {holding(value)}"
    assert planted["PGPASSWORD"] not in done.stdout + done.stderr
