"""The degradation verdict (the paper's §1 / Fig. 6 claim), computed from the logged training error.

Rule, per family: compare the shallowest and the deepest depth by **training** error at a matched iteration
(the last iteration every compared run reached, so a run that stopped early is not compared with one that
trained longer). gap = mean(deepest) − mean(shallowest) over seeds; spread = the larger of the two seed
ranges (max − min). If |gap| ≤ spread the verdict is *inconclusive*; otherwise a positive gap means the
family *degrades* with depth and a negative one that it *improves*. Failed and diverged runs are excluded.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from dashboards.stats import FAMILIES, comparison_runs, matched_iteration, spread, value_at

METRIC = "train/error"
_NOUN = {"plain": "plain nets", "residual": "residual nets"}


@dataclass
class Verdict:
    """One family's verdict and the numbers behind it."""

    family: str
    label: str  # "degrades", "improves", "inconclusive" or "not measured"
    sentence: str
    shallow: int | None = None
    deep: int | None = None
    iteration: int | None = None
    gap: float | None = None  # percentage points, deep − shallow
    spread: float | None = None  # percentage points, the larger seed range
    seeds: int | None = None  # the smaller seed count of the two depths


def depth_table(history: pd.DataFrame, runs: pd.DataFrame, family: str) -> tuple[pd.DataFrame, int | None]:
    """Training error per depth at the family's matched iteration: depth, mean, min, max, std, n."""
    members = comparison_runs(runs)
    members = members[members["family"].eq(family)]
    iteration = matched_iteration(history, members["run_id"], METRIC)
    if iteration is None:
        return pd.DataFrame(columns=["depth", "mean", "min", "max", "std", "n"]), None
    values = value_at(history, members["run_id"], METRIC, iteration).rename("train_error").reset_index()
    values = values.merge(members[["run_id", "depth"]], on="run_id")
    return spread(values, ["depth"], "train_error").sort_values("depth").reset_index(drop=True), iteration


def decide(gap: float, spread_pp: float) -> str:
    """degrades / improves / inconclusive from a gap and a spread (both in percentage points)."""
    if abs(gap) <= spread_pp:
        return "inconclusive"
    return "degrades" if gap > 0 else "improves"


def family_verdict(history: pd.DataFrame, runs: pd.DataFrame, family: str) -> Verdict:
    """The verdict for one family (see the module docstring for the rule)."""
    table, iteration = depth_table(history, runs, family)
    noun = _NOUN.get(family, f"{family} nets")
    if len(table) < 2:
        depths = ", ".join(str(int(d)) for d in table["depth"]) or "none"
        return Verdict(family, "not measured", f"{noun}: not measured — needs two depths with completed runs "
                                               f"(have: {depths}).")
    lo, hi = table.iloc[0], table.iloc[-1]
    gap = float(hi["mean"] - lo["mean"])
    spread_pp = float(max(lo["max"] - lo["min"], hi["max"] - hi["min"]))
    seeds = int(min(lo["n"], hi["n"]))
    label = decide(gap, spread_pp)
    shallow, deep = int(lo["depth"]), int(hi["depth"])
    change = f"training error {_signed(gap)} pp from {shallow} to {deep} layers"
    basis = f"at iteration {iteration:,}, mean of {seeds} seed{'s' if seeds != 1 else ''}"
    if seeds < 2:
        basis += "; one seed, so no spread measured"
    else:
        basis += f"; seed range up to {spread_pp:.2f} pp"
    if label == "inconclusive":
        sentence = f"{noun}: inconclusive — {change}, within the seed range ({basis})."
    else:
        sentence = f"{noun} {'degrade' if label == 'degrades' else 'improve'}: {change} ({basis})."
    return Verdict(family, label, sentence, shallow, deep, iteration, gap, spread_pp, seeds)


def verdicts(history: pd.DataFrame, runs: pd.DataFrame) -> tuple[pd.DataFrame, list[Verdict]]:
    """Per-depth training-error table for both families and one verdict per family present."""
    tables, found = [], []
    for family in FAMILIES:
        if not runs["family"].eq(family).any():
            continue
        table, iteration = depth_table(history, runs, family)
        tables.append(table.assign(family=family, iteration=iteration))
        found.append(family_verdict(history, runs, family))
    columns = ["family", "depth", "iteration", "mean", "min", "max", "std", "n"]
    table = pd.concat(tables, ignore_index=True)[columns] if tables else pd.DataFrame(columns=columns)
    return table, found


def _signed(value: float) -> str:
    """+1.23 / −1.23 with a real minus sign."""
    return f"+{value:.2f}" if value >= 0 else f"\u2212{abs(value):.2f}"
