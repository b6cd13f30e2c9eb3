"""Shortcut options A / B / C (§3.3): their verdicts (Holm over all pairs), table and figure."""

from __future__ import annotations

from dashboards import figures, option_verdicts
from dashboards.html import escape, figure, section, table
from dashboards.loader import ExperimentData
from dashboards.shortcuts import TABLE3_COLUMN, shortcut_table, table3_elsewhere_note
from dashboards.stats import residual_shortcuts


def render(data: ExperimentData) -> str:
    if len(residual_shortcuts(data.runs)) < 2:
        return ""
    _, _, found, tests = option_verdicts.page_verdicts(data.history, data.runs, depth=False)  # Holm over all pairs
    sentences = "".join(f'<li class="verdict verdict-{v.css}">{escape(v.sentence)}</li>'
                        for pairs in found.values() for v in pairs)
    tests = (f'<ul class="verdicts shortcut-verdicts">{sentences}</ul><p class="note rule">Same test as the '
             f'degradation verdict, per pair of options at one depth: the test error at the matched iteration '
             f'across seeds, as counts on the arcsine-root scale (every seed scores the same test images, so no '
             f'count noise is added but a tie\'s), the seed variance pooled over the options of that depth '
             f'(guarded as there). {escape(option_verdicts.holm_note(tests))} Each sentence states the gap its seeds find '
             f'80 % of the time; a pair with a one-seed option is inconclusive.</p>') if sentences else ""
    options = shortcut_table(data.runs)
    reference = (f'<p class="note" id="table3-reference">{escape(table3_elsewhere_note())}</p>'
                 if TABLE3_COLUMN not in options else
                 '<p class="note" id="table3-reference">Table 3 is set beside the ImageNet-layout ResNet-34 trained '
                 'on ImageNet only, as a reference, not as a difference: the paper tests 10 crops, this table one view. '
                 'Our 10-crop errors stand beside Table 3 under <a href="#imagenet-tables">ImageNet</a>.</p>')
    return section("shortcuts", "Shortcut options A / B / C",
                    '<p class="note">A: zero-padding identity; B: projections where the shape changes; '
                    'C: projections everywhere (§3.3). Final iterate; error bars = min–max over seeds.</p>', tests,
                    table(options), reference,
                    figure(figures.shortcut_options(data.runs), "fig-shortcuts"))
