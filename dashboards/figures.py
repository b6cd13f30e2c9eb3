"""Plotly figures as pure functions: tidy DataFrames in, ``go.Figure`` out; no I/O, no MLflow.

Every trace carries ``meta`` = {"family", "depth", "metric", "kind"} so tests (and readers of the JSON) can
tell what a line is without parsing its legend text. Seed spread is shown as the min–max range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from plotly.subplots import make_subplots

from dashboards.stats import (FAMILIES, at_modal_setting, comparison_candidates, comparison_runs, curve_bands,
                              final_errors, spread)
from resnet_core.config import net_name

SPLIT_DASH = {"train": "dash", "test": "solid"}  # the paper's Fig. 6 convention
DIVERGED_COLOR = "#9e9e9e"
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=50), legend=dict(groupclick="togglegroup"))


def depth_colors(depths) -> dict[int, str]:
    """One colour per depth, shallow = light, deep = dark, the same in every figure of a report."""
    depths = sorted({int(d) for d in depths})
    if len(depths) == 1:
        return {depths[0]: sample_colorscale("Viridis", [0.4])[0]}
    positions = [0.85 * i / (len(depths) - 1) for i in range(len(depths))]
    return dict(zip(depths, sample_colorscale("Viridis", positions[::-1])))


def _rgba(color: str, alpha: float) -> str:
    """``rgb(r, g, b)`` → ``rgba(r, g, b, alpha)`` for shaded bands."""
    return color.replace("rgb(", "rgba(").replace(")", f", {alpha})")


def add_key(fig: go.Figure, name: str, explains: str, **style) -> None:
    """A legend entry that names a kind of mark drawn elsewhere in the figure (a line style, a shaded band, an
    error bar) and draws nothing itself; its ``meta`` is {"kind": "key", "explains": explains}."""
    fig.add_trace(go.Scatter(x=[None], y=[None], name=name, showlegend=True, hoverinfo="skip",
                             meta={"kind": "key", "explains": explains}, **style))


ERROR_BAR_KEY = dict(mode="markers", marker=dict(symbol="line-ns-open", size=14, color="#444", line=dict(width=1.5)))


@dataclass(frozen=True)
class CurveStyle:
    """How an error-curve figure draws its two curves per net: line style and legend key of each, its title."""

    train: dict  # line style (dash, width) of the training error
    held_out: dict  # line style of the held-out error
    train_key: str
    held_out_key: str
    title: str


FIG6 = CurveStyle(dict(dash=SPLIT_DASH["train"], width=1.5), dict(dash=SPLIT_DASH["test"], width=2),
                  "training error (dashed)", "test error (solid)",
                  "Training (dashed) and test (solid) error; band = min–max over seeds")


def fig4_style(held_out_name: str) -> CurveStyle:
    """Fig. 4's convention: thin training error, bold centre-crop error on ``held_out_name``."""
    return CurveStyle(dict(dash="solid", width=1), dict(dash="solid", width=3.5), "training error (thin)",
                      f"{held_out_name} error, centre crop (bold)",
                      f"Training (thin) and {held_out_name} (bold, centre crop) error; band = min–max over seeds")


def degradation_curves(history: pd.DataFrame, runs: pd.DataFrame, held_out: str = "test",
                       style: CurveStyle = FIG6) -> go.Figure:
    """Error (%) vs iteration, plain nets left, residual nets right: training error and the ``held_out``
    split's (``test`` or ``val``) error, drawn as ``style`` says — Fig. 6 (dashed train, solid test) by default,
    Fig. 4 with ``fig4_style``.

    One legend group per net (family × depth): the seed mean as a line and the min–max range over seeds as a
    shaded band. Diverged runs are drawn individually in grey (their training error), outside the means.
    """
    members = comparison_runs(runs)
    families = [f for f in FAMILIES if members["family"].eq(f).any()] or list(FAMILIES)
    colors = depth_colors(members["depth"].dropna()) if not members.empty else {}
    fig = make_subplots(rows=1, cols=len(families), shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=[f"{f} nets" for f in families])
    top = 0.0
    for split, line in (("train", style.train), (held_out, style.held_out)):
        bands = curve_bands(history, members, f"{split}/error")
        if not bands.empty:  # like the paper, frame the curves after the first tenth of training
            top = max(top, float(bands.loc[bands["step"] >= 0.1 * bands["step"].max(), "max"].max()))
        for (family, depth), band in bands.groupby(["family", "depth"]):
            if family not in families:
                continue
            col, shown = families.index(family) + 1, split != "train"
            color, group = colors[int(depth)], f"{family}-{int(depth)}"
            meta = {"family": family, "depth": int(depth), "metric": f"{split}/error"}
            name = f"{net_name(family, depth)} {split} (n={int(band['n'].max())})"
            legend = f"{net_name(family, depth)} (n={int(band['n'].max())})"  # one entry per net: toggles both lines
            if band["n"].max() > 1:
                x = list(band["step"]) + list(band["step"])[::-1]
                y = list(band["max"]) + list(band["min"])[::-1]
                fill = _rgba(color, 0.12 if shown else 0.08)
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines", fill="toself", fillcolor=fill, line=dict(width=0),
                                         hoverinfo="skip", showlegend=False, legendgroup=group,
                                         name=f"{name} range", meta={**meta, "kind": "band"}), row=1, col=col)
            fig.add_trace(go.Scatter(x=band["step"], y=band["mean"], mode="lines", legendgroup=group,
                                     name=legend if shown else name, showlegend=shown,
                                     line=dict(color=color, **line), meta={**meta, "kind": "mean"},
                                     hovertemplate="iteration %{x:,}<br>%{y:.2f} %<extra>" + name + "</extra>"),
                          row=1, col=col)
    _add_diverged(fig, history, runs, families)
    add_key(fig, style.train_key, "train/error", mode="lines", line=dict(color="#555", **style.train))
    add_key(fig, style.held_out_key, f"{held_out}/error", mode="lines", line=dict(color="#555", **style.held_out))
    if any(t.meta and t.meta.get("kind") == "band" for t in fig.data):
        add_key(fig, "min–max over seeds (shaded)", "band", mode="markers",
                marker=dict(symbol="square", size=14, color="rgba(80, 80, 80, 0.18)"))
    fig.update_xaxes(title_text="iteration")
    fig.update_yaxes(title_text="error (%)", row=1, col=1)
    if top > 0:
        fig.update_yaxes(range=[0, min(100.0, 1.1 * top)])
    fig.update_layout(title=style.title, height=460, **_LAYOUT)
    return fig


def _add_diverged(fig: go.Figure, history: pd.DataFrame, runs: pd.DataFrame, families: list[str]) -> None:
    """Each diverged run's training error as a thin grey line ending in an ×, in its family's panel."""
    diverged = runs[runs["outcome"].eq("diverged") & runs["family"].isin(families)]
    for run in diverged.itertuples(index=False):
        points = history[history["run_id"].eq(run.run_id) & history["metric"].eq("train/error")]
        if points.empty:
            continue
        col = families.index(run.family) + 1
        fig.add_trace(go.Scatter(x=points["step"], y=points["value"], mode="lines+markers",
                                 name=f"{run.name} (diverged)", line=dict(color=DIVERGED_COLOR, width=1, dash="dot"),
                                 marker=dict(symbol="x", size=[0] * (len(points) - 1) + [9], color=DIVERGED_COLOR),
                                 meta={"family": run.family, "depth": _int(run.depth), "metric": "train/error",
                                       "kind": "diverged", "run_id": run.run_id}),
                      row=1, col=col)


def error_vs_depth(runs: pd.DataFrame) -> go.Figure:
    """Final train (dashed) and test (solid) error vs depth per family; error bars = min–max over seeds.

    Final values (``final_errors``): runs still training are left out, diverged runs count at chance error (the
    hover says how many)."""
    errors = final_errors(comparison_candidates(runs))
    summary = spread(errors, ["family", "split", "depth"], "error")
    failed = errors.groupby(["family", "split", "depth"], observed=True)["diverged"].sum().rename("diverged")
    summary = summary.merge(failed.astype(int).reset_index(), on=["family", "split", "depth"], how="left")
    fig = go.Figure()
    for (family, split), rows in summary.groupby(["family", "split"]):
        rows = rows.sort_values("depth")
        fig.add_trace(go.Scatter(
            x=rows["depth"], y=rows["mean"], mode="lines+markers", name=f"{family} {split} (mean)",
            line=dict(dash=SPLIT_DASH[split], color="#d62728" if family == "plain" else "#1f77b4"),
            marker=dict(symbol="circle" if split == "test" else "circle-open", size=8),
            error_y=dict(type="data", symmetric=False, array=rows["max"] - rows["mean"],
                         arrayminus=rows["mean"] - rows["min"], thickness=1),
            customdata=rows[["min", "max", "n", "diverged"]],
            hovertemplate="depth %{x}<br>mean %{y:.2f} % (min %{customdata[0]:.2f}, max %{customdata[1]:.2f}, "
                          "n=%{customdata[2]}; %{customdata[3]} diverged, at chance error)<extra></extra>",
            meta={"family": family, "depth": None, "metric": f"{split}/error", "kind": "mean"}))
    if not summary.empty:
        add_key(fig, "min–max over seeds (error bar)", "error bar", **ERROR_BAR_KEY)
    fig.update_xaxes(title_text="layers", tickvals=sorted(summary["depth"].unique()) if not summary.empty else None)
    fig.update_yaxes(title_text="final error (%)")
    fig.update_layout(title="Final error vs depth (error bars: min–max over seeds)", height=420, **_LAYOUT)
    return fig


def paper_comparison(comparison: pd.DataFrame, reference_only: bool = False) -> go.Figure:
    """Our test error per net (mean, min–max over seeds) beside the paper's value (± std where it gives one).

    ``reference_only`` (not the paper's data set or recipe) says so in the title: the two are not comparable.
    """
    fig = go.Figure()
    paper_std = comparison["paper_std"] if "paper_std" in comparison else None
    fig.add_trace(go.Scatter(x=comparison["net"], y=comparison["paper"], mode="markers",
                             name="paper (± std where it gives one)",
                             marker=dict(symbol="diamond", size=11, color="#444"),
                             error_y=None if paper_std is None else dict(type="data", array=paper_std.fillna(0)),
                             meta={"family": "residual", "depth": None, "metric": "test/error", "kind": "paper"}))
    # Our seeds as their min–max range: mean ± std can leave 0–100 % near 0 % error, a range cannot.
    has_range = {"ours_min", "ours_max"} <= set(comparison.columns)
    bars = dict(type="data", symmetric=False, array=(comparison["ours_max"] - comparison["ours_mean"]).fillna(0),
                arrayminus=(comparison["ours_mean"] - comparison["ours_min"]).fillna(0)) if has_range else None
    fig.add_trace(go.Scatter(
        x=comparison["net"], y=comparison["ours_mean"], mode="markers",
        name="this experiment (mean, min–max over seeds)", marker=dict(size=10, color="#1f77b4"), error_y=bars,
        meta={"family": "residual", "depth": None, "metric": "test/error", "kind": "ours"}))
    fig.update_yaxes(title_text="test error (%)")
    title = "Test error: the paper vs this experiment (mean and min–max over seeds)"
    if reference_only:
        title = "Test error: the paper (reference only — not the paper's data or recipe) and this experiment"
    fig.update_layout(title=title, height=380, **_LAYOUT)
    return fig


def layer_responses(responses: pd.DataFrame, runs: pd.DataFrame) -> go.Figure:
    """Fig. 7: std of each 3×3 layer's response; top in network order, bottom sorted descending.

    ``responses`` should hold 3×3 layers only (dashboards.probes.three_by_three). One line per net (family ×
    depth), the mean over its usable runs; plain nets dotted, ResNets solid.
    """
    members = comparison_runs(runs)
    data = responses.merge(members[["run_id", "family", "depth"]], on="run_id")
    per_layer = data.groupby(["family", "depth", "layer_index"], as_index=False)["std"].mean()
    colors = depth_colors(per_layer["depth"]) if not per_layer.empty else {}
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.16,
                        subplot_titles=["layers in network order", "layers sorted by magnitude (descending)"])
    for (family, depth), rows in per_layer.groupby(["family", "depth"]):
        label, group = net_name(family, depth), f"{family}-{int(depth)}"
        line = dict(color=colors[int(depth)], dash="dot" if family == "plain" else "solid", width=1.5)
        meta = {"family": family, "depth": int(depth), "metric": "response_std"}
        rows = rows.sort_values("layer_index")
        fig.add_trace(go.Scatter(x=rows["layer_index"] + 1, y=rows["std"], mode="lines", name=label, line=line,
                                 legendgroup=group, meta={**meta, "kind": "order"}), row=1, col=1)
        ranked = rows["std"].sort_values(ascending=False).to_numpy()
        fig.add_trace(go.Scatter(x=list(range(1, len(ranked) + 1)), y=ranked, mode="lines", name=label, line=line,
                                 legendgroup=group, showlegend=False, meta={**meta, "kind": "sorted"}), row=2, col=1)
    fig.update_xaxes(title_text="3×3 layer index (network order)", row=1, col=1)
    fig.update_xaxes(title_text="layer index (sorted)", row=2, col=1)
    fig.update_yaxes(title_text="std")
    fig.update_layout(title="Standard deviation of 3×3 layer responses (after BN, before ReLU/addition)", height=620,
                      **_LAYOUT)
    return fig


def shortcut_options(runs: pd.DataFrame) -> go.Figure:
    """Final train and test error of residual nets per shortcut option (A/B/C), grouped by depth (runs still
    training left out, diverged runs at chance error: ``final_errors``)."""
    table = runs[at_modal_setting(runs)]
    errors = final_errors(table[table["family"].eq("residual")])
    summary = spread(errors, ["split", "shortcut", "depth"], "error")
    fig = make_subplots(rows=1, cols=2, subplot_titles=["training error", "test error"], horizontal_spacing=0.08)
    palette = {"A": "#1f77b4", "B": "#ff7f0e", "C": "#2ca02c"}
    for (split, shortcut), rows in summary.groupby(["split", "shortcut"]):
        rows = rows.sort_values("depth")
        fig.add_trace(go.Bar(
            x=[net_name("residual", d) for d in rows["depth"]], y=rows["mean"], name=f"option {shortcut}",
            legendgroup=shortcut, showlegend=split == "test", marker_color=palette.get(shortcut),
            error_y=dict(type="data", symmetric=False, array=rows["max"] - rows["mean"],
                         arrayminus=rows["mean"] - rows["min"]),
            meta={"family": "residual", "depth": None, "metric": f"{split}/error", "kind": f"shortcut {shortcut}"}),
            row=1, col=1 if split == "train" else 2)
    if not summary.empty:
        add_key(fig, "min–max over seeds (error bar)", "error bar", **ERROR_BAR_KEY)
    fig.update_yaxes(title_text="final error (%)", row=1, col=1)
    fig.update_layout(title="Shortcut options (§3.3); error bars: min–max over seeds", barmode="group", height=400,
                      **_LAYOUT)
    return fig


def search_parallel_coordinates(table: pd.DataFrame, params: list[str], target: str, title: str | None = None,
                                choices: dict[str, list[str]] | None = None,
                                log_scale: set[str] | None = None) -> go.Figure:
    """Parallel coordinates: one line per run through its parameter values, coloured by ``target``.

    A parameter that takes a single value in ``table`` gets no axis (a constant axis says nothing). ``choices``
    names the values of a choice parameter held as its position (0, 1, ...) on its axis' ticks. ``log_scale``:
    the parameters drawn as log10 (as searched); by default those whose positive values span more than 20×.
    """
    choices = choices or {}
    dimensions = []
    for param in params:
        values = table[param].astype(float)
        if values.nunique() < 2:
            continue
        if param in choices:
            dimensions.append(dict(label=param, values=values, tickvals=list(range(len(choices[param]))),
                                   ticktext=choices[param]))
            continue
        log = (param in log_scale if log_scale is not None else
               bool(values.gt(0).all() and values.max() / values.min() > 20))
        shown = values.map(math.log10) if log else values
        dimensions.append(dict(label=f"log10 {param}" if log else param, values=shown))
    dimensions.append(dict(label=target, values=table[target]))
    fig = go.Figure(go.Parcoords(line=dict(color=table[target], colorscale="Viridis_r", showscale=True,
                                           colorbar=dict(title=target)),
                                 dimensions=dimensions, meta={"metric": target, "kind": "parcoords"}))
    fig.update_layout(title=title or f"Search: parameters vs {target}", height=420, template="plotly_white",
                      margin=dict(l=80, r=80, t=80, b=40))
    return fig


def parameter_importance(importance: pd.DataFrame, target: str) -> go.Figure:
    """Horizontal bars of each parameter's importance for ``target`` (fractions summing to 1)."""
    importance = importance.sort_values("importance")
    fig = go.Figure(go.Bar(x=importance["importance"], y=importance["param"], orientation="h",
                           marker_color="#1f77b4", meta={"metric": target, "kind": "importance"}))
    fig.update_xaxes(title_text="importance (fANOVA, fraction of variance)", range=[0, 1])
    fig.update_layout(title=f"Parameter importance for {target}", height=120 + 40 * len(importance), **_LAYOUT)
    return fig


def _int(value) -> int | None:
    return None if pd.isna(value) else int(value)
