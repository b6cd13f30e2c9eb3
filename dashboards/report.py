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
import html
import logging
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from dashboards import figures, paper, probes, search, verdict
from dashboards.loader import ExperimentData, ExperimentNotFoundError, load_experiment, open_client
from dashboards.shortcuts import TABLE3_COLUMN, shortcut_table, table3_elsewhere_note
from dashboards.stats import comparison_runs, like_for_like, net_label, primary_shortcut, usable, varied_params
from dashboards.inference import signed

log = logging.getLogger("dashboards.report")

HISTORY_METRICS = ("train/error", "test/error")  # the only histories the report draws; finals come with the runs
ARTIFACT_NAME = "report.html"
_PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def build_report(experiment: str, tracking_uri: str | None = None, out: str | Path = "report.html",
                 log_to_parent: bool = True, mlflow_ui_url: str | None = None) -> Path:
    """Read the experiment, write the report to ``out`` and (by default) log it to the newest sweep run.

    ``mlflow_ui_url`` (e.g. ``http://127.0.0.1:5000``, where ``mlflow ui`` serves this store) makes each run
    in the run table a link to its page there. Raises ExperimentNotFoundError (listing the experiments that
    exist) for an unknown name.
    """
    data = load_experiment(experiment, tracking_uri, metrics=HISTORY_METRICS)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_report(data, mlflow_ui_url=mlflow_ui_url), encoding="utf-8")
    log.info("wrote %s (%.1f MB)", out, out.stat().st_size / 1e6)
    if log_to_parent:
        log_report(data, out)
    return out


def log_report(data: ExperimentData, path: Path) -> str | None:
    """Log ``path`` as ``report.html`` of the newest sweep run; returns its run id (None if there is none)."""
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
    return parent


# ------------------------------------------------------------------------------------------------ the page

def render_report(data: ExperimentData, generated_at: datetime | None = None,
                  mlflow_ui_url: str | None = None) -> str:
    """The whole HTML document for one experiment; runs link to ``mlflow_ui_url`` when it is given."""
    generated_at = generated_at or datetime.now(timezone.utc)
    caveats = paper.reproduction_caveats(data.sweep_tags, data.runs)
    wanted = report_sections(data)
    sections = [build(data) for name, build in SECTIONS.items() if name in wanted]
    body = "\n".join(s for s in [*sections, _runs_section(data, mlflow_ui_url)] if s)
    title = f"ResNet depth study — {study_name(data)}"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(title)}</title>
<style>{_CSS}</style>
<script id="plotly-js" type="text/javascript">{get_plotlyjs()}</script>
</head>
<body>
<header>
<h1>{_e(title)}</h1>
{_summary_line(data, generated_at)}
</header>
{_banner(caveats)}
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
    """The sections the study asked for (the sweep's tag ``report_sections``), else every section."""
    named = data.sweep_tags.get("report_sections", "")
    return {name for name in named.split(",") if name} or set(SECTIONS)


def _summary_line(data: ExperimentData, generated_at: datetime) -> str:
    tags = data.sweep_tags
    described = ", ".join(f"{k} <b>{_e(tags[k])}</b>" for k in ("study", "preset", "dataset", "recipe") if k in tags)
    counts = data.runs["outcome"].value_counts()
    outcome = ", ".join(f"{n} {_e(k.replace('_', ' '))}" for k, n in counts.items())
    parent = f" · sweep run <code>{_e(data.parent_run_id)}</code>" if data.parent_run_id else ""
    return (f'<p class="meta">{described or "no sweep run found"} · {len(data.runs)} trial runs ({outcome})'
            f'{parent}<br>MLflow experiment <b>{_e(data.name)}</b> (id {_e(data.experiment_id)}) at '
            f'<code>{_e(data.tracking_uri)}</code> · generated {generated_at:%Y-%m-%d %H:%M UTC}</p>')


def _banner(caveats: list[str]) -> str:
    if not caveats:
        return ('<div class="recipe-ok" id="recipe">Paper recipe: CIFAR-10, full training schedule '
                f'({paper.PAPER_ITERATIONS:,} iterations). Numbers below are comparable with the paper.</div>')
    items = "".join(f"<li>{_e(c)}</li>" for c in caveats)
    return (f'<div class="banner" id="not-paper-recipe" role="alert"><strong>Not a reproduction of the paper.</strong> '
            f'This experiment does not follow the paper\'s CIFAR-10 recipe, so its numbers are not comparable with '
            f'Table 6:<ul>{items}</ul></div>')


def _section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{anchor}">\n<h2>{_e(title)}</h2>\n' + "\n".join(p for p in parts if p) + "\n</section>"


def _figure(fig, div_id: str) -> str:
    div = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=_PLOT_CONFIG)
    return f'<div class="figure">{div}</div>'


def _excluded_note(data: ExperimentData) -> str:
    """Which runs the means and verdicts leave out, and why."""
    excluded = data.runs[~usable(data.runs)]
    if excluded.empty:
        return ""
    names = "; ".join(f"{_e(r.name)} ({_e(r.outcome)})" for r in excluded.itertuples(index=False))
    return (f'<p class="note">Excluded from means and spreads: {len(excluded)} run(s) that failed, diverged, '
            f'were interrupted or were stopped early — {names}. They are marked in the run table. The degradation '
            f'verdict counts diverged runs at chance error (the net failed to train).</p>')


def _residual_shortcuts(data: ExperimentData) -> list[str]:
    table = like_for_like(data.runs)
    return sorted(table.loc[table["family"].eq("residual"), "shortcut"].dropna().unique())


def _comparison_note(data: ExperimentData) -> str:
    """Which usable runs the depth comparisons leave out (other shortcut option, other hyper-parameters)."""
    notes = []
    if len(_residual_shortcuts(data)) > 1:
        notes.append(f"Residual nets here use shortcut option {_e(primary_shortcut(like_for_like(data.runs)))} only "
                     f"(the most common); options are compared under <a href=\"#shortcuts\">Shortcut options</a>.")
    others = usable(data.runs).sum() - len(like_for_like(data.runs))
    if others:
        varied = ", ".join(_e(p) for p in varied_params(data.runs))
        where = ' They appear in the <a href="#search">search views</a>.' if search.has_search(data.runs) else ""
        notes.append(f"{others} run(s) with other settings of {varied} are left out of the depth comparisons "
                     f"(compared like for like at the most common setting).{where}")
    return "".join(f'<p class="note">{n}</p>' for n in notes)


VERDICT_RULE = (
    "Test: training error of each run at the matched iteration (the last iteration every compared run of the "
    "family reached), seeds as replicates, as a count of wrong images out of the images it is over "
    "(<code>train/images</code>), on the logit scale (log of wrong + ½ over right + ½), so that every interval, "
    "turned back into percentage points, stays inside 0–100 %. Each depth's seed variance is floored at the "
    "binomial variance of its counts, so a tie is not zero noise. Per family, the linear trend against "
    "log<sub>2</sub>(depth), every depth with ≥ 2 seeds taking part (with two depths: deepest − shallowest), the "
    "seed variance pooled across depths, guarded: when the depths' variances differ by more than an F-test at "
    "level 0.25 allows, or the depths have unequal seeds, Welch's standard error with Hsu's df (min seeds − 1) "
    "instead. Diverged runs count at chance error (the net failed to train); failed runs are left out and "
    "counted. Words: <em>degrades</em> / <em>improves</em> when the interval excludes 0; <em>no difference larger "
    f"than {verdict.EQUIVALENCE_PP:g} pp</em> only when it lies inside ±{verdict.EQUIVALENCE_PP:g} pp; otherwise "
    "<em>inconclusive</em>, with about how many seeds would tell (80 % power at the observed spread). Each "
    "family's verdict answers its own question at 95 %. Simulated "
    "(tests/test_verdict_simulation.py; the table in docs/tracking.md) the false-verdict rate stays at or below "
    "5 % for 2–5 seeds, unequal seeds, variances up to 5× apart, errors near 0 % and diverged runs. The min–max "
    "columns are for looking only.")


def _verdict_section(data: ExperimentData) -> str:
    table, found = verdict.verdicts(data.history, data.runs)
    if not found:
        return _section("verdict", "Degradation verdict", '<p class="note">No plain or residual runs found.</p>')
    sentences = "".join(f'<li class="verdict verdict-{v.css}">{_e(v.sentence)}</li>' for v in found)
    shown = table.assign(
        net=[net_label(f, d) for f, d in zip(table["family"], table["depth"])],
        iteration=table["iteration"].map(lambda i: f"{int(i):,}" if pd.notna(i) else "—"),
    )[["net", "iteration", "mean", "std", "min", "max", "n", "lost"]]
    shown.columns = ["net", "matched iteration", "train error mean (%)", "std (pp)", "min (%)", "max (%)", "seeds",
                     "did not complete (diverged: counted at chance error; failed: left out)"]
    return _section("verdict", "Degradation verdict", f'<ul class="verdicts">{sentences}</ul>', _table(shown),
                    f'<p class="note rule" id="verdict-rule">{VERDICT_RULE}</p>',
                    _excluded_note(data), _comparison_note(data))


def _curves_section(data: ExperimentData) -> str:
    fig = figures.degradation_curves(data.history, data.runs)
    return _section("curves", "Training curves (Fig. 6)",
                    '<p class="note">Error (%) vs iteration. Dashed: training error (averaged since the previous '
                    'evaluation, augmented batches); solid: test error. Line = mean over seeds, shaded band = '
                    'min–max over seeds. Diverged runs are drawn in grey and are not part of the means.</p>',
                    _figure(fig, "fig-curves"))


def _depth_section(data: ExperimentData) -> str:
    return _section("depth", "Final error vs depth",
                    '<p class="note">Final iterate of each run; error bars = min–max over seeds.</p>',
                    _figure(figures.error_vs_depth(data.runs), "fig-depth"))


def _paper_section(data: ExperimentData) -> str:
    result = paper.paper_comparison(data.runs, data.sweep_tags)
    comparison = result.table
    protocol = f'<p class="protocol">Selection protocol: {_e(paper.SELECTION_PROTOCOL)}.</p>'
    if comparison["depth"].eq(110).any() and comparison["source"].str.startswith("Table 6").any():
        protocol += ('<p class="note">ResNet-110 is compared with the paper\'s mean over 5 runs (6.61 ± 0.16), '
                     'not with its best run (6.43, the value Table 6 prints).</p>')
    notes = "".join(f'<p class="note">{_e(n)}</p>' for n in result.notes)
    if comparison.empty:
        return _section("paper", "The paper beside us", protocol, notes,
                        '<p class="note">No net of this experiment appears in the paper\'s tables.</p>')
    shown = pd.DataFrame({
        "net": comparison["net"],
        "paper (%)": [_paper_value(row) for row in comparison.itertuples(index=False)],
        "source": comparison["source"],
        "this experiment (%)": [_ours(row) for row in comparison.itertuples(index=False)],
    })
    if result.comparable:
        shown["difference, ours − paper (pp)"] = [_difference(row) for row in comparison.itertuples(index=False)]
        status = ('<p class="note" id="paper-comparable">Same data set, recipe and training length as the paper: '
                  'the difference is ours − paper with a 95 % interval that counts the paper\'s own seed noise: a '
                  f'published number is one run (or, for ResNet-110, the mean of 5), with a per-run std of '
                  f'{paper.PAPER_RUN_STD} pp — the spread of ResNet-110\'s 5 runs in Table 6, the paper\'s only '
                  'measure of it. Welch\'s t-test on the logit scale of the error counts.</p>')
    else:
        status = ('<p class="note reference-only" id="paper-reference-only"><strong>Reference only.</strong> This '
                  'experiment is not the paper\'s setting (see the banner at the top), so the paper\'s numbers '
                  'are shown beside ours without a difference: subtracting them would compare unlike things.</p>')
    shown["note"] = comparison["paper_note"]
    plain = ('<p class="note">Table 6 has no plain-net numbers (plain nets appear only as curves in Fig. 6).</p>'
             if comparison["layout"].eq("cifar").any() else "")
    return _section("paper", "The paper beside us", protocol, status, _table(shown, raw=False), notes, plain,
                    _figure(figures.paper_comparison(comparison, reference_only=not result.comparable),
                            "fig-paper"))


def _paper_value(row) -> str:
    if pd.notna(row.paper_std):
        return f"{row.paper:.2f} ± {row.paper_std:.2f} (mean ± std, {int(row.paper_runs)} runs)"
    return f"{row.paper:.2f}"


def _ours(row) -> str:
    if row.n < 2:
        return f"{row.ours_mean:.2f} (one seed: no std)"
    return (f"{row.ours_mean:.2f} ± {row.ours_std:.2f} (mean ± std, n={row.n}; "
            f"min–max {row.ours_min:.2f}–{row.ours_max:.2f})")


def _difference(row) -> str:
    if pd.isna(row.difference_low):
        return f"{signed(row.difference)} (one seed: no interval)"
    return f"{signed(row.difference)} (95 % CI {signed(row.difference_low)} to {signed(row.difference_high)})"


def _responses_section(data: ExperimentData) -> str:
    members = comparison_runs(data.runs)
    kept, dropped = probes.three_by_three(data.responses, data.runs)
    have = kept[kept["run_id"].isin(members["run_id"])]
    names = dict(zip(data.runs["run_id"], data.runs["name"]))
    outcomes = dict(zip(data.runs["run_id"], data.runs["outcome"]))

    def described(run_id: str) -> str:  # a failed or diverged run says so: that is usually why it has no probes
        name, outcome = _e(names.get(run_id, run_id)), outcomes.get(run_id)
        return name if outcome == "completed" else f"{name} ({_e(outcome)})"

    missing = [described(r) for r in data.missing_probes]
    lacking = (f'<p class="note missing-probes">No layer-response data (<code>probes/layer_response_std.json</code>) '
               f'for {len(missing)} run(s): {"; ".join(missing)}.</p>') if missing else ""
    if have.empty:
        return _section("responses", "Layer responses (Fig. 7)", lacking,
                        '<p class="note">No layer-response data for the compared runs.</p>')
    probe = probes.describe_probe(have, dropped[dropped["run_id"].isin(members["run_id"])], members)
    what = (f'<ul class="probe" id="probe-description"><li><b>Measures:</b> {_e(probe.mode)}.</li>'
            f'<li><b>Layers:</b> {_e(probe.layers)}.</li><li><b>Images:</b> {_e(probe.images)}.</li>'
            f'<li><b>When:</b> {_e(probe.iteration)}; lines are the mean over each net\'s runs. Plain nets dotted, '
            f'ResNets solid.</li>'
            + (f'<li><b>Left out:</b> {_e(probe.dropped)}</li>' if probe.dropped else "")
            + '</ul><p class="note">The paper (Fig. 7) measures on CIFAR-10 after BN and before the ReLU / '
              'addition, but does not say which images or which BN mode (train or eval); the images and the eval '
              'mode are this project\'s choices.</p>')
    return _section("responses", "Layer responses (Fig. 7)", what, lacking,
                    _figure(figures.layer_responses(have, data.runs), "fig-responses"))


def _shortcut_section(data: ExperimentData) -> str:
    if len(_residual_shortcuts(data)) < 2:
        return ""
    _, _, found, tests = verdict.page_verdicts(data.history, data.runs, depth=False)  # Holm over all pairs
    sentences = "".join(f'<li class="verdict verdict-{v.css}">{_e(v.sentence)}</li>'
                        for pairs in found.values() for v in pairs)
    tests = (f'<ul class="verdicts shortcut-verdicts">{sentences}</ul><p class="note rule">Same test as the '
             f'degradation verdict, per pair of options at one depth: the test error at the matched iteration '
             f'across seeds, as counts on the logit scale, the seed variance pooled over the options of that depth '
             f'(guarded as there). {_e(verdict.holm_note(tests))} Each sentence states the gap its seeds find '
             f'80 % of the time; a pair with a one-seed option is inconclusive.</p>') if sentences else ""
    table = shortcut_table(data.runs)
    reference = (f'<p class="note" id="table3-reference">{_e(table3_elsewhere_note())}</p>'
                 if TABLE3_COLUMN not in table else
                 '<p class="note" id="table3-reference">Table 3 is set beside the ImageNet-layout ResNet-34 trained '
                 'on ImageNet only, as a reference, not as a difference: the paper tests 10 crops, we one view.</p>')
    return _section("shortcuts", "Shortcut options A / B / C",
                    '<p class="note">A: zero-padding identity; B: projections where the shape changes; '
                    'C: projections everywhere (§3.3). Final iterate; error bars = min–max over seeds.</p>', tests,
                    _table(table), reference,
                    _figure(figures.shortcut_options(data.runs), "fig-shortcuts"))


def _search_section(data: ExperimentData) -> str:
    from dashboards import search_report  # an Optuna search's own section; it builds on this page's helpers

    if search_report.is_search(data.runs):
        return search_report.search_section(data)
    if not search.has_search(data.runs):
        return ""
    table, params = search.search_view(data.runs)
    target = "final test error (%)"
    table = table.rename(columns={search.TARGET: target})
    nets = ", ".join(f"{_e(net)} ({n} runs)" for net, n in table["net"].value_counts().sort_index().items())
    parts = [f'<p class="note">Nets in which {", ".join(_e(p) for p in params)} were varied: {nets}. Target: '
             f'final test error (%). Choosing settings by test error is for looking only — select on validation.</p>',
             _figure(figures.search_parallel_coordinates(table, params, target), "fig-parcoords")]
    try:
        scores = search.importance(table, params, target)
        parts.append(_figure(figures.parameter_importance(scores, target), "fig-importance"))
    except Exception as error:  # importance is a nicety; a degenerate search must not sink the report
        parts.append(f'<p class="note">Parameter importance unavailable: {_e(error)}</p>')
    return _section("search", "Regularisation search", *parts)


# Every section a study may ask for (GridStudy.report_sections), in page order; the run table always comes last.
SECTIONS = {"verdict": _verdict_section, "curves": _curves_section, "depth": _depth_section,
            "paper": _paper_section, "responses": _responses_section, "shortcuts": _shortcut_section,
            "search": _search_section}


def experiment_url(mlflow_ui_url: str, experiment_id: str) -> str:
    """The MLflow UI page of an experiment's training runs.

    MLflow 3.17's UI opens every experiment on its GenAI "Overview" (traces) unless the address names the
    model-training view; the experiment's tag ``mlflow.experimentKind`` alone does not change that.
    """
    return f"{mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}?workflowType=machine_learning"


def run_url(mlflow_ui_url: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one run: ``{url}/#/experiments/{experiment_id}/runs/{run_id}``."""
    return f"{mlflow_ui_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def _runs_section(data: ExperimentData, mlflow_ui_url: str | None = None) -> str:
    runs = data.runs.sort_values(["family", "depth", "shortcut", "seed", "start_time"], na_position="last")
    missing = set(data.missing_probes)

    def linked(run_id: str, text: str) -> str:
        if not mlflow_ui_url:
            return text
        url = run_url(mlflow_ui_url, data.experiment_id, run_id)
        return f'<a class="mlflow-run" href="{_e(url)}" target="_blank" rel="noopener">{text}</a>'

    def metric(column: str):
        return runs[column].map(_fmt_error) if column in runs else "—"

    shown = pd.DataFrame({
        "run": [linked(r, _e(n)) for r, n in zip(runs["run_id"], runs["name"])],
        "outcome": [f'<span class="badge {_e(o)}">{_e(o)}</span>' for o in runs["outcome"]],
        "status": runs["status"].map(_e),
        "family": runs["family"].fillna("—").map(_e),
        "depth": runs["depth"].map(_fmt_int),
        "shortcut": runs["shortcut"].fillna("—").map(_e),
        "seed": runs["seed"].map(_fmt_int),
        "lr": runs["lr"].map(_fmt_num),
        "weight decay": runs["weight_decay"].map(_fmt_num),
        "iterations": [f"{_fmt_int(s)} / {_fmt_int(i)}" for s, i in zip(runs["last_step"], runs["iterations"])],
        "train err (%)": metric("metrics.train/error"),
        "test err (%)": metric("metrics.test/error"),
        "duration": runs["duration_s"].map(_fmt_duration),
        "probes": ["missing" if r in missing else "yes" for r in runs["run_id"]],
        "MLflow run id": [linked(r, f"<code>{_e(r)}</code>") for r in runs["run_id"]],
    })
    classes = [f"run-{o}" for o in runs["outcome"]]
    where = (f' Run names link to their page in the MLflow UI at <code>{_e(mlflow_ui_url)}</code>.'
             if mlflow_ui_url else "")
    return _section("runs", "Runs",
                    '<p class="note">Final metrics are each run\'s last logged value (final iterate). '
                    f'Iterations: last logged / configured. The table scrolls sideways and down.{where}</p>',
                    _table(shown, row_classes=classes, raw=True))


# ----------------------------------------------------------------------------------------------- helpers

def _table(frame: pd.DataFrame, row_classes: list[str] | None = None, raw: bool = False) -> str:
    """A plain HTML table; cells are escaped unless ``raw`` (then the caller escaped them)."""
    head = "".join(f"<th>{_e(c)}</th>" for c in frame.columns)
    rows = []
    for i, values in enumerate(frame.itertuples(index=False)):
        cls = f' class="{row_classes[i]}"' if row_classes else ""
        cells = "".join(f"<td>{v if raw else _e(_fmt_cell(v))}</td>" for v in values)
        rows.append(f"<tr{cls}>{cells}</tr>")
    # The wrapper scrolls: a wide table (the run table has 15 columns) is never cut off by the page width.
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f'</table></div>')


def _e(value) -> str:
    return html.escape(str(value))


def _fmt_cell(value) -> str:
    if isinstance(value, float):
        return "—" if pd.isna(value) else f"{value:.2f}"
    return "—" if value is None or value is pd.NA else str(value)


def _fmt_error(value) -> str:
    return "—" if pd.isna(value) else f"{value:.2f}"


def _fmt_int(value) -> str:
    return "—" if pd.isna(value) else f"{int(value):,}"


def _fmt_num(value) -> str:
    return "—" if pd.isna(value) else f"{value:g}"


def _fmt_duration(seconds) -> str:
    if pd.isna(seconds):
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0 auto; max-width: 1200px;
       padding: 0 24px 48px; color: #222; }
h1 { margin-bottom: 4px; } h2 { margin-top: 40px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.meta, .note { color: #555; font-size: 14px; }
.banner { background: #fff3cd; border: 2px solid #d39e00; border-radius: 6px; padding: 12px 16px; margin: 16px 0;
          font-size: 16px; }
.banner ul { margin: 6px 0 0; }
.recipe-ok { background: #e8f5e9; border: 1px solid #66bb6a; border-radius: 6px; padding: 8px 16px; margin: 16px 0; }
.protocol { font-weight: 600; }
ul.verdicts li { font-size: 17px; margin: 4px 0; }
li.verdict-degrades { color: #b71c1c; } li.verdict-improves { color: #1b5e20; }
li.verdict-one-seed { color: #8d6e00; }
li.verdict-no-difference, li.verdict-not-measured { color: #37474f; }
.rule { max-width: 900px; } ul.probe li { font-size: 14px; margin: 2px 0; }
.table-wrap { overflow: auto; width: fit-content; max-width: 100%; margin: 8px 0; border: 1px solid #eee; }
#runs .table-wrap { max-height: 80vh; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border-bottom: 1px solid #e0e0e0; padding: 4px 8px; text-align: left; vertical-align: top; }
#runs th, #runs td { white-space: nowrap; }
th { background: #f5f5f5; position: sticky; top: 0; }
tr.run-diverged td { background: #fdecea; } tr.run-failed td, tr.run-interrupted td { background: #f3e5f5; }
.badge { border-radius: 4px; padding: 1px 6px; font-size: 12px; background: #e0e0e0; }
.badge.completed { background: #c8e6c9; } .badge.diverged { background: #ffcdd2; }
.badge.failed, .badge.interrupted { background: #e1bee7; }
.badge.running { background: #bbdefb; } .badge.stopped_early, .badge.stopped { background: #fff3cd; }
code { font-size: 12px; }
"""


# ------------------------------------------------------------------------------------------------- the CLI

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dashboards.report",
                                     description="Write a self-contained HTML report of a sweep's MLflow experiment.")
    parser.add_argument("--experiment", required=True, help="MLflow experiment name (the sweep's --experiment)")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlflow.db)")
    parser.add_argument("--out", default="report.html", help="where to write the HTML (default: report.html)")
    parser.add_argument("--no-log", action="store_true", help="do not log the report to the sweep's parent run")
    parser.add_argument("--mlflow-ui-url", default=None, metavar="URL",
                        help="where `mlflow ui` serves this store (e.g. http://127.0.0.1:5000): each run in the "
                             "run table links to its page there")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        build_report(args.experiment, args.tracking_uri, args.out, log_to_parent=not args.no_log,
                     mlflow_ui_url=args.mlflow_ui_url)
    except (ExperimentNotFoundError, FileNotFoundError) as error:
        print(f"error: {error.args[0] if error.args else error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
