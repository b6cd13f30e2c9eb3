"""Runs that vary params (any grid or search over TrainConfig fields, beside the Optuna search of
optuna_search.py): which numeric params varied, and how much each one mattered to the final test error.

Importance is fANOVA (optuna's evaluator) on a study rebuilt from the finished runs: it fits a random
forest to (params → final test error) and reports the fraction of variance each param explains. It is computed
per net (family × depth × shortcut), over that net's runs only, and only for a net with at least
``MIN_IMPORTANCE_TRIALS`` of them: pooled over nets, the forest would hand the nets' own differences to whichever
param happens to differ between them, and below that count it hands noise to params without effect. The views
themselves (parallel coordinates) appear from ``MIN_RUNS`` runs up.
"""

from __future__ import annotations

import math

import pandas as pd

from dashboards.stats import usable, varied_params
from resnet_core.config import net_name

MIN_RUNS = 8  # varied runs from which the search views (not the importances) appear
# fANOVA fits a random forest to (knobs → error) and splits the variance it explains among the knobs; normalised,
# the shares always sum to 1, so with few trials noise is handed out as "importance". Simulated on the
# regularisation space (4 knobs drawn at random, only dropout matters, its effect over its range 3 or 5 times the
# seed noise; 100 experiments per size), the knob without effect that fANOVA ranks highest gets a median share of
# 30–32 % at 5 trials, 13–22 % at 10 and 5–13 % at 20, and the knob that matters comes first in 53–69 %, 76–93 %
# and 97–100 % of experiments. Below 20 trials of one net (full-budget ones, in a search) the bars too often rank
# noise. The search presets' budgets are sized against this (sweeps/regularization.py).
MIN_IMPORTANCE_TRIALS = 20
TEST_ERROR = "metrics.test/error"  # what these views score: for looking only, never for selecting
_NET = ["family", "depth", "shortcut"]


def varied_runs_view(runs: pd.DataFrame, target: str = TEST_ERROR) -> tuple[pd.DataFrame, list[str]]:
    """The runs of nets whose params varied, and the varied params: (table, params).

    Only nets (family × depth × shortcut) in which some numeric param was varied take part, so a depth grid
    run beside the search does not pass as a search point. The table has run_id, name, net, each param as
    a float under its bare key (``optim.lr``), and the target; runs without a finite target are dropped. ``net``
    names family, depth and (where not the default A) shortcut: one net, one name.
    When the searched nets differ in depth, ``model.depth`` becomes a dimension too.
    """
    params = varied_params(runs)
    table = runs[usable(runs)].copy()
    if not params or target not in table.columns:
        return table.iloc[0:0], []
    for param in params:
        table[param] = pd.to_numeric(table[f"params.{param}"], errors="coerce").astype(float)
    net_keys = table[_NET].astype(str).agg("|".join, axis=1)
    varied_nets = {net for net, rows in table.groupby(net_keys) if rows[params].nunique().max() > 1}
    table = table[net_keys.isin(varied_nets)]
    dims = [p for p in params if table[p].nunique() > 1]
    if table["depth"].nunique() > 1:
        table["model.depth"] = table["depth"].astype(float)
        dims.append("model.depth")
    shortcuts = [s if isinstance(s, str) else "A" for s in table["shortcut"]]  # a run without the tag: the default
    table = table.assign(net=[net_name(f, d, s) for f, d, s in zip(table["family"], table["depth"], shortcuts)])
    finite = table[target].map(lambda v: isinstance(v, float) and math.isfinite(v))
    return table.loc[finite, ["run_id", "name", "net", *dims, target]].reset_index(drop=True), dims


def has_varied_runs(runs: pd.DataFrame) -> bool:
    """True when enough usable runs vary numeric params to show the search views."""
    table, params = varied_runs_view(runs)
    return bool(params) and len(table) >= MIN_RUNS


def importance(table: pd.DataFrame, params: list[str], target: str = TEST_ERROR, seed: int = 0,
               distributions: dict | None = None) -> pd.DataFrame:
    """fANOVA importance of each param for ``target``: DataFrame param, importance (sums to 1).

    ``distributions``: each param's Optuna distribution, as searched; by default a float range over the values
    seen (log-scaled when they span more than a factor of 20).
    """
    import optuna  # heavy; only reports with a search pay for it
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if distributions is None:
        distributions = {}
        for column in params:
            low, high = float(table[column].min()), float(table[column].max())
            distributions[column] = FloatDistribution(low, high, log=low > 0 and high / low > 20)
    typed = {c: (lambda v: v) if isinstance(distributions[c], CategoricalDistribution) else float for c in params}
    trials = [optuna.trial.create_trial(params={c: typed[c](row[c]) for c in params}, distributions=distributions,
                                        value=float(row[target]))
              for _, row in table.iterrows()]
    study = optuna.create_study(direction="minimize")
    study.add_trials(trials)
    scores = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed), normalize=True)
    return pd.DataFrame({"param": list(scores), "importance": [float(v) for v in scores.values()]})


def per_net(table: pd.DataFrame, params: list[str]) -> dict[str, tuple[pd.DataFrame, list[str]]]:
    """Each net of ``table`` (a ``varied_runs_view``), by name: (its runs, the params varied among them): what an
    importance may be computed over, never pooled across nets. Between nets the net itself moves the error, and a
    forest over pooled runs would credit that to whichever param differed between them (``model.depth`` too,
    which is constant within a net and so never among a net's params)."""
    return {net: (rows, [p for p in params if p != "model.depth" and rows[p].nunique() > 1])
            for net, rows in table.groupby("net", sort=True)}
