"""One self-contained HTML report of a sweep experiment, and its command line.

    python -m dashboards.report --experiment depth_vs_error [--tracking-uri URI] [--out report.html] [--no-log]
                                [--mlflow-ui-url http://127.0.0.1:5000]

The page works offline: plotly.js is embedded once in the page head and every figure is a ``<div>`` drawn
by an inline script — no CDN, no network request. Everything shown is computed from what the sweep logged
(docs/tracking.md), so the report of any past experiment can be rebuilt. Unless told not to, the HTML is
logged as the artifact ``report.html`` of the experiment's newest sweep (parent) run.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from plotly.offline import get_plotlyjs

from dashboards import imagenet, paper
from dashboards.html import CSS, escape
from dashboards.loader import (ExperimentData, ExperimentNotFoundError, default_tracking_uri, load_experiment,
                               open_client)
from dashboards.sections import SECTIONS, runs
from dashboards.verdict import verdict_record, verdicts

log = logging.getLogger("dashboards.report")

HISTORY_METRICS = ("train/error", "test/error")  # the histories every report draws (ImageNet adds: history_metrics)
ARTIFACT_NAME = "report.html"
CREDENTIALS_ADVICE = ("give the server's URL without it and set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
                      "(or MLFLOW_TRACKING_TOKEN) instead")


def build_report(experiment: str, tracking_uri: str | None = None, out: str | Path = "report.html",
                 log_to_parent: bool = True, mlflow_ui_url: str | None = None, sweep_run: str | None = None) -> Path:
    """Read one sweep of the experiment (its newest, or the parent run ``sweep_run``), write the report to
    ``out`` and (by default) log it to that sweep run.

    ``mlflow_ui_url`` (e.g. ``http://127.0.0.1:5000``, where ``mlflow ui`` serves this store) makes each run
    in the run table a link to its page there. Raises ExperimentNotFoundError (listing the experiments that
    exist) for an unknown name, SecretInURIError (before reading anything) for a URI with credentials in it.
    """
    tracking_uri = checked_tracking_uri(tracking_uri)
    data = load_experiment(experiment, tracking_uri, metrics=history_metrics, sweep_run=sweep_run)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(data, mlflow_ui_url=mlflow_ui_url), encoding="utf-8")
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)
    if log_to_parent:
        log_report(data, out)
    return out


def checked_tracking_uri(tracking_uri: str | None) -> str:
    """The store to read (``tracking_uri``, else the default); SecretInURIError when it holds credentials, which
    the page and its copy logged to the sweep run would publish to every reader of the server."""
    from tracking.store import bound_http_retries, check_tracking_uri, refuse_password

    uri = tracking_uri or default_tracking_uri()
    flag = "--tracking-uri" if tracking_uri else "--tracking-uri (here $MLFLOW_TRACKING_URI)"
    refuse_password(uri, flag, CREDENTIALS_ADVICE)
    if uri.startswith(("http://", "https://")):  # a down server: one line in seconds, not minutes of retries
        bound_http_retries(uri)
        check_tracking_uri(uri)
    return uri


def history_metrics(runs) -> tuple[str, ...]:
    """The histories the report draws for these runs: HISTORY_METRICS, and Fig. 4's validation error when some
    run has the ImageNet layout (decided from the runs table, before any history is fetched)."""
    return imagenet.history_metrics(runs, HISTORY_METRICS)


def log_report(data: ExperimentData, path: Path) -> str | None:
    """Log ``path`` as ``report.html`` of the newest sweep run, and the depth verdicts as its tags and metrics
    (``verdict_record``); returns its run id (None if there is none)."""
    parent = data.parent_run_id
    if parent is None:
        log.warning("experiment %r has no sweep run (tag role=sweep); the report was not logged", data.name)
        return None
    client = open_client(data.tracking_uri)
    if path.name == ARTIFACT_NAME:
        client.log_artifact(parent, str(path))
    else:  # the artifact keeps the file's name, so log a copy called report.html
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / ARTIFACT_NAME
            shutil.copyfile(path, copy)
            client.log_artifact(parent, str(copy))
    log.info("logged %s to sweep run %s", ARTIFACT_NAME, parent)
    from mlflow.entities import Metric, RunTag

    _, found = verdicts(data.history, data.runs) if len(data.runs) else (None, [])
    tags, metrics = verdict_record(found)
    client.log_batch(parent, metrics=[Metric(k, float(v), int(time.time() * 1000), 0) for k, v in metrics.items()],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    return parent


# ------------------------------------------------------------------------------------------------ the page

def render_report(data: ExperimentData, generated_at: datetime | None = None,
                  mlflow_ui_url: str | None = None) -> str:
    """The whole HTML document for one experiment; runs link to ``mlflow_ui_url`` when it is given."""
    generated_at = generated_at or datetime.now(timezone.utc)
    on_imagenet = imagenet.only_imagenet_runs(data.runs)
    caveats = (imagenet.paper_setting_caveats(data.sweep_tags, data.runs) if on_imagenet
               else paper.reproduction_caveats(data.sweep_tags, data.runs))
    wanted = report_sections(data)
    sections = [build(data) for name, build in SECTIONS.items() if name in wanted]
    body = "\n".join(s for s in [*sections, runs.render(data, mlflow_ui_url)] if s)
    title = f"ResNet depth study — {study_name(data)}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}</style>
<script id="plotly-js" type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<header>
<h1>{escape(title)}</h1>
{_summary_line(data, generated_at)}
</header>
{_banner(caveats, on_imagenet)}
<main>
{body}
</main>
</body>
</html>
"""


def study_name(data: ExperimentData) -> str:
    """The study the page reports (the sweep run's tag ``study``), else the MLflow experiment's name."""
    return data.sweep_tags.get("study") or data.name


def report_sections(data: ExperimentData) -> set[str]:
    """The sections the study asked for (the sweep's tag ``report_sections``), else every section; ``imagenet``
    exactly when some run has the ImageNet layout, and then, when every run has it, in place of ``curves``
    (its Fig. 4 draws the same runs' curves)."""
    named = data.sweep_tags.get("report_sections", "")
    wanted = {name for name in named.split(",") if name} or set(SECTIONS)
    if not imagenet.has_imagenet_runs(data.runs):
        return wanted - {"imagenet"}
    return (wanted | {"imagenet"}) - ({"curves"} if imagenet.only_imagenet_runs(data.runs) else set())


def _summary_line(data: ExperimentData, generated_at: datetime) -> str:
    from tracking.store import masked_uri

    tags = data.sweep_tags
    described = ", ".join(f"{k} <b>{escape(tags[k])}</b>" for k in ("study", "preset", "dataset", "recipe") if k in tags)
    counts = data.runs["outcome"].value_counts()
    outcome = ", ".join(f"{n} {escape(k.replace('_', ' '))}" for k, n in counts.items())
    parent = f" · sweep run <code>{escape(data.parent_run_id)}</code>" if data.parent_run_id else ""
    if data.other_runs:
        parent += (f' <span id="one-sweep">(the runs of this sweep only: {data.other_runs} trial run(s) of the '
                   f'experiment\'s {len(data.sweeps) - 1} other sweep(s), or of none, are not pooled with them; '
                   f'choose another with <code>--sweep-run</code>)</span>')
    return (f'<p class="meta">{described or "no sweep run found"} · {len(data.runs)} trial runs ({outcome})'
            f'{parent}<br>MLflow experiment <b>{escape(data.name)}</b> (id {escape(data.experiment_id)}) at '
            f'<code>{escape(masked_uri(data.tracking_uri))}</code> · generated {generated_at:%Y-%m-%d %H:%M UTC}</p>')


def _banner(caveats: list[str], on_imagenet: bool = False) -> str:
    """The page's top line: the paper's setting (CIFAR-10 for Table 6, or ImageNet for Tables 2/3), or why not."""
    if not caveats:
        setting = (f"ILSVRC-2012, full training schedule ({paper.IMAGENET_PAPER_ITERATIONS:,} iterations), 10-crop "
                   f"test" if on_imagenet else f"CIFAR-10, full training schedule ({paper.PAPER_ITERATIONS:,} iterations)")
        return f'<div class="recipe-ok" id="recipe">Paper recipe: {setting}. Numbers below are comparable with the paper.</div>'
    recipe, tables = ("ImageNet recipe on full ILSVRC-2012", "Tables 2/3") if on_imagenet else ("CIFAR-10 recipe", "Table 6")
    items = "".join(f"<li>{escape(c)}</li>" for c in caveats)
    return (f'<div class="banner" id="not-paper-recipe" role="alert"><strong>Not a reproduction of the paper.</strong> '
            f'This experiment does not follow the paper\'s {recipe}, so its numbers are not comparable with '
            f'{tables}:<ul>{items}</ul></div>')


# ------------------------------------------------------------------------------------------------- the CLI

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dashboards.report",
                                     description="Write a self-contained HTML report of a sweep's MLflow experiment.")
    parser.add_argument("--experiment", required=True, help="MLflow experiment name (the sweep's --experiment)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)")
    parser.add_argument("--out", default="report.html", help="where to write the HTML (default: report.html)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's parent run")
    parser.add_argument("--sweep-run", default=None, metavar="RUN_ID",
                        help="report this sweep (parent) run of the experiment (default: the newest); the trial "
                             "runs of one sweep are reported, never pooled with another's")
    parser.add_argument("--mlflow-ui-url", default=None, metavar="URL",
                        help="where `mlflow ui` serves this store (e.g. http://127.0.0.1:5000): each run in the "
                             "run table links to its page there")
    return parser


def main(argv: list[str] | None = None) -> int:
    from mlflow.exceptions import MlflowException

    from tracking.store import SecretInURIError, TrackingError, short_error

    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build_report(args.experiment, args.tracking_uri, args.out, log_to_parent=not args.no_log,
                     mlflow_ui_url=args.mlflow_ui_url, sweep_run=args.sweep_run)
    except (ExperimentNotFoundError, FileNotFoundError, SecretInURIError, TrackingError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    except MlflowException as error:  # the store failed mid-way (it went down, or refused a request)
        print(f"error: the tracking store failed while the report was read: {short_error(error)}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
