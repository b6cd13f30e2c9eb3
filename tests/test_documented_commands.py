"""Every command README.md, cluster/README.md and docs/ show: parsed by its own entry point's parser, and, for
a study on a machine that is not here (a GPU node, a cluster recipe), placed by Ray on a simulated cluster of the
shape the docs name (``--plan-only --assume-cluster``). The commands for this machine are run for real, in tiny
form, by the suites of their features (the quick start by tests/test_sweeps.py, the report by
tests/test_dashboards.py, ...); here they must parse."""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

import pytest

from support.documented import ROOT, Command, documented_commands

COMMANDS = documented_commands()
# Not our entry points (pytest, the standard library), a file the docs ask the reader to write, or a test module
# that takes no arguments when run as a script (its own tests run it).
FOREIGN = {"pytest", "cProfile", "-c", "venv", "sweeps/width.py", "tests/test_verdict_simulation.py"}
PLACEHOLDERS = ("...", "<")


def _ours(command: Command) -> bool:
    return (command.entry not in FOREIGN and not command.is_reference
            and not any(p in word for word in command.argv for p in PLACEHOLDERS))


class Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        self.namespace = namespace


def parse(command: Command, monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace | None:
    """Run the command's entry point until it has parsed its arguments (its real parser), then stop it.
    None for ``--help`` (which prints and exits 0)."""
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise Parsed(original(self, args, namespace))

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [command.entry, *command.argv])
    monkeypatch.chdir(ROOT)
    for name, value in command.env.items():
        monkeypatch.setenv(name, value)
    try:
        if command.entry.endswith(".py"):
            runpy.run_path(str(ROOT / command.entry), run_name="__main__")
        else:
            runpy.run_module(command.entry, run_name="__main__", alter_sys=True)
    except Parsed as parsed:
        return parsed.namespace
    except SystemExit as exit_:
        if exit_.code == 0 and "--help" in command.argv:
            return None
        raise AssertionError(f"{command}\ndoes not parse (exit {exit_.code})") from None
    raise AssertionError(f"{command}\nran without parsing its arguments")


@pytest.mark.parametrize("command", [c for c in COMMANDS if _ours(c)], ids=str)
def test_every_documented_command_parses(command, monkeypatch):
    parse(command, monkeypatch)


def test_the_docs_show_the_commands_users_run():
    """The reader of this suite can trust that it read the docs: the quick start, the Table 2 node, a cluster."""
    shown = {(c.doc, c.entry, " ".join(c.argv)) for c in COMMANDS}
    assert ("README.md", "sweeps/depth_vs_error.py", "") in shown
    assert ("README.md", "sweeps/depth_vs_error.py", "--preset imagenet --data-dir /data/imagenet") in shown
    assert sum(c.doc == "cluster/README.md" and c.entry.startswith("sweeps/") for c in COMMANDS) >= 4
    assert len([c for c in COMMANDS if _ours(c)]) >= 40


def _needs_another_machine(command: Command) -> bool:
    """A study command whose preset asks for GPUs, or one that plans for a cluster itself."""
    if not command.entry.startswith("sweeps/") or not _ours(command) or command.entry == "sweeps/resend.py":
        return False
    if "--plan-only" in command.argv:
        return True
    argv = command.argv
    preset = argv[argv.index("--preset") + 1] if "--preset" in argv else None
    study = runpy.run_path(str(ROOT / command.entry))["STUDY"]
    return preset is not None and study.preset(preset).gpus_per_trial > 0


def _machine_of(command: Command) -> str:
    argv = command.argv
    if "--assume-cluster" in argv:
        return argv[argv.index("--assume-cluster") + 1]
    preset = argv[argv.index("--preset") + 1]
    machine = command.machine(preset)
    assert machine, (f"{command}\nasks for GPUs but its docs name no machine for preset {preset!r}: add "
                     f"<!-- machine: {preset}=SPEC --> before its block (SPEC as --assume-cluster takes)")
    return machine


def _without_assume_cluster(argv: list[str]) -> list[str]:
    if "--assume-cluster" not in argv:
        return [a for a in argv if a != "--plan-only"]
    at = argv.index("--assume-cluster")
    return [a for a in argv[:at] + argv[at + 2:] if a != "--plan-only"]


@pytest.mark.slow
def test_every_documented_study_command_fits_the_machine_it_names(tmp_path):
    """Grouped by machine: one simulated cluster per shape, every command on it planned as --plan-only would."""
    by_machine: dict[str, list[Command]] = defaultdict(list)
    for command in filter(_needs_another_machine, COMMANDS):
        by_machine[_machine_of(command)].append(command)
    assert {"1x64cpu8gpu", "cluster/kuberay/raycluster.yaml", "cluster/ray-up.yaml"} <= set(by_machine)
    def plan_on(index: int, machine: str, commands: list[Command]) -> subprocess.CompletedProcess:
        listed = tmp_path / f"{index}.json"
        listed.write_text(json.dumps([{"entry": c.entry, "argv": _without_assume_cluster(c.argv), "env": c.env}
                                      for c in commands]))
        return subprocess.run([sys.executable, "tests/support/plan_commands.py", machine, str(listed)], cwd=ROOT,
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"})

    # Two simulated clusters at a time: each mostly waits for its Ray processes to start.
    with ThreadPoolExecutor(2) as pool:
        runs = list(pool.map(plan_on, range(len(by_machine)), by_machine, by_machine.values()))
    failures = []
    for (machine, commands), run in zip(by_machine.items(), runs):
        assert run.returncode == 0, run.stderr[-3000:]
        for command, line in zip(commands, run.stdout.splitlines(), strict=True):
            result = json.loads(line)
            if result["rc"] != 0:
                failures.append(f"{command}\non {machine}:\n{result['output']}")
    assert not failures, "\n\n".join(failures)
