"""Benchmark: the report of a 500-run sweep — build time, HTML size, browser load time.

    python bench/report_scale.py [--dir DIR] [--no-browser]

Writes (once; cached in DIR, default $TMPDIR/resnet_report_bench) a SQLite MLflow experiment of 500 trial
runs with 100 evaluations each and 10 metrics per evaluation (val/* included), laid out exactly as
docs/tracking.md says, then measures:
  - ``build_report`` end to end, against the 30 s target;
  - loading all 10 metric histories of all 500 runs through the loader's bulk path;
  - on a 20-run subset, the loader's bulk fetch against naive per-run ``get_metric_history`` calls;
  - headless Chromium opening the report until every plot is drawn.
Every ratio is against a reference measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from dashboards import loader  # noqa: E402
from dashboards.report import HISTORY_METRICS, build_report  # noqa: E402

EXPERIMENT = "report_scale"
TARGET_S = 30.0
# 2 families × 5 depths × 48 seeds + 18 search trials + 1 diverged + 1 failed = 500 runs.
LAYOUT = dict(depths=(20, 32, 44, 56, 110), seeds=48, search_trials=18, iterations=64_000, points=100,
              val_size=5000, missing_probes_for=("plain-110 seed 3",))


def ensure_store(directory: Path) -> tuple[str, float | None]:
    """The cached store's URI; writes it first when absent or written with another layout (returns seconds)."""
    from support.mlflow_fixtures import sqlite_uri, write_fixture_experiment

    marker = directory / "layout.json"
    wanted = json.dumps(LAYOUT, sort_keys=True, default=list)
    uri = sqlite_uri(directory)
    if marker.exists() and marker.read_text() == wanted:
        return uri, None
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    start = time.perf_counter()
    write_fixture_experiment(uri, EXPERIMENT, **LAYOUT)
    seconds = time.perf_counter() - start
    marker.write_text(wanted)
    return uri, seconds


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "resnet_report_bench")
    parser.add_argument("--no-browser", action="store_true", help="skip the headless-Chromium load time")
    args = parser.parse_args()

    uri, wrote = ensure_store(args.dir)
    if wrote is not None:
        print(f"wrote the 500-run experiment in {wrote:.1f} s (cached in {args.dir})")
    out = args.dir / "report.html"

    # 1. The report end to end (what the sweep pays at its end).
    _, build_s = timed(build_report, EXPERIMENT, uri, out, log_to_parent=False)
    size_mb = out.stat().st_size / 1e6
    print(f"build_report: {build_s:.1f} s for 500 runs (target {TARGET_S:.0f} s: {build_s / TARGET_S:.2f}× the "
          f"target); HTML {size_mb:.1f} MB")

    # 2. Loading: what the report reads vs every metric the sweep logs.
    data, report_load_s = timed(loader.load_experiment, EXPERIMENT, uri, metrics=HISTORY_METRICS)
    full, full_load_s = timed(loader.load_experiment, EXPERIMENT, uri)
    print(f"load_experiment, the report's {len(HISTORY_METRICS)} histories: {report_load_s:.1f} s "
          f"({len(data.history):,} points)")
    print(f"load_experiment, all {full.history['metric'].nunique()} histories: {full_load_s:.1f} s "
          f"({len(full.history):,} points; {full_load_s / TARGET_S:.2f}× the {TARGET_S:.0f} s target)")

    # 3. Bulk vs naive per-run calls on a 20-run subset, all metrics.
    client = loader.open_client(uri)
    subset = data.runs["run_id"].tolist()[:20]
    keys = sorted(full.history["metric"].unique())
    bulk, bulk_s = timed(loader.fetch_histories, client, subset, keys)

    def naive() -> int:
        return sum(len(client.get_metric_history(run_id, key)) for run_id in subset for key in keys)

    points, naive_s = timed(naive)
    assert points == len(bulk), (points, len(bulk))
    scale = len(data.runs) / len(subset)
    print(f"20 runs × {len(keys)} metrics ({points:,} points): bulk {bulk_s:.2f} s vs per-run get_metric_history "
          f"{naive_s:.2f} s → bulk is {naive_s / bulk_s:.1f}× faster (per-run calls for all {len(data.runs)} runs "
          f"≈ {naive_s * scale:.0f} s by extrapolation, vs {full_load_s:.1f} s measured for the whole load)")

    # 4. The browser: open the file, wait until every plot has drawn.
    if not args.no_browser:
        from dashboards.screenshot import chromium, open_report

        with chromium() as browser:
            page, load_s = open_report(browser, out)
            plots = page.evaluate("() => document.querySelectorAll('.plotly-graph-div').length")
        print(f"chromium: {plots} plots drawn {load_s:.1f} s after navigation "
              f"(build + load {build_s + load_s:.1f} s)")


if __name__ == "__main__":
    main()
