"""Verdicts a reviewer would sign: which runs count, what the test says, and the sentence that says it.

The statistics live in dashboards/inference.py (error counts on the arcsine-root scale, a guarded
pooled-variance contrast, Holm); this module turns a sweep's runs into the values those tests take and their
answers into words.

- **Depth verdict** (the degradation claim, §1 / Fig. 6): per family, the trend of training error against
  log2(depth) at the matched iteration, every depth with ≥ 2 seeds taking part (two depths: deepest −
  shallowest). Log depth because the studied depths grow roughly geometrically (20 … 110, 1202). With ≥ 3
  depths a curve that significantly rises and falls (pairs of depths, Holm) is called so, not a trend.
- **The paper's claim** (``interaction_verdict``): plain trend − residual trend over the depths both families
  have, one contrast of both families' groups — "residual learning removes the degradation" needs it, not two
  separate verdicts.
- **Shortcut verdicts** (options A / B / C): every pair of options at one depth, the variance pooled over the
  options of that depth.
- **Words**, with X = ``EQUIVALENCE_PP``: *degrades* / *improves* (or *higher* / *lower*) when the interval
  excludes 0 — for the depth verdict, unless the whole interval lies inside ±X (a rise too small to be the
  degradation problem); *no difference larger than X pp* only when every depth's interval against the
  shallowest lies inside ±X; otherwise *inconclusive*, saying about how many seeds would tell. One seed per
  group: *inconclusive (one seed)*.
- **Runs that fail to train count**: a diverged run enters its depth at chance error (100 × (1 − 1/classes) %:
  a net whose loss became NaN predicts nothing better than a guess), and the sentence says how many diverged.
  Crashed or interrupted runs are missing data: left out, and counted in the sentence.
- **Tests are corrected per question** (``page_verdicts``): each family's depth verdict is one question at
  95 %; every pair of shortcut options on a page, at any depth, answers one question, Holm-corrected together.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
import pandas as pd

from dashboards.inference import (Comparison, baseline_weights, group_comparison, holm_levels, pair_weights,
                                  signed, stabilised, trend_weights, welch_combination)
from dashboards.stats import (FAMILIES, chance_error, comparison_candidates, comparison_runs, diverged,
                              matched_iteration, spread, value_at)
from dashboards.verdict_words import (DEGRADES, EQUIVALENCE_PP, IMPROVES, INCONCLUSIVE, NO_DIFFERENCE, NOT_MEASURED,
                                      NOUN, ONE_SEED, REDUCES, REMOVES, TURNS, WORSENS, Tested, cannot_tell,
                                      design_power)
from resnet_core.config import net_name

METRIC = "train/error"  # the degradation claim is about training error, not overfitting
SHORTCUT_METRIC = "test/error"  # Table 3 compares shortcut options by (validation) error
DEFAULT_HELD_OUT_IMAGES = 10_000  # test/val images of runs logged before <split>/images existed (CIFAR's)


# --------------------------------------------------------------------------------- the values tested

def evaluated_images(runs: pd.DataFrame, metric: str) -> pd.Series:
    """Images each run's ``metric`` is over (by run_id): the logged ``<split>/images``, else what the params imply."""
    split = metric.split("/")[0]
    column = f"metrics.{split}/images"
    logged = pd.to_numeric(runs[column], errors="coerce") if column in runs else pd.Series(np.nan, index=runs.index)
    if split == "train":
        missing = pd.Series(np.nan, index=runs.index)
        implied = (pd.to_numeric(runs.get("params.run.eval_every", missing), errors="coerce")
                   * pd.to_numeric(runs.get("params.optim.batch_size", missing), errors="coerce"))
    else:
        implied = pd.Series(float(DEFAULT_HELD_OUT_IMAGES), index=runs.index)
    return logged.fillna(implied).fillna(float(DEFAULT_HELD_OUT_IMAGES)).set_axis(runs["run_id"])


def values_at_matched_iteration(history: pd.DataFrame, members: pd.DataFrame, metric: str, keys: Sequence[str],
                                diverged: pd.DataFrame | None = None) -> tuple[pd.DataFrame, int | None]:
    """Each run's ``metric`` at the last iteration all ``members`` reached, with the images it is over; and
    ``diverged`` runs at chance error. Columns: run_id, *keys, value, images, diverged."""
    columns = ["run_id", *keys, "value", "images", "diverged"]
    iteration = matched_iteration(history, members["run_id"], metric)
    if iteration is None:
        return pd.DataFrame(columns=columns), None
    values = value_at(history, members["run_id"], metric, iteration).rename("value").reset_index()
    values = values.merge(members[["run_id", *keys]], on="run_id").assign(diverged=False)
    values["images"] = values["run_id"].map(evaluated_images(members, metric))
    if diverged is not None and not diverged.empty:
        failed = diverged[["run_id", *keys]].assign(
            value=[chance_error(d) for d in diverged.get("dataset", pd.Series(None, index=diverged.index))],
            images=diverged["run_id"].map(evaluated_images(diverged, metric)).to_numpy(), diverged=True)
        values = pd.concat([values, failed], ignore_index=True)
    return values[columns], iteration


def _diverged_like(runs: pd.DataFrame, members: pd.DataFrame) -> pd.DataFrame:
    """Diverged runs of the nets in ``members`` (same family, depth and shortcut): evidence, not missing data."""
    out = runs[runs["outcome"].eq("diverged")]
    nets = set(zip(members["family"], members["depth"], members["shortcut"].fillna("none")))
    keep = [(f, d, s) in nets for f, d, s in zip(out["family"], out["depth"], out["shortcut"].fillna("none"))]
    return out[keep]


def _members(runs: pd.DataFrame, family: str) -> pd.DataFrame:
    members = comparison_runs(runs)
    return members[members["family"].eq(family)]


def depth_values(history: pd.DataFrame, runs: pd.DataFrame, family: str) -> tuple[pd.DataFrame, int | None]:
    """The family's training error per run at its matched iteration; its diverged runs at the compared setting
    at chance error — also at a depth where every run diverged (that depth failed to train, it is not absent)."""
    members = _members(runs, family)
    candidates = comparison_candidates(runs)
    failed = candidates[candidates["family"].eq(family) & diverged(candidates)]
    return values_at_matched_iteration(history, members, METRIC, ["depth"], failed)


def depth_table(history: pd.DataFrame, runs: pd.DataFrame, family: str) -> tuple[pd.DataFrame, int | None]:
    """Training error per depth at the family's matched iteration: depth, mean, min, max, std, n, diverged."""
    values, iteration = depth_values(history, runs, family)
    return _summary(values, iteration), iteration


def _summary(values: pd.DataFrame, iteration: int | None) -> pd.DataFrame:
    """Per depth: mean, min, max, std, n of the values, and how many of them are diverged runs."""
    if iteration is None:
        return pd.DataFrame(columns=["depth", "mean", "min", "max", "std", "n", "diverged"])
    table = spread(values, ["depth"], "value")
    table["diverged"] = table["depth"].map(values.groupby("depth")["diverged"].sum()).astype(int)
    return table.sort_values("depth").reset_index(drop=True)


def lost_runs(runs: pd.DataFrame, family: str) -> dict[int, str]:
    """Per depth, what happened to runs that did not complete: "2 of 3 diverged", "1 of 3 failed"."""
    table = runs[runs["family"].eq(family) & runs["depth"].notna()]
    shortcut = _members(runs, family)["shortcut"].dropna().unique()
    if family == "residual" and len(shortcut) == 1:
        table = table[table["shortcut"].eq(shortcut[0])]
    out = {}
    for depth, group in table.groupby("depth"):
        counts = group["outcome"].value_counts()
        lost = [f"{counts[o]} of {len(group)} {o}" for o in ("diverged", "failed", "interrupted") if o in counts]
        if lost:
            out[int(depth)] = ", ".join(lost)
    return out


# ---------------------------------------------------------------------------------- the depth verdict

@dataclass(frozen=True)
class Verdict(Tested):
    """One family's answer to "does training error change with depth?", the test behind it and its words."""

    family: str
    comparison: Comparison | None = None
    depths: tuple[int, ...] = ()  # the depths tested (or, without a test, the depths found)
    iteration: int | None = None  # the matched iteration the errors are read at
    left_out: tuple[int, ...] = ()  # depths with a single seed, not part of the test
    lost: tuple[tuple[int, str], ...] = ()  # (depth, "2 of 3 diverged") for runs that did not complete
    gap: float | None = None  # without a test: the raw gap shallowest → deepest (pp)
    missing: str = ""  # NOT_MEASURED / ONE_SEED when there is no test
    pairs: tuple[Comparison, ...] = ()  # every pair of tested depths (deeper − shallower), Holm levels
    turning: bool = False  # the pairs rise and fall (≥ 3 depths)

    @property
    def label(self) -> str:
        c = self.comparison
        if self.missing:
            return self.missing
        if self.turning:
            return TURNS
        if c.direction and not c.within(EQUIVALENCE_PP):
            return DEGRADES if c.direction > 0 else IMPROVES
        shallowest = [p for p in self.pairs if p.groups[0] == self.depths[0]]
        return NO_DIFFERENCE if all(p.within(EQUIVALENCE_PP) for p in [c, *shallowest]) else INCONCLUSIVE

    @property
    def sentence(self) -> str:
        noun, c = NOUN.get(self.family, f"{self.family} nets"), self.comparison
        at = f"at iteration {self.iteration:,}" if self.iteration is not None else ""
        lost = "".join(f" {net_name(self.family, d)}: {text}{_counted(text)}." for d, text in self.lost)
        if self.label == NOT_MEASURED:
            return (f"{noun}: {NOT_MEASURED} — needs two depths with completed runs "
                    f"(have: {', '.join(map(str, self.depths)) or 'none'}).{lost}")
        if self.label == ONE_SEED:
            return (f"{noun}: {ONE_SEED} — training error {signed(self.gap)} pp from {self.depths[0]} to "
                    f"{self.depths[-1]} layers {at}, but with one seed per depth the seed noise is unknown, so no "
                    f"test can tell this gap from chance. Run ≥ 2 seeds per depth (--seeds 2) for a verdict.{lost}")
        fitted = "fitted " if len(self.depths) > 2 else ""
        change = (f"{fitted}training error {c.baseline_pct:.2f} % → {c.baseline_pct + c.effect:.2f} %, "
                  f"{signed(c.effect)} pp from {self.depths[0]} to {self.depths[-1]} layers")
        basis = f"{c.sentence_tail('seeds per depth')}; {at}"
        if self.left_out:
            basis += f"; left out with one seed: {', '.join(map(str, self.left_out))} layers"
        head = {DEGRADES: f"{noun} degrade", IMPROVES: f"{noun} improve",
                TURNS: f"{noun} rise and fall with depth"}.get(self.label, f"{noun}: {self.label} —")
        tail = cannot_tell(c, "depth") if self.label == INCONCLUSIVE else design_power(c, "depth")
        if self.label == TURNS:
            change = f"{self._turning_pairs()}; deepest − shallowest {signed(self._ends().effect)} pp"
            basis = f"{self._ends().sentence_tail('seeds per depth')}; {at}"
        elif self.label == NO_DIFFERENCE and c.direction:
            tail = (f"The change is detectable but inside the ±{EQUIVALENCE_PP:g} pp margin, too small to be the "
                    f"degradation problem. {tail}")
        return f"{head}{':' if self.label in (DEGRADES, IMPROVES, TURNS) else ''} {change} ({basis}).{lost} {tail}"

    def _ends(self) -> Comparison:
        return next(p for p in self.pairs if p.groups == (self.depths[0], self.depths[-1]))

    def _turning_pairs(self) -> str:
        found = [p for p in self.pairs if p.direction]
        listed = ", ".join(f"{p.groups[1]} vs {p.groups[0]} layers {signed(p.effect)} pp" for p in found)
        return (f"{listed} (the {len(found)} of {len(self.pairs)} pairs of depths Holm's correction over all "
                f"pairs finds)")


def verdict_record(found: Sequence[Verdict]) -> tuple[dict[str, str], dict[str, float]]:
    """The depth verdicts as the sweep run's tags and metrics, so sweeps compare in the MLflow runs table:
    ``verdict.<family>`` (the label) and its sentence; the effect, its interval's ends (pp) and p where there
    is a test."""
    tags, metrics = {}, {}
    for v in found:
        key = f"verdict.{v.family}"
        tags[key], tags[f"{key}.sentence"] = v.label, v.sentence[:5000]  # MLflow's tag value limit is 8000
        if (c := v.comparison) is not None:
            metrics.update({f"{key}.effect_pp": c.effect, f"{key}.ci_low_pp": c.low, f"{key}.ci_high_pp": c.high,
                            f"{key}.p_value": c.p})
    return tags, metrics


def _counted(text: str) -> str:
    return " (counted at chance error)" if "diverged" in text else " (left out)"


def judge_depth(values: pd.DataFrame, family: str, iteration: int | None, value: str = "value",
                group: str = "depth", lost: dict[int, str] | None = None, fresh_draws: bool = True) -> Verdict:
    """The verdict for one family from its per-run values (columns ``group``, ``value`` and ``images``).

    Depths with one seed are left out of the test; with fewer than two depths of ≥ 2 seeds left the verdict is
    ONE_SEED (two depths found) or NOT_MEASURED (fewer than two depths at all). ``fresh_draws``: the errors are
    over freshly drawn images (training error), not a fixed held-out set (inference.summarise).
    """
    values = values.dropna(subset=[value])
    counts = values.groupby(group)[value].size().sort_index()
    found = tuple(int(d) for d in counts.index)
    lost_items = tuple(sorted((lost or {}).items()))
    if len(found) < 2:
        return Verdict(family, depths=found, lost=lost_items, missing=NOT_MEASURED)
    tested = tuple(int(d) for d in counts.index[counts >= 2])
    left_out = tuple(d for d in found if d not in tested)
    if len(tested) < 2:
        means = values.groupby(group)[value].mean()
        return Verdict(family, depths=found, iteration=iteration, left_out=left_out, lost=lost_items,
                       gap=float(means.loc[found[-1]] - means.loc[found[0]]), missing=ONE_SEED)
    x = np.log2(np.asarray(tested, dtype=float))
    name = "difference" if len(tested) == 2 else f"linear trend against log2 depth over {len(tested)} depths"
    comparison = _comparison(values, group, value, tested, name, trend_weights(x), baseline_weights(x), fresh_draws)
    pairs = _pairs(values, group, value, tested, fresh_draws)
    # the pairs' intervals are at their Holm levels: a definite direction is a Holm rejection (inference.turns)
    turning = len(tested) >= 3 and {p.direction for p in pairs} >= {1, -1}
    return Verdict(family, comparison, tested, iteration, left_out, lost_items, pairs=pairs, turning=turning)


def _pairs(values: pd.DataFrame, group: str, value: str, keys: Sequence, fresh_draws: bool) -> tuple[Comparison, ...]:
    """Every pair of groups (later − earlier), the variance pooled over all, each interval at its Holm level."""
    found = [replace(_comparison(values, group, value, keys, "difference", w, np.eye(len(keys))[i], fresh_draws),
                     groups=(keys[i], keys[j])) for i, j, w in pair_weights(len(keys))]
    return tuple(c.at(level) for c, level in zip(found, holm_levels([c.p for c in found])))


def _scaled(values: pd.DataFrame, group: str, value: str, keys: Sequence) -> tuple[list, list]:
    """Per group (in the order of ``keys``): the runs' values on the arcsine-root scale and their counts' variance."""
    scaled, count_variances = [], []
    for key in keys:
        rows = values[values[group].eq(key)]
        y, count_variance = stabilised(rows[value].to_numpy(float), rows["images"].to_numpy(float))
        scaled.append(y)
        count_variances.append(count_variance)
    return scaled, count_variances


def _comparison(values: pd.DataFrame, group: str, value: str, keys: Sequence, name: str, weights: np.ndarray,
                baseline: np.ndarray, fresh_draws: bool) -> Comparison:
    """The inference module's test over per-run rows grouped by ``group`` (in the order of ``keys``)."""
    scaled, count_variances = _scaled(values, group, value, keys)
    return group_comparison(name, tuple(keys), scaled, count_variances, weights, baseline, fresh_draws)


def family_verdict(history: pd.DataFrame, runs: pd.DataFrame, family: str) -> Verdict:
    """The degradation verdict of one family: training error against depth at the matched iteration."""
    values, iteration = depth_values(history, runs, family)
    return judge_depth(values, family, iteration, lost=lost_runs(runs, family))


def verdicts(history: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, list[Verdict | InteractionVerdict]]:
    """Per-depth training-error table for both families, one verdict per family present (each at 95 %) and,
    with both families, the interaction verdict first: the depth study's headline.

    The table's ``lost`` column says which runs of each depth did not complete ("1 of 3 diverged"), or "—".
    """
    tables, found, values_of = [], [], {}
    for family in FAMILIES:
        if not runs["family"].eq(family).any():
            continue
        values, iteration = depth_values(history, runs, family)  # read once, for the table and the verdict
        lost = lost_runs(runs, family)
        table = _summary(values, iteration)
        tables.append(table.assign(family=family, iteration=iteration,
                                   lost=[lost.get(int(d), "—") for d in table["depth"]]))
        found.append(judge_depth(values, family, iteration, lost=lost))
        values_of[family] = values
    if len(values_of) == 2:
        found.insert(0, interaction_verdict(values_of["plain"], values_of["residual"], *found))
    columns = ["family", "depth", "iteration", "mean", "std", "min", "max", "n", "diverged", "lost"]
    table = pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)
    return table, found


# ---------------------------------------------------------------------------- the paper's claim, tested

@dataclass(frozen=True)
class InteractionVerdict(Tested):
    """"Does residual learning remove the degradation?": plain trend − residual trend, one contrast."""

    comparison: Comparison | None
    depths: tuple[int, ...]
    plain: Verdict
    residual: Verdict
    family: str = "interaction"  # the key of its MLflow tags: verdict.interaction

    @property
    def label(self) -> str:
        c = self.comparison
        if c is None:
            return NOT_MEASURED
        if c.direction < 0:
            return WORSENS
        if c.direction > 0 and self.plain.label == DEGRADES:
            flat = self.residual.label not in (DEGRADES, TURNS) and abs(self.residual.comparison.effect) < EQUIVALENCE_PP
            return REMOVES if flat else REDUCES
        return INCONCLUSIVE

    @property
    def sentence(self) -> str:
        c = self.comparison
        if c is None:
            return (f"Residual learning and degradation: {NOT_MEASURED} — needs plain and residual nets at two or "
                    f"more common depths with ≥ 2 seeds each (have: {', '.join(map(str, self.depths)) or 'none'}).")
        head = {REMOVES: "Residual learning removes the degradation",
                REDUCES: "Residual learning reduces the degradation, but residual nets still change with depth",
                WORSENS: "Residual nets degrade more than plain nets",
                }.get(self.label, "Residual learning and degradation: inconclusive —")
        why = "" if self.label != INCONCLUSIVE or c.direction == 0 else " (plain nets do not degrade here)"
        changes = "; ".join(f"{NOUN[v.family]} {signed(v.comparison.effect)} pp ({v.label})"
                            for v in (self.plain, self.residual) if v.comparison is not None)
        test = c.sentence_tail("seeds per depth")
        tail = cannot_tell(c, "depth") if self.label == INCONCLUSIVE else design_power(c, "depth")
        return (f"{head}{':' if self.label != INCONCLUSIVE else ''} plain trend − residual trend "
                f"{signed(c.effect)} pp from {self.depths[0]} to {self.depths[-1]} layers{why} ({test}; read from "
                f"both families' mean fitted error at {self.depths[0]} layers, {c.baseline_pct:.2f} %). Each family "
                f"alone: {changes}. {tail}")


def interaction_verdict(plain: pd.DataFrame, residual: pd.DataFrame, plain_verdict: Verdict,
                        residual_verdict: Verdict, fresh_draws: bool = True) -> InteractionVerdict:
    """Plain trend − residual trend against log2 depth over the depths both families tested (≥ 2 seeds each):
    each family's guarded test, combined by Welch (``inference.difference``), read from their mean baseline."""
    depths = tuple(d for d in plain_verdict.depths if d in residual_verdict.depths) if (
        plain_verdict.comparison and residual_verdict.comparison) else ()
    if len(depths) < 2:
        return InteractionVerdict(None, depths, plain_verdict, residual_verdict)
    x = np.log2(np.asarray(depths, dtype=float))
    trends = [_comparison(values, "depth", "value", depths, "trend", trend_weights(x), baseline_weights(x),
                          fresh_draws) for values in (plain, residual)]
    se, df = welch_combination(trends[0].se, trends[0].df, trends[1].se, trends[1].df)
    pooled = " (each family's seed variance pooled over its depths)" if all(
        "seed variance pooled" in t.test for t in trends) else " (Welch's form within a family whose variances differ)"
    name = "differences" if len(depths) == 2 else f"linear trends against log2 depth over {len(depths)} depths"
    comparison = Comparison(f"Welch's t-test of the difference of the two families' {name} on the arcsine-root "
                            f"scale{pooled}", depths, trends[0].seeds + trends[1].seeds,
                            trends[0].shift - trends[1].shift, float(se), float(df),
                            (trends[0].baseline + trends[1].baseline) / 2)
    return InteractionVerdict(comparison, depths, plain_verdict, residual_verdict)
