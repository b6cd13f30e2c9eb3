"""How often the verdicts are wrong, and what they find: Monte Carlo over the cases a user produces.

Each replicate is one experiment: per depth, seeds drawn with a known true error rate and seed noise, turned into
counts of wrong images out of the evaluation's images, then judged by the report's own code
(``inference.summarise`` / ``contrast`` on whole arrays — the functions ``verdict.judge_depth`` calls; a sample is
also judged through ``judge_depth`` itself to show both decide alike). With no true difference a definite verdict
is a false one: its rate must stay at or below 5 % in every cell. Power is the rate at a gap of 2σ and 5σ
(σ = the larger seed std, on the logit scale) from the shallowest to the deepest net.

``python tests/test_verdict_simulation.py`` prints the table in docs/tracking.md. Fixed seeds: deterministic.
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

REPLICATES = 20_000
ROOT5 = 5 ** 0.5  # a 5× variance ratio


@dataclass(frozen=True)
class Cell:
    """One simulated design: true logit per depth, seed std per depth (logit), seeds per depth, images."""

    name: str
    seeds: tuple[int, ...]
    sd: tuple[float, ...]
    level: float = -2.0  # logit of the true error: −2 ≈ 12 %, −8 ≈ 0.03 %
    images: int = 16_000
    diverge: float = 0.0  # each run diverges with this chance, at every depth alike

    @property
    def depths(self) -> tuple[int, ...]:
        return (20, 56) if len(self.seeds) == 2 else (20, 32, 44, 56)


CELLS = [
    *(Cell(f"{n} seeds, equal spread", (n, n), (0.3, 0.3)) for n in (2, 3, 5)),
    *(Cell(f"4 depths × {n} seeds", (n,) * 4, (0.3,) * 4) for n in (2, 3)),
    Cell("3 vs 2 seeds (a failed run)", (3, 2), (0.3, 0.3)),
    Cell("5 vs 2 seeds", (5, 2), (0.3, 0.3)),
    Cell("5 vs 2 seeds, the 2 noisier (5× variance)", (5, 2), (0.3, 0.3 * ROOT5)),
    Cell("3 vs 2 seeds, the 2 noisier (5× variance)", (3, 2), (0.3, 0.3 * ROOT5)),
    *(Cell(f"{n} seeds, deep net 5× variance", (n, n), (0.3, 0.3 * ROOT5)) for n in (2, 3, 5)),
    *(Cell(f"{n} seeds, shallow net 5× variance", (n, n), (0.3 * ROOT5, 0.3)) for n in (2, 3)),
    Cell("4 depths × 3 seeds, shallowest 5× variance", (3,) * 4, (0.3 * ROOT5, 0.3, 0.3, 0.3)),
    Cell("4 depths × 2 seeds, deepest 5× variance", (2,) * 4, (0.3, 0.3, 0.3, 0.3 * ROOT5)),
    *(Cell(f"near 0 % (≈ 5 of 16k wrong; ties), {n} seeds", (n, n), (0.5, 0.5), level=-8.0) for n in (2, 3, 5)),
    Cell("near 0 % (≈ 1 of 16k wrong)", (3, 3), (0.5, 0.5), level=-9.5),
    *(Cell(f"10 % of runs diverge, {n} seeds", (n, n), (0.3, 0.3), diverge=0.1) for n in (2, 3, 5)),
    Cell("few test images (360), 3 seeds", (3, 3), (0.3, 0.3), images=360),
]


def simulate(cell: Cell, gap_sd: float = 0.0, seed: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per depth, (replicates × seeds) error rates in % and their images; the deepest is ``gap_sd`` σ higher."""
    rng = np.random.default_rng(seed)
    x = np.log2(np.asarray(cell.depths, dtype=float))
    truth = cell.level + gap_sd * max(cell.sd) * (x - x[0]) / (x[-1] - x[0])
    errors, images = [], []
    for mean, sd, n in zip(truth, cell.sd, cell.seeds):
        rate = 1 / (1 + np.exp(-rng.normal(mean, sd, size=(REPLICATES, n))))
        error = 100 * rng.binomial(cell.images, rate) / cell.images
        error = np.where(rng.random(error.shape) < cell.diverge, verdict.chance_error("cifar10"), error)
        errors.append(error)
        images.append(np.full(error.shape, cell.images))
    return errors, images


def definite(cell: Cell, errors: list[np.ndarray], images: list[np.ndarray]) -> np.ndarray:
    """Per replicate: did the report's test give a definite verdict (its interval excludes 0)?"""
    logits, floors = zip(*(inference.logit_counts(e, i) for e, i in zip(errors, images)))
    design = inference.summarise(list(logits), list(floors))
    test = inference.contrast(design, inference.trend_weights(np.log2(cell.depths)))
    return test.p() < inference.ALPHA


def rates(cell: Cell) -> tuple[float, float, float]:
    """(false-verdict rate with no difference, power at 2σ, power at 5σ)."""
    return tuple(float(definite(cell, *simulate(cell, gap)).mean()) for gap in (0.0, 2.0, 5.0))


def monte_carlo_error(rate: float) -> float:
    return float(np.sqrt(rate * (1 - rate) / REPLICATES))


@pytest.mark.parametrize("cell", CELLS, ids=[c.name for c in CELLS])
def test_false_verdicts_stay_at_or_below_5_percent(cell):
    rate = float(definite(cell, *simulate(cell)).mean())
    assert rate <= inference.ALPHA, f"{cell.name}: {rate:.2%} false verdicts (± {monte_carlo_error(rate):.2%})"


@pytest.mark.parametrize("cell", [CELLS[1], CELLS[3]], ids=["3 seeds", "4 depths × 2 seeds"])
def test_a_five_sigma_gap_is_usually_found_with_three_seeds_or_four_depths(cell):
    found = float(definite(cell, *simulate(cell, gap_sd=5.0)).mean())
    assert found >= (0.9 if cell.seeds[0] == 3 else 0.3), f"{cell.name}: found in {found:.1%}"


@pytest.mark.parametrize("cell", [CELLS[0], CELLS[5], CELLS[12], CELLS[17]], ids=lambda c: c.name)
def test_the_report_path_decides_as_the_simulation(cell):
    """The DataFrame path the report takes (``judge_depth``) gives the same answer on a sample of replicates."""
    errors, images = simulate(cell, gap_sd=2.0, seed=3)
    expected = definite(cell, errors, images)
    for r in range(40):
        values = pd.DataFrame([{"depth": d, "value": e[r, s], "images": i[r, s]}
                               for d, e, i in zip(cell.depths, errors, images) for s in range(e.shape[1])])
        found = verdict.judge_depth(values, "plain", 100)
        assert (found.comparison.direction != 0) == bool(expected[r]), f"replicate {r}: {found.sentence}"


PAPER_REPLICATES = 4_000


def paper_false_difference_rate(seeds: int, per_run_std: float = 0.16, seed: int = 0) -> float:
    """How often our interval against one published run excludes 0 when both come from the same recipe: our
    seeds and the paper's single run each have the per-run std Table 6 states (ResNet-110: 0.16 pp)."""
    rng = np.random.default_rng(seed)
    ours = 7.0 + rng.normal(0, per_run_std, size=(PAPER_REPLICATES, seeds))
    paper = 7.0 + rng.normal(0, per_run_std, size=PAPER_REPLICATES)
    wrong = [inference.reference_difference(o, [10_000] * seeds, p, per_run_std, 5).direction != 0
             for o, p in zip(ours, paper)]
    return float(np.mean(wrong))


@pytest.mark.parametrize("seeds", [2, 3, 5])
def test_the_paper_comparison_rarely_finds_a_difference_that_is_not_there(seeds):
    rate = paper_false_difference_rate(seeds)
    assert rate <= inference.ALPHA, f"{seeds} seeds: {rate:.2%} false differences from the paper"


def table() -> str:
    """The markdown table of docs/tracking.md."""
    lines = ["| cell | seeds per depth | false verdicts, no difference (± MC error) | found, 2σ gap | found, 5σ gap |",
             "|---|---|---|---|---|"]
    for cell in CELLS:
        size, two, five = rates(cell)
        lines.append(f"| {cell.name} | {'/'.join(map(str, cell.seeds))} | {100 * size:.2f} % "
                     f"(± {100 * monte_carlo_error(size):.2f}) | {100 * two:.1f} % | {100 * five:.1f} % |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
    print("\nagainst one paper run:", ", ".join(f"{n} seeds {100 * paper_false_difference_rate(n):.2f} %"
                                               for n in (2, 3, 5)), f"({PAPER_REPLICATES:,} replicates)")
