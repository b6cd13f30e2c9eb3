"""The search section: an Optuna search's trials, ASHA rungs, confirm stage and importances
(dashboards/optuna_search.py), or, for runs that merely vary params, their views over test error
(dashboards/varied_runs.py, for looking only). Importance is per net and only from ``MIN_IMPORTANCE_TRIALS``
full-budget trials (runs) of that net; below it the section says how many the net got, and for a search what its
budget expected."""

from __future__ import annotations

import pandas as pd

from dashboards import figures, varied_runs
from dashboards.html import escape, figure, section, table
from dashboards.loader import ExperimentData
from dashboards.optuna_search import (STOPPED, VALIDATION_ERROR, BudgetOutlook, best_vs_default, budget_outlook,
                                      confirm_runs, confirm_table, importance_for, is_search, optimisation_history,
                                      rung_survival, search_settings, search_trials)
from dashboards.varied_runs import MIN_IMPORTANCE_TRIALS


def render(data: ExperimentData) -> str:
    """An Optuna search's section, else the views of runs that vary params, else nothing."""
    if is_search(data.runs) and not data.sweeps.empty:
        return _optuna_search(data)
    if not varied_runs.has_varied_runs(data.runs):
        return ""
    rows, params = varied_runs.varied_runs_view(data.runs)
    target = "final test error (%)"
    rows = rows.rename(columns={varied_runs.TEST_ERROR: target})
    nets = ", ".join(f"{escape(net)} ({n} runs)" for net, n in rows["net"].value_counts().sort_index().items())
    parts = [f'<p class="note">Nets in which {", ".join(escape(p) for p in params)} were varied: {nets}. Target: '
             f'final test error (%). Choosing settings by test error is for looking only — select on validation.</p>',
             figure(figures.search_parallel_coordinates(rows, params, target), "fig-parcoords")]
    for net, (net_rows, varied) in varied_runs.per_net(rows, params).items():
        parts.append(_varied_importance_part(net_rows, varied, net, target))
    return section("search", "Regularisation search", *parts)


def _varied_importance_part(rows: pd.DataFrame, params: list[str], net: str, target: str) -> str:
    """One net's importance over its own runs (never pooled across nets), or why there is none."""
    note = (f"Parameter importance for {escape(net)} (fANOVA, {escape(target)}, for looking only) over its "
            f"{len(rows)} runs; runs of other nets are not pooled in, as the net itself would pass for a param.")
    if len(rows) < MIN_IMPORTANCE_TRIALS:
        return (f'<p class="note importance-note">{note} Too few for an importance estimate: it needs at least '
                f'{MIN_IMPORTANCE_TRIALS} runs of one net ({MIN_IMPORTANCE_TRIALS - len(rows)} more); with fewer, '
                f'fANOVA hands much of the noise to params without effect.</p>')
    if len(params) < 2:
        return (f'<p class="note importance-note">{note} Only {escape(", ".join(params) or "no param")} varied '
                f'among them: nothing to share the variance with.</p>')
    try:
        scores = varied_runs.importance(rows, params, target)
    except Exception as error:  # importance is a nicety; a degenerate search must not sink the report
        return f'<p class="note importance-note">{note} Unavailable: {escape(error)}</p>'
    return (f'<p class="note importance-note">{note}</p>'
            + figure(figures.parameter_importance(scores, f"{target}, {net}"),
                     f"fig-importance-{escape(net.replace(' ', '-'))}"))  # an id has no spaces: residual-20-B


def _optuna_search(data: ExperimentData) -> str:
    """The section of an Optuna search: its trials, ASHA rungs, confirm stage and importances."""
    settings = search_settings(data.sweeps)
    space = settings.get("space", {})
    trials = search_trials(data.runs, space)
    iterations = int(data.runs["iterations"].dropna().max())
    parts = [_intro(settings, trials), _confirm_part(data.runs, trials, space),
             figure(optimisation_history(trials), "fig-search-history"),
             '<p class="note">ASHA rungs: search trials that reached each rung (their last logged iteration at or '
             'past it), of the net\'s trials.</p>',
             table(rung_survival(trials, settings.get("rungs", []), iterations))]
    outlook = budget_outlook(settings)
    for (family, depth, net), group in trials.groupby(["family", "depth", "net"], sort=False):
        parts += [_parcoords_part(group, space, net, f"fig-search-parcoords-{family}-{int(depth)}"),
                  _importance_part(group, space, net, outlook)]
    return section("search", "Regularisation search", *parts)


def _intro(settings: dict, trials: pd.DataFrame) -> str:
    space = "; ".join(f"{escape(key)}: {escape(kind)} {escape(', '.join(str(v) for v in values))}"
                      for key, (kind, *values) in settings.get("space", {}).items())
    per_net = "; ".join(f"{escape(net)}: {full} at full budget, {stopped} stopped early by ASHA, {other} other"
                        for net, (full, stopped, other) in _outcome_counts(trials).items())
    return (f'<p class="note">Searched per net with the same budget and TPE seed '
            f'({escape(settings.get("num_samples"))} trials each, seed {escape(settings.get("search_seed"))}; ASHA grace '
            f'period {escape(settings.get("grace_period"))} iterations, reduction factor '
            f'{escape(settings.get("reduction_factor"))}): {space}. Objective: validation error at the last iteration; '
            f'trials ASHA stopped are recorded as such (Optuna PRUNED, MLflow <code>outcome=stopped_early</code>), '
            f'not as results. {per_net}.</p>' + _rungs_note(settings))


def _rungs_note(settings: dict) -> str:
    """Where ASHA compares trials, beside the lr schedule's drops (older searches did not log the drops)."""
    if "rung_milestones" not in settings:
        return ('<p class="note" id="search-rungs">This search did not log its lr milestones per rung, so whether '
                'its ASHA rungs came after the last lr drop cannot be told from its record.</p>')
    rungs = "; ".join(f"rung at iteration {int(rung):,}, after the lr drops at "
                      f"{', '.join(f'{m:,}' for m in drops) or 'none'}"
                      for rung, drops in settings["rung_milestones"].items())
    return (f'<p class="note" id="search-rungs">Every trial trains the full lr schedule (drops at '
            f'{", ".join(f"{m:,}" for m in settings.get("lr_milestones", []))}), the one the confirm stage '
            f'retrains, and ASHA compares trials only after its last drop: {rungs}. Trials are never judged at a '
            f'learning rate they do not finish with; what ASHA saves is the tail of training after the rung.</p>')


def _outcome_counts(trials: pd.DataFrame) -> dict[str, tuple[int, int, int]]:
    """Per net: (full-budget trials, trials ASHA stopped, others such as failed), read from the outcome tag."""
    counts = {}
    for net, group in trials.groupby("net", sort=False):
        full, stopped = int(group["outcome"].eq("completed").sum()), int(group["outcome"].eq(STOPPED).sum())
        counts[net] = (full, stopped, len(group) - full - stopped)
    return counts


def _confirm_part(runs: pd.DataFrame, trials: pd.DataFrame, space: dict[str, list]) -> str:
    confirm = confirm_runs(runs, space)
    if confirm.empty:
        return '<p class="note">The confirm stage has no completed runs yet.</p>'
    headline = "".join(f'<li class="confirm-headline">{escape(found.sentence())}</li>'
                       for found in best_vs_default(confirm))
    return ('<h3>Confirm stage: best found vs default recipe</h3>'
            + (f'<ul class="verdicts confirm">{headline}</ul>' if headline else "")
            + '<p class="note">Each net\'s configurations ranked best by validation error among its full-budget '
              'search trials (top1 = chosen), and its default recipe, retrained at full budget on fresh seeds (the '
              'search used seed 0). Test error is looked at only here, and the one comparison on it is the one '
              'fixed in advance: the chosen configuration − the default recipe, paired by seed (the same seed '
              'is the same initialisation and data order). The table lists every retrained configuration in its '
              'validation rank; it is not ranked by test error, and choosing among its rows by test error would '
              'select on the test set.</p>'
            + table(confirm_table(confirm, trials, space)))


def _parcoords_part(trials: pd.DataFrame, space: dict[str, list], net: str, div_id: str) -> str:
    full = trials[trials["outcome"].eq("completed") & trials[VALIDATION_ERROR].notna()]
    if full.empty:
        return ""
    choices = {key: [str(v) for v in values] for key, (kind, *values) in space.items() if kind == "choice"}
    log_scale = {key for key, (kind, *_) in space.items() if kind == "loguniform"}
    fig = figures.search_parallel_coordinates(full, list(space), VALIDATION_ERROR, title=f"{net}: knobs vs {VALIDATION_ERROR}",
                                              choices=choices, log_scale=log_scale)
    return figure(fig, div_id)


def _importance_part(trials: pd.DataFrame, space: dict[str, list], net: str, outlook: BudgetOutlook | None) -> str:
    used = int(trials["outcome"].eq("completed").sum())
    stopped = int(trials["outcome"].eq(STOPPED).sum())
    other = len(trials) - used - stopped
    others = f"; {other} failed or diverged are left out too" if other else ""
    note = (f"Parameter importance for {escape(net)} (fANOVA) over {used} full-budget trials; {stopped} trials stopped "
            f"early by ASHA are left out{others} — importance covers survivors only.")
    if used < MIN_IMPORTANCE_TRIALS:
        return (f'<p class="note importance-note">{note} Too few for an importance estimate: it needs at least '
                f'{MIN_IMPORTANCE_TRIALS} full-budget trials per net ({MIN_IMPORTANCE_TRIALS - used} more); with '
                f'fewer, fANOVA hands much of the noise to knobs without effect.'
                + (f' {escape(outlook.sentence())}' if outlook else '') + '</p>')
    try:
        scores = importance_for(trials, space)
    except Exception as error:  # importance is a nicety; a degenerate search must not sink the report
        return f'<p class="note importance-note">{note} Unavailable: {escape(error)}</p>'
    return (f'<p class="note importance-note">{note} A rough guide: at this many trials a knob without effect can '
            f'still get a tenth or more.</p>'
            + figure(figures.parameter_importance(scores, f"{VALIDATION_ERROR}, {net}"), f"fig-importance-{escape(net)}"))
