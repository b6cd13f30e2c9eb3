"""The run table: every trial run, its outcome, metrics and MLflow link; always the page's last section."""

from __future__ import annotations

import pandas as pd

from dashboards.html import escape, format_duration, format_error, format_int, format_num, section, table
from dashboards.loader import ExperimentData
from dashboards.mlflow_ui import run_url


def render(data: ExperimentData, mlflow_ui_url: str | None = None) -> str:
    runs = data.runs.sort_values(["family", "depth", "shortcut", "seed", "start_time"], na_position="last")
    missing = set(data.missing_probes)

    def linked(run_id: str, text: str) -> str:
        if not mlflow_ui_url:
            return text
        url = run_url(mlflow_ui_url, data.experiment_id, run_id)
        return f'<a class="mlflow-run" href="{escape(url)}" target="_blank" rel="noopener">{text}</a>'

    def metric(column: str):
        return runs[column].map(format_error) if column in runs else "—"

    shown = pd.DataFrame({
        "run": [linked(r, escape(n)) for r, n in zip(runs["run_id"], runs["name"])],
        "outcome": [f'<span class="badge {escape(o)}">{escape(o)}</span>' for o in runs["outcome"]],
        "status": runs["status"].map(escape),
        "family": runs["family"].fillna("—").map(escape),
        "depth": runs["depth"].map(format_int),
        "shortcut": runs["shortcut"].fillna("—").map(escape),
        "seed": runs["seed"].map(format_int),
        "lr": runs["lr"].map(format_num),
        "weight decay": runs["weight_decay"].map(format_num),
        "iterations": [f"{format_int(s)} / {format_int(i)}" for s, i in zip(runs["last_step"], runs["iterations"])],
        "train err (%)": metric("metrics.train/error"),
        "test err (%)": metric("metrics.test/error"),
        "duration": runs["duration_s"].map(format_duration),
        "probes": ["unreadable" if r in data.unreadable_probes else "missing" if r in missing else "yes"
                   for r in runs["run_id"]],
        "MLflow run id": [linked(r, f"<code>{escape(r)}</code>") for r in runs["run_id"]],
    })
    classes = [f"run-{o}" for o in runs["outcome"]]
    where = (f' Run names link to their page in the MLflow UI at <code>{escape(mlflow_ui_url)}</code>.'
             if mlflow_ui_url else "")
    return section("runs", "Runs",
                    '<p class="note">Final metrics are each run\'s last logged value (final iterate). '
                    f'Iterations: last logged / configured. The table scrolls sideways and down.{where}</p>',
                    table(shown, row_classes=classes, raw=True))
