"""The statistics behind every verdict: error counts on the arcsine-root scale, one contrast test, Holm, power.

Why this shape (docs/tracking.md, "How the report judges", has the numbers):

- **Counts, on the arcsine-root scale.** An error rate is a count k of wrong images out of ``images`` n (logged as
  ``<split>/images``). Each run's value is Anscombe's arcsin √((k + ⅜)/(n + ¾)), the variance-stabilising scale
  of counts: a count's own noise is 1/(4n + 2) at every rate, so a net at 0 % and one at 47 % carry alike little
  count noise (on the logit scale a rate near 0 % carries the most, and 0 vs 2 wrong images looked like a
  large seed spread). Intervals are turned back into percentages through sin², so they stay inside 0–100 %.
- **Where the count's noise is a floor.** Training error is over freshly drawn batches: its binomial variance is
  a lower bound on the spread, so it floors every group's variance. A fixed held-out set is scored by every seed
  alike, and the seed-to-seed variance of its count is *at most* binomial (Σ pᵢ(1 − pᵢ) ≤ n p̄(1 − p̄)): no
  floor, except for a tie (every seed the same count, sample variance 0), which gets the binomial variance, the
  most a fixed set allows. Paired differences (both runs score the same images) get no floor but the tie's.
- **One test for every verdict**: a linear contrast of group means (depths of a family, options at a depth,
  both families' trends). The seed variance is **pooled** across the groups (df = runs − groups; exact with
  unequal seeds when variances agree), which is what makes 2–3 seeds per group usable. The pooling is guarded by
  **Bartlett's test** of equal variances over all k groups at ``GUARD_LEVEL`` (it holds that level at 2 seeds
  per group and any k); when it rejects, or the groups have unequal seeds, the test uses Welch's standard error
  (each variance at least the pooled one) with Satterthwaite's df (``contrast`` says why each choice).
- **Holm** over the tests that answer one question (the shortcut pairs of a page, the pairs of depths behind a
  "rises then falls"); each interval is drawn at its Holm step's level so a verdict and its interval agree.

Every function works on whole arrays (leading axes are replicates) so tests/test_verdict_simulation.py runs the
same code on thousands of simulated experiments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats

ALPHA = 0.05  # two-sided: a definite verdict needs the 95 % interval (or its Holm-step level) to exclude 0
GUARD_LEVEL = 0.25  # Bartlett's test of equal variances: pool unless it rejects at this level
POWER = 0.8  # the power the report states its design's detectable gap at
MAX_SEEDS = 50  # "about M seeds would": not searched beyond this
SCALE = "arcsine-root scale"  # how sentences name the scale tests run on
RIGHT_ANGLE = math.pi / 2


# ----------------------------------------------------------------------------------------- the scale

def stabilised(error_pct: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Anscombe's arcsine-root value, the count's own variance) of error rates in % over ``images`` images."""
    error_pct, images = np.asarray(error_pct, dtype=float), np.asarray(images, dtype=float)
    wrong = np.clip(error_pct, 0.0, 100.0) / 100.0 * images
    value = np.arcsin(np.sqrt((wrong + 0.375) / (images + 0.75)))
    return value, 1.0 / (4.0 * images + 2.0)


def rate_pct(value: np.ndarray) -> np.ndarray:
    """A value on the arcsine-root scale back to a rate in % (always inside 0–100)."""
    return 100.0 * np.sin(np.clip(np.asarray(value, dtype=float), 0.0, RIGHT_ANGLE)) ** 2


# ------------------------------------------------------------------------------------- the contrast

@dataclass(frozen=True)
class Design:
    """Per-group summaries on the arcsine-root scale (last axis = groups; leading axes = replicates)."""

    means: np.ndarray
    variances: np.ndarray  # sample variance, floored as the module docstring says
    counts: np.ndarray  # seeds per group


def summarise(values: Sequence[np.ndarray], count_variances: Sequence[np.ndarray], fresh_draws: bool) -> Design:
    """Group summaries from per-run values and their counts' variances, one array (…, seeds) per group.

    ``fresh_draws``: the images are drawn anew per evaluation (training error), so the count's variance floors
    the spread; otherwise (a fixed held-out set) it stands in only for a tie.
    """
    means = np.stack([np.mean(v, axis=-1) for v in values], axis=-1)
    raw = np.stack([np.var(v, axis=-1, ddof=1) if v.shape[-1] > 1 else np.full(v.shape[:-1], np.nan)
                    for v in values], axis=-1)
    floor = np.stack([np.mean(f, axis=-1) * np.ones(v.shape[:-1]) for v, f in zip(values, count_variances)], -1)
    counts = np.array([v.shape[-1] for v in values], dtype=float)
    variances = np.fmax(raw, floor) if fresh_draws else np.where(raw > 0, raw, floor)
    return Design(means, variances, counts)


@dataclass(frozen=True)
class ContrastTest:
    """Σ wᵢ·meanᵢ, its standard error and df, whether the variance was pooled and Bartlett's p."""

    effect: np.ndarray
    se: np.ndarray
    df: np.ndarray
    pooled: np.ndarray
    guard_p: np.ndarray

    def p(self) -> np.ndarray:
        """Two-sided p."""
        return 2 * scipy_stats.t.sf(np.abs(self.effect) / self.se, self.df)


def contrast(design: Design, weights: np.ndarray) -> ContrastTest:
    """The guarded pooled-variance test of Σ wᵢ·meanᵢ. Pooled (equal seeds, Bartlett does not reject): df halfway
    between the pooled df and Welch–Satterthwaite's for ≥ 3 groups, Welch–Satterthwaite's for 2. Otherwise Welch's
    form, each variance at least the pooled one (a quiet-looking small group cannot make the test overconfident),
    with Satterthwaite's df. Why, with the false-verdict rates of the alternatives: docs/tracking.md."""
    w, n, v = np.asarray(weights, dtype=float), design.counts, design.variances
    effect = (w * design.means).sum(axis=-1)
    pooled_var = ((n - 1) * v).sum(axis=-1) / (n - 1).sum()
    pooled_se = np.sqrt(pooled_var * (w ** 2 / n).sum())
    welch_se, welch_df = _satterthwaite(w, n, v)
    robust_se, robust_df = _satterthwaite(w, n, np.fmax(v, pooled_var[..., None]))
    guard_p = bartlett_p(design)
    pooled = (guard_p >= GUARD_LEVEL) & (np.unique(n).size == 1)
    pooled_df = welch_df if n.size == 2 else ((n - 1).sum() + welch_df) / 2
    return ContrastTest(effect, np.where(pooled, pooled_se, robust_se), np.where(pooled, pooled_df, robust_df),
                        pooled, guard_p)


def difference(first: ContrastTest, second: ContrastTest) -> ContrastTest:
    """first − second of two independent contrasts (two families' trends), each keeping its own guarded variance."""
    se, df = welch_combination(first.se, first.df, second.se, second.df)
    return ContrastTest(first.effect - second.effect, se, df, first.pooled & second.pooled,
                        np.fmin(first.guard_p, second.guard_p))


def welch_combination(se_a, df_a, se_b, df_b):
    """The standard error and Satterthwaite df of the difference of two independent estimates."""
    variance = se_a ** 2 + se_b ** 2
    return np.sqrt(variance), variance ** 2 / (se_a ** 4 / df_a + se_b ** 4 / df_b)


def _satterthwaite(w: np.ndarray, n: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Welch's standard error of Σ wᵢ·meanᵢ with group variances ``v``, and Satterthwaite's df (≥ 1)."""
    terms = w ** 2 * v / n
    with np.errstate(divide="ignore", invalid="ignore"):
        df = terms.sum(axis=-1) ** 2 / (terms ** 2 / (n - 1)).sum(axis=-1)
    return np.sqrt(terms.sum(axis=-1)), np.fmax(np.nan_to_num(df, nan=1.0), 1.0)


def bartlett_p(design: Design) -> np.ndarray:
    """Bartlett's test (with Box's correction) that the k group variances are equal: its p."""
    df, v = design.counts - 1, design.variances
    total, k = df.sum(), design.counts.size
    pooled = (df * v).sum(axis=-1) / total
    correction = 1 + ((1 / df).sum() - 1 / total) / (3 * (k - 1))
    statistic = (total * np.log(pooled) - (df * np.log(v)).sum(axis=-1)) / correction
    return scipy_stats.chi2.sf(np.fmax(statistic, 0.0), k - 1)


def trend_weights(x: Sequence[float]) -> np.ndarray:
    """Weights that turn group means into the least-squares line's change from min(x) to max(x).

    Σ wᵢ·(a + b·xᵢ) = b·(max x − min x), each group counting once; with two groups the weights are −1, +1.
    """
    x = np.asarray(x, dtype=float)
    centred = x - x.mean()
    return centred * (x.max() - x.min()) / (centred ** 2).sum()


def baseline_weights(x: Sequence[float]) -> np.ndarray:
    """Weights that turn group means into the least-squares line's value at min(x): where a change starts."""
    x = np.asarray(x, dtype=float)
    centred = x - x.mean()
    return 1 / len(x) - centred * (x.mean() - x.min()) / (centred ** 2).sum()


def pair_weights(groups: int) -> list[tuple[int, int, np.ndarray]]:
    """(i, j, weights of group j − group i) for every pair i < j of ``groups`` groups."""
    out = []
    for i, j in combinations(range(groups), 2):
        w = np.zeros(groups)
        w[i], w[j] = -1.0, 1.0
        out.append((i, j, w))
    return out


def holm_rejects(p_values: np.ndarray, alpha: float = ALPHA) -> np.ndarray:
    """Which of the tests on the last axis Holm's step-down procedure rejects at family level ``alpha``."""
    p = np.asarray(p_values, dtype=float)
    m = p.shape[-1]
    order = np.argsort(p, axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1)
    steps = np.logical_and.accumulate(ranked < alpha / (m - np.arange(m)), axis=-1)
    rejected = np.empty_like(steps)
    np.put_along_axis(rejected, order, steps, axis=-1)
    return rejected


def turns(design: Design, alpha: float = ALPHA) -> np.ndarray:
    """Whether the group means (in order of depth) both rise and fall: among every pair of groups, Holm-corrected
    together, at least one significant rise and one significant fall. Under a monotone truth a call of "turns"
    needs a false rejection, so it is wrong at most ``alpha`` of the time."""
    tests = [contrast(design, w) for _, _, w in pair_weights(design.counts.size)]
    effects, p = np.stack([t.effect for t in tests], -1), np.stack([t.p() for t in tests], -1)
    rejected = holm_rejects(p, alpha)
    return (rejected & (effects > 0)).any(axis=-1) & (rejected & (effects < 0)).any(axis=-1)


def depth_call(design: Design, x: Sequence[float], margin_pp: float) -> np.ndarray:
    """What a family's depth verdict decides, per replicate: +1 rises, −1 falls, 2 rises and falls, 0 neither.

    With ≥ 3 depths a curve that ``turns`` is called so first; otherwise the trend against ``x`` (log2 depth)
    decides when its 95 % interval excludes 0 — unless the whole interval lies inside ±``margin_pp`` of the
    shallowest net's fitted rate (a change smaller than the margin is "no difference larger than" it).
    (verdict.judge_depth makes the same decision for one experiment, in words.)
    """
    test = contrast(design, trend_weights(x))
    base = (baseline_weights(x) * design.means).sum(axis=-1)
    half = scipy_stats.t.ppf(1 - ALPHA / 2, test.df) * test.se
    low = rate_pct(base + test.effect - half) - rate_pct(base)
    high = rate_pct(base + test.effect + half) - rate_pct(base)
    inside = (-margin_pp <= low) & (high <= margin_pp)
    call = np.where(inside, 0, np.where(test.effect - half > 0, 1, np.where(test.effect + half < 0, -1, 0)))
    return np.where(turns(design), 2, call) if design.counts.size >= 3 else call


# -------------------------------------------------------------------------------- one comparison

@dataclass(frozen=True)
class Comparison:
    """One test on the arcsine-root scale, reported in percentage points from a baseline rate.

    ``effect`` / ``low`` / ``high`` are pp: the baseline's rate moved by the test's shift (and by its interval's
    ends), minus the baseline's rate — so a rate plus any of them stays inside 0–100 %.
    """

    test: str  # the test's name, as a sentence prints it
    groups: tuple  # the compared groups; the effect is "last − first" (a trend: fitted deepest − shallowest)
    seeds: tuple[int, ...]
    shift: float  # the contrast on the arcsine-root scale
    se: float
    df: float
    baseline: float  # the value (arcsine-root scale) the change starts from
    confidence: float = 1 - ALPHA

    @property
    def p(self) -> float:
        return float(2 * scipy_stats.t.sf(abs(self.shift) / self.se, self.df))

    @property
    def baseline_pct(self) -> float:
        return float(rate_pct(self.baseline))

    def _pp(self, shift: float) -> float:
        return float(rate_pct(self.baseline + shift) - rate_pct(self.baseline))

    @property
    def half_width(self) -> float:
        return float(scipy_stats.t.ppf(0.5 + self.confidence / 2, self.df) * self.se)

    @property
    def effect(self) -> float:
        return self._pp(self.shift)

    @property
    def low(self) -> float:
        return self._pp(self.shift - self.half_width)

    @property
    def high(self) -> float:
        return self._pp(self.shift + self.half_width)

    @property
    def direction(self) -> int:
        """+1 when the interval lies above 0, −1 below, 0 when it contains 0."""
        return 1 if self.shift - self.half_width > 0 else -1 if self.shift + self.half_width < 0 else 0

    def within(self, margin_pp: float) -> bool:
        """Whether the whole interval lies inside ±``margin_pp``."""
        return -margin_pp <= self.low and self.high <= margin_pp

    def at(self, confidence: float) -> Comparison:
        """The same test with its interval at another confidence (a Holm step's)."""
        return replace(self, confidence=confidence)

    def possible_sign(self, wanted: float) -> int:
        """The sign of ``wanted`` if the baseline leaves room for a change that way, else the other sign."""
        sign = 1 if wanted >= 0 else -1
        room = RIGHT_ANGLE - self.baseline if sign > 0 else self.baseline
        return sign if room > 1e-9 else -sign

    def detectable(self, seeds: int | None = None, power: float = POWER, sign: int | None = None) -> float | None:
        """The smallest change (pp, with ``sign``; default: the effect's, where the baseline allows it) found with
        ``power`` at this interval's level, with ``seeds`` per group (default: this design's) at the observed
        spread. None: no change that way within 0–100 % is found that often."""
        sign = self.possible_sign(self.shift) if sign is None else sign
        scale = math.sqrt(min(self.seeds) / seeds) if seeds else 1.0
        df = max(self.df * (seeds - 1) / (min(self.seeds) - 1), 1.0) if seeds else self.df
        alpha = 1 - self.confidence
        gap = (scipy_stats.t.ppf(1 - alpha / 2, df) + scipy_stats.t.ppf(power, df)) * self.se * scale
        end = self.baseline + sign * gap
        return self._pp(sign * gap) if 0.0 <= end <= RIGHT_ANGLE else None

    def seeds_needed(self, gap_pp: float) -> int | None:
        """About how many seeds per group would find a change of ``gap_pp`` (its sign) with POWER; None: over
        MAX_SEEDS."""
        sign = 1 if gap_pp >= 0 else -1
        for seeds in range(max(self.seeds) + 1, MAX_SEEDS + 1):
            found = self.detectable(seeds, sign=sign)
            if found is not None and abs(found) <= abs(gap_pp):
                return seeds
        return None

    def interval(self) -> str:
        """``95 % CI +2.95 to +4.85 pp``."""
        return f"{_percent(self.confidence)} % CI {signed(self.low)} to {signed(self.high)} pp"

    def sentence_tail(self, unit: str = "seeds") -> str:
        """What a sentence ends with: interval, test, p, seeds."""
        counts = sorted(set(self.seeds))
        per = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"
        return f"{self.interval()}; {self.test}, {format_p(self.p)}; {per} {unit}"


def group_comparison(test: str, groups: tuple, values: Sequence[np.ndarray], count_variances: Sequence[np.ndarray],
                     weights: np.ndarray, baseline: np.ndarray, fresh_draws: bool) -> Comparison:
    """A Comparison of per-group values (one array of seeds per group) by contrast ``weights``."""
    design = summarise(values, count_variances, fresh_draws)
    result = contrast(design, weights)
    guard = f"Bartlett's test of equal variances p = {float(result.guard_p):.2f}"
    if bool(result.pooled):
        how = f"t-test of the {test} on the {SCALE}, seed variance pooled ({guard})"
    elif np.unique(design.counts).size > 1:
        how = (f"Welch's t-test of the {test} on the {SCALE} with Satterthwaite's df (unequal seeds; each group's "
               f"variance at least the pooled one)")
    else:
        how = (f"Welch's t-test of the {test} on the {SCALE} with Satterthwaite's df (the groups' variances "
               f"differ: {guard} < {GUARD_LEVEL:g}; each at least the pooled one)")
    return Comparison(how, tuple(groups), tuple(int(c) for c in design.counts), float(result.effect),
                      float(result.se), float(result.df), float((np.asarray(baseline) * design.means).sum()))


def paired_difference(baseline: Sequence[float], other: Sequence[float], images: Sequence[int]) -> Comparison:
    """other − baseline error (pp) over runs paired by seed: a paired t-interval on the arcsine-root scale.

    Both runs of a pair score the same images, so no count noise is added; a tie (every difference equal) gets
    the count's variance of both. df = pairs − 1. Needs ≥ 2 pairs.
    """
    a, fa = stabilised(baseline, images)
    b, fb = stabilised(other, images)
    if len(a) < 2 or len(a) != len(b):
        raise ValueError(f"a paired interval needs ≥ 2 pairs of equal length; got {len(a)} and {len(b)}")
    d = b - a
    variance = float(np.var(d, ddof=1)) or float(np.mean(fa + fb))
    return Comparison(f"paired t-test on the {SCALE}", ("baseline", "other"), (len(d), len(d)),
                      float(d.mean()), math.sqrt(variance / len(d)), len(d) - 1.0, float(a.mean()))


def reference_difference(ours: Sequence[float], images: Sequence[int], reference: float, reference_sd: float,
                         reference_runs: int) -> Comparison:
    """mean(ours) − a published number (pp): Welch's t on the arcsine-root scale with the number's own noise.

    A published number is a draw with seed noise of its own: ``reference_sd`` is its std in pp (a single run's,
    or a mean's), estimated from ``reference_runs`` runs (its df); moved to the scale by the delta method. Our
    runs score the paper's test set: no count noise but a tie's.
    """
    y, count_variance = stabilised(ours, images)
    if len(y) < 2:
        raise ValueError("a difference from the paper needs ≥ 2 of our seeds")
    ref_value = float(np.arcsin(np.sqrt(reference / 100)))
    rate = reference / 100
    ref_var = (reference_sd / 100) ** 2 / (4 * rate * (1 - rate))
    ours_var = (float(np.var(y, ddof=1)) or float(np.mean(count_variance))) / len(y)
    df = (ours_var + ref_var) ** 2 / (ours_var ** 2 / (len(y) - 1) + ref_var ** 2 / (reference_runs - 1))
    return Comparison(f"Welch's t-test on the {SCALE} with the paper number's own noise (std {reference_sd:.2f} pp)",
                      ("paper", "ours"), (1, len(y)), float(y.mean() - ref_value),
                      math.sqrt(ours_var + ref_var), float(df), ref_value)


# ------------------------------------------------------------------------------------- many tests

def holm_levels(p_values: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """The confidence of each test's interval under Holm's step-down procedure: test j in order of p at level
    α / (m − j + 1), every test after the first not rejected at that step's level (an interval excludes 0 exactly
    when Holm rejects)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    levels, m, stopped = [0.0] * len(p_values), len(p_values), None
    for step, index in enumerate(order):
        level = alpha / (m - (stopped if stopped is not None else step))
        if stopped is None and p_values[index] >= level:
            stopped = step
        levels[index] = 1 - level
    return levels


# ------------------------------------------------------------------------------------- formatting

def signed(value: float) -> str:
    """+1.23 / −1.23 with a real minus sign."""
    return f"+{value:.2f}" if value >= 0 else f"\u2212{abs(value):.2f}"


def format_p(p: float) -> str:
    """``p = 0.04`` / ``p = 0.003`` / ``p < 0.001``."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}" if p < 0.01 else f"p = {p:.2f}"


def _percent(confidence: float) -> str:
    return f"{100 * confidence:.1f}".rstrip("0").rstrip(".")
