"""The paper beside us: Table 6 (and Tables 2/3 on ImageNet) next to this experiment's numbers."""

from __future__ import annotations

import pandas as pd

from dashboards import figures, paper
from dashboards.html import escape, figure, section, table
from dashboards.inference import signed
from dashboards.loader import ExperimentData


def render(data: ExperimentData) -> str:
    result = paper.paper_comparison(data.runs, data.sweep_tags)
    comparison = result.table
    protocol = (f'<p class="protocol">Selection protocol: {escape(paper.SELECTION_PROTOCOL)}. Only runs that have '
                f'ended count: a run still training is left out; a diverged run counts at chance error, as in the '
                f'verdicts (“runs counted” says how many of each net\'s runs that is).</p>')
    if comparison["depth"].eq(110).any() and comparison["source"].str.startswith("Table 6").any():
        protocol += ('<p class="note">ResNet-110 is compared with the paper\'s mean over 5 runs (6.61 ± 0.16), '
                     'not with its best run (6.43, the value Table 6 prints).</p>')
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in result.notes)
    if comparison.empty:
        return section("paper", "The paper beside us", protocol, notes,
                        '<p class="note">No net of this experiment appears in the paper\'s tables.</p>')
    shown = pd.DataFrame({
        "net": comparison["net"],
        "paper (%)": [_paper_value(row) for row in comparison.itertuples(index=False)],
        "source": comparison["source"],
        "this experiment (%)": [ours_text(row) for row in comparison.itertuples(index=False)],
        "runs counted": comparison["counted"],
    })
    if result.comparable:
        shown["difference, ours − paper (pp)"] = [_difference(row) for row in comparison.itertuples(index=False)]
        status = ('<p class="note" id="paper-comparable">Same data set, recipe and training length as the paper: '
                  'the difference is ours − paper with a 95 % interval that counts the paper\'s own seed noise: a '
                  f'published number is one run (or, for ResNet-110, the mean of 5), with a per-run std of '
                  f'{paper.PAPER_RUN_STD} pp — the spread of ResNet-110\'s 5 runs in Table 6, the paper\'s only '
                  'measure of it. Welch\'s t-test on the arcsine-root scale of the error counts.</p>')
    else:
        status = ('<p class="note reference-only" id="paper-reference-only"><strong>Reference only.</strong> This '
                  'experiment is not the paper\'s setting (see the banner at the top), so the paper\'s numbers '
                  'are shown beside ours without a difference: subtracting them would compare unlike things.</p>')
    shown["note"] = comparison["paper_note"]
    plain = ('<p class="note">Table 6 has no plain-net numbers (plain nets appear only as curves in Fig. 6).</p>'
             if comparison["layout"].eq("cifar").any() else "")
    return section("paper", "The paper beside us", protocol, status, table(shown, raw=False), notes, plain,
                    figure(figures.paper_comparison(comparison, reference_only=not result.comparable),
                            "fig-paper"))


def _paper_value(row) -> str:
    if pd.notna(row.paper_std):
        return f"{row.paper:.2f} ± {row.paper_std:.2f} (mean ± std, {int(row.paper_runs)} runs)"
    return f"{row.paper:.2f}"


def ours_text(row) -> str:
    """Our value of a comparison row: mean ± std (n, min–max) over seeds; one seed says it has no std."""
    if row.n == 0:
        return "—"
    if row.n < 2:
        return f"{row.ours_mean:.2f} (one seed: no std)"
    return (f"{row.ours_mean:.2f} ± {row.ours_std:.2f} (mean ± std, n={row.n}; "
            f"min–max {row.ours_min:.2f}–{row.ours_max:.2f})")


def _difference(row) -> str:
    if pd.isna(row.difference):
        return f"— ({row.difference_test})"
    if pd.isna(row.difference_low):
        return f"{signed(row.difference)} (one seed: no interval)"
    return f"{signed(row.difference)} (95 % CI {signed(row.difference_low)} to {signed(row.difference_high)})"
