"""The ImageNet section (dashboards/imagenet.py): Fig. 4's curves, Tables 2/3 beside our 10-crop errors, what
the seeds can conclude and, for a smoke run, what it can and cannot show."""

from __future__ import annotations

import math

import pandas as pd
from scipy import stats as scipy_stats

from dashboards import figures, imagenet, option_verdicts, verdict
from dashboards.html import escape, figure, section, table
from dashboards.inference import POWER, signed
from dashboards.loader import ExperimentData
from dashboards.paper import IMAGENET_PAPER_ITERATIONS
from dashboards.sections.paper import ours_text

PROTOCOL = ("Ours: final iterate — each run's 10-crop error on the test split (the 4 corners and the centre of the "
            "resized image and of its flip, softmax scores averaged), logged once at the end of training; mean ± std "
            "over seeds. Never the best evaluation seen, which would select on the test set. The paper: Tables 2/3, "
            "10-crop top-1 and top-5 error on ILSVRC-2012's validation images. Only runs that have ended count: a run "
            "still training is left out; a diverged run counts at chance error, as in the verdicts.")


def render(data: ExperimentData) -> str:
    """The section, or nothing when no run has the ImageNet layout."""
    if not imagenet.has_imagenet_runs(data.runs):
        return ""
    return section("imagenet", "ImageNet: Fig. 4 and Tables 2/3", _smoke_note(data), _curves(data), _tables(data),
                   _seeds_note(data))


def _curves(data: ExperimentData) -> str:
    """Fig. 4: thin training error, bold centre-crop error of the validation split (else the test split)."""
    split = imagenet.held_out_split(data.history, data.runs)
    name = "validation" if split == "val" else "test"
    fig = figures.degradation_curves(data.history, imagenet.imagenet_runs(data.runs), held_out=split,
                                     style=figures.fig4_style(name))
    if split == "val":
        bold = ("centre-crop error on the validation split (<code>val/error</code>: training images held out, "
                "<code>data.val_size</code>; the split the plateau rule reads). The paper draws its bold curves on "
                "ILSVRC-2012's validation images, which are also the images of its Tables 2/3; here those are the "
                "test split, kept for the tables")
    else:
        bold = "centre-crop error on the test split (<code>test/error</code>; these runs hold no validation split out)"
    instead = " Fig. 4 stands in for Fig. 6's curves on this page." if imagenet.only_imagenet_runs(data.runs) else ""
    return (f'<p class="note" id="fig4-note">Fig. 4: error (%) vs iteration of the ImageNet-layout nets, plain nets '
            f'left, residual nets right. Thin: training error (averaged since the previous evaluation, augmented '
            f'crops); bold: {bold}. Line = mean over seeds, shaded band = min–max over seeds; diverged runs in grey, '
            f'outside the means.{instead}</p>' + figure(fig, "fig-imagenet-curves"))


def _tables(data: ExperimentData) -> str:
    """Tables 2/3 beside ours, with ours − paper only in the paper's setting."""
    result = imagenet.tables_2_3(data.runs, data.sweep_tags)
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in result.notes)
    protocol = f'<p class="protocol">{escape(PROTOCOL)}</p>'
    if result.table.empty:
        return ('<h3 id="imagenet-tables">Tables 2 and 3</h3>' + protocol + notes
                + '<p class="note">No ImageNet-layout net of this experiment trained on ImageNet is in Tables 2/3.</p>')
    if result.comparable:
        status = ('<p class="note" id="imagenet-comparable">The paper\'s setting: its recipe, full ILSVRC-2012 '
                  '(the 10-crop test over its 50,000 validation images) and 600,000 iterations. Difference = our mean '
                  '− the paper\'s number, in percentage points, without an interval: the paper trains one run per '
                  'net and states no run-to-run spread on ImageNet, so its numbers\' own noise is unknown.</p>')
    else:
        reasons = "".join(f"<li>{escape(c)}</li>" for c in result.caveats)
        status = ('<p class="note reference-only" id="imagenet-reference-only"><strong>Reference only.</strong> '
                  'This experiment is not the paper\'s ImageNet setting, so the paper\'s numbers stand beside ours '
                  f'without a difference:</p><ul class="note">{reasons}</ul>')
    return ('<h3 id="imagenet-tables">Tables 2 and 3 (10-crop top-1 and top-5 error)</h3>' + protocol + status
            + table(_wide(result.table, result.comparable), raw=False) + notes)


def _wide(long: pd.DataFrame, comparable: bool) -> pd.DataFrame:
    """One row per net: the table in the paper, then per measure the paper's value, ours and (if comparable) ours − paper."""
    rows = []
    for net, group in long.groupby("net", sort=False):
        row = {"net": net, "table in the paper": group["source"].iloc[0], "runs counted": group["counted"].iloc[0]}
        for measure in group.itertuples(index=False):
            paper = "— (not in the paper)" if math.isnan(measure.paper) else f"{measure.paper:.2f}"
            row[f"{measure.measure} paper (%)"] = paper
            row[f"{measure.measure} ours (%)"] = ours_text(measure)
            if comparable:
                row[f"{measure.measure} ours − paper (pp)"] = ("—" if pd.isna(measure.difference)
                                                               else signed(measure.difference))
        rows.append(row)
    return pd.DataFrame(rows)


def _seeds_note(data: ExperimentData) -> str:
    """What this experiment's seeds can conclude, worded from the verdicts the page computes."""
    counts = imagenet.seeds_per_net(data.runs)
    if counts.empty:
        return ""
    parts = []
    single = [imagenet.imagenet_net(*key) for key, n in counts.items() if n == 1]
    if single:
        which = "every net" if len(single) == len(counts) else f"{len(single)} of {len(counts)} nets ({', '.join(single)})"
        parts.append(f"One seed for {which} (the ImageNet presets train one run per net, as the paper's tables do): "
                     f"no seed-to-seed spread can be estimated from one run, so the degradation and shortcut "
                     f"verdicts say “{verdict.ONE_SEED}” for them — they state the gap and test nothing."
                     + _binomial_clause(data.runs))
    _, found, pairs, _ = option_verdicts.page_verdicts(data.history, data.runs)
    tested = [v.comparison for v in [*found, *(p for ps in pairs.values() for p in ps)] if v.comparison is not None]
    if tested:
        dfs = sorted(c.df for c in tested)
        ts = sorted(scipy_stats.t.ppf(0.975, df) for df in (dfs[0], dfs[-1]))
        gaps = sorted(abs(g) for g in (c.detectable() for c in tested) if g is not None) or [float("nan")]
        parts.append(f"Where nets have two or more seeds, each verdict estimates the seed variance from those few "
                     f"runs (pooled across the nets it compares when their variances agree): its test has "
                     f"{_span(dfs, '.1f')} degrees of freedom (t at 95 %: {_span(ts, '.1f')}), so it finds a change of "
                     f"{_span(gaps, '.2f')} pp {100 * POWER:.0f} % of the time; a smaller real gap is most likely "
                     f"reported as inconclusive.")
    return f'<p class="note" id="imagenet-seeds"><strong>What {_seed_words(counts)} can conclude.</strong> ' \
           f'{escape(" ".join(parts))}</p>' if parts else ""


def _binomial_clause(runs: pd.DataFrame) -> str:
    """The test's binomial uncertainty at this experiment's error and images, and why it is no verdict."""
    members = imagenet.members(runs)
    if "metrics.test/error" not in members or "metrics.test/images" not in members:
        return ""
    known = members.dropna(subset=["metrics.test/error", "metrics.test/images"])
    if known.empty:
        return ""
    rate, images = known["metrics.test/error"].mean() / 100, int(known["metrics.test/images"].max())
    half = 196 * math.sqrt(rate * (1 - rate) / images)
    return (f" The test's binomial uncertainty (±{half:.2f} pp at {100 * rate:.1f} % error over {images:,} images, "
            f"95 %) counts only which test images were drawn; it says nothing about how far another seed (another "
            f"initialisation and data order) would move a net; on a fixed test set the seed-to-seed spread of a "
            f"count is at most binomial, so the verdicts use it only for a tie (seeds with equal counts), never in "
            f"place of the seed variance. Run ≥ 2 seeds per net (--seeds 2) for a test.")


def _smoke_note(data: ExperimentData) -> str:
    """For a smoke run: what it shows (the pipeline end to end) and what it cannot (the paper's numbers)."""
    if not imagenet.is_smoke(data.sweep_tags, data.runs):
        return ""
    members = imagenet.members(data.runs)
    where = ", ".join(imagenet.data_dirs(members)) or "a small generated set"
    trained = f"{int(members['iterations'].max()):,}" if members["iterations"].notna().any() else "few"
    return (f'<p class="note smoke" id="imagenet-smoke"><strong>Smoke run</strong> (preset '
            f'{escape(data.sweep_tags.get("preset", "smoke"))}, data {escape(where)}). It shows the ImageNet path end '
            f'to end: ImageNet-layout nets, JPEG decoding with the paper\'s augmentation, centre-crop and 10-crop '
            f'testing, every trial in MLflow and this report. It cannot reproduce the paper\'s numbers: the data is '
            f'not ILSVRC-2012 and training is {escape(trained)} iterations, not {IMAGENET_PAPER_ITERATIONS:,}; its '
            f'errors say that the pipeline learns, not how plain and residual nets compare at the paper\'s scale.</p>')


def _span(values: list[float], fmt: str) -> str:
    low, high = format(values[0], fmt), format(values[-1], fmt)
    return low if low == high else f"{low}–{high}"


def _seed_words(counts: pd.Series) -> str:
    low, high = int(counts.min()), int(counts.max())
    seeds = f"{low}" if low == high else f"{low}–{high}"
    return f"{seeds} seed{'s' if high > 1 else ''} per net"
