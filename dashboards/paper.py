"""The paper's numbers as data (He et al. 2016, Table 6 and Table 3) and how this experiment compares.

Our number is the **final iterate**: each run's test error at its last iteration, averaged over seeds with
the min–max range — never the best test error seen during training, which flatters a run by selecting on
the test set.
"""

from __future__ import annotations

import pandas as pd

from dashboards.stats import comparison_runs, spread

PAPER_ITERATIONS = 64_000
PAPER_DATASET = "cifar10"
SELECTION_PROTOCOL = ("final iterate (test error at each run's last iteration, mean over seeds with min–max), "
                      "not best-on-test")

# Table 6: CIFAR-10 test error (%) of ResNets with option-A shortcuts, data augmentation, 64k iterations.
TABLE6_RESNET_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
TABLE6_RESNET_PARAMS = {20: "0.27M", 32: "0.46M", 44: "0.66M", 56: "0.85M", 110: "1.7M", 1202: "19.4M"}
TABLE6_NOTES = {110: "best of 5 runs; mean ± std 6.61 ± 0.16"}

# Table 3: ImageNet validation top-1 error (%), 10-crop testing. Key: (family, depth, shortcut).
TABLE3_IMAGENET_TOP1 = {
    ("plain", 34, "none"): 28.54,
    ("residual", 34, "A"): 25.03,
    ("residual", 34, "B"): 24.52,
    ("residual", 34, "C"): 24.19,
    ("residual", 50, "B"): 22.85,
    ("residual", 101, "B"): 21.75,
    ("residual", 152, "B"): 21.43,
}


def reproduction_caveats(sweep_tags: dict[str, str], runs: pd.DataFrame) -> list[str]:
    """Reasons this experiment is not the paper's CIFAR-10 recipe; empty when it is.

    Looks at the sweep's ``recipe`` and ``dataset`` tags and at how far the runs trained, so a smoke run is
    never mistaken for a reproduction.
    """
    caveats = []
    recipe = sweep_tags.get("recipe")
    if recipe is None:
        caveats.append("No sweep run with a 'recipe' tag was found, so this cannot be confirmed as the paper's recipe.")
    elif recipe != "paper":
        preset = sweep_tags.get("preset", "?")
        caveats.append(f"Recipe is '{recipe}' (preset '{preset}'), not the paper's full CIFAR-10 recipe.")
    datasets = set(runs["dataset"].dropna()) | ({sweep_tags["dataset"]} if "dataset" in sweep_tags else set())
    if datasets and datasets != {PAPER_DATASET}:
        caveats.append(f"Dataset is {', '.join(sorted(datasets))}; Table 6 is CIFAR-10.")
    configured, reached = _max(runs, "iterations"), _max(runs, "last_step")
    trained = configured if configured is not None else reached
    if trained is not None and trained < PAPER_ITERATIONS:
        caveats.append(f"Runs trained for {trained:,} iterations; the paper trains {PAPER_ITERATIONS:,}.")
    elif configured is not None and reached is not None and reached < configured:
        caveats.append(f"Runs have reached at most {reached:,} of {configured:,} iterations "
                       f"(still running, or stopped early).")
    return caveats


def _max(runs: pd.DataFrame, column: str) -> int | None:
    """The largest value of an integer column (configured or reached iterations), None when absent."""
    if column in runs and runs[column].notna().any():
        return int(runs[column].max())
    return None


def paper_comparison(runs: pd.DataFrame) -> pd.DataFrame:
    """Our residual test error per depth beside Table 6 (CIFAR) or Table 3 top-1 (ImageNet family).

    Columns: net, depth, shortcut, paper, ours_mean, ours_min, ours_max, n, difference (ours − paper, pp).
    Only depths present on both sides appear.
    """
    columns = ["net", "depth", "shortcut", "paper", "ours_mean", "ours_min", "ours_max", "n", "difference"]
    members = comparison_runs(runs)
    if "metrics.test/error" not in members or members.empty:
        return pd.DataFrame(columns=columns)
    imagenet = members["model_family"].eq("imagenet").any()
    if not imagenet:
        members = members[members["family"].eq("residual")]
    ours = spread(members.assign(shortcut=members["shortcut"].fillna("none")),
                  ["family", "depth", "shortcut"], "metrics.test/error")
    rows = []
    for row in ours.itertuples(index=False):
        depth = int(row.depth)
        paper = (TABLE3_IMAGENET_TOP1.get((row.family, depth, row.shortcut)) if imagenet
                 else TABLE6_RESNET_TEST_ERROR.get(depth))
        if paper is None:
            continue
        net = f"{'ResNet' if row.family == 'residual' else 'plain'}-{depth}"
        rows.append({"net": net, "depth": depth, "shortcut": row.shortcut, "paper": paper, "ours_mean": row.mean,
                     "ours_min": row.min, "ours_max": row.max, "n": int(row.n), "difference": row.mean - paper})
    return pd.DataFrame(rows, columns=columns)
