"""The degradation verdict: per family, does error grow with depth? Its sentences, table, test and notes."""

from __future__ import annotations

import pandas as pd

from dashboards import varied_runs, verdict
from dashboards.html import escape, section, table
from dashboards.loader import ExperimentData
from dashboards.stats import like_for_like, primary_shortcut, residual_shortcuts, usable, varied_params
from resnet_core.config import net_name


VERDICT_RULE = (
    "Test: training error of each run at the matched iteration (the last iteration every compared run of the "
    "family reached), seeds as replicates, as a count of wrong images out of the images it is over "
    "(<code>train/images</code>), on the arcsine-root scale (arcsin √((wrong + ⅜)/(images + ¾)), where a count's "
    "own noise is the same at 0 % and at 50 %), so that every interval, turned back into percentage points, stays "
    "inside 0–100 %. Training batches are drawn afresh, so each depth's seed variance is floored at its count's "
    "binomial variance. Per family, the linear trend against log<sub>2</sub>(depth), every depth with ≥ 2 seeds "
    "taking part (with two depths: deepest − shallowest), the seed variance pooled across depths unless "
    "Bartlett's test of equal variances rejects at level 0.25 or the depths have unequal seeds; then Welch's form, "
    "each depth's variance at least the pooled one, with Satterthwaite's df. With ≥ 3 depths, every pair of depths "
    "is tested too (Holm over the pairs): a curve with both a significant rise and a significant fall "
    "<em>rises and falls</em>, and no straight trend is claimed for it. Diverged runs count at chance error (the "
    "net failed to train); failed runs are left out and counted. Words: <em>degrades</em> / <em>improves</em> "
    f"when the interval excludes 0 and does not lie wholly inside ±{verdict.EQUIVALENCE_PP:g} pp (a smaller change "
    f"is not the degradation problem); <em>no difference larger than {verdict.EQUIVALENCE_PP:g} pp</em> only when "
    "the trend's and every depth's interval against the shallowest lie inside that margin; otherwise "
    "<em>inconclusive</em>, with about how many seeds would tell (80 % power at the observed spread). Changes and "
    "detectable gaps are stated in the direction that can happen from the shallowest net's fitted rate (a fall "
    "from 0.5 % is at most 0.5 pp). The fitted change is the line's, turned back from the shallowest depth's fitted "
    "rate, so it can differ from the difference of the table's means. The headline, <em>residual learning removes "
    "the degradation</em>, is its own test: plain trend − residual trend over the depths both families have, each "
    "family's test combined by Welch. Each of these answers its own question at 95 %. Simulated "
    "(tests/test_verdict_simulation.py; the table in docs/tracking.md) the wrong-verdict rate stays at or below "
    "5 % for 2–5 seeds and 2–5 depths, unequal seeds, variances up to 5× apart, errors near 0 %, curves that "
    "turn, diverged runs and the CIFAR test-set regime. The min–max columns are for looking only.")


def render(data: ExperimentData) -> str:
    rows, found = verdict.verdicts(data.history, data.runs)
    if not found:
        return section("verdict", "Degradation verdict", '<p class="note">No plain or residual runs found.</p>')
    sentences = "".join(f'<li class="verdict verdict-{v.css}">{escape(v.sentence)}</li>' for v in found)
    shown = rows.assign(
        net=[net_name(f, d) for f, d in zip(rows["family"], rows["depth"])],
        iteration=rows["iteration"].map(lambda i: f"{int(i):,}" if pd.notna(i) else "—"),
    )[["net", "iteration", "mean", "std", "min", "max", "n", "lost"]]
    shown.columns = ["net", "matched iteration", "train error mean (%)", "std (pp)", "min (%)", "max (%)", "seeds",
                     "did not complete (diverged: counted at chance error; failed: left out)"]
    return section("verdict", "Degradation verdict", f'<ul class="verdicts">{sentences}</ul>', table(shown),
                    f'<p class="note rule" id="verdict-rule">{VERDICT_RULE}</p>',
                    _excluded_note(data), _comparison_note(data))


def _excluded_note(data: ExperimentData) -> str:
    """Which runs the means and verdicts leave out, and why."""
    excluded = data.runs[~usable(data.runs)]
    if excluded.empty:
        return ""
    names = "; ".join(f"{escape(r.name)} ({escape(r.outcome)})" for r in excluded.itertuples(index=False))
    return (f'<p class="note">Not counted as trained: {len(excluded)} run(s) that failed, diverged, were '
            f'interrupted or were stopped early — {names}. They are marked in the run table. Failed, interrupted '
            f'and early-stopped runs are left out of means and spreads; the verdicts and every final value (error '
            f'vs depth, shortcut options, the paper comparison) count diverged runs at chance error (the net '
            f'failed to train).</p>')


def _comparison_note(data: ExperimentData) -> str:
    """Which usable runs the depth comparisons leave out (other shortcut option, other hyper-parameters)."""
    notes = []
    if len(residual_shortcuts(data.runs)) > 1:
        notes.append(f"Residual nets here use shortcut option {escape(primary_shortcut(like_for_like(data.runs)))} only "
                     f"(the most common); options are compared under <a href=\"#shortcuts\">Shortcut options</a>.")
    others = usable(data.runs).sum() - len(like_for_like(data.runs))
    if others:
        varied = ", ".join(escape(p) for p in varied_params(data.runs))
        where = ' They appear in the <a href="#search">search views</a>.' if varied_runs.has_varied_runs(data.runs) else ""
        notes.append(f"{others} run(s) with other settings of {varied} are left out of the depth comparisons "
                     f"(compared like for like at the most common setting).{where}")
    return "".join(f'<p class="note">{n}</p>' for n in notes)
