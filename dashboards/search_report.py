"""The report's section for an experiment with an Optuna search (``sweeps/regularization.py``).

Everything comes from what the search logged to MLflow (docs/tracking.md): each trial run's ``stage``
(search / confirm), ``optuna_trial``, ``candidate`` and ``outcome`` tags, its params and final metrics, and the
parent run's ``search.*`` params. Pure functions turn those DataFrames into tables and Plotly figures;
``search_section`` puts them on the page with the report's own helpers (dashboards/report.py).

Selection is on validation error only: the search views show validation error, and test error appears only in
the confirm stage's table, which retrains the chosen configurations on fresh seeds.
"""

from __future__ import annotations

import json

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboards import figures, search
from dashboards.loader import ExperimentData
from dashboards.report import _e, _figure, _section, _table
from dashboards.stats import net_label

VAL, TEST = "metrics.val/error", "metrics.test/error"
TARGET = "final validation error (%)"
MIN_IMPORTANCE_TRIALS = 4  # fewer full-budget trials than this: no importance is shown


def is_search(runs: pd.DataFrame) -> bool:
    """True for an experiment whose runs came from an Optuna search (their ``stage`` tag is ``search``)."""
    return "tags.stage" in runs and runs["tags.stage"].eq("search").any()


def search_settings(sweeps: pd.DataFrame) -> dict:
    """The newest sweep run's ``search.*`` params, decoded: space, rungs, num_samples, ..."""
    row = sweeps.iloc[0]
    settings = {c[len("params.search."):]: row[c] for c in sweeps.columns
                if c.startswith("params.search.") and pd.notna(row[c])}
    for key in ("space", "rungs", "num_samples", "search_seed", "grace_period", "reduction_factor", "top_k",
                "confirm_seeds"):
        if key in settings:
            settings[key] = json.loads(settings[key])
    return settings


def search_trials(runs: pd.DataFrame, space: dict[str, list]) -> pd.DataFrame:
    """One row per search trial: net, number (its Optuna trial), outcome, final validation error, last
    iteration logged, and each searched knob typed (a choice knob as its position among the choices)."""
    trials = runs[runs["tags.stage"].eq("search")].copy()
    trials["net"] = [net_label(f, d) for f, d in zip(trials["family"], trials["depth"])]
    trials["number"] = pd.to_numeric(trials["tags.optuna_trial"]).astype(int)
    trials[TARGET] = trials[VAL]
    for key, (kind, *values) in space.items():
        raw = trials[f"params.{key}"]
        trials[key] = (raw.map({str(v): float(i) for i, v in enumerate(values)}) if kind == "choice"
                       else pd.to_numeric(raw, errors="coerce").astype(float))
    columns = ["run_id", "name", "family", "net", "number", "outcome", "last_step", TARGET, *space]
    return trials[columns].sort_values(["family", "net", "number"]).reset_index(drop=True)  # plain first


def confirm_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """Per net and candidate (top1..k, default) of the confirm stage: test and validation error mean, std, n
    over the completed seeds."""
    confirm = runs[runs["tags.stage"].eq("confirm") & runs["outcome"].eq("completed")].copy()
    confirm["net"] = [net_label(f, d) for f, d in zip(confirm["family"], confirm["depth"])]
    grouped = confirm.groupby(["family", "net", "tags.candidate"])
    summary = pd.DataFrame({"test_mean": grouped[TEST].mean(), "test_std": grouped[TEST].std(),
                            "val_mean": grouped[VAL].mean(), "val_std": grouped[VAL].std(),
                            "n": grouped[TEST].count()}).reset_index().rename(columns={"tags.candidate": "candidate"})
    summary["order"] = summary["candidate"].map(lambda c: (c == "default", c))
    return summary.sort_values(["family", "net", "order"]).drop(columns=["order", "family"]).reset_index(drop=True)


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
        stopped = group[group["outcome"].eq("stopped_early")]
        fig.add_trace(go.Scatter(x=full["number"], y=full[TARGET], mode="markers", name="full budget",
                                 marker=dict(size=9, color="#1f77b4"), legendgroup="full", showlegend=col == 1,
                                 meta={"net": net, "kind": "full budget"}), row=1, col=col)
        fig.add_trace(go.Scatter(x=stopped["number"], y=stopped[TARGET], mode="markers",
                                 name="stopped early by ASHA (last value)", legendgroup="stopped",
                                 marker=dict(size=9, color="#9e9e9e", symbol="circle-open"), showlegend=col == 1,
                                 text=[f"stopped at iteration {s:,}" for s in stopped["last_step"]],
                                 meta={"net": net, "kind": "stopped early"}), row=1, col=col)
        fig.add_trace(go.Scatter(x=full["number"], y=full[TARGET].cummin(), mode="lines", line_shape="hv",
                                 name="best so far (full budget)", line=dict(color="#d62728"), legendgroup="best",
                                 showlegend=col == 1, meta={"net": net, "kind": "best so far"}), row=1, col=col)
        fig.update_xaxes(title_text="Optuna trial", row=1, col=col)
    fig.update_yaxes(title_text=TARGET, row=1, col=1)
    fig.update_layout(title="Optimisation history", height=400, template="plotly_white",
                      margin=dict(l=60, r=20, t=60, b=50))
    return fig


def importance_for(trials: pd.DataFrame, space: dict[str, list], seed: int = 0) -> pd.DataFrame:
    """fANOVA importance of each knob for validation error, over the full-budget trials of ``trials`` only
    (ASHA-stopped ones are not results of their configuration's full budget)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    full = trials[trials["outcome"].eq("completed") & trials[TARGET].notna()]
    distributions = {key: (CategoricalDistribution(list(range(len(values)))) if kind == "choice" else
                           FloatDistribution(values[0], values[1], log=kind == "loguniform"))
                     for key, (kind, *values) in space.items()}
    table = full.assign(**{key: full[key].astype(int) for key, (kind, *_) in space.items() if kind == "choice"})
    return search.importance(table, list(space), TARGET, seed=seed, distributions=distributions)


def search_section(data: ExperimentData) -> str:
    """The report's "Regularisation search" section (empty when the experiment has no search)."""
    if not is_search(data.runs) or data.sweeps.empty:
        return ""
    settings = search_settings(data.sweeps)
    space = settings.get("space", {})
    trials = search_trials(data.runs, space)
    iterations = int(data.runs["iterations"].dropna().max())
    parts = [_intro(settings, trials), _confirm_part(data.runs),
             _figure(optimisation_history(trials), "fig-search-history"),
             '<p class="note">ASHA rungs: search trials that reached each rung (their last logged iteration at or '
             'past it), of the net\'s trials.</p>',
             _table(rung_survival(trials, settings.get("rungs", []), iterations))]
    full = trials[trials["outcome"].eq("completed")]
    if not full.empty:
        table = full.assign(**{"model.residual": full["net"].str.startswith("ResNet").astype(float)})
        dims = [*space, "model.residual"] if table["net"].nunique() > 1 else list(space)
        parts.append(_figure(figures.search_parallel_coordinates(table, dims, TARGET), "fig-search-parcoords"))
    parts += [_importance_part(trials[trials["net"].eq(net)], space, net) for net in trials["net"].unique()]
    return _section("search", "Regularisation search", *parts)


def _intro(settings: dict, trials: pd.DataFrame) -> str:
    space = "; ".join(f"{_e(key)}: {_e(kind)} {_e(', '.join(str(v) for v in values))}"
                      for key, (kind, *values) in settings.get("space", {}).items())
    counts = trials.groupby("net", sort=False)["outcome"].value_counts().unstack(fill_value=0)
    per_net = "; ".join(f"{_e(net)}: {row.get('completed', 0)} at full budget, {row.get('stopped_early', 0)} "
                        f"stopped early by ASHA, {sum(row) - row.get('completed', 0) - row.get('stopped_early', 0)} "
                        f"other" for net, row in counts.iterrows())
    return (f'<p class="note">Searched per net with the same budget and TPE seed '
            f'({_e(settings.get("num_samples"))} trials each, seed {_e(settings.get("search_seed"))}; ASHA grace '
            f'period {_e(settings.get("grace_period"))} iterations, reduction factor '
            f'{_e(settings.get("reduction_factor"))}): {space}. Objective: validation error at the last iteration; '
            f'trials ASHA stopped are recorded as such (Optuna PRUNED, MLflow <code>outcome=stopped_early</code>), '
            f'not as results. {per_net}.</p>')


def _confirm_part(runs: pd.DataFrame) -> str:
    summary = confirm_summary(runs)
    if summary.empty:
        return '<p class="note">The confirm stage has no completed runs yet.</p>'
    headline = []
    for net, group in summary.groupby("net", sort=False):
        best, default = group[group["candidate"].eq("top1")], group[group["candidate"].eq("default")]
        if not best.empty and not default.empty:
            b, d = best.iloc[0], default.iloc[0]
            headline.append(f"<li>{_e(net)}: best found {_pm(b.test_mean, b.test_std)} vs default recipe "
                            f"{_pm(d.test_mean, d.test_std)} test error (%, mean ± std over {int(b.n)} and "
                            f"{int(d.n)} seeds)</li>")
    shown = pd.DataFrame({"net": summary["net"], "configuration": summary["candidate"],
                          "test error (%)": [_pm(m, s) for m, s in zip(summary["test_mean"], summary["test_std"])],
                          "validation error (%)": [_pm(m, s) for m, s in zip(summary["val_mean"], summary["val_std"])],
                          "seeds": summary["n"]})
    return ('<h3>Confirm stage: best found vs default recipe</h3><ul class="verdicts">' + "".join(headline) +
            '</ul><p class="note">Each net\'s top configurations by validation error of full-budget search trials '
            '(top1 = best), and its default recipe, retrained at full budget on seeds 1..N (the search used seed '
            '0); test error is looked at only here.</p>' + _table(shown))


def _importance_part(trials: pd.DataFrame, space: dict[str, list], net: str) -> str:
    used = int(trials["outcome"].eq("completed").sum())
    left_out = len(trials) - used
    note = (f"Parameter importance for {_e(net)} (fANOVA): computed over the {used} full-budget trials only; "
            f"{left_out} trial(s) stopped early or failed are left out.")
    if used < MIN_IMPORTANCE_TRIALS:
        return f'<p class="note">{note} Too few for an importance estimate (needs {MIN_IMPORTANCE_TRIALS}).</p>'
    try:
        scores = importance_for(trials, space)
    except Exception as error:  # importance is a nicety; a degenerate search must not sink the report
        return f'<p class="note">{note} Unavailable: {_e(error)}</p>'
    return (f'<p class="note">{note}</p>'
            + _figure(figures.parameter_importance(scores, f"{TARGET}, {net}"), f"fig-importance-{_e(net)}"))


def _pm(mean: float, std: float) -> str:
    return "—" if pd.isna(mean) else f"{mean:.2f} ± {std:.2f}" if not pd.isna(std) else f"{mean:.2f}"
