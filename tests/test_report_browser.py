"""Real headless Chromium: the report draws every figure offline, and the MLflow UI shows the sweep's runs.

Needs the system Chromium (Debian: ``apt-get install -y chromium``). Without it these tests FAIL with the
install command — a missing browser must not pass silently as a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest


import pandas as pd  # noqa: E402

from dashboards.loader import load_experiment  # noqa: E402
from dashboards.report import HISTORY_METRICS, build_report  # noqa: E402
from dashboards.screenshot import BrowserMissingError, chromium, chromium_path, wait_for_plots  # noqa: E402
from support.mlflow_fixtures import DROPOUT_KEY, sqlite_uri, write_fixture_experiment, write_search_experiment  # noqa: E402
from support.processes import free_port, stop_group  # noqa: E402

pytestmark = pytest.mark.browser  # a real headless Chromium, and a real `mlflow server`

EXPERIMENT = "depth_vs_error"
FIGURES = ["fig-curves", "fig-depth", "fig-paper", "fig-responses", "fig-shortcuts", "fig-parcoords",
           "fig-importance-residual-56"]

# Per plotly graph: is its SVG there, and how many drawn marks (lines/markers with a path, bars, parcoords axes).
DRAWN_MARKS = """() => [...document.querySelectorAll('.plotly-graph-div')].map(div => ({
  id: div.id,
  svg: div.querySelector('.main-svg') !== null,
  paths: [...div.querySelectorAll('.scatterlayer .trace path')]
    .filter(p => (p.getAttribute('d') || '').length > 4).length,
  bars: [...div.querySelectorAll('.barlayer .point path')].filter(p => (p.getAttribute('d') || '').length > 4).length,
  axes: div.querySelectorAll('.parcoords .y-axis').length,
}))"""

# Per plotly graph: its legend entries' text, and whether each lies inside the graph's box (is on screen with it).
LEGENDS = """() => Object.fromEntries([...document.querySelectorAll('.plotly-graph-div')].map(div => {
  const box = div.getBoundingClientRect();
  return [div.id, [...div.querySelectorAll('.legend .traces')].map(entry => {
    const r = entry.getBoundingClientRect();
    return {text: entry.querySelector('.legendtext').textContent,
            inside: r.top >= box.top && r.bottom <= box.bottom && r.left >= box.left && r.right <= box.right};
  })];
}))"""
# Per parallel-coordinates graph: the labels of its axes.
PARCOORDS_AXES = """() => Object.fromEntries([...document.querySelectorAll('.plotly-graph-div')]
  .filter(div => div.querySelector('.parcoords'))
  .map(div => [div.id, [...div.querySelectorAll('.parcoords .y-axis .axis-title')].map(t => t.textContent)]))"""


@pytest.fixture(scope="module")
def browser():
    try:
        chromium_path()
    except BrowserMissingError as error:
        pytest.fail(str(error), pytrace=False)
    with chromium() as b:
        yield b


@pytest.fixture(scope="module")
def fixture_store(tmp_path_factory):
    """A store with one experiment that has every section: shortcuts, a search, failed/diverged/probe-less runs."""
    root = tmp_path_factory.mktemp("browser-store")
    uri = sqlite_uri(root)
    # 18 search trials + 2 seeds: the 20 runs of one net that its importance needs
    fx = write_fixture_experiment(uri, EXPERIMENT, shortcuts=("A", "B"), search_trials=18,
                                  missing_probes_for=["residual-56 seed 1"])
    return uri, fx, root


@pytest.fixture(scope="module")
def search_page(fixture_store, tmp_path_factory) -> Path:
    """The report of an Optuna search (plain and ResNet-20, ASHA stops, a confirm stage) in the same store."""
    uri, _, _ = fixture_store
    write_search_experiment(uri, "regularization", missing_confirm=[("residual", "top1", 3)])
    return build_report("regularization", uri, out=tmp_path_factory.mktemp("search") / "report.html",
                        log_to_parent=False)


@pytest.fixture(scope="module")
def report(fixture_store, tmp_path_factory) -> Path:
    uri, _, _ = fixture_store
    return build_report(EXPERIMENT, uri, out=tmp_path_factory.mktemp("report") / "report.html", log_to_parent=False)


def _is_local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in ("file", "data", "about", "blob") or parsed.hostname in ("127.0.0.1", "localhost", "::1")


def test_report_draws_every_figure_without_errors_or_network(browser, report, tmp_path):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors, requests = [], []
    page.on("pageerror", lambda error: errors.append(f"pageerror: {error}"))
    page.on("console", lambda message: errors.append(f"console: {message.text}") if message.type == "error" else None)
    page.on("request", lambda request: requests.append(request.url))
    page.goto(report.resolve().as_uri(), wait_until="load")
    wait_for_plots(page)
    drawn = {plot["id"]: plot for plot in page.evaluate(DRAWN_MARKS)}

    assert sorted(drawn) == sorted(FIGURES)
    for plot_id, plot in drawn.items():
        assert plot["svg"], f"{plot_id} has no SVG"
        assert plot["paths"] + plot["bars"] + plot["axes"] > 0, f"{plot_id} drew nothing: {plot}"
    assert drawn["fig-curves"]["paths"] >= 8  # 4 nets × (train + test) means, plus bands
    assert drawn["fig-shortcuts"]["bars"] == 8  # 2 options × 2 depths × (train, test)
    assert drawn["fig-parcoords"]["axes"] == 4  # 3 searched params + the target
    assert not errors, errors
    assert requests and all(_is_local(url) for url in requests), [u for u in requests if not _is_local(u)]
    assert page.locator("#not-paper-recipe").is_visible()  # the smoke banner is on screen, at the top
    legends = {plot: [entry["text"] for entry in entries] for plot, entries in page.evaluate(LEGENDS).items()}
    keys = {"training error (dashed)", "test error (solid)", "min–max over seeds (shaded)"}
    assert keys <= set(legends["fig-curves"]), legends["fig-curves"]
    for plot in ("fig-depth", "fig-shortcuts"):
        assert "min–max over seeds (error bar)" in legends[plot], legends[plot]
    outside = [(plot, e["text"]) for plot, entries in page.evaluate(LEGENDS).items()
               for e in entries if not e["inside"]]
    assert not outside, outside  # every legend entry is drawn inside its figure, not cut off

    png = tmp_path / "report.png"
    page.screenshot(path=str(png), full_page=True)
    assert png.stat().st_size > 50_000
    page.close()


# Where the run table's last column is, and whether its wrapper scrolls to it (all in CSS pixels).
RUN_TABLE_GEOMETRY = """() => {
  const wrap = document.querySelector('#runs .table-wrap');
  const last = () => wrap.querySelector('thead th:last-child').getBoundingClientRect();
  const style = getComputedStyle(wrap);
  const before = {wrapRight: wrap.getBoundingClientRect().right, lastRight: last().right,
                  scrollWidth: wrap.scrollWidth, clientWidth: wrap.clientWidth, overflowX: style.overflowX,
                  pageScrollWidth: document.documentElement.scrollWidth, viewport: window.innerWidth};
  wrap.scrollLeft = wrap.scrollWidth;
  const box = wrap.getBoundingClientRect();
  return {...before, afterLastRight: last().right, afterWrapRight: box.right, afterWrapLeft: box.left,
          lastText: wrap.querySelector('thead th:last-child').innerText};
}"""


@pytest.mark.parametrize("width", [1280, 800])
def test_run_table_scrolls_instead_of_being_cut_off(browser, report, width):
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(report.resolve().as_uri(), wait_until="load")
    g = page.evaluate(RUN_TABLE_GEOMETRY)
    assert g["pageScrollWidth"] <= g["viewport"], g  # nothing sticks out of the page (where it would be cut off)
    assert g["wrapRight"] <= g["viewport"], g
    if g["scrollWidth"] > g["clientWidth"]:  # wider than the page: the wrapper scrolls to the last column
        assert g["overflowX"] in ("auto", "scroll"), g
        assert g["afterWrapLeft"] <= g["afterLastRight"] - 1 and g["afterLastRight"] <= g["afterWrapRight"] + 1, g
    else:
        assert g["lastRight"] <= g["wrapRight"] + 1, g
    assert g["lastText"] == "MLflow run id"
    page.close()


def test_verdict_sentences_name_their_test(browser, report):
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(report.resolve().as_uri(), wait_until="load")
    sentences = page.locator("#verdict li.verdict").all_inner_texts()
    assert len(sentences) == 3 and sentences[0].startswith("Residual learning"), sentences  # the headline first
    for sentence in sentences:
        assert "arcsine-root scale" in sentence and "% CI" in sentence and " pp" in sentence, sentence
    assert page.locator("#verdict-rule").is_visible()
    assert "eval mode" in page.locator("#probe-description").inner_text()
    page.close()


def test_screenshot_cli(report, tmp_path, browser):
    png = tmp_path / "cli.png"
    result = subprocess.run([sys.executable, "-m", "dashboards.screenshot", str(report), str(png)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "plots drawn" in result.stdout


# --------------------------------------------------------------------------------------- the MLflow UI

@pytest.fixture(scope="module", autouse=True)
def server_process(fixture_store):
    """A real ``mlflow server`` on the fixture store (127.0.0.1, a free port), started when the module starts.

    Autouse so the server boots (≈ 10–25 s here) while the report tests run; stopped when the module ends.
    """
    uri, _, root = fixture_store
    port = free_port()
    log_path = root / "server.log"
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", uri, "--host", "127.0.0.1",
             "--port", str(port), "--workers", "1"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,  # own process group: stop its workers too
            env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
    try:
        yield server, f"http://127.0.0.1:{port}", log_path
    finally:
        stop_group(server, timeout=20)


@pytest.fixture(scope="module")
def mlflow_server(server_process) -> str:
    """The server's URL once it answers ``/health``."""
    server, url, log_path = server_process
    deadline = time.monotonic() + 120
    while True:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited with {server.returncode}: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return url
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"mlflow server did not answer within 120 s: {log_path.read_text()[-2000:]}")
        time.sleep(0.5)


def test_mlflow_ui_shows_the_sweeps_child_runs(browser, fixture_store, mlflow_server):
    _, fx, _ = fixture_store
    page = browser.new_page(viewport={"width": 1400, "height": 2400})  # tall: the grid renders only visible rows
    page.goto(f"{mlflow_server}/#/experiments/{fx.experiment_id}/runs")
    parent_name = "sweep depth_vs_error smoke"
    page.get_by_text(parent_name).first.wait_for(timeout=60_000)
    # Child runs are nested under the sweep's parent run: expand it, as a user would.
    parent_row = page.locator("[role=row]", has_text=parent_name).first
    parent_row.locator("button[data-component-id*='runnamecellrenderer']").first.click()
    page.get_by_text("plain-20 seed 0").first.wait_for(timeout=30_000)
    text = page.inner_text("body")
    missing = sorted({name for name in fx.runs.values() if name not in text})
    assert not missing, f"child runs not shown in the MLflow UI: {missing}"
    page.close()


def test_mlflow_ui_opens_the_experiment_on_its_training_runs(browser, fixture_store, mlflow_server):
    """The address the sweep prints lands a user on the runs table, not on the GenAI "Overview" of traces."""
    from dashboards.mlflow_ui import experiment_url

    _, fx, _ = fixture_store
    page = browser.new_page(viewport={"width": 1400, "height": 1600})
    page.goto(experiment_url(mlflow_server, fx.experiment_id))
    page.get_by_text("sweep depth_vs_error smoke").first.wait_for(timeout=60_000)  # a row of the runs table
    assert page.get_by_text("No data available for the selected time range").count() == 0
    page.close()


def test_report_links_open_the_runs_page_in_the_mlflow_ui(browser, fixture_store, mlflow_server, tmp_path):
    uri, fx, _ = fixture_store
    linked = build_report(EXPERIMENT, uri, out=tmp_path / "linked.html", log_to_parent=False,
                          mlflow_ui_url=mlflow_server)
    page = browser.new_page(viewport={"width": 1400, "height": 1200})
    page.goto(linked.resolve().as_uri(), wait_until="load")
    link = page.locator("#runs a.mlflow-run", has_text="plain-20 seed 0").first
    with page.expect_popup() as popup_info:  # target=_blank: the MLflow UI opens beside the report
        link.click()
    ui = popup_info.value
    ui.wait_for_load_state()
    run_id = fx.run_id("plain-20 seed 0")
    assert ui.url == f"{mlflow_server}/#/experiments/{fx.experiment_id}/runs/{run_id}?workflowType=machine_learning"
    ui.get_by_text("plain-20 seed 0").first.wait_for(timeout=60_000)  # the run's own page, by its name
    assert run_id in ui.inner_text("body")
    ui.close()
    page.close()


def test_loader_reads_the_same_through_the_tracking_server(fixture_store, mlflow_server):
    """Over HTTP there is no bulk history API in the client: the per-run path must give the same tables."""
    uri, _, _ = fixture_store
    direct = load_experiment(EXPERIMENT, uri, metrics=HISTORY_METRICS)
    served = load_experiment(EXPERIMENT, mlflow_server, metrics=HISTORY_METRICS)
    pd.testing.assert_frame_equal(direct.history, served.history)
    assert sorted(direct.runs["run_id"]) == sorted(served.runs["run_id"])
    assert sorted(direct.missing_probes) == sorted(served.missing_probes)
    pd.testing.assert_frame_equal(direct.responses.sort_values(["run_id", "layer_index"]).reset_index(drop=True),
                                  served.responses.sort_values(["run_id", "layer_index"]).reset_index(drop=True))


def test_search_page_in_the_browser(browser, search_page, tmp_path):
    """What a person sees of a search: its study in the title, one parallel-coordinates figure per net with only
    the knobs that vary, the confirm headline per net with its interval, and the importance notes."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(search_page.resolve().as_uri(), wait_until="load")
    wait_for_plots(page)
    assert page.title() == "ResNet depth study — regularization"
    axes = page.evaluate(PARCOORDS_AXES)
    knobs = ["log10 optim.weight_decay", "optim.label_smoothing", DROPOUT_KEY, "data.augment"]
    assert sorted(axes) == ["fig-search-parcoords-plain-20", "fig-search-parcoords-residual-20"]
    for plot, labels in axes.items():
        assert labels == [*knobs, "final validation error (%)"], (plot, labels)
    headlines = page.locator("#search li.confirm-headline").all_inner_texts()
    assert [h.split(":")[0] for h in headlines] == ["plain-20", "residual-20"]
    for headline in headlines:
        assert "best found (chosen on validation) − default recipe: " in headline and "95 % CI" in headline, headline
        assert "paired t-test on the arcsine-root scale" in headline and " pp test error" in headline, headline
    assert "seed(s) 3 left out" in headlines[1]
    header = page.locator("#search table").first.locator("th").all_inner_texts()
    assert "chosen by validation rank" in header and not any("best" in h for h in header)
    notes = page.locator("#search p.importance-note").all_inner_texts()
    assert len(notes) == 2 and all("importance covers survivors only" in n and "needs at least 20" in n for n in notes)
    assert not errors, errors
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)
    page.close()
