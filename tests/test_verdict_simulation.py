"""How often the verdicts are wrong, and what they find: Monte Carlo over the result shapes a user produces.

Each replicate is one experiment: per depth (and family), seeds drawn with a known true error rate and seed noise,
turned into counts of wrong images, then judged by the report's own code (``inference.summarise`` /
``depth_call`` / ``contrast`` on whole arrays — what ``verdict.judge_depth`` and ``verdict.interaction_verdict``
call; a sample is also judged through ``judge_depth`` itself to show both decide alike).

Two kinds of noise. *Fresh draws* (training error, the depth verdict's metric): each seed's true rate is normal on
the arcsine-root scale around the depth's (std σ = 0.05 unless the cell says otherwise: ± 1.6 pp at 12 %, the
test's "equal variances"), and its count is binomial over freshly drawn images. *A fixed test set* (the
CIFAR test regime of the shortcut, paper and search comparisons): each seed's rate is normal in pp around the
truth with the seed std real runs show (0.10–0.30 pp; the paper's ResNet-110: 0.16 pp), and every seed is scored
on the same 10 000 images, so there is no count noise on top.

A wrong verdict is a call the truth contradicts: any definite call when nothing changes, a fall or "rises and
falls" when the truth rises, a straight rise or fall when it turns. Its rate must stay at or below 5 % in every
cell. ``python tests/test_verdict_simulation.py`` prints the table in docs/tracking.md. Fixed seeds:
deterministic.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dashboards import inference, verdict  # noqa: E402

REPLICATES = 10_000
ROOT5 = 5 ** 0.5  # a 5× variance ratio
DEPTHS = {2: (20, 56), 3: (20, 32, 56), 4: (20, 32, 44, 56), 5: (20, 32, 44, 56, 110)}
CIFAR_TEST_IMAGES = 10_000


@dataclass(frozen=True)
class Cell:
    """One simulated design. ``shape``: the true change per depth as a fraction of the gap (default: linear in
    log2 depth from 0 to 1); ``gaps``: the sizes power is reported at (σ units on the arcsine-root scale for
    fresh draws, pp for a fixed set); ``rises``: what a gap does to the truth (+1 rise, 2 rises and falls)."""

    name: str
    seeds: tuple[int, ...]
    sd: tuple[float, ...]  # seed std per depth: arcsine-root scale (fresh draws) or pp (fixed set)
    level: float = 12.0  # true error (%) at the shallowest depth
    images: int = 16_000
    fixed_set: bool = False
    diverge: float = 0.0  # each run diverges with this chance, at every depth alike
    shape: tuple[float, ...] | None = None
    gaps: tuple[float, float] = (2.0, 5.0)
    rises: int = 1

    @property
    def depths(self) -> tuple[int, ...]:
        return DEPTHS[len(self.seeds)]

    def truth(self, gap: float) -> np.ndarray:
        x = np.log2(np.asarray(self.depths, dtype=float))
        shape = np.asarray(self.shape) if self.shape else (x - x[0]) / (x[-1] - x[0])
        if self.fixed_set:
            return self.level + gap * shape
        if self.name.startswith("logit-normal"):
            return np.log(self.level / (100 - self.level)) + gap * 0.3 * shape
        return np.arcsin(np.sqrt(self.level / 100)) + gap * max(self.sd) * shape


def draw(cell: Cell, truth: np.ndarray, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per depth, (replicates × seeds) error rates in % and their images."""
    rng = np.random.default_rng(seed)
    errors = []
    for mean, sd, n in zip(truth, cell.sd, cell.seeds):
        if cell.fixed_set:
            rate = np.clip(rng.normal(mean, sd, size=(REPLICATES, n)), 0, 100) / 100
            error = 100 * np.round(rate * cell.images) / cell.images
        elif cell.name.startswith("logit-normal"):
            rate = 1 / (1 + np.exp(-rng.normal(mean, 0.3, size=(REPLICATES, n))))
        else:
            rate = np.sin(np.clip(rng.normal(mean, sd, size=(REPLICATES, n)), 0, np.pi / 2)) ** 2
        if not cell.fixed_set:
            error = 100 * rng.binomial(cell.images, rate) / cell.images
        errors.append(np.where(rng.random(error.shape) < cell.diverge, verdict.chance_error("cifar10"), error))
    return errors, [np.full(e.shape, cell.images) for e in errors]


def design_of(cell: Cell, errors: list[np.ndarray], images: list[np.ndarray]) -> inference.Design:
    values, floors = zip(*(inference.stabilised(e, i) for e, i in zip(errors, images)))
    return inference.summarise(list(values), list(floors), fresh_draws=not cell.fixed_set)


def calls(cell: Cell, gap: float = 0.0, seed: int = 0) -> np.ndarray:
    """Per replicate, the depth verdict's call (+1 rises, −1 falls, 2 rises and falls, 0 none)."""
    errors, images = draw(cell, cell.truth(gap), seed)
    margin = 0.0 if cell.fixed_set else verdict.EQUIVALENCE_PP  # the fixed-set cells test the contrast alone
    return inference.depth_call(design_of(cell, errors, images), np.log2(cell.depths), margin)


def wrong(cell: Cell, call: np.ndarray, gap: float) -> np.ndarray:
    if gap == 0:
        return call != 0
    return np.isin(call, (-1, 2)) if cell.rises == 1 else np.isin(call, (-1, 1))


def found(cell: Cell, call: np.ndarray) -> np.ndarray:
    return call == cell.rises


S = 0.05  # the seed std of the fresh-draw cells (arcsine-root scale)
CELLS = [
    *(Cell(f"{n} seeds, equal spread", (n, n), (S, S)) for n in (2, 3, 5)),
    *(Cell(f"4 depths × {n} seeds", (n,) * 4, (S,) * 4) for n in (2, 3)),
    *(Cell(f"5 depths × {n} seeds", (n,) * 5, (S,) * 5) for n in (2, 3, 5)),
    Cell("5 depths × 3 seeds, one crashed run (3/3/3/3/2)", (3, 3, 3, 3, 2), (S,) * 5),
    Cell("3 vs 2 seeds (a failed run)", (3, 2), (S, S)),
    Cell("5 vs 2 seeds, the 2 noisier (5× variance)", (5, 2), (S, S * ROOT5)),
    *(Cell(f"{n} seeds, deep net 5× variance", (n, n), (S, S * ROOT5)) for n in (2, 3, 5)),
    Cell("2 seeds, shallow net 5× variance", (2, 2), (S * ROOT5, S)),
    Cell("4 depths × 2 seeds, deepest 5× variance", (2,) * 4, (S, S, S, S * ROOT5)),
    Cell("5 depths × 3 seeds, variance rising 5× with depth", (3,) * 5, tuple(S * 5 ** (i / 8) for i in range(5))),
    Cell("logit-normal seeds (std 0.3 logit: variance grows with the rate), 4 depths × 2 seeds", (2,) * 4,
         (S,) * 4, shape=None),
    *(Cell(f"near 0 % (≈ 5 of 16k wrong), {n} seeds", (n, n), (0.004, 0.004), level=0.03) for n in (2, 3)),
    Cell("near 0 % (≈ 1 of 16k wrong), 3 seeds", (3, 3), (0.002, 0.002), level=0.006),
    *(Cell(f"10 % of runs diverge, {n} seeds", (n, n), (S, S), diverge=0.1) for n in (2, 3)),
    Cell("few images (360), 3 seeds", (3, 3), (S, S), images=360),
    *(Cell(f"the main command's shape: ≈ 0.005 % → ≈ 47 % (std 2.5 pp), {n} seeds", (n, n), (0.003, 0.025),
           level=0.005, gaps=(10.0, 29.96)) for n in (2, 3)),
    *(Cell(f"CIFAR test set, sd {sd:.2f} pp, {n} seeds", (n, n), (sd, sd), level=7.0, images=CIFAR_TEST_IMAGES,
           fixed_set=True, gaps=(0.5, 1.0)) for sd in (0.10, 0.16, 0.30) for n in (2, 3, 5)),
    Cell("CIFAR test set, 4 depths × 3 seeds, sd 0.16 pp", (3,) * 4, (0.16,) * 4, level=7.0,
         images=CIFAR_TEST_IMAGES, fixed_set=True, gaps=(0.5, 1.0)),
    *(Cell(f"U-shape 5/1/1/1/5.1 %, {n} seeds", (n,) * 5, (0.02,) * 5, level=1.0, shape=(1, 0, 0, 0, 1.018),
           gaps=(3.0, 6.27), rises=2) for n in (2, 3)),
    *(Cell(f"inverted U 1/8/8/1 %, {n} seeds", (n,) * 4, (0.02,) * 4, level=1.0, shape=(0, 1, 1, 0),
           gaps=(3.0, 9.33), rises=2) for n in (2, 3)),
]
# The curves that turn (seed std 0.02: ± 0.4 pp at 1 %): their second gap is the stated curve, 1 % → 5 % or 8 %.


def rates(cell: Cell) -> tuple[float, float, float, float]:
    """(wrong verdicts with no change, found at the first gap, found at the second, wrong at the second)."""
    none = calls(cell)
    small, large = (calls(cell, g, seed=1 + i) for i, g in enumerate(cell.gaps))
    return (float(wrong(cell, none, 0).mean()), float(found(cell, small).mean()), float(found(cell, large).mean()),
            float(wrong(cell, large, cell.gaps[1]).mean()))


def monte_carlo_error(rate: float, replicates: int = REPLICATES) -> float:
    return float(np.sqrt(rate * (1 - rate) / replicates))


@pytest.mark.parametrize("cell", CELLS, ids=[c.name for c in CELLS])
def test_wrong_verdicts_stay_at_or_below_5_percent(cell):
    none = float(wrong(cell, calls(cell), 0).mean())
    assert none <= inference.ALPHA, f"{cell.name}: {none:.2%} wrong verdicts with no change"
    gap = cell.gaps[1]
    turned = float(wrong(cell, calls(cell, gap, seed=2), gap).mean())
    assert turned <= inference.ALPHA, f"{cell.name}: {turned:.2%} wrong verdicts at a gap of {gap}"


def _cell(name: str) -> Cell:
    return next(c for c in CELLS if c.name == name)


def test_four_depths_of_two_seeds_find_a_five_sigma_trend_more_than_eight_times_in_ten():
    """86.8 % (the issue asked 90 %): the guard's price. Measured while choosing it: a guard at level 0.15, or
    none, reaches 90 % but gives 5.4 % / 7.4 % false verdicts when the variance grows 5× with depth, which
    2–3 seeds cannot see (docs/tracking.md)."""
    cell = _cell("4 depths × 2 seeds")
    assert float(found(cell, calls(cell, 5.0)).mean()) >= 0.85


def test_three_seeds_on_the_cifar_test_set_find_half_a_point_six_times_in_ten():
    cell = _cell("CIFAR test set, sd 0.16 pp, 3 seeds")
    assert float(found(cell, calls(cell, 0.5)).mean()) >= 0.6


@pytest.mark.parametrize("name", ["U-shape 5/1/1/1/5.1 %, 3 seeds", "inverted U 1/8/8/1 %, 3 seeds"])
def test_curves_that_turn_are_called_so(name):
    cell = _cell(name)
    assert float(found(cell, calls(cell, cell.gaps[1])).mean()) >= 0.8


@pytest.mark.parametrize("cell", [CELLS[0], CELLS[3], CELLS[7], CELLS[19], CELLS[-3]], ids=lambda c: c.name)
def test_the_report_path_decides_as_the_simulation(cell):
    """The DataFrame path the report takes (``judge_depth``) gives the same call on a sample of replicates."""
    errors, images = draw(cell, cell.truth(cell.gaps[0]), seed=3)
    expected = inference.depth_call(design_of(cell, errors, images), np.log2(cell.depths), verdict.EQUIVALENCE_PP)
    label = {1: verdict.DEGRADES, -1: verdict.IMPROVES, 2: verdict.TURNS}
    for r in range(40):
        values = pd.DataFrame([{"depth": d, "value": e[r, s], "images": i[r, s]}
                               for d, e, i in zip(cell.depths, errors, images) for s in range(e.shape[1])])
        found_label = verdict.judge_depth(values, "plain", 100).label
        assert (found_label == label.get(int(expected[r]))) or (expected[r] == 0 and found_label not in
                                                                 label.values()), f"replicate {r}: {found_label}"


# ------------------------------------------------------------------------------ the interaction contrast

@dataclass(frozen=True)
class Pair:
    """Plain and residual nets at the same depths: the residual curve's share of the plain curve's gap."""

    name: str
    seeds: int
    depths: int = 2
    residual_share: float = 0.0  # 1: both degrade alike (no interaction), 0: residual flat
    plain_level: float = 12.0  # % at the shallowest depth
    residual_level: float = 12.0
    sd: tuple[float, ...] = (S, S)  # plain nets' seed std, shallowest and deepest (arcsine-root scale)
    residual_sd: tuple[float, ...] = (S, S)
    gap: float = 5 * S  # the plain nets' change in the "found" column (arcsine-root scale)

    def sds(self, ends: tuple[float, ...]) -> tuple[float, ...]:
        return tuple(np.linspace(ends[0], ends[-1], self.depths))


def interaction_calls(pair: Pair, gap: float, seed: int = 0) -> np.ndarray:
    """Per replicate: +1 when the plain trend − residual trend interval lies above 0, −1 below, 0 neither."""
    depths = DEPTHS[pair.depths]
    families = []
    for index, (level, sd, share) in enumerate(((pair.plain_level, pair.sd, 1.0),
                                                (pair.residual_level, pair.residual_sd, pair.residual_share))):
        cell = Cell("", (pair.seeds,) * pair.depths, pair.sds(sd), level=level)
        families.append(draw(cell, cell.truth(gap * share / max(cell.sd)), 100 * seed + index))
    weights = inference.trend_weights(np.log2(depths))
    plain, residual = (inference.contrast(design_of(cell, *family), weights) for family in families)
    test = inference.difference(plain, residual)
    significant = test.p() < inference.ALPHA
    return np.where(significant, np.sign(test.effect), 0)


PAIRS = [
    *(Pair(f"both families degrade alike, {n} seeds", n, residual_share=1.0) for n in (2, 3)),
    Pair("both degrade alike, 4 depths × 2 seeds", 2, depths=4, residual_share=1.0),
    Pair("residual flat, 2 seeds", 2),
    Pair("residual flat, 4 depths × 2 seeds", 2, depths=4),
    Pair("residual at ≈ 0.03 %, plain at 12 %, 2 seeds", 2, residual_level=0.03, residual_sd=(0.004, 0.004)),
    Pair("residual at ≈ 0.03 %, plain at 12 %, 4 depths × 2 seeds", 2, depths=4, residual_level=0.03,
         residual_sd=(0.004, 0.004)),
    *(Pair(f"the main command's shape: plain ≈ 0.005 % → 47 %, residual flat at ≈ 0.005 %, {n} seeds", n,
           plain_level=0.005, residual_level=0.005, sd=(0.003, 0.025), residual_sd=(0.003, 0.003), gap=0.749)
      for n in (2, 3)),
]


@pytest.mark.parametrize("pair", PAIRS, ids=[p.name for p in PAIRS])
def test_the_interaction_is_rarely_found_when_absent_and_found_when_large(pair):
    none = interaction_calls(pair, 0.0)
    assert float((none != 0).mean()) <= inference.ALPHA
    if pair.residual_share == 1.0:
        alike = interaction_calls(pair, pair.gap)  # both degrade by the same gap: still no interaction
        assert float((alike != 0).mean()) <= inference.ALPHA
    else:
        assert float((interaction_calls(pair, pair.gap) == 1).mean()) >= 0.4


# -------------------------------------------------------------------------------------- the paper

PAPER_REPLICATES = 4_000


def paper_false_difference_rate(seeds: int, per_run_std: float = 0.16, seed: int = 0) -> float:
    """How often our interval against one published run excludes 0 when both come from the same recipe: our
    seeds and the paper's single run each have the per-run std Table 6 states (ResNet-110: 0.16 pp)."""
    rng = np.random.default_rng(seed)
    ours = np.round((7.0 + rng.normal(0, per_run_std, size=(PAPER_REPLICATES, seeds))) * 100) / 100
    paper = 7.0 + rng.normal(0, per_run_std, size=PAPER_REPLICATES)
    wrong_calls = [inference.reference_difference(o, [10_000] * seeds, p, per_run_std, 5).direction != 0
                   for o, p in zip(ours, paper)]
    return float(np.mean(wrong_calls))


@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_the_paper_comparison_rarely_finds_a_difference_that_is_not_there(seeds):
    rate = paper_false_difference_rate(seeds)
    assert rate <= inference.ALPHA, f"{seeds} seeds: {rate:.2%} false differences from the paper"


def table() -> str:
    """The markdown tables of docs/tracking.md."""
    lines = ["| cell | seeds per depth | wrong, no change (± MC error) | found at gap 1 | found at gap 2 "
             "| wrong at gap 2 |", "|---|---|---|---|---|---|"]
    for cell in CELLS:
        none, small, large, bad = rates(cell)
        unit = " pp" if cell.fixed_set else "σ"
        lines.append(f"| {cell.name} | {'/'.join(map(str, cell.seeds))} | {100 * none:.2f} % "
                     f"(± {100 * monte_carlo_error(none):.2f}) | {cell.gaps[0]:g}{unit}: {100 * small:.1f} % | "
                     f"{cell.gaps[1]:g}{unit}: {100 * large:.1f} % | {100 * bad:.2f} % |")
    lines += ["", "| interaction cell | wrong, nothing changes | at the plain gap: wrong (both alike) or found "
              "(residual flat) |", "|---|---|---|"]
    for pair in PAIRS:
        none = float((interaction_calls(pair, 0.0) != 0).mean())
        at_gap = interaction_calls(pair, pair.gap, seed=1)
        text = (f"wrong {100 * float((at_gap != 0).mean()):.2f} %" if pair.residual_share
                else f"found {100 * float((at_gap == 1).mean()):.1f} %")
        lines.append(f"| {pair.name} | {100 * none:.2f} % | {text} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
    print("\nagainst one paper run:", ", ".join(f"{n} seeds {100 * paper_false_difference_rate(n):.2f} %"
                                               for n in (2, 3, 5)), f"({PAPER_REPLICATES:,} replicates)")
