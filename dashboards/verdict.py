"""Verdicts that know their noise: Welch's t-tests across seeds, for depth trends and for pairs of groups.

One piece of statistics serves every verdict in the report: Welch's t-test of a **linear contrast of group
means** (groups = depths of one family, or shortcut options at one depth; replicates = seeds). Welch's test
does not assume that the groups share a variance (a deep plain net is often noisier across seeds than a
shallow one); its degrees of freedom are Welch–Satterthwaite's.

- **Depth trend** (the degradation claim, §1 / Fig. 6): the contrast is the least-squares slope of the group
  means against log2(depth), scaled to the fitted change from the shallowest to the deepest net, in pp. Every
  depth with ≥ 2 seeds takes part; with exactly two depths it is Welch's two-sample t-test of
  mean(deep) − mean(shallow). Log depth because the studied depths grow roughly geometrically (20 … 110,
  1202): on a linear axis the deepest net alone would set the slope.
- **Pairs** (shortcut options A / B / C): Welch's two-sample t-test for every pair; the intervals are
  Bonferroni-widened (confidence 1 − 0.05 / pairs) so that a verdict and its interval always agree.

A verdict is definite ("degrades" / "improves", or "higher" / "lower" for a pair) only when the interval
excludes 0. A group with one seed has no measured noise: a comparison that needs it is "inconclusive (one
seed)". Simulated with no true difference the definite-verdict rate stays at or below 5 % for 2–5 seeds, and a
5-σ gap is found with 3 seeds in 97–99 % of replicates (tests/test_verdict_simulation.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from dashboards.stats import FAMILIES, comparison_runs, like_for_like, matched_iteration, spread, value_at

ALPHA = 0.05  # two-sided: a definite verdict needs the 95 % interval to exclude 0
METRIC = "train/error"  # the degradation claim is about training error, not overfitting
SHORTCUT_METRIC = "test/error"  # Table 3 compares shortcut options by (validation) error
ONE_SEED = "inconclusive (one seed)"
NO_DIFFERENCE = "no detectable difference"
NOT_MEASURED = "not measured"
_ROUNDING = 1e-9  # pp: below this a noise-free "effect" is floating-point rounding of equal means
_NOUN = {"plain": "plain nets", "residual": "residual nets"}


# ------------------------------------------------------------------------------------------ the statistics

@dataclass(frozen=True)
class Comparison:
    """One Welch test: the effect (pp), its confidence interval and the numbers behind it."""

    test: str  # the test's name, as the sentence prints it
    groups: tuple  # the compared groups; the effect is "last − first" (a trend: deepest − shallowest, fitted)
    seeds: tuple[int, ...]  # seeds per group, in the order of ``groups``
    effect: float
    low: float
    high: float
    confidence: float  # of [low, high]: 0.95, or less per pair when several pairs are tested
    t: float
    df: float
    p: float  # two-sided; Bonferroni-adjusted when several pairs are tested

    @property
    def direction(self) -> int:
        """+1 when the whole interval is above 0, −1 when below, 0 when it contains 0 (no detectable difference)."""
        return 1 if self.low > 0 else -1 if self.high < 0 else 0

    def interval(self) -> str:
        """``95 % CI +2.95 to +4.85 pp``."""
        return f"{_percent(self.confidence)} % CI {signed(self.low)} to {signed(self.high)} pp"

    def evidence(self, unit: str = "group") -> str:
        """What a sentence ends with: interval, test, p, seeds per ``unit`` (depth, option)."""
        seeds = sorted(set(self.seeds))
        per = f"{seeds[0]}" if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
        return f"{self.interval()}; {self.test}, {_p(self.p)}; {per} seeds per {unit}"


def welch_contrast(means: np.ndarray, variances: np.ndarray, counts: np.ndarray,
                   weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Welch's test of Σ wᵢ·meanᵢ: (effect, standard error, Welch–Satterthwaite df), over the last axis.

    Works on whole arrays (leading axes broadcast) so the simulation can test thousands of replicates in one
    call. When every group has zero variance the standard error is 0 and df is infinite.
    """
    means, variances, counts, weights = (np.asarray(a, dtype=float) for a in (means, variances, counts, weights))
    terms = weights ** 2 * variances / counts
    variance = terms.sum(axis=-1)
    effect = (weights * means).sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = variance ** 2 / (terms ** 2 / (counts - 1)).sum(axis=-1)
    df = np.where(variance > 0, df, np.inf)
    return effect, np.sqrt(variance), df


def p_value(effect: np.ndarray, se: np.ndarray, df: np.ndarray) -> np.ndarray:
    """Two-sided p of Welch's t; 0 for a non-zero effect measured without noise, 1 for no effect."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.abs(effect) / se
    p = 2 * scipy_stats.t.sf(t, df)
    return np.where(se > 0, p, np.where(np.abs(effect) >= _ROUNDING, 0.0, 1.0))


def trend_weights(x: Sequence[float]) -> np.ndarray:
    """Weights that turn group means into the least-squares line's change from min(x) to max(x).

    Σ wᵢ·(a + b·xᵢ) = b·(max x − min x), each group counting once; with two groups the weights are −1, +1.
    """
    x = np.asarray(x, dtype=float)
    centred = x - x.mean()
    return centred * (x.max() - x.min()) / (centred ** 2).sum()


def summary_contrast(test: str, groups: tuple, means: Sequence[float], variances: Sequence[float],
                     counts: Sequence[int], weights: Sequence[float], confidence: float = 1 - ALPHA,
                     tests: int = 1) -> Comparison:
    """A Comparison from per-group means, variances and counts (p Bonferroni-adjusted over ``tests``)."""
    effect, se, df = (float(v) for v in welch_contrast(np.asarray(means), np.asarray(variances),
                                                       np.asarray(counts), np.asarray(weights)))
    if se == 0 and abs(effect) < _ROUNDING:  # identical values everywhere: rounding, not an effect
        effect = 0.0
    half = float(scipy_stats.t.ppf(0.5 + confidence / 2, df)) * se if se > 0 else 0.0
    p = min(1.0, float(p_value(effect, se, df)) * tests)
    t = effect / se if se > 0 else math.copysign(math.inf, effect) if effect else 0.0
    return Comparison(test, groups, tuple(int(c) for c in counts), effect, effect - half, effect + half,
                      confidence, t, df, p)


def _contrast(samples: Sequence[np.ndarray], weights: np.ndarray, test: str, groups: tuple,
              confidence: float = 1 - ALPHA, tests: int = 1) -> Comparison:
    """A Comparison from per-group samples (seeds) and contrast weights."""
    return summary_contrast(test, groups, [np.mean(s) for s in samples], [np.var(s, ddof=1) for s in samples],
                            [len(s) for s in samples], weights, confidence, tests)


def compare_groups(a: Sequence[float], b: Sequence[float], groups: tuple = ("a", "b"), *,
                   tests: int = 1) -> Comparison:
    """Welch's two-sample t-test of mean(b) − mean(a), each with ≥ 2 values.

    ``tests`` > 1 widens the interval to confidence 1 − 0.05 / tests and multiplies p by it (Bonferroni).
    """
    samples = [np.asarray(a, dtype=float), np.asarray(b, dtype=float)]
    _need_two(samples, groups)
    name = "Welch's t-test" + (f", Bonferroni-corrected for {tests} comparisons" if tests > 1 else "")
    return _contrast(samples, np.array([-1.0, 1.0]), name, tuple(groups), 1 - ALPHA / tests, tests)


def trend(values: pd.DataFrame, group: str, value: str,
          scale: Callable[[np.ndarray], np.ndarray] = np.log2, scale_name: str = "log2") -> Comparison:
    """Welch's test of the linear trend of ``value`` against ``scale(group)``, every group taking part.

    The effect is the fitted change from the smallest to the largest group (pp); with two groups it is
    Welch's two-sample t-test of their means. Each group needs ≥ 2 values (seeds).
    """
    values = values.dropna(subset=[group, value])
    keys = sorted(values[group].unique())
    samples = [values.loc[values[group].eq(k), value].to_numpy(dtype=float) for k in keys]
    _need_two(samples, tuple(keys))
    if len(keys) < 2:
        raise ValueError(f"a trend needs two values of {group!r}; got {keys}")
    weights = trend_weights(scale(np.asarray(keys, dtype=float)))
    name = ("Welch's t-test" if len(keys) == 2
            else f"Welch's t-test of the linear trend against {scale_name} {group} over {len(keys)} {group}s")
    return _contrast(samples, weights, name, tuple(keys))


def pairwise(values: pd.DataFrame, group: str, value: str) -> list[Comparison]:
    """Welch's t-test for every pair of groups that both have ≥ 2 values, Bonferroni-corrected over them."""
    values = values.dropna(subset=[group, value])
    keys = [k for k in sorted(values[group].unique()) if values[group].eq(k).sum() >= 2]
    pairs = list(combinations(keys, 2))
    sample = {k: values.loc[values[group].eq(k), value].to_numpy(dtype=float) for k in keys}
    return [compare_groups(sample[a], sample[b], (a, b), tests=len(pairs)) for a, b in pairs]


def compare_with_reference(values: Sequence[float], mean: float, std: float | None = None,
                           n: int | None = None) -> Comparison | None:
    """mean(values) − a published mean, with a 95 % interval; None with fewer than 2 values.

    With the reference's std and run count it is Welch's two-sample t-test from summary statistics; with a bare
    number (most of Table 6) the reference is taken as exact and the interval is our seeds' one-sample t interval.
    """
    ours = np.asarray(values, dtype=float)
    if len(ours) < 2:
        return None
    if std is not None and n is not None and n >= 2:
        means, variances, counts = [mean, ours.mean()], [std ** 2, ours.var(ddof=1)], [n, len(ours)]
        weights, groups, test = [-1.0, 1.0], ("paper", "ours"), f"Welch's t-test against the paper's {n} runs"
    else:
        means, variances, counts = [ours.mean() - mean], [ours.var(ddof=1)], [len(ours)]
        weights, groups = [1.0], ("ours",)
        test = "one-sample t interval of our seeds (the paper gives one number)"
    return summary_contrast(test, groups, means, variances, counts, weights)


def _need_two(samples: Sequence[np.ndarray], groups: tuple) -> None:
    short = [g for g, s in zip(groups, samples) if len(s) < 2]
    if short:
        raise ValueError(f"Welch's t-test needs ≥ 2 values per group; one or none for {short}")


# ------------------------------------------------------------------------------------ the depth verdict

@dataclass(frozen=True)
class Verdict:
    """One family's answer to "does training error change with depth?" and the test behind it."""

    family: str
    label: str  # "degrades", "improves", NO_DIFFERENCE, ONE_SEED or NOT_MEASURED
    sentence: str
    comparison: Comparison | None = None
    depths: tuple[int, ...] = ()  # the depths tested (or, without a test, the depths found)
    iteration: int | None = None  # the matched iteration the errors are read at
    left_out: tuple[int, ...] = ()  # depths with a single seed, not part of the test

    @property
    def css(self) -> str:
        """A class name for the label: ``degrades``, ``improves``, ``no-difference``, ``one-seed``, ``not-measured``."""
        return css_class(self.label)


def values_at_matched_iteration(history: pd.DataFrame, members: pd.DataFrame, metric: str,
                                keys: Sequence[str]) -> tuple[pd.DataFrame, int | None]:
    """Each run's ``metric`` at the last iteration all ``members`` reached: columns run_id, *keys, value."""
    iteration = matched_iteration(history, members["run_id"], metric)
    if iteration is None:
        return pd.DataFrame(columns=["run_id", *keys, "value"]), None
    values = value_at(history, members["run_id"], metric, iteration).rename("value").reset_index()
    return values.merge(members[["run_id", *keys]], on="run_id"), iteration


def depth_values(history: pd.DataFrame, runs: pd.DataFrame, family: str) -> tuple[pd.DataFrame, int | None]:
    """The family's training error per run at its matched iteration: run_id, depth, value."""
    members = comparison_runs(runs)
    return values_at_matched_iteration(history, members[members["family"].eq(family)], METRIC, ["depth"])


def depth_table(history: pd.DataFrame, runs: pd.DataFrame, family: str) -> tuple[pd.DataFrame, int | None]:
    """Training error per depth at the family's matched iteration: depth, mean, min, max, std, n."""
    values, iteration = depth_values(history, runs, family)
    if iteration is None:
        return pd.DataFrame(columns=["depth", "mean", "min", "max", "std", "n"]), None
    return spread(values, ["depth"], "value").sort_values("depth").reset_index(drop=True), iteration


def judge_depth(values: pd.DataFrame, family: str, iteration: int | None, value: str = "value",
                group: str = "depth") -> Verdict:
    """The verdict for one family from its per-run values (columns ``group`` and ``value``).

    Depths with one seed are left out of the test; with fewer than two depths of ≥ 2 seeds left the verdict is
    ONE_SEED (two depths found) or NOT_MEASURED (fewer than two depths at all).
    """
    noun = _NOUN.get(family, f"{family} nets")
    counts = values.dropna(subset=[value]).groupby(group)[value].size().sort_index()
    found = tuple(int(d) for d in counts.index)
    at = f"at iteration {iteration:,}" if iteration is not None else ""
    if len(found) < 2:
        return Verdict(family, NOT_MEASURED, f"{noun}: {NOT_MEASURED} — needs two depths with completed runs "
                                             f"(have: {', '.join(map(str, found)) or 'none'}).", depths=found)
    tested = tuple(int(d) for d in counts.index[counts >= 2])
    left_out = tuple(d for d in found if d not in tested)
    if len(tested) < 2:
        means = values.groupby(group)[value].mean()
        gap = float(means.loc[found[-1]] - means.loc[found[0]])
        sentence = (f"{noun}: {ONE_SEED} — training error {signed(gap)} pp from {found[0]} to {found[-1]} layers "
                    f"{at}, but with one seed per depth the seed noise is unknown, so no test can tell this gap "
                    f"from chance. Run ≥ 2 seeds per depth (--seeds 2) for a verdict.")
        return Verdict(family, ONE_SEED, sentence, depths=found, iteration=iteration, left_out=left_out)
    comparison = trend(values[values[group].isin(tested)], group, value)
    label = {1: "degrades", -1: "improves", 0: NO_DIFFERENCE}[comparison.direction]
    fitted = "fitted " if len(tested) > 2 else ""
    change = f"{fitted}training error {signed(comparison.effect)} pp from {tested[0]} to {tested[-1]} layers"
    basis = f"{comparison.evidence('depth')}; {at}"
    if left_out:
        basis += f"; left out with one seed: {', '.join(map(str, left_out))} layers"
    if label == NO_DIFFERENCE:
        sentence = f"{noun}: {NO_DIFFERENCE} — {change}, an interval that includes 0 ({basis})."
    else:
        sentence = f"{noun} {'degrade' if label == 'degrades' else 'improve'}: {change} ({basis})."
    return Verdict(family, label, sentence, comparison, tested, iteration, left_out)


def family_verdict(history: pd.DataFrame, runs: pd.DataFrame, family: str) -> Verdict:
    """The degradation verdict of one family: training error against depth at the matched iteration."""
    values, iteration = depth_values(history, runs, family)
    return judge_depth(values, family, iteration)


def verdicts(history: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, list[Verdict]]:
    """Per-depth training-error table for both families and one verdict per family present."""
    tables, found = [], []
    for family in FAMILIES:
        if not runs["family"].eq(family).any():
            continue
        table, iteration = depth_table(history, runs, family)
        tables.append(table.assign(family=family, iteration=iteration))
        found.append(family_verdict(history, runs, family))
    columns = ["family", "depth", "iteration", "mean", "std", "min", "max", "n"]
    table = pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)
    return table, found


# --------------------------------------------------------------------------------- the shortcut verdict

@dataclass(frozen=True)
class PairVerdict:
    """One pair of groups (e.g. shortcut options B vs A at one depth) and what the test says."""

    label: str  # "higher", "lower", NO_DIFFERENCE or ONE_SEED: the second group against the first
    sentence: str
    comparison: Comparison | None = None

    @property
    def css(self) -> str:
        """A class name for the label: ``higher``, ``lower``, ``no-difference`` or ``one-seed``."""
        return css_class(self.label)


def judge_pairs(values: pd.DataFrame, group: str, value: str = "value", subject: str = "",
                what: str = "error", iteration: int | None = None) -> list[PairVerdict]:
    """A verdict for every pair of groups (second against first), with the same test as the depth verdict.

    Pairs where a group has one seed are ONE_SEED; the others are Welch's t-tests, Bonferroni-corrected over
    the testable pairs.
    """
    values = values.dropna(subset=[group, value])
    keys = sorted(values[group].unique())
    counts = values.groupby(group)[value].count()
    tested = {c.groups: c for c in pairwise(values, group, value)}
    at = f"; at iteration {iteration:,}" if iteration is not None else ""
    out = []
    for a, b in combinations(keys, 2):
        head = f"{subject}{group} {b} vs {a}"
        comparison = tested.get((a, b))
        if comparison is None:
            single = [k for k in (a, b) if counts.get(k, 0) < 2]
            gap = float(values.loc[values[group].eq(b), value].mean() - values.loc[values[group].eq(a), value].mean())
            out.append(PairVerdict(ONE_SEED, f"{head}: {ONE_SEED} — {what} {signed(gap)} pp, but {group} "
                                             f"{', '.join(map(str, single))} has one seed, so its noise is unknown."))
            continue
        label = {1: "higher", -1: "lower", 0: NO_DIFFERENCE}[comparison.direction]
        result = f"{label} {what}" if label != NO_DIFFERENCE else NO_DIFFERENCE
        out.append(PairVerdict(label, f"{head}: {result} — {signed(comparison.effect)} pp "
                                      f"({comparison.evidence(group)}{at}).", comparison))
    return out


def shortcut_verdicts(history: pd.DataFrame, runs: pd.DataFrame) -> dict[int, list[PairVerdict]]:
    """Per depth with ≥ 2 shortcut options: pairwise verdicts on test error at the matched iteration."""
    table = like_for_like(runs)
    residual = table[table["family"].eq("residual") & table["shortcut"].notna() & table["depth"].notna()]
    out = {}
    for depth, members in residual.groupby("depth"):
        if members["shortcut"].nunique() < 2:
            continue
        values, iteration = values_at_matched_iteration(history, members, SHORTCUT_METRIC, ["shortcut"])
        if iteration is not None:
            out[int(depth)] = judge_pairs(values, "shortcut", subject=f"ResNet-{int(depth)}, ", what="test error",
                                          iteration=iteration)
    return out


# ------------------------------------------------------------------------------------------- formatting

def css_class(label: str) -> str:
    """A label as an HTML class name (no spaces or parentheses)."""
    return {NO_DIFFERENCE: "no-difference", ONE_SEED: "one-seed", NOT_MEASURED: "not-measured"}.get(label, label)


def signed(value: float) -> str:
    """+1.23 / −1.23 with a real minus sign."""
    return f"+{value:.2f}" if value >= 0 else f"\u2212{abs(value):.2f}"


def _p(p: float) -> str:
    """``p = 0.04`` / ``p = 0.003`` / ``p < 0.001``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def _percent(confidence: float) -> str:
    return f"{100 * confidence:.1f}".rstrip("0").rstrip(".")
