"""The report's ImageNet section against a real SQLite MLflow store of ImageNet-layout sweeps, written as the sweep
logs them (centre-crop metrics at every evaluation, 10-crop at the end): a smoke run on the generated digits set,
the paper's recipe on full ILSVRC-2012 with two seeds, the same with a reduced recipe, a shortcut study, and a
CIFAR study that must get no ImageNet section."""

from __future__ import annotations

import dataclasses
import re

import pytest


from dashboards import figures, imagenet, paper, report  # noqa: E402
from dashboards.inference import signed  # noqa: E402
from dashboards.loader import load_experiment  # noqa: E402
from dashboards.report import render_report  # noqa: E402
from support.mlflow_fixtures import sqlite_uri, write_fixture_experiment  # noqa: E402

IMAGENET = dict(dataset="imagenet", layout="imagenet", layout_tag="layout", depths=(18, 34), points=4,
                with_failed=False, with_diverged=False, artifacts=False)
FULL = dict(IMAGENET, preset="imagenet", iterations=paper.IMAGENET_PAPER_ITERATIONS, seeds=2, val_size=10_000,
            ten_crop_images=paper.ILSVRC2012_TEST_IMAGES, config={"data.data_dir": "data/imagenet"})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Five experiments in one store; yields its URI."""
    uri = sqlite_uri(tmp_path_factory.mktemp("imagenet-report"))
    # the imagenet-smoke preset: the generated digits set (360 test images), 1200 iterations, one seed
    write_fixture_experiment(uri, "smoke", **{**IMAGENET, "preset": "imagenet-smoke", "recipe": "reduced",
                                              "iterations": 1200, "seeds": 1, "ten_crop_images": 360,
                                              "config": {"data.data_dir": "data/digits-imagenet", "model.width": 0.25,
                                                         "data.crop_size": 32}})
    write_fixture_experiment(uri, "paper", recipe="paper", **FULL)
    write_fixture_experiment(uri, "reduced", recipe="reduced", **FULL)
    write_fixture_experiment(uri, "table3", **{**FULL, "recipe": "paper", "depths": (34,), "seeds": 1,
                                               "shortcuts": ("A", "B", "C"), "study": "shortcut_options"})
    write_fixture_experiment(uri, "cifar", points=4, with_failed=False, with_diverged=False, artifacts=False)
    return uri


def _load(store: str, name: str):
    return load_experiment(name, store, metrics=report.history_metrics)  # as build_report loads


@pytest.fixture(scope="module")
def pages(store):
    return {name: render_report(_load(store, name)) for name in ("smoke", "paper", "reduced", "table3", "cifar")}


def _section(html: str) -> str:
    return html.split('<section id="imagenet">')[1].split("</section>")[0]


def _cells(section: str) -> list[list[str]]:
    """The rows of the section's table, as lists of cell texts (header first)."""
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", section)
    return [re.findall(r"<t[hd]>(.*?)</t[hd]>", row) for row in rows]


def _row(section: str, net: str) -> dict[str, str]:
    header, *rows = _cells(section)
    return next(dict(zip(header, row)) for row in rows if row[0] == net)


def test_smoke_run_shows_table2_as_reference_only_and_says_what_a_smoke_run_can_show(store, pages):
    html, data = pages["smoke"], _load(store, "smoke")
    section = _section(html)
    assert 'id="imagenet-tables"' in section and 'id="imagenet-reference-only"' in section
    assert "ours − paper" not in section and 'id="imagenet-comparable"' not in section
    for net, value in (("plain-18", "27.94"), ("plain-34", "28.54"), ("residual-18 A", "27.88"),
                       ("residual-34 A", "25.03")):
        row = _row(section, net)
        assert row["top-1 paper (%)"] == value, net
        ours = data.runs.loc[data.runs["name"].eq(f"{net.replace(' A', '')} seed 0"), "metrics.test/error_10crop"]
        assert row["top-1 ours (%)"] == f"{ours.iloc[0]:.2f} (one seed: no std)", net  # the final 10-crop top-1
    assert _row(section, "plain-34")["top-5 paper (%)"] == "10.02"  # Table 3 gives plain-34's top-5
    assert _row(section, "plain-18")["top-5 paper (%)"] == "— (not in the paper)"  # Table 2 has top-1 only
    reasons = re.search(r'id="imagenet-reference-only">.*?<ul class="note">(.*?)</ul>', section).group(1)
    assert "Recipe is &#x27;reduced&#x27;" in reasons and "smoke run on data/digits-imagenet" in reasons
    assert "covered 360 images; ILSVRC-2012&#x27;s validation set has 50,000" in reasons
    smoke = re.search(r'<p class="note smoke" id="imagenet-smoke">(.*?)</p>', section).group(1)
    assert "end to end" in smoke and "cannot reproduce the paper's numbers" in smoke
    seeds = re.search(r'<p class="note" id="imagenet-seeds">(.*?)</p>', section).group(1)
    assert "One seed for every net" in seeds and "inconclusive (one seed)" in seeds and "only for a tie" in seeds
    rate = data.runs["metrics.test/error"].mean() / 100  # the test's binomial 95 % half-width, for contrast
    assert f"±{196 * (rate * (1 - rate) / 360) ** 0.5:.2f} pp at {100 * rate:.1f} % error over 360 images" in seeds
    assert "This experiment does not follow the paper's ImageNet recipe" in html  # the banner, ImageNet-worded
    assert '<section id="curves">' not in html and 'id="fig-imagenet-curves"' in section  # Fig. 4 instead of Fig. 6
    verdicts = html.split('<section id="verdict">')[1].split("</section>")[0]
    assert verdicts.count("verdict-one-seed") == 2  # plain and residual: one seed per depth, no test


def test_paper_recipe_on_full_ilsvrc_gets_differences_top1_and_top5(store, pages):
    section, data = _section(pages["paper"]), _load(store, "paper")
    assert 'id="imagenet-comparable"' in section and 'id="imagenet-reference-only"' not in section
    assert 'id="imagenet-smoke"' not in section
    row = _row(section, "residual-34 A")
    ours = data.runs.loc[data.runs["name"].str.startswith("residual-34 seed"), "metrics.test/error_10crop"]
    top5 = data.runs.loc[data.runs["name"].str.startswith("residual-34 seed"), "metrics.test/top5_error_10crop"]
    assert len(ours) == 2 and row["top-1 paper (%)"] == "25.03" and row["top-5 paper (%)"] == "7.76"
    assert row["top-1 ours (%)"].startswith(f"{ours.mean():.2f} ± {ours.std():.2f} (mean ± std, n=2")
    assert row["top-1 ours − paper (pp)"] == signed(ours.mean() - 25.03)
    assert row["top-5 ours − paper (pp)"] == signed(top5.mean() - 7.76)
    assert _row(section, "plain-18")["top-5 ours − paper (pp)"] == "—"  # no paper number to subtract
    assert 'id="recipe">Paper recipe: ILSVRC-2012' in pages["paper"]
    seeds = re.search(r'<p class="note" id="imagenet-seeds">(.*?)</p>', section).group(1)
    assert "degrees of freedom" in seeds and "One seed" not in seeds
    the_paper = pages["paper"].split('<section id="paper">')[1].split("</section>")[0]
    assert "set beside Tables 2/3 in the ImageNet section" in the_paper and "<td>25.03</td>" not in the_paper


def test_no_difference_unless_recipe_length_and_test_set_are_the_papers(store, pages):
    section = _section(pages["reduced"])
    assert 'id="imagenet-reference-only"' in section and "ours − paper" not in section
    assert "Recipe is &#x27;reduced&#x27; (preset &#x27;imagenet&#x27;)" in section
    runs, tags = _load(store, "paper").runs, _load(store, "paper").sweep_tags
    assert imagenet.tables_2_3(runs, tags).comparable
    for changed, reason in [(runs.assign(iterations=300_000), "trained for 300,000 iterations"),
                            (runs.assign(last_step=450_000), "reached only 450,000 of 600,000"),
                            (runs.drop(columns=f"metrics.{imagenet.TEN_CROP_IMAGES}"), "cannot be confirmed"),
                            (runs.assign(**{f"metrics.{imagenet.TEN_CROP_IMAGES}": 10_000.0}), "covered 10,000 images"),
                            (runs.assign(**{"tags.data.classes": "100"}), "100 classes"),
                            (runs.assign(dataset="cifar10"), "Tables 2/3 are ILSVRC-2012")]:
        result = imagenet.tables_2_3(changed, tags)
        assert not result.comparable and "difference" not in result.table, reason
        assert any(reason in c for c in result.caveats), (reason, result.caveats)
    smoke = imagenet.tables_2_3(runs, {**tags, "preset": "imagenet-smoke"})
    assert not smoke.comparable and any("smoke run" in c for c in smoke.caveats)


def test_tables_2_3_leave_out_runs_still_training_and_count_diverged_runs_at_chance_error(store):
    """As Table 6 does: a run still training is in no final value (and does not hold the others' difference
    back), a diverged run counts at chance error (top-1 99.9 %, top-5 99.5 % over 1000 classes)."""
    data = _load(store, "paper")
    runs, tags = data.runs.copy(), data.sweep_tags
    ten_crop = [f"metrics.{m}" for m in (imagenet.TOP1, imagenet.TOP5, imagenet.TEN_CROP_IMAGES)]
    still = runs["name"].eq("residual-34 seed 1")
    runs.loc[still, ["outcome", "status", "last_step"]] = ["running", "RUNNING", 300_000]
    runs.loc[still, ten_crop] = float("nan")  # logged only at the end of training
    failed = runs["name"].eq("residual-18 seed 1")
    runs.loc[failed, ["outcome", "status"]] = ["diverged", "FAILED"]
    result = imagenet.tables_2_3(runs, tags)
    assert result.comparable, result.caveats  # the finished runs are the paper's setting; the running one waits
    table = result.table.set_index(["net", "measure"])
    r34 = table.loc[("residual-34 A", "top-1")]
    assert r34["counted"] == "1 of 2; 1 still running (left out)" and r34["n"] == 1
    r18 = table.loc[("residual-18 A", "top-1")]
    assert r18["counted"] == "2 of 2; 1 diverged (at chance error)" and r18["ours_max"] == pytest.approx(99.9)
    kept = runs.loc[runs["name"].eq("residual-18 seed 0"), f"metrics.{imagenet.TOP1}"].iloc[0]
    assert r18["ours_mean"] == pytest.approx((kept + 99.9) / 2)  # not its own last 10-crop error
    assert table.loc[("residual-18 A", "top-5"), "ours_max"] == pytest.approx(99.5)
    section = _section(render_report(dataclasses.replace(data, runs=runs)))
    assert _row(section, "residual-34 A")["runs counted"] == "1 of 2; 1 still running (left out)"
    assert _row(section, "plain-18")["runs counted"] == "2 of 2"
    every = runs.assign(outcome="running", status="RUNNING")
    assert any("No run has finished yet: 8 still running" in c for c in imagenet.paper_setting_caveats(tags, every))


def test_fig4_draws_thin_training_and_bold_validation_error_per_net(store, pages):
    data = _load(store, "paper")
    assert set(data.history["metric"]) == {"train/error", "test/error", "val/error"}  # fetched for ImageNet only
    assert imagenet.held_out_split(data.history, data.runs) == "val"
    assert imagenet.held_out_split(_load(store, "smoke").history, _load(store, "smoke").runs) == "test"  # no val split
    fig = figures.degradation_curves(data.history, data.runs, held_out="val", style=figures.fig4_style("validation"))
    for family, axis in (("plain", "x"), ("residual", "x2")):  # plain left, residual right, as Fig. 4
        for depth in (18, 34):
            train = [t for t in fig.data if t.meta == {"family": family, "depth": depth, "metric": "train/error",
                                                       "kind": "mean"}]
            val = [t for t in fig.data if t.meta == {"family": family, "depth": depth, "metric": "val/error",
                                                     "kind": "mean"}]
            assert len(train) == len(val) == 1, (family, depth)
            assert train[0].line.width < val[0].line.width and train[0].line.width <= 1 and val[0].line.width >= 3
            assert train[0].line.dash == val[0].line.dash == "solid" and train[0].xaxis == val[0].xaxis == axis
            assert list(val[0].x) == sorted(data.history.loc[data.history["metric"].eq("val/error"), "step"].unique())
    assert not [t for t in fig.data if t.meta.get("metric") == "test/error"]  # the test split is for the tables
    bands = [t for t in fig.data if t.meta.get("kind") == "band"]
    assert len(bands) == 8 and {t.mode for t in bands} == {"lines"}  # shaded ranges, no marker at each evaluation
    keys = [t.name for t in fig.data if t.meta.get("kind") == "key"]
    assert keys[:2] == ["training error (thin)", "validation error, centre crop (bold)"]
    section = _section(pages["paper"])
    assert 'id="fig-imagenet-curves"' in section and "validation error, centre crop (bold)" in section
    assert "training images held out" in section


def test_table3_rows_for_every_shortcut_option_and_the_verdicts_still_work(pages):
    section = _section(pages["table3"])
    expected = {"plain-34": ("28.54", "10.02"), "residual-34 A": ("25.03", "7.76"),
                "residual-34 B": ("24.52", "7.46"), "residual-34 C": ("24.19", "7.40")}
    for net, (top1, top5) in expected.items():
        row = _row(section, net)
        assert (row["top-1 paper (%)"], row["top-5 paper (%)"]) == (top1, top5), net
        assert row["top-1 ours − paper (pp)"] != "—", net  # the paper's setting, one seed: a difference, no interval
    assert _row(section, "residual-34 B")["table in the paper"] == "Table 3"
    shortcuts = pages["table3"].split('<section id="shortcuts">')[1].split("</section>")[0]
    assert shortcuts.count("verdict-one-seed") == 3  # B vs A, C vs A, C vs B: one seed each, no test


def test_cifar_experiments_get_no_imagenet_section_and_fetch_no_validation_history(store, pages):
    data = _load(store, "cifar")
    assert "imagenet" not in report.report_sections(data) and "curves" in report.report_sections(data)
    assert report.history_metrics(data.runs) == report.HISTORY_METRICS
    assert '<section id="imagenet">' not in pages["cifar"] and "Table 6" in pages["cifar"]
