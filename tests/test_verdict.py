"""The verdicts: counts on the logit scale, a guarded pooled test, honest words — on real MLflow experiments with
known gaps, on the main command's own numbers, and by hand against scipy."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from dashboards import inference, verdict  # noqa: E402
from dashboards.loader import load_experiment  # noqa: E402
from support.mlflow_fixtures import sqlite_uri, write_fixture_experiment  # noqa: E402

SIGMA = 0.2  # seed-to-seed std (pp) of the fixture errors
# Seed offsets in units of SIGMA with sample std ≈ 1, different at the two depths (seeds are independent).
OFFSETS = {1: ([0.0], [0.0]), 2: ([-0.7, 0.7], [0.7, -0.7]), 3: ([-1.0, 0.0, 1.0], [0.5, -1.0, 0.5]),
           5: ([-1.3, -0.6, 0.0, 0.6, 1.3], [1.0, -1.4, 0.2, -0.5, 0.7])}
GAPS = {"none": 0.0, "large": 3.0}  # pp; large = 15σ
SMOKE_IMAGES = 16_000  # the smoke preset's training window: 125 iterations × 128 images


def _errors(gap: float, seeds: int, base: float = 5.0) -> list[list[float]]:
    shallow, deep = OFFSETS[seeds]
    return [[base + SIGMA * o for o in shallow], [base + gap + SIGMA * o for o in deep]]


def _values(groups: dict, group: str = "depth", images: int = SMOKE_IMAGES) -> pd.DataFrame:
    return pd.DataFrame([{group: k, "value": v, "images": images} for k, values in groups.items() for v in values])


@pytest.fixture(scope="module")
def matrix(tmp_path_factory):
    """One real MLflow experiment per (gap, seeds): plain nets +gap from 20 to 56 layers; with a large gap also
    residual nets −gap (the mirror image)."""
    uri = sqlite_uri(tmp_path_factory.mktemp("verdicts"))
    for gap in GAPS:
        for seeds in OFFSETS:
            plain = _errors(GAPS[gap], seeds)
            errors = {("plain", 20): plain[0], ("plain", 56): plain[1]}
            if gap == "large":
                residual = _errors(-GAPS[gap], seeds, base=4.0)
                errors.update({("residual", 20): residual[0], ("residual", 56): residual[1]})
            write_fixture_experiment(uri, f"{gap}-{seeds}", points=4, with_failed=False, with_diverged=False,
                                     artifacts=False, train_errors=errors)
    return uri


@pytest.mark.parametrize("seeds", list(OFFSETS))
def test_a_large_gap_is_found_and_no_gap_is_never_a_direction(matrix, seeds):
    large = {v.family: v for v in verdict.verdicts(*_read(matrix, f"large-{seeds}"))[1]}
    none = {v.family: v for v in verdict.verdicts(*_read(matrix, f"none-{seeds}"))[1]}["plain"]
    if seeds == 1:
        assert large["plain"].label == none.label == verdict.ONE_SEED and large["plain"].comparison is None
        assert f"{verdict.signed(3.0)} pp from 20 to 56 layers" in large["plain"].sentence
        return
    assert large["plain"].label == verdict.DEGRADES and large["residual"].label == verdict.IMPROVES
    assert none.label in (verdict.NO_DIFFERENCE, verdict.INCONCLUSIVE)
    c = large["plain"].comparison
    assert "logit scale" in large["plain"].sentence and "95 % CI" in large["plain"].sentence
    assert f"{verdict.signed(c.effect)} pp" in large["plain"].sentence and f"{seeds} seeds per depth" in large[
        "plain"].sentence
    assert f"With {seeds} seeds per depth a change of" in large["plain"].sentence  # the design's power
    if none.label == verdict.INCONCLUSIVE:
        assert "cannot tell a change of" in none.sentence and "would" in none.sentence


def test_five_seeds_of_no_gap_rule_out_a_one_point_difference(matrix):
    v = {v.family: v for v in verdict.verdicts(*_read(matrix, "none-5"))[1]}["plain"]
    assert v.label == verdict.NO_DIFFERENCE and v.sentence.startswith("plain nets: no difference larger than 1 pp")
    assert -1 <= v.comparison.low < 0 < v.comparison.high <= 1


def _read(uri: str, name: str):
    data = load_experiment(name, uri, metrics=["train/error"])
    return data.history, data.runs


def test_the_main_commands_own_numbers_read_as_the_paper_says():
    """The README's main command once said "plain nets: no detectable difference" for 0.00 / 0.03 % against
    50.62 / 62.42 %, and "residual nets degrade" for a tie at 0.00 / 0.00 against 0.04 / 0.04 %."""
    plain = verdict.judge_depth(_values({20: [0.0, 0.03], 56: [50.62, 62.42]}), "plain", 1500)
    assert plain.label == verdict.DEGRADES
    c = plain.comparison
    assert 0 < c.low < c.effect < c.high and c.effect + 0.015 <= 100 and c.high <= 100 - 0.015
    residual = verdict.judge_depth(_values({20: [0.0, 0.0], 56: [0.04, 0.04]}), "residual", 1500)
    assert residual.label == verdict.INCONCLUSIVE and residual.comparison.p > 0.05  # a tie is not certainty
    assert residual.comparison.low >= -inference.expit_pct(residual.comparison.baseline) and "about" in residual.sentence


def test_every_interval_stays_inside_the_metrics_range():
    rng = np.random.default_rng(0)
    for _ in range(300):
        base = rng.uniform(0, 100, 2)
        groups = {20: np.clip(base[0] + rng.normal(0, 5, 2), 0, 100),
                  56: np.clip(base[1] + rng.normal(0, 5, 2), 0, 100)}
        v = verdict.judge_depth(_values(groups, images=int(rng.choice([360, 16_000]))), "plain", 100)
        shallow = inference.expit_pct(v.comparison.baseline)
        assert -shallow - 1e-9 <= v.comparison.low <= v.comparison.effect <= v.comparison.high <= 100 - shallow + 1e-9


def test_ties_and_zero_spread_never_give_certainty():
    tied = verdict.judge_depth(_values({20: [5.0, 5.0], 56: [5.1, 5.1]}), "plain", 100)
    assert tied.comparison.p > 0.001 and np.isfinite(tied.comparison.se) and tied.comparison.se > 0
    same = verdict.judge_depth(_values({20: [5.0, 5.0], 56: [5.0, 5.0]}), "plain", 100)
    assert same.label in (verdict.NO_DIFFERENCE, verdict.INCONCLUSIVE) and same.comparison.effect == pytest.approx(0, abs=1e-9)


def test_pooling_is_guarded():
    even = inference.summarise([np.array([0.0, 1.0]), np.array([2.0, 3.0])], [np.zeros(2), np.zeros(2)])
    assert bool(inference.contrast(even, np.array([-1.0, 1.0])).pooled)
    spread = inference.summarise([np.array([0.0, 0.01]), np.array([2.0, 6.0])], [np.zeros(2), np.zeros(2)])
    test = inference.contrast(spread, np.array([-1.0, 1.0]))
    assert not bool(test.pooled) and float(test.df) == 1  # Hsu's df = min(seeds) − 1
    unequal = inference.summarise([np.array([0.0, 1.0, 0.5]), np.array([2.0, 3.0])], [np.zeros(3), np.zeros(2)])
    assert not bool(inference.contrast(unequal, np.array([-1.0, 1.0])).pooled)  # unequal seeds: never pooled


def test_a_pooled_two_group_test_is_the_t_test_with_its_df_between_pooled_and_welch():
    a, b = np.array([0.1, 0.3, 0.2]), np.array([0.9, 1.2, 1.0])
    design = inference.summarise([a, b], [np.zeros(3), np.zeros(3)])
    test = inference.contrast(design, np.array([-1.0, 1.0]))
    reference = scipy_stats.ttest_ind(b, a)
    welch = scipy_stats.ttest_ind(b, a, equal_var=False)
    assert float(test.effect / test.se) == pytest.approx(reference.statistic)
    assert welch.df < float(test.df) < reference.df
    assert float(test.p()) == pytest.approx(2 * scipy_stats.t.sf(reference.statistic, float(test.df)))


def test_diverged_runs_count_at_chance_error_and_are_named():
    runs, points = [], []
    for depth, finals in {20: [5.0, 5.1, 4.9], 110: [9.0, None, None]}.items():
        for seed, final in enumerate(finals):
            run_id = f"plain-{depth}-{seed}"
            diverged = final is None
            runs.append({"run_id": run_id, "name": run_id, "status": "FAILED" if diverged else "FINISHED",
                         "outcome": "diverged" if diverged else "completed", "family": "plain", "depth": depth,
                         "shortcut": "none", "seed": seed, "dataset": "digits", "metrics.train/images": 16_000.0})
            last = 300 if diverged else 1000
            points += [{"run_id": run_id, "metric": "train/error", "step": step,
                        "value": 90.0 if diverged else final} for step in range(100, last + 1, 100)]
    runs, history = pd.DataFrame(runs).astype({"depth": "Int64", "seed": "Int64"}), pd.DataFrame(points)
    v = verdict.family_verdict(history, runs, "plain")
    assert v.iteration == 1000 and v.comparison.seeds == (3, 3)  # diverged runs are evidence, read at chance
    assert "plain-110: 2 of 3 diverged (counted at chance error)." in v.sentence
    table, _ = verdict.depth_table(history, runs, "plain")
    assert table.set_index("depth").loc[110, "diverged"] == 2 and table.set_index("depth").loc[110, "max"] == 90.0


def test_verdict_reads_the_matched_iteration():
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
    assert v.iteration == 500 and v.comparison.effect == pytest.approx(4.0, abs=0.01)  # every run read at 500


def test_one_seed_and_single_depth_and_left_out_depths():
    one = verdict.judge_depth(_values({20: [7.00], 56: [7.01]}), "plain", 1500)
    assert one.label == verdict.ONE_SEED and one.comparison is None
    assert one.sentence.startswith("plain nets: inconclusive (one seed) — training error +0.01 pp from 20 to 56")
    v = verdict.judge_depth(_values({20: [5.0, 5.2], 32: [6.0], 56: [9.1, 8.9]}), "plain", 1000)
    assert v.label == verdict.DEGRADES and v.depths == (20, 56) and v.left_out == (32,)
    assert "left out with one seed: 32 layers" in v.sentence
    assert verdict.judge_depth(_values({20: [5.0, 5.2]}), "plain", 1000).label == verdict.NOT_MEASURED


def test_holm_levels_agree_with_holms_rejections():
    rng = np.random.default_rng(1)
    for _ in range(200):
        p = list(rng.uniform(0, 0.1, rng.integers(1, 6)))
        levels = inference.holm_levels(p)
        order = np.argsort(p)
        rejected, still = set(), True
        for step, i in enumerate(order):  # Holm's step-down, written out
            still = still and p[i] < 0.05 / (len(p) - step)
            if still:
                rejected.add(int(i))
        assert {i for i, (pi, c) in enumerate(zip(p, levels)) if pi < 1 - c} == rejected


def test_pairs_pool_the_options_of_a_depth_and_page_verdicts_correct_them_together():
    values = _values({"A": [7.0, 7.2, 7.1], "B": [7.05, 7.15, 7.1], "C": [5.0, 5.1, 5.05]}, group="shortcut",
                     images=10_000)
    pairs = {p.comparison.groups: p for p in verdict.judge_pairs(values, "shortcut", subject="ResNet-20, ",
                                                                  what="test error", iteration=2000)}
    assert pairs[("A", "C")].label == "lower" and pairs[("B", "C")].label == "lower"
    assert pairs[("A", "B")].label in (verdict.NO_DIFFERENCE, verdict.INCONCLUSIVE)
    pooled = pairs[("A", "C")].comparison
    assert pooled.test.endswith("seed variance pooled") and 2 < pooled.df <= 6  # pooled over A, B and C: up to 9 − 3
    assert pairs[("A", "C")].sentence.startswith("ResNet-20, shortcut C vs A: lower test error — ")
    assert "a change of" in pairs[("A", "C")].sentence and "is found 80 % of the time" in pairs[("A", "C")].sentence
    one = verdict.judge_pairs(_values({"A": [7.0, 7.2], "B": [6.0]}, group="shortcut"), "shortcut")
    assert [p.label for p in one] == [verdict.ONE_SEED] and "shortcut B has one seed" in one[0].sentence


def test_paired_difference_is_a_paired_t_interval_on_the_logit_scale():
    base, other, images = [3.0, 2.5, 3.4], [1.9, 1.7, 2.2], [10_000] * 3
    c = inference.paired_difference(base, other, images)
    a, _ = inference.logit_counts(np.array(base), np.array(images))
    b, _ = inference.logit_counts(np.array(other), np.array(images))
    reference = scipy_stats.ttest_rel(b, a)
    assert c.df == 2 and c.direction == -1 and -3.0 < c.low < c.effect < c.high < 0
    assert c.p >= reference.pvalue - 1e-12  # the binomial floor can only widen it
    tied = inference.paired_difference([2.0, 2.0], [1.0, 1.0], [360, 360])
    assert tied.se > 0 and tied.p > 0.001  # equal differences are not zero noise
    few = inference.paired_difference(base, other, [360] * 3)  # 1 pp of 360 images is 3.6 images: not a finding
    assert few.direction == 0 and few.se > c.se
    with pytest.raises(ValueError, match="≥ 2 pairs"):
        inference.paired_difference([2.0], [1.0], [360])


def test_a_difference_from_the_paper_counts_the_papers_own_noise():
    ours, images = [6.5, 6.7, 6.9], [10_000] * 3
    with_noise = inference.reference_difference(ours, images, 6.97, 0.16, 5)
    without = inference.reference_difference(ours, images, 6.97, 1e-6, 5)
    assert with_noise.se > without.se
    assert with_noise.low < with_noise.effect < with_noise.high and "paper number's own noise" in with_noise.test


def test_page_verdicts_correct_every_pair_of_options_at_every_depth_together():
    runs, points = [], []
    finals = {"A": [7.0, 7.2, 7.1], "B": [6.9, 7.1, 7.0], "C": [5.0, 5.1, 5.05]}
    for depth in (20, 32):
        for option, errors in finals.items():
            for seed, final in enumerate(errors):
                run_id = f"residual-{depth}-{option}-{seed}"
                runs.append({"run_id": run_id, "name": run_id, "status": "FINISHED", "outcome": "completed",
                             "family": "residual", "depth": depth, "shortcut": option, "seed": seed,
                             "metrics.test/images": 10_000.0})
                points.append({"run_id": run_id, "metric": "test/error", "step": 1000, "value": final})
    runs, history = pd.DataFrame(runs).astype({"depth": "Int64", "seed": "Int64"}), pd.DataFrame(points)
    _, _, pairs, tests = verdict.page_verdicts(history, runs, depth=False)
    assert tests == 6 and sorted(pairs) == [20, 32]
    raw = {(d, p.comparison.groups): p.comparison for d, ps in verdict.shortcut_verdicts(history, runs).items()
           for p in ps}
    corrected = {(d, p.comparison.groups): p.comparison for d, ps in pairs.items() for p in ps}
    levels = inference.holm_levels([c.p for c in raw.values()])
    assert [corrected[k].confidence for k in raw] == levels and max(levels) == pytest.approx(1 - 0.05 / 6)
    assert all(c.high - c.low >= raw[k].high - raw[k].low for k, c in corrected.items())  # never narrower
