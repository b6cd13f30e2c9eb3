"""The statistics behind every verdict: error counts on the logit scale, one contrast test, Holm, power.

Why this shape (docs/tracking.md, "How the report judges", has the numbers):

- **Counts, on the logit scale.** An error rate is a count of wrong images out of ``images`` (the evaluation's
  size, logged as ``<split>/images``). Each run's value is the empirical logit log((k + ½) / (n − k + ½)), so
  intervals turned back into percentages stay inside 0–100 % and a rate near 0 % is not squeezed against its
  bound. Each value also carries the binomial variance of its count, 1 / (k + ½) + 1 / (n − k + ½): a seed's
  spread cannot be smaller than that, so it **floors** every group's variance — two equal values (a tie at the
  granularity of one image) are not zero noise.
- **One test for every verdict**: a linear contrast of group means (depths of a family, options at a depth).
  The seed variance is **pooled** across the groups (df = runs − groups), which is what makes 2–3 seeds per
  group usable; the pooling is guarded: when the groups' variances differ by more than an F-test at level
  ``GUARD_LEVEL`` allows, the test falls back to Welch's standard error with Hsu's df = min(seeds) − 1, which
  keeps its level whatever the variances (and a design with unequal seeds always uses it). At 2–3 seeds the
  check cannot see a 5× variance ratio, and the pooled df alone then gives up to 6 % false verdicts; so a pooled
  test takes the df halfway between the pooled df and Welch–Satterthwaite's, which the simulation shows holds
  the 5 % level up to that ratio at a small cost in power.
- **Paired** differences (the same seeds under two recipes) and a difference from **one published run** (its
  own per-run spread) use the same scale and floor.
- **Holm** over every verdict on a page; each interval is drawn at its Holm step's level so a verdict and its
  interval always agree.

Every function works on whole arrays (leading axes are replicates) so tests/test_verdict_simulation.py runs the
same code on thousands of simulated experiments.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np
from scipy import stats as scipy_stats

ALPHA = 0.05  # two-sided: a definite verdict needs the 95 % interval (or its Holm-step level) to exclude 0
GUARD_LEVEL = 0.25  # the variance-ratio check: pool unless an F-test at this level says the variances differ
POWER = 0.8  # the power the report states its design's detectable gap at
MAX_SEEDS = 50  # "about M seeds would": not searched beyond this
CONTINUITY = 0.5  # added to wrong and right counts: a logit for 0 % and 100 %


# ----------------------------------------------------------------------------------------- the scale

def logit_counts(error_pct: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(empirical logit, its binomial variance) of error rates in % over ``images`` evaluated images."""
    error_pct, images = np.asarray(error_pct, dtype=float), np.asarray(images, dtype=float)
    wrong = np.clip(error_pct, 0.0, 100.0) / 100.0 * images
    right = images - wrong
    value = np.log((wrong + CONTINUITY) / (right + CONTINUITY))
    return value, 1.0 / (wrong + CONTINUITY) + 1.0 / (right + CONTINUITY)


def expit_pct(value: np.ndarray) -> np.ndarray:
    """A logit back to a rate in % (always inside 0–100)."""
    return 100.0 / (1.0 + np.exp(-np.asarray(value, dtype=float)))


# ------------------------------------------------------------------------------------- the contrast

@dataclass(frozen=True)
class Design:
    """Per-group summaries on the logit scale (last axis = groups; leading axes = replicates)."""

    means: np.ndarray
    variances: np.ndarray  # sample variance floored at the group's mean binomial variance
    counts: np.ndarray  # seeds per group


def summarise(values: Sequence[np.ndarray], floors: Sequence[np.ndarray]) -> Design:
    """Group summaries from per-run logits and binomial variances, one array (…, seeds) per group."""
    means = np.stack([np.mean(v, axis=-1) for v in values], axis=-1)
    raw = np.stack([np.var(v, axis=-1, ddof=1) if v.shape[-1] > 1 else np.full(v.shape[:-1], np.nan)
                    for v in values], axis=-1)
    floor = np.stack([np.mean(f, axis=-1) for f in floors], axis=-1)
    counts = np.array([v.shape[-1] for v in values], dtype=float)
    return Design(means, np.fmax(raw, floor), counts)


@dataclass(frozen=True)
class ContrastTest:
    """Σ wᵢ·meanᵢ on the logit scale, its standard error and df, and whether the variance was pooled."""

    effect: np.ndarray
    se: np.ndarray
    df: np.ndarray
    pooled: np.ndarray

    def p(self) -> np.ndarray:
        """Two-sided p."""
        return 2 * scipy_stats.t.sf(np.abs(self.effect) / self.se, self.df)


def contrast(design: Design, weights: np.ndarray) -> ContrastTest:
    """The guarded pooled-variance test of Σ wᵢ·meanᵢ (see the module docstring)."""
    w, n, v = np.asarray(weights, dtype=float), design.counts, design.variances
    effect = (w * design.means).sum(axis=-1)
    pooled_var = ((n - 1) * v).sum(axis=-1) / (n - 1).sum()
    pooled_se = np.sqrt(pooled_var * (w ** 2 / n).sum())
    welch_se = np.sqrt((w ** 2 * v / n).sum(axis=-1))
    terms = w ** 2 * v / n
    with np.errstate(divide="ignore", invalid="ignore"):
        welch_df = terms.sum(axis=-1) ** 2 / (terms ** 2 / (n - 1)).sum(axis=-1)
    pooled = variances_agree(design) & (np.unique(n).size == 1)
    hsu_df = float((n[w != 0] - 1).min())
    return ContrastTest(effect, np.where(pooled, pooled_se, welch_se),
                        np.where(pooled, ((n - 1).sum() + welch_df) / 2, hsu_df), pooled)


def variances_agree(design: Design) -> np.ndarray:
    """The guard: the largest over the smallest group variance within the F-test's two-sided ``GUARD_LEVEL``."""
    v, df = design.variances, design.counts - 1
    high, low = np.argmax(v, axis=-1), np.argmin(v, axis=-1)
    ratio = np.take_along_axis(v, high[..., None], -1)[..., 0] / np.take_along_axis(v, low[..., None], -1)[..., 0]
    return ratio <= scipy_stats.f.ppf(1 - GUARD_LEVEL / 2, df[high], df[low])


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


# -------------------------------------------------------------------------------- one comparison

@dataclass(frozen=True)
class Comparison:
    """One test on the logit scale, reported in percentage points from a baseline rate.

    ``effect`` / ``low`` / ``high`` are pp: the baseline's rate moved by the logit effect (and by its interval's
    ends), minus the baseline's rate — so a rate plus any of them stays inside 0–100 %.
    """

    test: str  # the test's name, as a sentence prints it
    groups: tuple  # the compared groups; the effect is "last − first" (a trend: fitted deepest − shallowest)
    seeds: tuple[int, ...]
    logit_effect: float
    se: float
    df: float
    baseline: float  # the logit the change starts from
    confidence: float = 1 - ALPHA

    @property
    def p(self) -> float:
        return float(2 * scipy_stats.t.sf(abs(self.logit_effect) / self.se, self.df))

    def _pp(self, logit_change: float) -> float:
        return float(expit_pct(self.baseline + logit_change) - expit_pct(self.baseline))

    @property
    def half_width(self) -> float:
        return float(scipy_stats.t.ppf(0.5 + self.confidence / 2, self.df) * self.se)

    @property
    def effect(self) -> float:
        return self._pp(self.logit_effect)

    @property
    def low(self) -> float:
        return self._pp(self.logit_effect - self.half_width)

    @property
    def high(self) -> float:
        return self._pp(self.logit_effect + self.half_width)

    @property
    def direction(self) -> int:
        """+1 when the interval lies above 0, −1 below, 0 when it contains 0."""
        return 1 if self.logit_effect - self.half_width > 0 else -1 if self.logit_effect + self.half_width < 0 else 0

    def at(self, confidence: float) -> Comparison:
        """The same test with its interval at another confidence (a Holm step's)."""
        return replace(self, confidence=confidence)

    def detectable(self, seeds: int | None = None, power: float = POWER) -> float:
        """The smallest change (pp, upwards from the baseline) found with ``power`` at this interval's level,
        with ``seeds`` per group (default: this design's) at the observed spread."""
        scale = math.sqrt(min(self.seeds) / seeds) if seeds else 1.0
        df = self.df * (seeds - 1) / (min(self.seeds) - 1) if seeds else self.df
        alpha = 1 - self.confidence
        gap = (scipy_stats.t.ppf(1 - alpha / 2, df) + scipy_stats.t.ppf(power, df)) * self.se * scale
        return self._pp(gap)

    def seeds_needed(self, gap_pp: float) -> int | None:
        """About how many seeds per group would find a change of ``gap_pp`` with POWER (None: over MAX_SEEDS)."""
        for seeds in range(max(self.seeds) + 1, MAX_SEEDS + 1):
            if self.detectable(seeds) <= gap_pp:
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


def group_comparison(test: str, groups: tuple, values: Sequence[np.ndarray], floors: Sequence[np.ndarray],
                     weights: np.ndarray, baseline: np.ndarray) -> Comparison:
    """A Comparison of per-group logits (one array of seeds per group) by contrast ``weights``."""
    design = summarise(values, floors)
    result = contrast(design, weights)
    if bool(result.pooled):
        how = f"t-test of the {test} on the logit scale, seed variance pooled"
    else:
        why = "unequal seeds" if np.unique(design.counts).size > 1 else "the groups' variances differ"
        how = f"Welch's t-test of the {test} on the logit scale with Hsu's df ({why})"
    return Comparison(how, tuple(groups),
                      tuple(int(c) for c in design.counts), float(result.effect), float(result.se),
                      float(result.df), float((np.asarray(baseline) * design.means).sum()))


def paired_difference(baseline: Sequence[float], other: Sequence[float], images: Sequence[int]) -> Comparison:
    """other − baseline error (pp) over runs paired by seed: a paired t-interval on the logit scale.

    The variance of the differences is floored at their binomial variance; df = pairs − 1. Needs ≥ 2 pairs.
    """
    a, fa = logit_counts(baseline, images)
    b, fb = logit_counts(other, images)
    if len(a) < 2 or len(a) != len(b):
        raise ValueError(f"a paired interval needs ≥ 2 pairs of equal length; got {len(a)} and {len(b)}")
    d = b - a
    variance = max(float(np.var(d, ddof=1)), float(np.mean(fa + fb)))
    return Comparison("paired t-test on the logit scale", ("baseline", "other"), (len(d), len(d)),
                      float(d.mean()), math.sqrt(variance / len(d)), len(d) - 1.0, float(a.mean()))


def reference_difference(ours: Sequence[float], images: Sequence[int], reference: float, reference_sd: float,
                         reference_runs: int) -> Comparison:
    """mean(ours) − a published number (pp): Welch's t on the logit scale with the number's own noise.

    A published number is a draw with seed noise of its own: ``reference_sd`` is its std in pp (a single run's,
    or a mean's), estimated from ``reference_runs`` runs (its df); moved to the logit scale by the delta method.
    """
    y, floor = logit_counts(ours, images)
    if len(y) < 2:
        raise ValueError("a difference from the paper needs ≥ 2 of our seeds")
    ref_logit = float(logit_counts(np.array([reference]), np.array([1e9]))[0][0])
    rate = reference / 100
    ref_var = (reference_sd / 100 / (rate * (1 - rate))) ** 2
    ours_var = max(float(np.var(y, ddof=1)), float(np.mean(floor))) / len(y)
    df = (ours_var + ref_var) ** 2 / (ours_var ** 2 / (len(y) - 1) + ref_var ** 2 / (reference_runs - 1))
    return Comparison(f"Welch's t-test on the logit scale with the paper number's own noise (std {reference_sd:.2f} pp)",
                      ("paper", "ours"), (1, len(y)), float(y.mean() - ref_logit),
                      math.sqrt(ours_var + ref_var), float(df), ref_logit)


# ------------------------------------------------------------------------------------- many tests

def holm_levels(p_values: Sequence[float], alpha: float = ALPHA) -> list[float]:
    """The confidence of each test's interval under Holm's step-down procedure over all of them.

    Test j in order of p is judged at level α / (m − j + 1); after the first test that is not rejected, every
    later one is judged at that step's level, so an interval excludes 0 exactly when Holm rejects.
    """
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
