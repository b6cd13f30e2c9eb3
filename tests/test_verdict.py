"""The verdicts: Welch's t-tests across seeds, against fixture experiments with known gaps and by hand.

The matrix test writes real MLflow experiments (one family, two depths, exact final training errors) for
gaps of none / small / large and 1, 2, 3, 5 seeds, reads them back with the loader and checks the verdict
and that its sentence names the test, the effect and its interval.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from dashboards import verdict  # noqa: E402
from dashboards.loader import load_experiment  # noqa: E402
from mlflow_fixtures import sqlite_uri, write_fixture_experiment  # noqa: E402

SIGMA = 0.2  # seed-to-seed std (pp) of the fixture errors
# Seed offsets in units of SIGMA with sample std ≈ 1, different at the two depths (seeds are independent).
OFFSETS = {1: ([0.0], [0.0]), 2: ([-0.7, 0.7], [0.7, -0.7]), 3: ([-1.0, 0.0, 1.0], [0.5, -1.0, 0.5]),
           5: ([-1.3, -0.6, 0.0, 0.6, 1.3], [1.0, -1.4, 0.2, -0.5, 0.7])}
GAPS = {"none": 0.0, "small": 0.1, "large": 3.0}  # pp; small = σ/2, large = 15σ
EXPECTED = {  # (gap, seeds) → plain-net verdict
    **{(gap, 1): verdict.ONE_SEED for gap in GAPS},
    **{("none", n): verdict.NO_DIFFERENCE for n in (2, 3, 5)},
    **{("small", n): verdict.NO_DIFFERENCE for n in (2, 3, 5)},
    **{("large", n): "degrades" for n in (2, 3, 5)},
}


def _errors(gap: float, seeds: int, base: float = 5.0) -> list[list[float]]:
    shallow, deep = OFFSETS[seeds]
    return [[base + SIGMA * o for o in shallow], [base + gap + SIGMA * o for o in deep]]


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """One experiment per (gap, seeds): plain nets +gap from 20 to 56 layers; with a large gap also residual nets
    −gap (the mirror image). ~0.1 s per run written, so the other cases leave residual nets out."""
    uri = sqlite_uri(tmp_path_factory.mktemp("verdicts"))
    for gap, seeds in EXPECTED:
        plain = _errors(GAPS[gap], seeds)
        errors = {("plain", 20): plain[0], ("plain", 56): plain[1]}
        if gap == "large":
            residual = _errors(-GAPS[gap], seeds, base=4.0)
            errors.update({("residual", 20): residual[0], ("residual", 56): residual[1]})
        write_fixture_experiment(uri, f"{gap}-{seeds}", points=4, with_failed=False, with_diverged=False,
                                 artifacts=False, train_errors=errors)
    return uri


@pytest.mark.parametrize("gap,seeds", list(EXPECTED))
def test_known_gaps_give_expected_verdicts(matrix, gap, seeds):
    data = load_experiment(f"{gap}-{seeds}", matrix, metrics=["train/error"])
    found = {v.family: v for v in verdict.verdicts(data.history, data.runs)[1]}
    expected = EXPECTED[(gap, seeds)]
    assert found["plain"].label == expected
    if gap == "large":
        assert found["residual"].label == ("improves" if seeds > 1 else verdict.ONE_SEED)
    plain = found["plain"]
    assert plain.iteration == 2000 and plain.depths == (20, 56)
    if seeds == 1:
        assert plain.comparison is None and "one seed" in plain.sentence
        assert f"{verdict.signed(GAPS[gap])} pp from 20 to 56 layers" in plain.sentence  # the gap, but no verdict
        return
    c = plain.comparison
    assert c.effect == pytest.approx(GAPS[gap], abs=1e-6) and c.seeds == (seeds, seeds)
    assert c.low < c.effect < c.high
    assert "Welch's t-test" in plain.sentence and "95 % CI" in plain.sentence
    assert f"{verdict.signed(c.effect)} pp" in plain.sentence and f"{seeds} seeds per depth" in plain.sentence
    welch = scipy_stats.ttest_ind(*_errors(GAPS[gap], seeds)[::-1], equal_var=False)
    assert c.p == pytest.approx(welch.pvalue, rel=1e-6)  # the same test as scipy's Welch t-test


# --------------------------------------------------------------------------------------- by hand

def _values(groups: dict[int, list[float]], group: str = "depth") -> pd.DataFrame:
    return pd.DataFrame([(k, v) for k, values in groups.items() for v in values], columns=[group, "value"])


def test_compare_groups_matches_scipy_welch_and_its_interval():
    a, b = [5.0, 5.4, 5.1], [9.0, 9.2, 8.7, 9.4]
    c = verdict.compare_groups(a, b)
    reference = scipy_stats.ttest_ind(b, a, equal_var=False)
    assert c.t == pytest.approx(reference.statistic) and c.p == pytest.approx(reference.pvalue)
    low, high = reference.confidence_interval(0.95)
    assert (c.low, c.high) == (pytest.approx(low), pytest.approx(high))
    assert c.effect == pytest.approx(np.mean(b) - np.mean(a)) and c.direction == 1
    with pytest.raises(ValueError, match="≥ 2 values per group"):
        verdict.compare_groups([1.0], [2.0, 3.0])


def test_trend_uses_every_depth_and_reduces_to_welch_with_two():
    values = _values({20: [5.0, 5.2, 5.1], 32: [6.0, 6.1, 5.9], 44: [7.0, 7.3, 7.1], 56: [8.1, 8.0, 8.2]})
    c = verdict.trend(values, "depth", "value")
    assert c.groups == (20, 32, 44, 56) and "linear trend against log2 depth over 4 depths" in c.test
    x = np.log2([20, 32, 44, 56])
    means = values.groupby("depth")["value"].mean().to_numpy()
    slope = np.polyfit(x, means, 1)[0]
    assert c.effect == pytest.approx(slope * (x[-1] - x[0]))  # the fitted change from 20 to 56 layers
    assert c.direction == 1 and c.p < 0.001

    two = verdict.trend(values[values["depth"].isin([20, 56])], "depth", "value")
    welch = verdict.compare_groups([5.0, 5.2, 5.1], [8.1, 8.0, 8.2])
    assert (two.effect, two.low, two.high, two.p) == pytest.approx((welch.effect, welch.low, welch.high, welch.p))
    assert two.test == "Welch's t-test"


def test_trend_is_not_fooled_by_a_middle_depth_or_noise():
    # deepest = shallowest but a bump in the middle: no monotone trend
    flat = _values({20: [5.0, 5.3, 5.1], 32: [7.0, 7.4, 7.2], 56: [5.1, 5.0, 5.3]})
    assert verdict.trend(flat, "depth", "value").direction == 0
    # a +0.01 pp gap with one seed per depth (the plain-20 vs plain-56 case): no verdict
    one = verdict.judge_depth(_values({20: [7.00], 56: [7.01]}), "plain", 1500)
    assert one.label == verdict.ONE_SEED and one.comparison is None
    assert one.sentence.startswith("plain nets: inconclusive (one seed) — training error +0.01 pp from 20 to 56")


def test_depths_with_one_seed_are_left_out_and_said_so():
    values = _values({20: [5.0, 5.2, 5.1], 32: [6.0], 56: [8.1, 8.0, 8.2]})
    v = verdict.judge_depth(values, "plain", 1000)
    assert v.label == "degrades" and v.depths == (20, 56) and v.left_out == (32,)
    assert "left out with one seed: 32 layers" in v.sentence
    v = verdict.judge_depth(_values({20: [5.0, 5.2], 56: [8.1]}), "plain", 1000)
    assert v.label == verdict.ONE_SEED and v.left_out == (56,)
    v = verdict.judge_depth(_values({20: [5.0, 5.2]}), "plain", 1000)
    assert v.label == verdict.NOT_MEASURED and "have: 20" in v.sentence


def test_verdict_reads_the_matched_iteration_and_skips_excluded_runs():
    runs, points = [], []
    for depth, finals in {20: [5.0, 5.1, 4.9], 56: [9.0, 9.1, 8.9]}.items():
        for seed, final in enumerate(finals):
            run_id = f"plain-{depth}-{seed}"
            runs.append({"run_id": run_id, "name": run_id, "status": "FINISHED", "outcome": "completed",
                         "family": "plain", "depth": depth, "shortcut": "none", "seed": seed})
            last = 500 if run_id == "plain-56-2" else 1000  # one run stopped early
            points += [{"run_id": run_id, "metric": "train/error", "step": step, "value": final + (1000 - step) / 100}
                       for step in range(100, last + 1, 100)]
    runs, history = pd.DataFrame(runs).astype({"depth": "Int64", "seed": "Int64"}), pd.DataFrame(points)
    v = verdict.family_verdict(history, runs, "plain")
    assert v.iteration == 500 and v.comparison.effect == pytest.approx(4.0)  # every run read at 500

    runs.loc[runs["run_id"].eq("plain-56-2"), ["outcome", "status"]] = ["diverged", "FAILED"]
    v = verdict.family_verdict(history, runs, "plain")
    assert v.iteration == 1000 and v.comparison.seeds == (3, 2)  # the diverged run no longer limits or counts


def test_zero_seed_noise_is_a_definite_verdict_only_with_a_gap():
    v = verdict.judge_depth(_values({20: [5.0, 5.0], 56: [9.0, 9.0]}), "plain", 100)
    assert v.label == "degrades" and v.comparison.low == v.comparison.high == pytest.approx(4.0)
    v = verdict.judge_depth(_values({20: [5.0, 5.0], 56: [5.0, 5.0]}), "plain", 100)
    assert v.label == verdict.NO_DIFFERENCE


def test_shortcut_options_use_the_same_test_pairwise_with_bonferroni():
    values = _values({"A": [7.0, 7.2, 7.1], "B": [6.9, 7.0, 7.1], "C": [6.0, 6.1, 6.05]}, group="shortcut")
    pairs = verdict.judge_pairs(values, "shortcut", subject="ResNet-20, ", what="test error", iteration=2000)
    by_pair = {p.comparison.groups: p for p in pairs}
    assert list(by_pair) == [("A", "B"), ("A", "C"), ("B", "C")]
    assert by_pair[("A", "B")].label == verdict.NO_DIFFERENCE
    assert by_pair[("A", "C")].label == "lower" and by_pair[("B", "C")].label == "lower"
    c = by_pair[("A", "C")].comparison
    plain = verdict.compare_groups([7.0, 7.2, 7.1], [6.0, 6.1, 6.05])
    assert c.p == pytest.approx(min(1.0, 3 * plain.p)) and c.confidence == pytest.approx(1 - 0.05 / 3)
    assert (c.high - c.low) > (plain.high - plain.low)  # the Bonferroni interval is wider
    assert by_pair[("A", "C")].sentence.startswith(
        "ResNet-20, shortcut C vs A: lower test error — −1.05 pp (98.3 % CI")
    assert "Bonferroni-corrected for 3 comparisons" in by_pair[("A", "C")].sentence

    one = verdict.judge_pairs(_values({"A": [7.0, 7.2], "B": [6.0]}, group="shortcut"), "shortcut")
    assert [p.label for p in one] == [verdict.ONE_SEED] and "B has one seed" in one[0].sentence


def test_comparison_with_a_published_mean():
    # ResNet-110: Welch's test against the paper's 6.61 ± 0.16 over 5 runs, from summary statistics
    ours = [6.5, 6.7, 6.9]
    c = verdict.compare_with_reference(ours, 6.61, 0.16, 5)
    reference = scipy_stats.ttest_ind_from_stats(np.mean(ours), np.std(ours, ddof=1), 3, 6.61, 0.16, 5,
                                                 equal_var=False)
    assert c.effect == pytest.approx(np.mean(ours) - 6.61) and c.p == pytest.approx(reference.pvalue)
    # a bare number: our seeds' one-sample interval
    c = verdict.compare_with_reference(ours, 6.97)
    assert c.p == pytest.approx(scipy_stats.ttest_1samp(ours, 6.97).pvalue) and c.groups == ("ours",)
    assert verdict.compare_with_reference([7.0], 6.97) is None
