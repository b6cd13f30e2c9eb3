"""What an Optuna search logged (``sweeps/regularization.py``), as tables and figures for its report section.

Everything comes from what the search logged to MLflow (docs/tracking.md): each trial run's ``stage``
(search / confirm), ``optuna_trial``, ``candidate``, ``seed`` and ``outcome`` tags, its params and final metrics,
and the parent run's ``search.*`` params. Pure functions turn those DataFrames into tables and Plotly figures;
dashboards/sections/search.py puts them on the page.

Selection is on validation error only: the search views show validation error, and test error appears only in
the confirm stage, which retrains the configurations chosen on validation on fresh seeds. There the one
comparison made on test is the one decided before looking: best found (top1) − default recipe, paired by seed;
the other retrained configurations are listed in their validation order, never ranked on test.

A trial ASHA stopped is read from its ``outcome`` tag (``stopped_early``), never from its MLflow status: sweeps
first closed such runs as KILLED and now close them as FINISHED, and both read the same here.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards import varied_runs
from dashboards.inference import Comparison, paired_difference, signed
from dashboards.varied_runs import MIN_IMPORTANCE_TRIALS
from resnet_core.config import net_name
from tracking.search_params import expected_full_budget, samples_for_full_budget
from tracking.search_params import optuna_distribution, read_search_params

VAL, TEST, TEST_IMAGES = "metrics.val/error", "metrics.test/error", "metrics.test/images"
VALIDATION_ERROR = "final validation error (%)"  # what a search is scored on
STOPPED = "stopped_early"
DEFAULT_TEST_IMAGES = {"digits": 360}  # test images per data set when a run did not log test/images
OTHER_TEST_IMAGES = 10_000  # CIFAR-10/100's test set


def is_search(runs: pd.DataFrame) -> bool:
    """True for an experiment whose runs came from an Optuna search (their ``stage`` tag is ``search``)."""
    return "tags.stage" in runs and runs["tags.stage"].eq("search").any()


def search_settings(sweeps: pd.DataFrame) -> dict:
    """The newest sweep run's ``search.*`` params, decoded by their one schema (tracking/search_params.py)."""
    row = sweeps.iloc[0]
    return read_search_params({c[len("params."):]: row[c] for c in sweeps.columns
                               if c.startswith("params.") and pd.notna(row[c])})


def search_trials(runs: pd.DataFrame, space: dict[str, list]) -> pd.DataFrame:
    """One row per search trial: family, depth, net, number (its Optuna trial), outcome, final validation error,
    last iteration logged, and each searched knob typed (``knob_values``)."""
    trials = runs[runs["tags.stage"].eq("search")].copy()
    trials["net"] = [net_name(f, d) for f, d in zip(trials["family"], trials["depth"])]
    trials["number"] = pd.to_numeric(trials["tags.optuna_trial"]).astype(int)
    trials[VALIDATION_ERROR] = trials[VAL]
    trials = trials.assign(**knob_values(trials, space))
    columns = ["run_id", "name", "family", "depth", "net", "number", "outcome", "last_step", VALIDATION_ERROR, *space]
    return trials[columns].sort_values(["family", "net", "number"]).reset_index(drop=True)  # plain first


def knob_values(runs: pd.DataFrame, space: dict[str, list]) -> dict[str, pd.Series]:
    """Each searched knob of each run from its params, as a float: a choice knob as its position among the
    choices (``data.augment`` True → 0.0, False → 1.0)."""
    values = {}
    for key, (kind, *choices) in space.items():
        raw = runs[f"params.{key}"]
        values[key] = (raw.map({str(v): float(i) for i, v in enumerate(choices)}) if kind == "choice"
                       else pd.to_numeric(raw, errors="coerce").astype(float))
    return values


def test_images(runs: pd.DataFrame) -> pd.Series:
    """The test images each run's error is over: its metric ``test/images`` where logged, else 360 for digits
    (the test split of scikit-learn's 1797 digits) and 10,000 for any other data set (CIFAR's test set)."""
    fallback = runs["dataset"].map(lambda d: DEFAULT_TEST_IMAGES.get(d, OTHER_TEST_IMAGES))
    logged = runs[TEST_IMAGES] if TEST_IMAGES in runs else pd.Series(float("nan"), index=runs.index)
    return logged.fillna(fallback).astype(int)


def confirm_runs(runs: pd.DataFrame, space: dict[str, list]) -> pd.DataFrame:
    """The completed confirm runs: family, net, candidate, seed, test and validation error, test images, the
    search trial it retrains (``optuna_trial``) and each knob (``knob_values``); one run per (net, candidate,
    seed), the newest."""
    confirm = runs[runs["tags.stage"].eq("confirm") & runs["outcome"].eq("completed")]
    confirm = confirm[confirm[TEST].notna()] if TEST in confirm else confirm.iloc[0:0]
    out = pd.DataFrame({
        "family": confirm["family"], "net": [net_name(f, d) for f, d in zip(confirm["family"], confirm["depth"])],
        "candidate": confirm["tags.candidate"], "seed": confirm["seed"].astype("Int64"),
        "test": confirm.get(TEST), "val": confirm.get(VAL), "images": test_images(confirm),
        "optuna_trial": confirm.get("tags.optuna_trial"), "start_time": confirm["start_time"],
        "run_id": confirm["run_id"], **knob_values(confirm, space)})
    out = out.sort_values("start_time").drop_duplicates(["net", "candidate", "seed"], keep="last")
    return out.sort_values(["family", "net", "seed"]).reset_index(drop=True)


@dataclass
class BestVsDefault:
    """One net's best found (top1) − default recipe test error, over the seeds both completed."""

    net: str
    seeds: list[int]  # the paired seeds, ascending
    unpaired: list[int]  # seeds only one of the two completed: left out
    best: list[float]  # test error (%) per paired seed
    default: list[float]
    comparison: Comparison | None  # None with fewer than 2 pairs

    def sentence(self) -> str:
        """The headline: the paired effect with its interval, or why there is none."""
        head = f"{self.net}: best found (chosen on validation) − default recipe:"
        if self.comparison is not None:
            text = f"{head} {signed(self.comparison.effect)} pp test error ({self.comparison.sentence_tail()})"
        elif self.seeds:
            diff = self.best[0] - self.default[0]
            text = (f"{head} {signed(diff)} pp test error on seed {self.seeds[0]} alone: no interval (a paired "
                    f"interval needs both retrained on ≥ 2 seeds)")
        else:
            text = f"{head} not measured (no seed has a completed run of both)"
        if self.unpaired:
            text += f"; seed(s) {', '.join(map(str, self.unpaired))} left out: only one of the two completed"
        return text


def best_vs_default(confirm: pd.DataFrame) -> list[BestVsDefault]:
    """Per net (plain first), top1 − default test error paired by the ``seed`` tag: the same seed means the same
    initialisation and data order, so the pair's difference removes the seed's own luck."""
    found = []
    for net, group in confirm.groupby("net", sort=False):
        best = group[group["candidate"].eq("top1")].set_index("seed")
        default = group[group["candidate"].eq("default")].set_index("seed")
        if best.empty or default.empty:
            continue
        seeds = sorted(set(best.index) & set(default.index))
        unpaired = sorted(set(best.index) ^ set(default.index))
        b, d = best.loc[seeds, "test"].tolist(), default.loc[seeds, "test"].tolist()
        comparison = (paired_difference(d, b, default.loc[seeds, "images"].tolist()) if len(seeds) >= 2 else None)
        found.append(BestVsDefault(net, [int(s) for s in seeds], [int(s) for s in unpaired], b, d, comparison))
    return found


def confirm_table(confirm: pd.DataFrame, trials: pd.DataFrame, space: dict[str, list]) -> pd.DataFrame:
    """Every retrained configuration, per net in its validation rank (top1, top2, ..., then the default recipe):
    its knob values, the search trial and validation error that ranked it, and its test error over the confirm
    seeds. Ordered by validation, never by test."""
    rows = []
    for net, group in confirm.groupby("net", sort=False):
        for candidate, runs in sorted(group.groupby("candidate"), key=lambda c: _order(c[0])):
            rank, first = _rank(candidate), runs.iloc[0]
            trial = trials[trials["net"].eq(net) & trials["number"].astype(str).eq(str(first["optuna_trial"]))]
            rows.append({"net": net, "chosen by validation rank": "default recipe" if rank is None else str(rank),
                         "Optuna trial": "—" if trial.empty else str(int(trial["number"].iloc[0])),
                         **{key: _knob(first[key], space[key]) for key in space},
                         "validation error in the search (%)": "—" if trial.empty else f"{trial[VALIDATION_ERROR].iloc[0]:.2f}",
                         "test error % (mean ± std over seeds)": _pm(runs["test"].mean(), runs["test"].std()),
                         "seeds": ", ".join(str(int(s)) for s in sorted(runs["seed"]))})
    return pd.DataFrame(rows)


def rung_survival(trials: pd.DataFrame, rungs: list[int], iterations: int) -> pd.DataFrame:
    """Per net: how many search trials reached each ASHA rung, and the full budget (their last logged
    iteration at or past it); one column per rung, ``of`` = the net's trials."""
    milestones = [*rungs, iterations] if iterations not in rungs else rungs
    rows = []
    for net, group in trials.groupby("net", sort=False):
        reached = {f"{m:,}" + (" (full)" if m == iterations else ""): int(group["last_step"].ge(m).sum())
                   for m in milestones}
        rows.append({"net": net, **reached, "of": len(group)})
    return pd.DataFrame(rows)


def optimisation_history(trials: pd.DataFrame) -> go.Figure:
    """Final validation error of each search trial in the order Optuna proposed them, one panel per net:
    full-budget trials filled, ASHA-stopped ones hollow at their last value, the best so far as a step line."""
    nets = list(trials["net"].unique())
    fig = make_subplots(rows=1, cols=len(nets), shared_yaxes=True, subplot_titles=nets, horizontal_spacing=0.06)
    for col, net in enumerate(nets, start=1):
        group = trials[trials["net"].eq(net)]
        full = group[group["outcome"].eq("completed")]
        stopped = group[group["outcome"].eq(STOPPED)]
        fig.add_trace(go.Scatter(x=full["number"], y=full[VALIDATION_ERROR], mode="markers", name="full budget",
                                 marker=dict(size=9, color="#1f77b4"), legendgroup="full", showlegend=col == 1,
                                 meta={"net": net, "kind": "full budget"}), row=1, col=col)
        fig.add_trace(go.Scatter(x=stopped["number"], y=stopped[VALIDATION_ERROR], mode="markers",
                                 name="stopped early by ASHA (last value)", legendgroup="stopped",
                                 marker=dict(size=9, color="#9e9e9e", symbol="circle-open"), showlegend=col == 1,
                                 text=[f"stopped at iteration {s:,}" for s in stopped["last_step"]],
                                 meta={"net": net, "kind": "stopped early"}), row=1, col=col)
        fig.add_trace(go.Scatter(x=full["number"], y=full[VALIDATION_ERROR].cummin(), mode="lines", line_shape="hv",
                                 name="best so far (full budget)", line=dict(color="#d62728"), legendgroup="best",
                                 showlegend=col == 1, meta={"net": net, "kind": "best so far"}), row=1, col=col)
        fig.update_xaxes(title_text="Optuna trial", row=1, col=col)
    fig.update_yaxes(title_text=VALIDATION_ERROR, row=1, col=1)
    fig.update_layout(title="Optimisation history", height=400, template="plotly_white",
                      margin=dict(l=60, r=20, t=60, b=50))
    return fig


@dataclass(frozen=True)
class BudgetOutlook:
    """What a search's budget lets importance expect per net: its trials, the full-budget trials ASHA lets
    through on average (tracking/search_params.py, ``expected_full_budget``), and the trials that would expect
    ``MIN_IMPORTANCE_TRIALS`` of them."""

    num_samples: int
    expected: float
    needed: int

    def sentence(self) -> str:
        if self.expected >= MIN_IMPORTANCE_TRIALS:
            return (f"Its budget of {self.num_samples} trials per net expects about {self.expected:.1f} at full "
                    f"budget; this search got fewer.")
        return (f"Its budget of {self.num_samples} trials per net expects only about {self.expected:.1f} at full "
                f"budget; --num-samples {self.needed} would expect {MIN_IMPORTANCE_TRIALS}.")


def budget_outlook(settings: dict) -> BudgetOutlook | None:
    """The outlook of the search ``settings`` (``search_settings``); None where it did not log its budget."""
    if not all(key in settings for key in ("num_samples", "reduction_factor", "rungs")):
        return None
    samples, factor, rungs = int(settings["num_samples"]), float(settings["reduction_factor"]), len(settings["rungs"])
    return BudgetOutlook(samples, expected_full_budget(samples, factor, rungs),
                         samples_for_full_budget(MIN_IMPORTANCE_TRIALS, factor, rungs))


def importance_for(trials: pd.DataFrame, space: dict[str, list], seed: int = 0) -> pd.DataFrame:
    """fANOVA importance of each knob for validation error, over the full-budget trials of ``trials`` only
    (ASHA-stopped ones are not results of their configuration's full budget)."""
    full = trials[trials["outcome"].eq("completed") & trials[VALIDATION_ERROR].notna()]
    # choices as their indices: the columns below hold each choice's index
    distributions = {key: optuna_distribution(kind, range(len(values)) if kind == "choice" else values)
                     for key, (kind, *values) in space.items()}
    table = full.assign(**{key: full[key].astype(int) for key, (kind, *_) in space.items() if kind == "choice"})
    return varied_runs.importance(table, list(space), VALIDATION_ERROR, seed=seed, distributions=distributions)


def _rank(candidate: str) -> int | None:
    """``top3`` → 3; ``default`` → None."""
    return int(candidate[3:]) if candidate.startswith("top") and candidate[3:].isdigit() else None


def _order(candidate: str) -> tuple[int, int]:
    """Validation order: top1, top2, ..., then the default recipe."""
    rank = _rank(candidate)
    return (1, 0) if rank is None else (0, rank)


def _knob(value: float, spec: list) -> str:
    """A knob's value as searched: a choice by its name, a number to 3 significant digits."""
    kind, *values = spec
    if pd.isna(value):
        return "—"
    return str(values[int(value)]) if kind == "choice" else f"{value:.3g}"


def _pm(mean: float, std: float) -> str:
    return "—" if pd.isna(mean) else f"{mean:.2f} ± {std:.2f}" if not pd.isna(std) else f"{mean:.2f}"
