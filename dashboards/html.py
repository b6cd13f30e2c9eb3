"""The report's HTML kit: escaping, sections, figures, tables and cell formats, and the page's CSS.
Every section builds its HTML with these; every value that comes from MLflow goes through ``escape``."""

from __future__ import annotations

import html

import pandas as pd
import plotly.io as pio

PLOT_CONFIG = {"displaylogo": False, "responsive": True}


def table(frame: pd.DataFrame, row_classes: list[str] | None = None, raw: bool = False) -> str:
    """A plain HTML table; cells are escaped unless ``raw`` (then the caller escaped them)."""
    head = "".join(f"<th>{escape(c)}</th>" for c in frame.columns)
    rows = []
    for i, values in enumerate(frame.itertuples(index=False)):
        cls = f' class="{escape(row_classes[i])}"' if row_classes else ""
        cells = "".join(f"<td>{v if raw else escape(format_cell(v))}</td>" for v in values)
        rows.append(f"<tr{cls}>{cells}</tr>")
    # The wrapper scrolls: a wide table (the run table has 15 columns) is never cut off by the page width.
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody>'
            f'</table></div>')


def escape(value) -> str:
    """``value`` as text safe inside HTML and inside a quoted attribute."""
    return html.escape(str(value), quote=True)


def format_cell(value) -> str:
    if isinstance(value, float):
        return "—" if pd.isna(value) else f"{value:.2f}"
    return "—" if value is None or value is pd.NA else str(value)


def format_error(value) -> str:
    return "—" if pd.isna(value) else f"{value:.2f}"


def format_int(value) -> str:
    return "—" if pd.isna(value) else f"{int(value):,}"


def format_num(value) -> str:
    return "—" if pd.isna(value) else f"{value:g}"


def format_duration(seconds) -> str:
    if pd.isna(seconds):
        return "—"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


def section(anchor: str, title: str, *parts: str) -> str:
    return f'<section id="{anchor}">\n<h2>{escape(title)}</h2>\n' + "\n".join(p for p in parts if p) + "\n</section>"


def figure(fig, div_id: str) -> str:
    div = pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOT_CONFIG)
    return f'<div class="figure">{div}</div>'


CSS = """
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
li.verdict-one-seed { color: #8d6e00; } li.verdict-turns, li.verdict-worsens { color: #6a1b9a; }
li.verdict-removes, li.verdict-reduces { color: #0d47a1; font-weight: 600; }
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
