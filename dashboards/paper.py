"""The paper's numbers as data (He et al. 2016, Tables 2, 3 and 6) and the rules for setting ours beside them.

Like is compared with like:
- Table 6 (CIFAR-10 test error) is set beside CIFAR-layout residual nets with option-A shortcuts. A
  ``difference`` is computed only when this experiment *is* the paper's setting — CIFAR-10, the paper's recipe,
  trained to the paper's 64k iterations (``reproduction_caveats`` is empty); otherwise the paper's numbers are
  shown as reference only.
- ResNet-110 is compared with the paper's **mean 6.61 ± 0.16** over 5 runs, not with its best run (6.43,
  which Table 6 prints and which is shown, labelled); selecting the best of 5 would bias the comparison.
- ImageNet-layout nets are set beside Tables 2/3 only when trained on ImageNet, and then in the report's
  ImageNet section (dashboards/imagenet.py): 10-crop against 10-crop, top-1 and top-5.

Our number is the **final iterate**: each run's test error at its last iteration, mean ± std over seeds (with
the min–max range) — never the best test error seen during training, which selects on the test set.

Which runs make that number (dashboards/stats.py, ``final_errors``), and the row's ``counted`` words say it:
- **Only runs that have ended.** A run still training (outcome ``running``, status RUNNING) is left out: its
  last logged error is not a final value (at 20k of 64k iterations, before the learning-rate drops, it is
  points above where the run will end). The row still shows the finished seeds' number — each of them is a
  complete measurement, and when a seed finishes has nothing to do with its error — but says "2 of 3; 1 still
  running (left out)", so it reads as provisional; a net with no finished run shows "—" ("0 of 3; 3 still
  running (left out)"). Whether the runs trained to the paper's length is checked on the runs that finished,
  by the **fewest** iterations any of them reached (``reproduction_caveats``), never the most.
- **Diverged runs count, at chance error** (``chance_error``: 100·(1 − 1/classes), 90 % on CIFAR-10), as in the
  verdicts: a net whose loss became NaN failed to train, an outcome of the recipe rather than missing data. So
  they enter the mean, the std and the difference from the paper, and the row says "3 of 3; 1 diverged (at
  chance error)". Failed (crashed), interrupted and early-stopped runs are missing data: left out, and counted
  in the same words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from dashboards.stats import (comparison_candidates, diverged, final_errors, finished, layout_column, run_counts,
                             spread, still_running)
from dashboards.inference import reference_difference
from dashboards.verdict import evaluated_images
from resnet_core.config import net_name

PAPER_ITERATIONS = 64_000
PAPER_DATASET = "cifar10"
IMAGENET_DATASETS = ("imagenet",)
SELECTION_PROTOCOL = ("final iterate (test error at each run's last iteration, mean ± std over seeds), "
                      "not best-on-test")

# Table 6: CIFAR-10 test error (%) of ResNets with option-A shortcuts, data augmentation, 64k iterations, as
# printed (110: the best of 5 runs).
TABLE6_RESNET_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43, 1202: 7.93}
# Where Table 6 also gives mean ± std over runs: (mean, std, runs).
TABLE6_RESNET_MEAN_STD = {110: (6.61, 0.16, 5)}
TABLE6_RESNET_PARAMS = {20: "0.27M", 32: "0.46M", 44: "0.66M", 56: "0.85M", 110: "1.7M", 1202: "19.4M"}
TABLE6_NOTES = {110: "paper: mean ± std of 5 runs 6.61 ± 0.16; best of 5 = 6.43 (the printed value)"}
# A published number is one run with seed noise of its own. The paper's only measure of that noise is
# ResNet-110's spread over 5 runs (Table 6: ± 0.16 pp); it stands for every Table 6 net's per-run std.
PAPER_RUN_STD, PAPER_RUN_STD_RUNS = 0.16, 5

# Tables 2 and 3: ImageNet validation top-1 error (%), 10-crop testing. Key: (family, depth, shortcut).
IMAGENET_TOP1 = {
    ("plain", 18, "none"): (27.94, "Table 2"),
    ("residual", 18, "A"): (27.88, "Table 2"),
    ("plain", 34, "none"): (28.54, "Tables 2/3"),
    ("residual", 34, "A"): (25.03, "Tables 2/3"),
    ("residual", 34, "B"): (24.52, "Table 3"),
    ("residual", 34, "C"): (24.19, "Table 3"),
    ("residual", 50, "B"): (22.85, "Table 3"),
    ("residual", 101, "B"): (21.75, "Table 3"),
    ("residual", 152, "B"): (21.43, "Table 3"),
}
TABLE3_IMAGENET_TOP1 = {key: value for key, (value, _) in IMAGENET_TOP1.items()}  # earlier name, values only
# Table 3: ImageNet validation top-5 error (%), 10-crop testing (Table 2 gives top-1 only).
IMAGENET_TOP5 = {
    ("plain", 34, "none"): 10.02,
    ("residual", 34, "A"): 7.76,
    ("residual", 34, "B"): 7.46,
    ("residual", 34, "C"): 7.40,
    ("residual", 50, "B"): 6.71,
    ("residual", 101, "B"): 6.05,
    ("residual", 152, "B"): 5.71,
}
# The paper's ImageNet setting (§3.4): up to 60 × 10^4 iterations at batch 256; ILSVRC-2012's 1000 classes and
# its 50 000 validation images, which the paper's Tables 2/3 test on (here: the test split).
IMAGENET_PAPER_ITERATIONS = 600_000
ILSVRC2012_CLASSES, ILSVRC2012_TEST_IMAGES = 1000, 50_000

COLUMNS = ["net", "layout", "depth", "shortcut", "source", "paper", "paper_std", "paper_runs", "paper_note",
           "ours_mean", "ours_std", "ours_min", "ours_max", "n", "runs", "diverged", "running", "counted"]
DIFFERENCE_COLUMNS = ["difference", "difference_low", "difference_high", "difference_test"]


@dataclass
class PaperComparison:
    """Our test error beside the paper's, and whether the two may be subtracted."""

    table: pd.DataFrame  # COLUMNS, plus DIFFERENCE_COLUMNS when ``comparable``
    comparable: bool  # same data set, recipe and length as the paper: a difference is meaningful
    notes: list[str] = field(default_factory=list)  # what was left out of the table, and why


def reproduction_caveats(sweep_tags: dict[str, str], runs: pd.DataFrame) -> list[str]:
    """Reasons this experiment is not the paper's CIFAR-10 recipe; empty when it is.

    Looks at the sweep's ``recipe`` and ``dataset`` tags and at how far the runs trained, so a smoke run is
    never mistaken for a reproduction.
    """
    caveats = recipe_caveats(sweep_tags, "full CIFAR-10 recipe")
    datasets = named_datasets(sweep_tags, runs)
    if datasets and datasets != {PAPER_DATASET}:
        caveats.append(f"Dataset is {', '.join(sorted(datasets))}; Table 6 is CIFAR-10.")
    return caveats + length_caveats(runs)


def length_caveats(runs: pd.DataFrame) -> list[str]:
    """Whether the runs a final value is made of were configured for, and reached, the paper's 64k iterations.

    Those runs are the ones that ended, trained or diverged (``final_errors``); runs still training are left
    out of final values and so of this check. Configured: the **fewest** iterations any of them was set to.
    Reached: every trained run must have logged its last iteration — judged by the run that reached the
    fewest, never by the one that reached the most (a diverged run stops early by nature and is not asked).
    """
    ended = runs[finished(runs) | diverged(runs)]
    if ended.empty:
        running = runs[still_running(runs)]
        if running.empty:
            return []
        furthest, configured = _max(running, "last_step"), _max(running, "iterations")
        where = f" (the furthest at {furthest or 0:,}" + (f" of {configured:,} iterations)" if configured else
                                                            " iterations)")
        return [f"No run has finished yet: {len(running)} still running{where}."]
    trained = ended[finished(ended)]
    configured = _min(ended, "iterations")
    if configured is None:  # no run says what it was configured for: how far the trained ones got
        configured = _min(trained, "last_step")
    if configured is not None and configured < PAPER_ITERATIONS:
        return [f"Runs trained for {configured:,} iterations; the paper trains {PAPER_ITERATIONS:,}."]
    if "last_step" in trained and "iterations" in trained:
        short = trained[trained["last_step"].lt(trained["iterations"]).fillna(False)]
        if not short.empty:
            fewest = short.loc[short["last_step"].astype("float64").idxmin()]
            return [f"{len(short)} finished run(s) stopped short of their budget: the fewest reached "
                    f"{int(fewest['last_step']):,} of {int(fewest['iterations']):,} iterations."]
    return []


def recipe_caveats(sweep_tags: dict[str, str], recipe_name: str) -> list[str]:
    """Why the sweep's ``recipe`` tag does not confirm the paper's ``recipe_name``; empty when it does."""
    recipe = sweep_tags.get("recipe")
    if recipe is None:
        return ["No sweep run with a 'recipe' tag was found, so this cannot be confirmed as the paper's recipe."]
    if recipe != "paper":
        return [f"Recipe is '{recipe}' (preset '{sweep_tags.get('preset', '?')}'), not the paper's {recipe_name}."]
    return []


def paper_comparison(runs: pd.DataFrame, sweep_tags: dict[str, str] | None = None) -> PaperComparison:
    """Our final test error per net (mean ± std over seeds) beside the paper's table value.

    ``sweep_tags`` (the sweep run's ``recipe`` / ``dataset``) decide whether a difference may be computed;
    without them the comparison is reference only. Each net's number is made of its runs that ended — trained,
    or diverged at chance error — and never of a run still training (see the module's docstring); ``counted``
    says how many of its runs that is, and why the others are not.
    """
    tags = sweep_tags or {}
    comparable = not reproduction_caveats(tags, runs)
    candidates = comparison_candidates(runs)
    notes: list[str] = []
    if candidates.empty:
        return PaperComparison(_empty(comparable), comparable, notes)
    candidates = candidates.assign(layout=layout_column(candidates), shortcut=candidates["shortcut"].fillna("none"))
    errors = final_errors(candidates)
    test_errors = errors[errors["split"].eq("test")]
    on_imagenet = bool(named_datasets(tags, runs) & set(IMAGENET_DATASETS))
    rows, waiting = [], 0
    for (layout, family, depth, shortcut), group in candidates.groupby(["layout", "family", "depth", "shortcut"]):
        depth = int(depth)
        values = test_errors[test_errors["run_id"].isin(group["run_id"])]
        counts = run_counts(group, values)
        if counts["counted"] == 0 and counts["running"] == 0:
            continue  # every run failed or logged no test error: nothing to set beside the paper
        net = net_name(family, depth)
        if layout == "imagenet":
            if (family, depth, shortcut) not in IMAGENET_TOP1:
                continue
            if not on_imagenet:
                notes.append(f"{net} ({shortcut}) has the ImageNet layout but was not trained on ImageNet: "
                             f"not compared with Tables 2/3.")
                continue
            notes.append(f"{net} ({shortcut}) is set beside Tables 2/3 in the ImageNet section, 10-crop against "
                         f"10-crop (top-1 and top-5).")
        elif family == "residual" and depth in TABLE6_RESNET_TEST_ERROR:
            if shortcut != "A":
                notes.append(f"{net} uses shortcut option {shortcut}; Table 6 is option A, so it is not compared.")
                continue
            mean, std, count = TABLE6_RESNET_MEAN_STD.get(depth, (TABLE6_RESNET_TEST_ERROR[depth], None, None))
            images = values["run_id"].map(evaluated_images(group, "test/error"))
            rows.append({**_row(net, layout, depth, shortcut, "Table 6 (CIFAR-10)", mean, values["error"], std,
                                count, TABLE6_NOTES.get(depth, ""), difference=comparable, images=images),
                         **{k: counts[k] for k in ("runs", "diverged", "running")}, "counted": counts["words"]})
            waiting += counts["running"]
    if waiting:
        notes.append(f"{waiting} run(s) still training are left out of the final values (a run's error before "
                     f"its last iteration is not final): the rows that lack them say so, and their numbers are "
                     f"provisional until those runs finish.")
    table = pd.DataFrame(rows, columns=COLUMNS + (DIFFERENCE_COLUMNS if comparable else []))
    return PaperComparison(table.sort_values(["layout", "net", "depth"], key=_natural).reset_index(drop=True),
                           comparable, notes)


def _row(net: str, layout: str, depth: int, shortcut: str, source: str, paper: float, errors: pd.Series,
         paper_std: float | None = None, paper_runs: int | None = None, note: str = "",
         difference: bool = False, images: pd.Series | None = None) -> dict:
    """One table row: the paper's value, ours (mean, std, min, max, n) and, if asked, the difference.
    With no value yet (every run still training) ours and the difference are NaN."""
    found = spread(pd.DataFrame({"g": 0, "e": errors}), ["g"], "e")
    stats = found.iloc[0] if not found.empty else pd.Series({"mean": math.nan, "std": math.nan, "min": math.nan,
                                                             "max": math.nan, "n": 0})
    row = {"net": net, "layout": layout, "depth": depth, "shortcut": shortcut, "source": source, "paper": paper,
           "paper_std": math.nan if paper_std is None else paper_std, "paper_runs": paper_runs, "paper_note": note,
           "ours_mean": stats["mean"], "ours_std": stats["std"], "ours_min": stats["min"], "ours_max": stats["max"],
           "n": int(stats["n"])}
    if difference:
        test = paper_difference(errors.to_numpy(), images.to_numpy(), paper, paper_runs)
        row.update(difference=test.effect if test else stats["mean"] - paper,
                   difference_low=test.low if test else math.nan, difference_high=test.high if test else math.nan,
                   difference_test=test.test if test else ("one seed: no interval" if len(errors) else
                                                           "no finished run: no difference"))
    return row


def paper_difference(errors: np.ndarray, images: np.ndarray, paper: float, averaged_runs: int | None):
    """Our mean − the paper's number with the paper's own noise: the number is one run (per-run std
    PAPER_RUN_STD), or the mean of ``averaged_runs`` runs (std / √runs). None with fewer than 2 seeds."""
    if len(errors) < 2:
        return None
    return reference_difference(errors, images, paper, PAPER_RUN_STD / math.sqrt(averaged_runs or 1),
                                PAPER_RUN_STD_RUNS)


def _empty(comparable: bool) -> pd.DataFrame:
    return pd.DataFrame(columns=COLUMNS + (DIFFERENCE_COLUMNS if comparable else []))


def _natural(column: pd.Series) -> pd.Series:
    """Sort nets by depth rather than as text (ResNet-110 after ResNet-56)."""
    if column.name == "net":
        return column.str.extract(r"^(\D+)-", expand=False)
    return column


def named_datasets(sweep_tags: dict[str, str], runs: pd.DataFrame) -> set[str]:
    """Every data set named by the runs or the sweep run."""
    named = set(runs["dataset"].dropna()) if "dataset" in runs else set()
    return named | ({sweep_tags["dataset"]} if "dataset" in sweep_tags else set())


def _max(runs: pd.DataFrame, column: str) -> int | None:
    """The largest value of an integer column (configured or reached iterations), None when absent."""
    if column in runs and runs[column].notna().any():
        return int(runs[column].max())
    return None


def _min(runs: pd.DataFrame, column: str) -> int | None:
    """The smallest value of an integer column (configured or reached iterations), None when absent."""
    if column in runs and runs[column].notna().any():
        return int(runs[column].min())
    return None
