"""The shortcut-option table: error per option and depth with its seed spread, what B and C cost in parameters
over A, and the paper's Table 3 (ImageNet ResNet-34) as a reference only — another data set and net."""

from __future__ import annotations

import pandas as pd

from dashboards.stats import final_errors, like_for_like, spread

# Table 3, ResNet-34 top-1 error (%) on ImageNet validation, 10-crop: a reference, never a difference.
TABLE3_RESNET34 = {"A": 25.03, "B": 24.52, "C": 24.19}


def shortcut_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per net (plain baseline, residual A/B/C) and depth: test and train error mean ± std over seeds,
    parameters (from the run tag ``parameters``), extra parameters over option A, and Table 3's value."""
    table = like_for_like(runs)
    nets = table.assign(option=table["shortcut"].where(table["family"].eq("residual"), "plain"))
    errors = final_errors(nets).merge(nets[["run_id", "option"]], on="run_id")
    summary = spread(errors, ["depth", "option", "split"], "error")
    rows = []
    for (depth, option), group in summary.groupby(["depth", "option"]):
        by_split = group.set_index("split")
        rows.append({"depth": int(depth), "net": option if option == "plain" else f"residual {option}",
                     "seeds": int(by_split["n"].max()),
                     "test error % (mean ± std)": _mean_std(by_split, "test"),
                     "train error % (mean ± std)": _mean_std(by_split, "train"),
                     "parameters": _parameters(nets, depth, option)})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    base = out[out["net"].eq("residual A")].set_index("depth")["parameters"]
    out["extra parameters vs A"] = [_extra(row.parameters, base.get(row.depth)) if row.net != "plain" else "—"
                                    for row in out.itertuples()]
    out["Table 3 ResNet-34 top-1 % (ImageNet; reference only)"] = [
        f"{TABLE3_RESNET34[net[-1]]:.2f}" if net.startswith("residual") else "—" for net in out["net"]]
    return out.sort_values(["depth", "net"], key=lambda c: c.map(_order) if c.name == "net" else c)


def _mean_std(by_split: pd.DataFrame, split: str) -> str:
    if split not in by_split.index:
        return "—"
    row = by_split.loc[split]
    return f"{row['mean']:.2f}" if pd.isna(row["std"]) else f"{row['mean']:.2f} ± {row['std']:.2f}"


def _parameters(nets: pd.DataFrame, depth: int, option: str) -> float:
    column = "tags.parameters"
    if column not in nets:
        return float("nan")
    values = pd.to_numeric(nets.loc[nets["depth"].eq(depth) & nets["option"].eq(option), column], errors="coerce")
    return float(values.dropna().iloc[0]) if values.notna().any() else float("nan")


def _extra(parameters: float, base: float | None) -> str:
    """Parameters over option A's at the same depth, absolute and relative."""
    if base is None or pd.isna(parameters) or pd.isna(base) or not base:
        return "—"
    return f"+{parameters - base:,.0f} (+{100 * (parameters - base) / base:.1f} %)"


def _order(net: str) -> int:
    return ["plain", "residual A", "residual B", "residual C"].index(net) if net in (
        "plain", "residual A", "residual B", "residual C") else 9
