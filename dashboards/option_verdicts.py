"""Pairs of groups judged against each other — the shortcut options A / B / C at one depth — and every verdict a
page shows, corrected per question (``page_verdicts``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from itertools import combinations

import numpy as np
import pandas as pd

from dashboards.inference import ALPHA, Comparison, holm_levels, signed
from dashboards.stats import like_for_like
from dashboards.verdict import (SHORTCUT_METRIC, Verdict, _comparison, _diverged_like,
                                values_at_matched_iteration, verdicts)
from dashboards.verdict_words import (INCONCLUSIVE, ONE_SEED, Tested, cannot_tell, design_power, label_for)
from resnet_core.config import net_name


@dataclass(frozen=True)
class PairVerdict(Tested):
    """One pair of groups (e.g. shortcut options B vs A at one depth) and what the test says."""

    head: str  # "residual-20, shortcut B vs A"
    what: str  # "test error"
    comparison: Comparison | None = None
    iteration: int | None = None
    gap: float | None = None  # without a test: the raw gap (pp)
    single: str = ""  # without a test: which group has one seed

    @property
    def label(self) -> str:
        return ONE_SEED if self.comparison is None else label_for(self.comparison, "higher", "lower")

    @property
    def sentence(self) -> str:
        c = self.comparison
        if c is None:
            return (f"{self.head}: {ONE_SEED} — {self.what} {signed(self.gap)} pp, but {self.single} has one seed, "
                    f"so its noise is unknown.")
        result = f"{self.label} {self.what}" if self.label in ("higher", "lower") else self.label
        at = f"; at iteration {self.iteration:,}" if self.iteration is not None else ""
        tail = cannot_tell(c, "option") if self.label == INCONCLUSIVE else design_power(c, "option")
        return f"{self.head}: {result} — {signed(c.effect)} pp ({c.sentence_tail('seeds per option')}{at}). {tail}"


def judge_pairs(values: pd.DataFrame, group: str, value: str = "value", subject: str = "",
                what: str = "error", iteration: int | None = None) -> list[PairVerdict]:
    """A verdict for every pair of groups (second against first), the variance pooled over every group with
    ≥ 2 seeds (each at 95 %; ``page_verdicts`` corrects a page's verdicts together)."""
    values = values.dropna(subset=[group, value])
    keys = sorted(values[group].unique())
    counts = values.groupby(group)[value].count()
    testable = [k for k in keys if counts.get(k, 0) >= 2]
    out = []
    for a, b in combinations(keys, 2):
        head = f"{subject}{group} {b} vs {a}"
        if a in testable and b in testable:
            weights = np.array([{a: -1.0, b: 1.0}.get(k, 0.0) for k in testable])
            baseline = np.array([1.0 if k == a else 0.0 for k in testable])
            comparison = _comparison(values, group, value, testable, "difference", weights, baseline,
                                     fresh_draws=False)
            out.append(PairVerdict(head, what, replace(comparison, groups=(a, b)), iteration))
            continue
        single = ", ".join(f"{group} {k}" for k in (a, b) if counts.get(k, 0) < 2)
        gap = float(values.loc[values[group].eq(b), value].mean() - values.loc[values[group].eq(a), value].mean())
        out.append(PairVerdict(head, what, None, iteration, gap, single))
    return out


def shortcut_verdicts(history: pd.DataFrame, runs: pd.DataFrame) -> dict[int, list[PairVerdict]]:
    """Per depth with ≥ 2 shortcut options: pairwise verdicts on test error at the matched iteration."""
    table = like_for_like(runs)
    residual = table[table["family"].eq("residual") & table["shortcut"].notna() & table["depth"].notna()]
    out = {}
    for depth, members in residual.groupby("depth"):
        if members["shortcut"].nunique() < 2:
            continue
        values, iteration = values_at_matched_iteration(history, members, SHORTCUT_METRIC, ["shortcut"],
                                                        _diverged_like(runs, members))
        if iteration is not None:
            out[int(depth)] = judge_pairs(values, "shortcut", subject=f"{net_name('residual', depth)}, ", what="test error",
                                          iteration=iteration)
    return out


# ----------------------------------------------------------------------------------- a page's verdicts

def page_verdicts(history: pd.DataFrame, runs: pd.DataFrame, depth: bool = True, shortcuts: bool = True
                  ) -> tuple[pd.DataFrame, list[Verdict], dict[int, list[PairVerdict]], int]:
    """Every verdict a page shows: (depth table, depth verdicts, shortcut verdicts, the number of shortcut tests).

    Tests are corrected per question. Each family's depth verdict answers its own question ("does this family's
    training error change with depth?") at 95 %; the pairs of shortcut options, at every depth on the page,
    answer one question ("do the options differ?") and are Holm-corrected together.
    """
    table, found = verdicts(history, runs) if depth else (pd.DataFrame(), [])
    pairs = shortcut_verdicts(history, runs) if shortcuts else {}
    tested = [p for ps in pairs.values() for p in ps if p.comparison is not None]
    levels = dict(zip(map(id, tested), holm_levels([p.comparison.p for p in tested])))
    pairs = {d: [p.at(levels[id(p)]) if id(p) in levels else p for p in ps] for d, ps in pairs.items()}
    return table, found, pairs, len(tested)


def holm_note(tests: int) -> str:
    """How the page's shortcut verdicts were corrected, in one sentence."""
    if tests < 2:
        return "One test of the options: its interval is at 95 %."
    return (f"Holm's correction over all {tests} pairs of options on this page: each interval is drawn at its Holm "
            f"step's level (from {100 * (1 - ALPHA / tests):.2f} % up to 95 %), so a verdict and its interval agree.")
