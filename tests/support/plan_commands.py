"""Plan several study commands on one simulated cluster (started once): ``python tests/support/plan_commands.py
SPEC COMMANDS.json``, COMMANDS a list of {"entry": "sweeps/<study>.py", "argv": [...], "env": {...}}. Prints one
JSON line per command: its exit code and output (what ``--plan-only --assume-cluster SPEC`` would print)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from sweeps.cli import announced_plan, study_arg_parser  # noqa: E402
from sweeps.driver.cluster_shape import parse_cluster  # noqa: E402
from sweeps.driver.planner import plan_on_cluster, simulated_cluster  # noqa: E402


def plan(command: dict, type_of_node: dict[str, str]) -> tuple[int, str]:
    study = importlib.import_module("sweeps." + Path(command["entry"]).stem).STUDY
    saved = dict(os.environ)
    os.environ.update(command["env"])
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            args = study_arg_parser(study).parse_args([*command["argv"], "--plan-only"])
            return plan_on_cluster(lambda: announced_plan(study, args), type_of_node), out.getvalue()
    except (ValueError, SystemExit) as exc:
        return 2, out.getvalue() + f"error: {exc}"
    finally:
        os.environ.clear()
        os.environ.update(saved)


def main() -> None:
    spec, commands = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    with contextlib.redirect_stdout(sys.stderr), simulated_cluster(parse_cluster(spec)) as type_of_node:
        results = [plan(command, type_of_node) for command in commands]
    for code, output in results:
        print(json.dumps({"rc": code, "output": output}), flush=True)


if __name__ == "__main__":
    main()
