"""The training curves (Fig. 6): error vs iteration per net, mean and min–max over seeds."""

from __future__ import annotations

from dashboards import figures
from dashboards.html import figure, section
from dashboards.loader import ExperimentData


def render(data: ExperimentData) -> str:
    fig = figures.degradation_curves(data.history, data.runs)
    return section("curves", "Training curves (Fig. 6)",
                    '<p class="note">Error (%) vs iteration. Dashed: training error (averaged since the previous '
                    'evaluation, augmented batches); solid: test error. Line = mean over seeds, shaded band = '
                    'min–max over seeds. Diverged runs are drawn in grey and are not part of the means.</p>',
                    figure(fig, "fig-curves"))
