"""A real sweep's runs in the MLflow UI, as a person sees them in a real headless Chromium served by a real
`mlflow server`: a trial run's Source, User and commit, its system-metrics charts, the parent's description."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from dashboards.mlflow_ui import run_url
from dashboards.screenshot import chromium
from sweeps import depth_vs_error
from support.plans import store_args, tiny_args
from support.processes import free_port, stop_group

pytestmark = pytest.mark.browser
SCRIPT = "sweeps/depth_vs_error.py"
SHOTS = Path(os.environ.get("RESNET_STUDIES_SHOTS", "")) if os.environ.get("RESNET_STUDIES_SHOTS") else None


@pytest.fixture(scope="module")
def served_sweep(ray_runtime, tmp_path_factory):
    """A tiny sweep run as the user's command, then `mlflow server` on its store; yields (url, client, runs)."""
    root = tmp_path_factory.mktemp("ui-sources")
    argv = [*tiny_args("--depths", "8", "--families", "plain", "--seeds", "1", "--cpus-per-trial", "1",
                       iterations=300, eval_every=100), *store_args(root, "ui_sources"), "--system-metrics-every", "0.5"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "argv", [SCRIPT, *argv])
        assert depth_vs_error.main(argv) == 0
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("ui_sources")
    runs = client.search_runs([experiment.experiment_id])
    port = free_port()
    with open(root / "server.log", "wb") as log:
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host",
                                   "127.0.0.1", "--port", str(port), "--workers", "1"], stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True,
                                  env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, server, root / "server.log")
        yield url, experiment.experiment_id, runs
    finally:
        stop_group(server, timeout=20)


def _wait_healthy(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer within 120 s: {log.read_text()[-2000:]}")


def _shot(page, name: str) -> None:
    if SHOTS:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_a_trial_run_page_shows_its_source_user_and_system_metrics(served_sweep):
    url, experiment_id, runs = served_sweep
    trial = next(r for r in runs if r.data.tags.get("role") == "trial")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.goto(run_url(url, experiment_id, trial.info.run_id))
        page.get_by_text("depth_vs_error.py").first.wait_for(timeout=60_000)  # the Source field
        text = page.inner_text("body")
        assert getpass.getuser() in text  # "Created by"
        _shot(page, "trial-overview")
        page.get_by_text("System metrics", exact=True).first.click()
        page.get_by_text("cpu_utilization_percentage").first.wait_for(timeout=60_000)
        page.locator(".js-plotly-plot").first.wait_for(timeout=60_000)  # a chart drawn, not only its title
        _shot(page, "trial-system-metrics")
        page.close()


def test_the_parent_run_page_shows_the_sweeps_description(served_sweep):
    url, experiment_id, runs = served_sweep
    parent = next(r for r in runs if r.data.tags.get("role") == "sweep")
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 1400})
        page.goto(run_url(url, experiment_id, parent.info.run_id))
        page.get_by_text("depth_vs_error study, preset smoke").first.wait_for(timeout=60_000)
        assert f"python {SCRIPT} --preset smoke" in page.inner_text("body")
        _shot(page, "parent-description")
        page.close()
