"""ImageNet-layout experiments: which runs they are, which split Fig. 4's bold curves show, Tables 2/3 beside
our 10-crop errors, and whether a difference from the paper may be computed.

- **Ours** is the final iterate's 10-crop top-1 / top-5 error on the test split (``test/error_10crop``,
  ``test/top5_error_10crop``, logged once, at the end of training), mean ± std over seeds — never the best
  evaluation seen, which would select on the test set. As in every final value (dashboards/stats.py,
  ``final_errors``): runs still training are left out, a diverged run counts at chance error (top-1
  100·(1 − 1/classes), top-5 100·(1 − 5/classes)), as the verdicts count it, and the row's ``counted`` says
  so ("2 of 2; 1 diverged (at chance error)"). Whether the runs trained to length is judged on those that
  finished, by the fewest iterations any of them reached.
- **A difference** (ours − paper) is computed only in the paper's setting (``paper_setting_caveats`` is empty):
  the sweep's recipe tag is ``paper``, every run trained on data set ``imagenet`` to the paper's 600k
  iterations, and its 10-crop test covered ILSVRC-2012's 50 000 validation images (``test/images_10crop``; the
  class count too, where the run logged it). The generated digits set of the smoke preset has the same data set
  name but 360 test images, so it never passes. Otherwise the paper's numbers are reference only.
- The paper states no run-to-run spread for ImageNet, so a difference gets no interval: the CIFAR spread
  (Table 6) says nothing about ImageNet nets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd

from dashboards.paper import (IMAGENET_DATASETS, IMAGENET_PAPER_ITERATIONS, IMAGENET_TOP1, IMAGENET_TOP5,
                              ILSVRC2012_CLASSES, ILSVRC2012_TEST_IMAGES, named_datasets, recipe_caveats)
from dashboards.stats import (FAMILIES, at_modal_setting, diverged, finished, layout_column, like_for_like,
                              run_counts, spread, still_running)
from dashboards.stats import chance_error
from resnet_core.config import net_name

HISTORY_METRICS = ("val/error",)  # Fig. 4's bold curves, where the runs hold a validation split out
TOP1, TOP5, TEN_CROP_IMAGES = "test/error_10crop", "test/top5_error_10crop", "test/images_10crop"
MEASURES = (("top-1", TOP1, {k: v for k, (v, _) in IMAGENET_TOP1.items()}), ("top-5", TOP5, IMAGENET_TOP5))
COLUMNS = ["net", "family", "depth", "shortcut", "source", "measure", "paper", "ours_mean", "ours_std", "ours_min",
           "ours_max", "n", "runs", "diverged", "running", "counted"]


def imagenet_runs(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs with the ImageNet model layout (any outcome)."""
    return runs[layout_column(runs).eq("imagenet")]


def has_imagenet_runs(runs: pd.DataFrame) -> bool:
    """Whether any run has the ImageNet layout: the report then has its ImageNet section."""
    return not imagenet_runs(runs).empty


def only_imagenet_runs(runs: pd.DataFrame) -> bool:
    """Whether every run has the ImageNet layout (Fig. 4 then stands in for Fig. 6)."""
    return not runs.empty and len(imagenet_runs(runs)) == len(runs)


def history_metrics(runs: pd.DataFrame, base: tuple[str, ...]) -> tuple[str, ...]:
    """``base`` histories, plus the validation error when some run has the ImageNet layout."""
    return base + HISTORY_METRICS if has_imagenet_runs(runs) else base


def members(runs: pd.DataFrame) -> pd.DataFrame:
    """ImageNet-layout plain and residual runs that count (usable, like for like), every shortcut option."""
    table = like_for_like(runs)
    table = table[layout_column(table).eq("imagenet") & table["family"].isin(FAMILIES) & table["depth"].notna()]
    return table.assign(shortcut=table["shortcut"].fillna("none"))


def candidates(runs: pd.DataFrame) -> pd.DataFrame:
    """Every ImageNet-layout plain and residual run, of any outcome, at the setting ``members`` keeps
    (``members(runs)`` is its usable part): what the tables' "n of m" counts."""
    table = runs[at_modal_setting(runs)]
    table = table[layout_column(table).eq("imagenet") & table["family"].isin(FAMILIES) & table["depth"].notna()]
    return table.assign(shortcut=table["shortcut"].fillna("none"))


def held_out_split(history: pd.DataFrame, runs: pd.DataFrame) -> str:
    """``val`` when the ImageNet-layout runs logged a validation history (a held-out split), else ``test``."""
    ids = imagenet_runs(runs)["run_id"]
    logged = history["metric"].eq("val/error") & history["run_id"].isin(ids)
    return "val" if logged.any() else "test"


def is_smoke(sweep_tags: dict[str, str], runs: pd.DataFrame) -> bool:
    """A smoke run: the sweep's (or a run's) preset is a smoke preset (``smoke``, ``imagenet-smoke``)."""
    presets = set(runs["preset"].dropna()) if "preset" in runs else set()
    presets |= {sweep_tags["preset"]} if "preset" in sweep_tags else set()
    return any("smoke" in str(p) for p in presets)


def data_dirs(runs: pd.DataFrame) -> list[str]:
    """Where the runs read their data (param ``data.data_dir``)."""
    return sorted(runs["params.data.data_dir"].dropna().unique()) if "params.data.data_dir" in runs else []


def paper_setting_caveats(sweep_tags: dict[str, str], runs: pd.DataFrame) -> list[str]:
    """Reasons this experiment is not the paper's ImageNet setting (recipe, full ILSVRC-2012, full length);
    empty when it is. Reads the sweep's tags and the ImageNet-layout runs that count; the length and the test
    set are judged on the runs that have ended (runs still training are in no final value yet)."""
    table, caveats = members(runs), recipe_caveats(sweep_tags, "ImageNet recipe")
    every = candidates(runs)
    datasets = named_datasets(sweep_tags, table)
    if not datasets <= set(IMAGENET_DATASETS) or not datasets:
        caveats.append(f"Dataset is {', '.join(sorted(datasets)) or 'unknown'}; Tables 2/3 are ILSVRC-2012.")
    if is_smoke(sweep_tags, runs):
        where = ", ".join(data_dirs(table)) or "a generated set"
        caveats.append(f"Preset '{sweep_tags.get('preset', '?')}' is a smoke run on {where}, not ILSVRC-2012.")
    caveats += _length_caveats(every) + _test_set_caveats(every[finished(every)])
    return caveats


def _length_caveats(table: pd.DataFrame) -> list[str]:
    """Whether the runs that ended (trained or diverged) were configured for the paper's 600k iterations (the
    fewest any was set to), and whether every trained one reached its budget (the fewest reached, never the
    most). Runs still training are not asked; a diverged run stops early by nature."""
    ended = table[finished(table) | diverged(table)]
    if ended.empty and still_running(table).any():
        running = table[still_running(table)]
        steps = running["last_step"].dropna() if "last_step" in running else pd.Series(dtype=float)
        furthest = int(steps.max()) if not steps.empty else 0
        return [f"No run has finished yet: {len(running)} still running (the furthest at {furthest:,} iterations)."]
    if ended.empty or not ended["iterations"].notna().any():
        return ["No run says how many iterations it was configured for."]
    if int(ended["iterations"].min()) < IMAGENET_PAPER_ITERATIONS:
        return [f"Runs trained for {int(ended['iterations'].min()):,} iterations; the paper trains up to "
                f"{IMAGENET_PAPER_ITERATIONS:,} (60 × 10⁴)."]
    trained = ended[finished(ended)]
    reached = trained["last_step"] if "last_step" in trained else pd.Series(pd.NA, index=trained.index)
    short = trained[reached.isna() | reached.lt(trained["iterations"]).fillna(True)]
    if not short.empty:
        fewest = short["last_step"].min() if "last_step" in short else None
        configured = int(short["iterations"].max())
        return [f"Some runs have reached only {0 if pd.isna(fewest) else int(fewest):,} of {configured:,} "
                f"iterations (stopped short of their budget)."]
    return []


def _test_set_caveats(table: pd.DataFrame) -> list[str]:
    """Whether every run's 10-crop test covered ILSVRC-2012's validation images (and classes, where logged)."""
    column = f"metrics.{TEN_CROP_IMAGES}"
    images = pd.to_numeric(table[column], errors="coerce") if column in table else pd.Series(dtype=float)
    if table.empty or images.isna().any() or images.empty:
        return [f"Not every run logged {TEN_CROP_IMAGES} (logged with the 10-crop test, at the end of training), so "
                f"the test set cannot be confirmed as ILSVRC-2012's {ILSVRC2012_TEST_IMAGES:,} validation images."]
    caveats = []
    if not images.eq(ILSVRC2012_TEST_IMAGES).all():
        counts = ", ".join(f"{int(n):,}" for n in sorted(images.unique()))
        caveats.append(f"The 10-crop test covered {counts} images; ILSVRC-2012's validation set has "
                       f"{ILSVRC2012_TEST_IMAGES:,}.")
    classes = pd.to_numeric(table.get("tags.data.classes", pd.Series(dtype=object)), errors="coerce").dropna()
    if not classes.eq(ILSVRC2012_CLASSES).all():
        caveats.append(f"The data has {', '.join(str(int(c)) for c in sorted(classes.unique()))} classes; "
                       f"ILSVRC-2012 has {ILSVRC2012_CLASSES:,}.")
    return caveats


@dataclass
class ImageNetComparison:
    """Our 10-crop errors beside Tables 2/3, long (one row per net and measure), and whether to subtract."""

    table: pd.DataFrame  # COLUMNS, plus "difference" when ``comparable``
    comparable: bool
    caveats: list[str] = field(default_factory=list)  # why not comparable
    notes: list[str] = field(default_factory=list)  # nets left out of the table, and why


def tables_2_3(runs: pd.DataFrame, sweep_tags: dict[str, str]) -> ImageNetComparison:
    """Per ImageNet-layout net in Table 2 or 3: the paper's 10-crop top-1 and top-5 error beside ours (final
    iterate, mean ± std over seeds; runs still training left out, diverged runs at chance error), and ours −
    paper only in the paper's setting."""
    caveats = paper_setting_caveats(sweep_tags, runs)
    comparable, rows, notes = not caveats, [], []
    for (family, depth, shortcut), group in candidates(runs).groupby(["family", "depth", "shortcut"]):
        if not (finished(group) | diverged(group) | still_running(group)).any():
            continue  # every run failed or was interrupted: nothing to set beside the paper
        key, net = (family, int(depth), shortcut), imagenet_net(family, int(depth), shortcut)
        if key not in IMAGENET_TOP1:
            notes.append(f"{net} is in neither Table 2 nor Table 3: not compared.")
            continue
        if not group["dataset"].isin(IMAGENET_DATASETS).all():
            notes.append(f"{net} has the ImageNet layout but was not trained on ImageNet: not set beside Tables 2/3.")
            continue
        trained = group[finished(group)]
        if all(trained.get(f"metrics.{metric}", pd.Series(dtype=float)).isna().all() for _, metric, _ in MEASURES):
            notes.append(f"{net}: no 10-crop error logged yet (it is logged once, at the end of training).")
        for measure, metric, paper in MEASURES:
            rows.append(_row(net, key, measure, paper.get(key, math.nan), group, metric, comparable))
    table = pd.DataFrame(rows, columns=COLUMNS + (["difference"] if comparable else []))
    return ImageNetComparison(table, comparable, caveats, notes)


def imagenet_net(family: str, depth: int, shortcut: str) -> str:
    """``plain-34``, ``residual-34 A``: residual nets name their shortcut option, as Table 3 does."""
    return net_name(family, depth) + (f" {shortcut}" if family == "residual" else "")


def chance(dataset: str | None, measure: str) -> float:
    """The error (%) of guessing: top-1 ``chance_error`` (100·(1 − 1/classes)), top-5 100·(1 − 5/classes)."""
    top1 = chance_error(dataset)
    if measure == "top-1":
        return top1
    classes = round(100 / (100 - top1))
    return 100 * (1 - min(5, classes) / classes)


def _row(net: str, key: tuple, measure: str, paper: float, group: pd.DataFrame, metric: str,
         comparable: bool) -> dict:
    """One net and measure: the finished runs' final 10-crop error and the diverged runs' chance error."""
    column = f"metrics.{metric}"
    trained = group[finished(group)]
    logged = trained[column].dropna() if column in trained else pd.Series(dtype=float)
    failed = group[diverged(group)]
    datasets = failed["dataset"] if "dataset" in failed else pd.Series(None, index=failed.index, dtype=object)
    values = pd.concat([logged, datasets.map(lambda d: chance(d, measure)).astype("float64")])
    counts = run_counts(group, pd.DataFrame({"run_id": group.loc[values.index, "run_id"]}))
    stats = spread(pd.DataFrame({"g": 0, "e": values}), ["g"], "e")
    found = stats.iloc[0] if not stats.empty else pd.Series({k: math.nan for k in ("mean", "std", "min", "max")})
    source = IMAGENET_TOP1[key][1] if measure == "top-1" else "Table 3" if not math.isnan(paper) else "—"
    row = {"net": net, "family": key[0], "depth": key[1], "shortcut": key[2], "source": source, "measure": measure,
           "paper": paper, "ours_mean": found["mean"], "ours_std": found["std"], "ours_min": found["min"],
           "ours_max": found["max"], "n": len(values), "runs": counts["runs"], "diverged": counts["diverged"],
           "running": counts["running"], "counted": counts["words"]}
    if comparable:
        row["difference"] = row["ours_mean"] - paper
    return row


def seeds_per_net(runs: pd.DataFrame) -> pd.Series:
    """Usable seeds of each ImageNet-layout net (family, depth, shortcut)."""
    return members(runs).groupby(["family", "depth", "shortcut"]).size()
