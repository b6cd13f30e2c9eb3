"""Test helper: a checked plan of the depth study from command-line flags, as its command line builds it."""

from __future__ import annotations

from sweeps.cli import plan_from_argv
from sweeps.depth_vs_error import STUDY
from sweeps.driver.plan import SweepPlan, check_plan


def plan_for(argv: list[str]) -> SweepPlan:
    plan = plan_from_argv(STUDY, argv)
    check_plan(plan)
    return plan
