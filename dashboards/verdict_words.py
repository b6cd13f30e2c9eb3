"""The words of every verdict: its labels, the margin, and the sentences' shared clauses (power, "cannot tell").

dashboards/verdict.py (depth, interaction) and dashboards/option_verdicts.py (pairs of shortcut options) say
their results with these, so a label means one thing on every page.
"""

from __future__ import annotations

from dataclasses import replace

from dashboards.inference import MAX_SEEDS, POWER, Comparison

EQUIVALENCE_PP = 1.0  # "no difference larger than X pp": X, in percentage points
DEGRADES, IMPROVES = "degrades", "improves"
NO_DIFFERENCE = f"no difference larger than {EQUIVALENCE_PP:g} pp"
TURNS = "rises and falls"
REMOVES, REDUCES, WORSENS = "removes", "reduces", "worsens"
INCONCLUSIVE = "inconclusive"
ONE_SEED = "inconclusive (one seed)"
NOT_MEASURED = "not measured"
NOUN = {"plain": "plain nets", "residual": "residual nets"}


def label_for(comparison: Comparison, higher: str, lower: str) -> str:
    if comparison.direction:
        return higher if comparison.direction > 0 else lower
    if comparison.within(EQUIVALENCE_PP):
        return NO_DIFFERENCE
    return INCONCLUSIVE


def change_words(pp: float | None, baseline_pct: float) -> str:
    """"a rise of 3.21 pp (to 3.71 %)" — a change in the direction it can happen, with where it ends."""
    if pp is None:
        return "no change within 0–100 %"
    return f"a {'rise' if pp >= 0 else 'fall'} of {abs(pp):.2f} pp (to {baseline_pct + pp:.2f} %)"


def seeds_words(comparison: Comparison) -> str:
    counts = sorted(set(comparison.seeds))
    return f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}–{counts[-1]}"


def design_power(comparison: Comparison, unit: str) -> str:
    """The power of this design, in the sentence's words."""
    return (f"With {seeds_words(comparison)} seeds per {unit}, {change_words(comparison.detectable(), comparison.baseline_pct)}"
            f" is found {100 * POWER:.0f} % of the time at the observed spread.")


def cannot_tell(comparison: Comparison, unit: str) -> str:
    sign = comparison.possible_sign(comparison.shift)
    room = 100 - comparison.baseline_pct if sign > 0 else comparison.baseline_pct
    gap = sign * min(max(abs(comparison.effect), EQUIVALENCE_PP), room)
    needed = comparison.seeds_needed(gap)
    more = f"about {needed} would" if needed else f"more than {MAX_SEEDS} would"
    return (f"{seeds_words(comparison)} seeds per {unit} cannot tell {change_words(gap, comparison.baseline_pct)} from none; "
            f"{more} ({100 * POWER:.0f} % power at the observed spread).")


def css_class(label: str) -> str:
    """A label as an HTML class name."""
    return {NO_DIFFERENCE: "no-difference", ONE_SEED: "one-seed", NOT_MEASURED: "not-measured",
            TURNS: "turns"}.get(label, label)


class Tested:
    """What every verdict shares: its label as a CSS class, and its test's interval at another confidence."""

    @property
    def css(self) -> str:
        return css_class(self.label)

    def at(self, confidence: float):
        """The same verdict with its test's interval at ``confidence`` (a Holm step's)."""
        return replace(self, comparison=self.comparison.at(confidence)) if self.comparison else self
