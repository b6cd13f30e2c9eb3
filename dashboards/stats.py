"""Small aggregations shared by the verdict, the figures and the report: which runs count, seed spreads.

Figures draw the spread over seeds as the **min–max range**: with the 2–5 seeds a sweep affords, the range
shows every run. The range is for looking only; verdicts use a test (dashboards/verdict.py), and the paper
comparison states mean ± std.

**Final values** (``final_errors``: the error-vs-depth figure, the shortcut views, Table 6) are each run's last
logged error, so they count only runs that have ended: a run still training (``still_running``) is left out
— its error at 20k of 64k iterations, before the learning-rate drops, is no final value — and a diverged run
counts at chance error, as in the verdicts (so a view passes every run of its nets, ``comparison_candidates``
or ``at_modal_setting``, not only the usable ones). ``run_counts`` says it beside the number: "3 of 3; 1
diverged (at chance error)", "2 of 3; 1 still running (left out)".
"""

from __future__ import annotations

import pandas as pd

FAMILIES = ("plain", "residual")
CLASSES = {"cifar100": 100, "imagenet": 1000}  # every other data set here has 10 classes
# "interrupted": left RUNNING by a dead driver; "stopped" / "stopped_early": ended before their budget (an ASHA
# stop ends FINISHED, so the status alone does not tell)
EXCLUDED_OUTCOMES = ("failed", "diverged", "interrupted", "stopped", "stopped_early")


def usable(runs: pd.DataFrame) -> pd.Series:
    """True for runs that count in means and verdicts: not failed, crashed, interrupted (killed), diverged or
    stopped before their budget. (The depth verdict adds diverged runs back, at chance error.)"""
    return ~runs["outcome"].isin(EXCLUDED_OUTCOMES) & ~runs["status"].isin(("FAILED", "KILLED"))


def primary_shortcut(runs: pd.DataFrame) -> str | None:
    """The shortcut option most usable residual runs share (ties go to the earlier letter, so A)."""
    residual = runs[usable(runs) & runs["family"].eq("residual")]
    counts = residual["shortcut"].dropna().value_counts()
    if counts.empty:
        return None
    return sorted(counts.index[counts == counts.max()])[0]


def varied_params(runs: pd.DataFrame) -> list[str]:
    """Param keys (``optim.lr``, ...) that are numeric and take ≥ 2 values among usable runs.

    Seeds and other ``run.*`` settings, depth, family and shortcut are not counted: every sweep varies them.
    """
    table = runs[usable(runs)]
    found = []
    for column in sorted(c for c in table.columns if c.startswith("params.")):
        key = column[len("params."):]
        if key.startswith("run.") or key in _IDENTITY_PARAMS:
            continue
        values = pd.to_numeric(table[column], errors="coerce")
        if values.notna().all() and values.nunique() >= 2:
            found.append(key)
    return found


_IDENTITY_PARAMS = ("model.depth", "model.layout", "model.family",  # model.family: the legacy name of model.layout
                    "model.residual", "model.shortcut", "data.dataset", "data.data_dir")


def like_for_like(runs: pd.DataFrame) -> pd.DataFrame:
    """Usable runs at the most common setting of the varied params (all usable runs when none vary).

    Why: a depth or shortcut comparison must not mix in search trials with another learning rate or weight
    decay; those are shown in the search views instead.
    """
    table = runs[usable(runs)]
    params = [f"params.{p}" for p in varied_params(runs)]
    if not params:
        return table
    settings = table[params].astype(str).agg("|".join, axis=1)
    counts = settings.value_counts()
    modal = sorted(counts.index[counts == counts.max()])[0]
    return table[settings.eq(modal)]


def comparison_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """Like-for-like plain and residual runs with a depth; residual runs only with the primary shortcut option.

    Why: the depth comparison (Fig. 6, verdict, Table 6) must vary depth alone; other shortcut options
    are compared in their own section, other hyper-parameters in the search views.
    """
    table = like_for_like(runs)
    keep = table["family"].isin(FAMILIES) & table["depth"].notna()
    shortcut = primary_shortcut(table)
    if shortcut is not None:
        keep &= table["family"].ne("residual") | table["shortcut"].eq(shortcut)
    return table[keep]


def spread(values: pd.DataFrame, by: list[str], column: str) -> pd.DataFrame:
    """Mean, min, max, std and count of ``column`` per group (std is NaN for a single run)."""
    grouped = values.dropna(subset=[column]).groupby(by, observed=True)[column]
    out = grouped.agg(["mean", "min", "max", "std", "count"]).reset_index()
    return out.rename(columns={"count": "n"})


def curve_bands(history: pd.DataFrame, runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per (family, depth, step): mean, min, max, std, n of ``metric`` over the given runs (seeds)."""
    points = history[history["metric"].eq(metric) & history["run_id"].isin(runs["run_id"])]
    points = points.merge(runs[["run_id", "family", "depth"]], on="run_id")
    return spread(points, ["family", "depth", "step"], "value")


def matched_iteration(history: pd.DataFrame, run_ids: pd.Series, metric: str) -> int | None:
    """The last iteration every one of the runs reached (the smallest of their last logged steps)."""
    points = history[history["metric"].eq(metric) & history["run_id"].isin(run_ids)]
    if points.empty or points["run_id"].nunique() < len(set(run_ids)):
        return None
    return int(points.groupby("run_id")["step"].max().min())


def value_at(history: pd.DataFrame, run_ids: pd.Series, metric: str, step: int) -> pd.Series:
    """Each run's ``metric`` at the last logged step ≤ ``step`` (indexed by run_id)."""
    points = history[history["metric"].eq(metric) & history["run_id"].isin(run_ids) & history["step"].le(step)]
    return points.sort_values("step").groupby("run_id")["value"].last()


RUNNING_STATUSES = ("RUNNING", "SCHEDULED")


def still_running(runs: pd.DataFrame) -> pd.Series:
    """True for runs still training: outcome ``running`` (the tag a trial carries until it ends) or an MLflow
    status RUNNING / SCHEDULED. Such a run's last logged value is not a final value."""
    running = pd.Series(False, index=runs.index)
    if "outcome" in runs:
        running |= runs["outcome"].eq("running")
    if "status" in runs:
        running |= runs["status"].isin(RUNNING_STATUSES)
    return running


def diverged(runs: pd.DataFrame) -> pd.Series:
    """True for diverged runs (outcome ``diverged``): evidence about the recipe, counted at chance error."""
    return runs["outcome"].eq("diverged") if "outcome" in runs else pd.Series(False, index=runs.index)


def finished(runs: pd.DataFrame) -> pd.Series:
    """True for runs whose final value counts as trained: usable and no longer training."""
    if "outcome" not in runs or "status" not in runs:  # a hand-made table: every run is taken as it ended
        return ~still_running(runs)
    return usable(runs) & ~still_running(runs)


def at_modal_setting(runs: pd.DataFrame) -> pd.Series:
    """True for every run, of any outcome, at the setting ``like_for_like`` keeps (all runs when no param
    varies): ``like_for_like(runs)`` is exactly the usable runs where this is True."""
    params = [f"params.{p}" for p in varied_params(runs)]
    if not params:
        return pd.Series(True, index=runs.index)
    table = runs[usable(runs)]
    counts = table[params].astype(str).agg("|".join, axis=1).value_counts()
    modal = sorted(counts.index[counts == counts.max()])[0]
    return runs[params].astype(str).agg("|".join, axis=1).eq(modal)


def comparison_candidates(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run, of any outcome, of the nets and setting ``comparison_runs`` compares (its usable part is
    ``comparison_runs(runs)``): what a depth comparison's "n of m" counts."""
    table = runs[at_modal_setting(runs)]
    keep = table["family"].isin(FAMILIES) & table["depth"].notna()
    shortcut = primary_shortcut(like_for_like(runs))
    if shortcut is not None:
        keep &= table["family"].ne("residual") | table["shortcut"].eq(shortcut)
    return table[keep]


def final_errors(runs: pd.DataFrame) -> pd.DataFrame:
    """Long table run_id, family, depth, shortcut, split (train/test), error, diverged — the final iterate of
    each run that ended trained (``finished``) or diverged; runs still training, failed, interrupted or stopped
    early are left out. A diverged run counts at chance error (``chance_error`` of its data set, as the
    verdicts count it), whatever it logged last. Pass every run of the nets compared, of any outcome
    (``comparison_candidates``, ``at_modal_setting``), so that diverged runs are there to count."""
    columns = ["run_id", "family", "depth", "shortcut", "split", "error", "diverged"]
    runs = runs[finished(runs) | diverged(runs)]
    failed = diverged(runs)
    frames = []
    for split in ("train", "test"):
        column = f"metrics.{split}/error"
        if column in runs or failed.any():
            logged = runs[column] if column in runs else pd.Series(float("nan"), index=runs.index)
            error = logged.where(~failed, _chance(runs))
            frames.append(runs[["run_id", "family", "depth", "shortcut"]].assign(split=split, error=error,
                                                                                  diverged=failed))
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True).dropna(subset=["error"])[columns]


def chance_error(dataset: str | None) -> float:
    """The error (%) of guessing among the data set's classes: what a diverged run is counted at."""
    return 100.0 * (1 - 1 / CLASSES.get(str(dataset), 10))


def _chance(runs: pd.DataFrame) -> pd.Series:
    """Each run's chance error (%), from its data set."""
    datasets = runs["dataset"] if "dataset" in runs else pd.Series(None, index=runs.index, dtype=object)
    return datasets.map(chance_error).astype("float64")


def run_counts(candidates: pd.DataFrame, values: pd.DataFrame | None = None) -> dict:
    """How the runs of one net (``candidates``: all of them, any outcome) enter its final value (``values``:
    the rows of one split of ``final_errors`` that were used; by default every finished or diverged run).

    Returns ``runs`` (all), ``counted``, ``diverged`` (counted at chance error), ``running`` (left out),
    ``left_out`` (failed, interrupted, stopped early, or no value logged) and ``words`` saying it: "3 of 3",
    "3 of 3; 1 diverged (at chance error)", "2 of 3; 1 still running (left out)".
    """
    running, failed = still_running(candidates), diverged(candidates)
    if values is None:
        counted = finished(candidates) | failed
    else:
        counted = candidates["run_id"].isin(values["run_id"])
    lost = candidates[~counted & ~running]
    counts = {"runs": len(candidates), "counted": int(counted.sum()), "diverged": int((failed & counted).sum()),
              "running": int(running.sum()), "left_out": len(lost)}
    words = [f"{counts['counted']} of {counts['runs']}"]
    if counts["diverged"]:
        words.append(f"{counts['diverged']} diverged (at chance error)")
    if counts["running"]:
        words.append(f"{counts['running']} still running (left out)")
    if len(lost):
        ended = finished(lost) | diverged(lost)  # ended, but logged no value
        reasons = lost["outcome"].where(~ended, "without a final value") if "outcome" in lost else ended.map(
            lambda _: "without a final value")
        words.append(", ".join(f"{n} {why}" for why, n in sorted(reasons.value_counts().items())) + " (left out)")
    return {**counts, "words": "; ".join(words)}


def layout_column(runs: pd.DataFrame) -> pd.Series:
    """Each run's model layout (``cifar`` / ``imagenet``); ``cifar`` — the default — where none was logged.

    Reads the ``layout`` column and falls back to ``model_family``, its name in experiments logged before the
    rename, so tables built by hand with either name work.
    """
    layout = pd.Series(pd.NA, index=runs.index, dtype="object")
    for column in ("layout", "model_family"):
        if column in runs:
            layout = layout.fillna(runs[column])
    return layout.fillna("cifar")


def residual_shortcuts(runs: pd.DataFrame) -> list[str]:
    """The shortcut options of the residual nets compared like for like."""
    table = like_for_like(runs)
    return sorted(table.loc[table["family"].eq("residual"), "shortcut"].dropna().unique())
