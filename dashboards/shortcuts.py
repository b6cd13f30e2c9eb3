"""The shortcut-option table: error per option and depth with its seed spread, and what B and C cost in
parameters over A.

The paper compares the options only on ImageNet, with ResNet-34 (Table 3). Its numbers (kept in
dashboards/paper.py, their one home) are set beside a row only when that row is the net they describe: an
ImageNet-layout ResNet-34 trained on ImageNet, and then as reference only (10-crop there, single view here).
"""

from __future__ import annotations

import pandas as pd

from dashboards.paper import IMAGENET_DATASETS, IMAGENET_TOP1
from dashboards.stats import at_modal_setting, final_errors, layout_column, run_counts, spread

OPTIONS = ("A", "B", "C")
NET_ORDER = ("plain", "residual A", "residual B", "residual C")
TABLE3_DEPTH = 34
TABLE3_COLUMN = "paper: Table 3 ImageNet top-1 % (10-crop; reference only)"


def format_parameters(count: float, signed: bool = False) -> str:
    """A parameter count as the paper writes it: ``0.27M``, ``1.7M``, ``19.4M``; below 0.1M ``5.6k``; below
    1k the count itself. ``signed`` prefixes ``+`` (or ``−``), for differences. NaN is ``—``."""
    if pd.isna(count):
        return "—"
    sign = "−" if count < 0 else "+" if signed else ""
    n = abs(float(count))
    if n < 999.5:
        text = f"{n:.0f}"
    elif n < 99_950:
        text = f"{n / 1e3:.1f}k"
    elif n < 995_000:
        text = f"{n / 1e6:.2f}M"
    else:
        text = f"{n / 1e6:.1f}M"
    return sign + text


def table3_values() -> dict[str, float]:
    """Table 3's ResNet-34 top-1 error (%) per shortcut option, from dashboards/paper.py."""
    return {option: IMAGENET_TOP1[("residual", TABLE3_DEPTH, option)][0] for option in OPTIONS}


def table3_elsewhere_note() -> str:
    """What the page says when no row is the net Table 3 describes."""
    values = ", ".join(f"{option} {value:.2f}" for option, value in table3_values().items())
    return (f"The paper compares the shortcut options only on ImageNet ResNet-34 (Table 3: {values} % top-1 "
            f"error, 10-crop). Those numbers are set only beside an ImageNet-layout ResNet-34 trained on ImageNet, "
            f"not beside the nets here.")


def shortcut_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per net (plain baseline, residual A/B/C) and depth: test and train error mean ± std over seeds,
    parameters (from the run tag ``parameters``) and extra parameters over option A, as ``format_parameters``
    writes them. ``TABLE3_COLUMN`` is there only when some row is an ImageNet-layout ResNet-34 trained on
    ImageNet (and filled only on those rows); a ``layout`` column only when the nets have more than one layout.

    Final values as everywhere (dashboards/stats.py, ``final_errors``): runs still training are left out, diverged
    runs count at chance error, and ``runs counted`` says so ("3 of 3; 1 diverged (at chance error)")."""
    table = runs[at_modal_setting(runs)]
    nets = table.assign(option=table["shortcut"].where(table["family"].eq("residual"), "plain"),
                        layout=layout_column(table))
    errors = final_errors(nets).merge(nets[["run_id", "option", "layout"]], on="run_id")
    summary = spread(errors, ["layout", "depth", "option", "split"], "error")
    rows = []
    for (layout, depth, option), group in summary.groupby(["layout", "depth", "option"]):
        by_split = group.set_index("split")
        members = nets[nets["layout"].eq(layout) & nets["depth"].eq(depth) & nets["option"].eq(option)]
        net = option if option == "plain" else f"residual {option}"
        counted = errors[errors["run_id"].isin(members["run_id"])].drop_duplicates("run_id")
        rows.append({"layout": layout, "depth": int(depth), "net": net, "seeds": int(by_split["n"].max()),
                     "runs counted": run_counts(members, counted)["words"],
                     "test error % (mean ± std)": _mean_std(by_split, "test"),
                     "train error % (mean ± std)": _mean_std(by_split, "train"),
                     "parameter_count": _parameters(members), "table3": _table3(members, layout, int(depth), option)})
    out = pd.DataFrame(rows)
    if out.empty:
        return out
    base = out[out["net"].eq("residual A")].set_index(["layout", "depth"])["parameter_count"]
    out["parameters"] = out["parameter_count"].map(format_parameters)
    out["extra parameters vs A"] = [_extra(row.net, row.parameter_count, base.get((row.layout, row.depth)))
                                    for row in out.itertuples()]
    if out["table3"].notna().any():
        out[TABLE3_COLUMN] = out["table3"].map(lambda v: "—" if pd.isna(v) else f"{v:.2f}")
    out = out.sort_values(["layout", "depth", "net"], key=lambda c: c.map(_order) if c.name == "net" else c)
    hidden = ["parameter_count", "table3"] + (["layout"] if out["layout"].nunique() == 1 else [])
    return out.drop(columns=hidden).reset_index(drop=True)


def _mean_std(by_split: pd.DataFrame, split: str) -> str:
    if split not in by_split.index:
        return "—"
    row = by_split.loc[split]
    return f"{row['mean']:.2f}" if pd.isna(row["std"]) else f"{row['mean']:.2f} ± {row['std']:.2f}"


def _parameters(members: pd.DataFrame) -> float:
    """The net's parameter count (run tag ``parameters``), NaN when no run logged one."""
    if "tags.parameters" not in members:
        return float("nan")
    values = pd.to_numeric(members["tags.parameters"], errors="coerce").dropna()
    return float(values.iloc[0]) if not values.empty else float("nan")


def _table3(members: pd.DataFrame, layout: str, depth: int, option: str) -> float:
    """Table 3's value for a row that is the net it describes (ImageNet layout, 34 layers, trained on ImageNet,
    a residual option); NaN for any other row."""
    trained_on_imagenet = members["dataset"].notna().all() and members["dataset"].isin(IMAGENET_DATASETS).all()
    if layout == "imagenet" and depth == TABLE3_DEPTH and option in OPTIONS and trained_on_imagenet:
        return table3_values()[option]
    return float("nan")


def _extra(net: str, parameters: float, base: float | None) -> str:
    """Parameters over option A's at the same depth, absolute and relative: ``+2.8k (+1.0 %)``; ``baseline``
    for option A itself, ``—`` for the plain net or where a count is missing."""
    if net == "residual A":
        return "baseline"
    if net == "plain" or base is None or pd.isna(parameters) or pd.isna(base) or not base:
        return "—"
    extra = parameters - base
    return f"{format_parameters(extra, signed=True)} ({'−' if extra < 0 else '+'}{abs(100 * extra / base):.1f} %)"


def _order(net: str) -> int:
    return NET_ORDER.index(net) if net in NET_ORDER else len(NET_ORDER)
