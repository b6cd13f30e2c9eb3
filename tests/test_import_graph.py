"""The house's import rules hold: no circles, imports only in the documented direction (docs/architecture.md),
no module over the line limit — checked by the same script a developer runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import import_graph  # noqa: E402


def test_the_tree_has_no_circle_no_wrong_way_import_and_no_long_module():
    result = subprocess.run([sys.executable, "scripts/import_graph.py"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert " 0 circle(s), 0 wrong-way import(s), 0 module(s) over 400 lines" in result.stdout


def test_a_wrong_way_import_is_named_with_its_rule():
    edges = {"dashboards.report": {"sweeps.cli", "tracking.store"}, "sweeps.trial.trainable": {"sweeps.driver.plan"},
             "tracking.store": {"resnet_core.config"}, "resnet_core.trainer": {"tracking.spool"}}
    found = import_graph.wrong_way(edges)
    assert found == ["dashboards.report -> sweeps.cli (dashboards may import only ['resnet_core', 'tracking'])",
                     "resnet_core.trainer -> tracking.spool (resnet_core may import only [])",
                     "sweeps.trial.trainable -> sweeps.driver.plan (sweeps.trial never imports sweeps.driver)"]


def test_circles_are_found():
    assert import_graph.circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
