"""Final error vs depth, per family."""

from __future__ import annotations

from dashboards import figures
from dashboards.html import figure, section
from dashboards.loader import ExperimentData


def render(data: ExperimentData) -> str:
    return section("depth", "Final error vs depth",
                    '<p class="note">Final iterate of each run; error bars = min–max over seeds.</p>',
                    figure(figures.error_vs_depth(data.runs), "fig-depth"))
