"""The verdicts: counts on the arcsine-root scale, a guarded pooled test, honest words — on real MLflow experiments
with known gaps, on the main command's own numbers, and by hand against scipy."""

from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats


from dashboards import inference, option_verdicts, verdict  # noqa: E402
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
    assert inference.SCALE in large["plain"].sentence and "95 % CI" in large["plain"].sentence
    assert f"{verdict.signed(c.effect)} pp" in large["plain"].sentence and f"{seeds} seeds per depth" in large[
        "plain"].sentence
    assert f"With {seeds} seeds per depth, a rise of" in large["plain"].sentence  # the design's power
    assert "at the observed spread" in large["plain"].sentence
    if none.label == verdict.INCONCLUSIVE:
        assert "cannot tell a " in none.sentence and "would" in none.sentence


def test_five_seeds_of_no_gap_rule_out_a_one_point_difference(matrix):
    v = {v.family: v for v in verdict.verdicts(*_read(matrix, "none-5"))[1]}["plain"]
    assert v.label == verdict.NO_DIFFERENCE and v.sentence.startswith("plain nets: no difference larger than 1 pp")
    assert -1 <= v.comparison.low < 0 < v.comparison.high <= 1


def _read(uri: str, name: str):
    data = load_experiment(name, uri, metrics=["train/error"])
    return data.history, data.runs


@pytest.mark.parametrize("plain_20, plain_56", [([0.0, 0.01], [45.29, 48.77]), ([0.0, 0.03], [50.62, 62.42])],
                         ids=["second machine", "README machine"])
def test_the_main_commands_own_numbers_read_as_the_paper_says_on_every_machine(plain_20, plain_56):
    """The main command on two machines: on the logit scale the second said "plain nets: inconclusive — +47.03 pp
    (95 % CI −0.00 to +99.99 pp)" (0 vs 1–2 wrong images of 16k looked like a large seed spread)."""
    plain = verdict.judge_depth(_values({20: plain_20, 56: plain_56}), "plain", 1500)
    assert plain.label == verdict.DEGRADES, plain.sentence
    c = plain.comparison
    assert 0 < c.low < c.effect < c.high <= 100 - c.baseline_pct
    assert plain.sentence.startswith("plain nets degrade: training error 0.01 % → ")
    for deep in ([0.04, 0.04], [0.10, 0.10], [0.0, 0.1]):  # residual nets: a rise of ≤ 0.1 pp off zero
        residual = verdict.judge_depth(_values({20: [0.0, 0.0], 56: deep}), "residual", 1500)
        assert residual.label in (verdict.NO_DIFFERENCE, verdict.INCONCLUSIVE), residual.sentence
        assert residual.comparison.low >= -residual.comparison.baseline_pct
        both = verdict.interaction_verdict(_values({20: plain_20, 56: plain_56}), _values({20: [0.0, 0.0], 56: deep}),
                                           plain, residual)
        assert both.label == verdict.REMOVES, both.sentence
        assert both.sentence.startswith("Residual learning removes the degradation: plain trend − residual trend +")
        assert "95 % CI" in both.sentence and "is found 80 % of the time at the observed spread" in both.sentence
        assert ("seed variance pooled over its depths" in both.sentence) == ("seed variance pooled" in plain.sentence)


def test_every_interval_stays_inside_the_metrics_range():
    rng = np.random.default_rng(0)
    for _ in range(300):
        base = rng.uniform(0, 100, 2)
        groups = {20: np.clip(base[0] + rng.normal(0, 5, 2), 0, 100),
                  56: np.clip(base[1] + rng.normal(0, 5, 2), 0, 100)}
        v = verdict.judge_depth(_values(groups, images=int(rng.choice([360, 16_000]))), "plain", 100)
        shallow = v.comparison.baseline_pct
        assert -shallow - 1e-9 <= v.comparison.low <= v.comparison.effect <= v.comparison.high <= 100 - shallow + 1e-9


def test_ties_and_zero_spread_never_give_certainty():
    tied = verdict.judge_depth(_values({20: [5.0, 5.0], 56: [5.1, 5.1]}), "plain", 100)
    assert tied.comparison.p > 0.001 and np.isfinite(tied.comparison.se) and tied.comparison.se > 0
    same = verdict.judge_depth(_values({20: [5.0, 5.0], 56: [5.0, 5.0]}), "plain", 100)
    assert same.label in (verdict.NO_DIFFERENCE, verdict.INCONCLUSIVE) and same.comparison.effect == pytest.approx(0, abs=1e-9)


def _design(*groups, fresh_draws: bool = False) -> inference.Design:
    return inference.summarise([np.asarray(g, float) for g in groups], [np.zeros(len(g)) for g in groups],
                               fresh_draws)


def test_pooling_is_guarded_by_bartletts_test_over_every_group():
    even = _design([0.0, 1.0], [2.0, 3.0], [1.0, 1.5], [0.2, 1.1])
    test = inference.contrast(even, inference.trend_weights(np.log2([20, 32, 44, 56])))
    assert bool(test.pooled) and float(test.guard_p) == pytest.approx(
        scipy_stats.bartlett([0.0, 1.0], [2.0, 3.0], [1.0, 1.5], [0.2, 1.1]).pvalue)
    spread = _design([0.0, 0.01], [2.0, 6.0])
    test = inference.contrast(spread, np.array([-1.0, 1.0]))
    assert not bool(test.pooled) and float(test.guard_p) < inference.GUARD_LEVEL and 1 <= float(test.df) < 2


def test_unequal_seeds_keep_their_power_when_the_small_group_is_not_the_noisy_one():
    """One crashed run: on Hsu's df = min(seeds) − 1 8.6/8.8/8.9 against 7.0/7.1 % had p = 0.09."""
    values = _values({20: [8.6, 8.8, 8.9], 56: [7.0, 7.1]}, images=10_000)
    v = verdict.judge_depth(values, "plain", 1000, fresh_draws=False)
    assert v.label == verdict.IMPROVES and v.comparison.p < 0.01 and v.comparison.df > 2
    noisy = verdict.judge_depth(_values({20: [8.6, 8.8, 8.9], 56: [5.0, 9.1]}, images=10_000), "plain", 1000,
                                fresh_draws=False)
    assert noisy.comparison.se > v.comparison.se and noisy.comparison.df < 2  # the noisy small group counts


def test_the_sentence_says_variances_differ_only_when_bartletts_test_says_so():
    alike = verdict.judge_depth(_values({20: [5.0, 5.4], 56: [8.0, 8.5]}), "plain", 100)
    assert "seed variance pooled (Bartlett's test of equal variances p = " in alike.sentence
    assert "variances differ" not in alike.sentence
    unlike = verdict.judge_depth(_values({20: [5.0, 5.01], 56: [8.0, 14.0]}), "plain", 100)
    assert "the groups' variances differ: Bartlett's test of equal variances p = " in unlike.sentence


def test_a_pooled_two_group_test_is_the_t_test_with_welchs_df():
    a, b = np.array([0.1, 0.3, 0.2]), np.array([0.9, 1.2, 1.0])
    test = inference.contrast(_design(a, b), np.array([-1.0, 1.0]))
    reference = scipy_stats.ttest_ind(b, a)
    welch = scipy_stats.ttest_ind(b, a, equal_var=False)
    assert bool(test.pooled) and float(test.effect / test.se) == pytest.approx(reference.statistic)
    assert float(test.df) == pytest.approx(welch.df)  # equal seeds: the same standard error, Welch's df


def test_a_fixed_test_set_adds_no_count_noise_but_a_ties():
    """Every seed scores the same 10 000 images: the seed spread of the count is at most binomial, so only a tie
    (sample variance 0) gets the count's variance; freshly drawn training batches always do."""
    errors, images = np.array([7.00, 7.02]), np.array([10_000, 10_000])
    value, count_variance = inference.stabilised(errors, images)
    fixed = inference.summarise([value], [count_variance], fresh_draws=False)
    fresh = inference.summarise([value], [count_variance], fresh_draws=True)
    assert float(fixed.variances[0]) == pytest.approx(np.var(value, ddof=1))
    assert float(fixed.variances[0]) < float(fresh.variances[0])
    tie = inference.summarise([value[:1].repeat(2)], [count_variance], fresh_draws=False)
    assert float(tie.variances[0]) == pytest.approx(count_variance[0])


@pytest.mark.parametrize("curve", [{20: 5.0, 32: 1.0, 44: 1.0, 56: 1.0, 110: 5.1}, {20: 1.0, 32: 8.0, 44: 8.0, 56: 1.0}],
                         ids=["U", "inverted U"])
def test_a_curve_that_rises_and_falls_is_called_so(curve):
    """On the straight-line slope alone the U was "no difference larger than 1 pp" and the inverted U "degrades"."""
    values = _values({d: [e - 0.1, e, e + 0.1] for d, e in curve.items()})
    v = verdict.judge_depth(values, "plain", 1000)
    assert v.label == verdict.TURNS and v.sentence.startswith("plain nets rise and fall with depth: ")
    assert "pairs of depths Holm's correction over all pairs finds" in v.sentence and "deepest − shallowest" in v.sentence


def test_no_difference_only_when_every_depth_lies_within_the_margin():
    values = _values({20: [5.0, 5.1, 5.2, 5.1, 5.0], 32: [5.0, 8.0, 6.5, 5.5, 7.0], 56: [5.0, 5.1, 5.2, 5.1, 5.0]})
    v = verdict.judge_depth(values, "plain", 1000)
    assert v.comparison.within(verdict.EQUIVALENCE_PP) and v.label == verdict.INCONCLUSIVE


def test_changes_and_power_are_stated_in_the_direction_that_can_happen():
    """From a 0.5 % baseline the last step said "improve −0.44 pp … a change of 6.72 pp is found"."""
    v = verdict.judge_depth(_values({20: [3.0, 3.1], 56: [0.5, 0.52]}), "plain", 1000)
    assert v.label == verdict.IMPROVES
    found = v.comparison.detectable()
    assert found is None or -v.comparison.baseline_pct <= found < 0
    assert "a fall of" in v.sentence or "no change within 0–100 %" in v.sentence


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
    pairs = {p.comparison.groups: p for p in option_verdicts.judge_pairs(values, "shortcut", subject="ResNet-20, ",
                                                                  what="test error", iteration=2000)}
    assert pairs[("A", "C")].label == "lower" and pairs[("B", "C")].label == "lower"
    assert pairs[("A", "B")].label in (verdict.NO_DIFFERENCE, verdict.INCONCLUSIVE)
    pooled = pairs[("A", "C")].comparison
    assert "seed variance pooled" in pooled.test and 2 < pooled.df <= 6  # pooled over A, B and C: up to 9 − 3
    assert pairs[("A", "C")].sentence.startswith("ResNet-20, shortcut C vs A: lower test error — ")
    assert "a fall of" in pairs[("A", "C")].sentence and "is found 80 % of the time" in pairs[("A", "C")].sentence
    one = option_verdicts.judge_pairs(_values({"A": [7.0, 7.2], "B": [6.0]}, group="shortcut"), "shortcut")
    assert [p.label for p in one] == [verdict.ONE_SEED] and "shortcut B has one seed" in one[0].sentence


def test_paired_difference_is_a_paired_t_interval_on_the_arcsine_root_scale():
    base, other, images = [3.0, 2.5, 3.4], [1.9, 1.7, 2.2], [10_000] * 3
    c = inference.paired_difference(base, other, images)
    a, _ = inference.stabilised(np.array(base), np.array(images))
    b, _ = inference.stabilised(np.array(other), np.array(images))
    reference = scipy_stats.ttest_rel(b, a)
    assert c.df == 2 and c.direction == -1 and -3.0 < c.low < c.effect < c.high < 0
    assert c.p == pytest.approx(reference.pvalue)  # both runs score the same images: no count noise added
    tied = inference.paired_difference([2.0, 2.0], [1.0, 1.0], [360, 360])
    assert tied.se > 0 and tied.p > 0.001  # equal differences are not zero noise
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
    _, _, pairs, tests = option_verdicts.page_verdicts(history, runs, depth=False)
    assert tests == 6 and sorted(pairs) == [20, 32]
    raw = {(d, p.comparison.groups): p.comparison for d, ps in option_verdicts.shortcut_verdicts(history, runs).items()
           for p in ps}
    corrected = {(d, p.comparison.groups): p.comparison for d, ps in pairs.items() for p in ps}
    levels = inference.holm_levels([c.p for c in raw.values()])
    assert [corrected[k].confidence for k in raw] == levels and max(levels) == pytest.approx(1 - 0.05 / 6)
    assert all(c.high - c.low >= raw[k].high - raw[k].low for k, c in corrected.items())  # never narrower


def test_the_interaction_is_the_headline_and_is_logged_with_the_verdicts(matrix):
    _, found = verdict.verdicts(*_read(matrix, "large-3"))
    assert [v.family for v in found] == ["interaction", "plain", "residual"]
    tags, metrics = verdict.verdict_record(found)
    assert tags["verdict.interaction"] == found[0].label and "verdict.interaction.p_value" in metrics
    assert found[0].comparison.effect > 0 and found[0].label in (verdict.REMOVES, verdict.REDUCES)


def test_no_interaction_is_claimed_without_common_depths():
    plain = verdict.judge_depth(_values({20: [5.0, 5.2], 56: [9.0, 9.3]}), "plain", 100)
    residual = verdict.judge_depth(_values({32: [5.0, 5.2], 110: [5.1, 5.0]}), "residual", 100)
    both = verdict.interaction_verdict(_values({20: [5.0, 5.2], 56: [9.0, 9.3]}),
                                       _values({32: [5.0, 5.2], 110: [5.1, 5.0]}), plain, residual)
    assert both.label == verdict.NOT_MEASURED and both.sentence.startswith(
        "Residual learning and degradation: not measured — needs plain and residual nets at two or more common")


def test_a_depth_where_every_run_diverged_counts_at_chance_error():
    """Its nets failed to train: evidence about that depth, not a depth that was never run."""
    runs, points = [], []
    for depth, finals in {20: [5.0, 5.1, 4.9], 110: [None, None]}.items():
        for seed, final in enumerate(finals):
            run_id = f"plain-{depth}-{seed}"
            runs.append({"run_id": run_id, "name": run_id, "status": "FINISHED" if final else "FAILED",
                         "outcome": "completed" if final else "diverged", "family": "plain", "depth": depth,
                         "shortcut": "none", "seed": seed, "dataset": "digits", "metrics.train/images": 16_000.0})
            points += [{"run_id": run_id, "metric": "train/error", "step": step, "value": final or 90.0}
                       for step in range(100, (1000 if final else 300) + 1, 100)]
    runs, history = pd.DataFrame(runs).astype({"depth": "Int64", "seed": "Int64"}), pd.DataFrame(points)
    v = verdict.family_verdict(history, runs, "plain")
    assert v.depths == (20, 110) and v.comparison.seeds == (3, 2) and v.label == verdict.DEGRADES
    assert "plain-110: 2 of 2 diverged (counted at chance error)." in v.sentence


MAIN_COMMAND_SHAPES = {"second machine": ([0.0, 0.01], [45.29, 48.77]), "README machine": ([0.0, 0.03], [50.62, 62.42])}
RESIDUAL_RISES = {"tie": [0.0, 0.0], "0.04": [0.04, 0.04], "0.1": [0.1, 0.1], "one at 0.1": [0.0, 0.1]}


@pytest.fixture(scope="module")
def main_command_store(tmp_path_factory):
    """The main command's result shapes as real MLflow experiments (the fixture writer, 2 seeds per net)."""
    uri = sqlite_uri(tmp_path_factory.mktemp("main-command"))
    for machine, (plain_20, plain_56) in MAIN_COMMAND_SHAPES.items():
        for rise, residual_56 in RESIDUAL_RISES.items():
            write_fixture_experiment(uri, f"{machine}-{rise}", points=4, with_failed=False, with_diverged=False,
                                     artifacts=False, train_errors={("plain", 20): plain_20, ("plain", 56): plain_56,
                                                                    ("residual", 20): [0.0, 0.0],
                                                                    ("residual", 56): residual_56})
    return uri


@pytest.mark.parametrize("machine", list(MAIN_COMMAND_SHAPES))
@pytest.mark.parametrize("rise", list(RESIDUAL_RISES))
def test_the_main_commands_report_degrades_plain_nets_and_says_residual_learning_removes_it(main_command_store,
                                                                                          machine, rise):
    found = {v.family: v for v in verdict.verdicts(*_read(main_command_store, f"{machine}-{rise}"))[1]}
    assert found["plain"].label == verdict.DEGRADES, found["plain"].sentence
    assert found["residual"].label != verdict.DEGRADES, found["residual"].sentence  # ≤ 0.1 pp off zero
    assert found["interaction"].label == verdict.REMOVES, found["interaction"].sentence
