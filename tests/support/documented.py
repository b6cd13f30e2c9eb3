"""The commands the docs show, as a user would type them: read from README.md, cluster/README.md and docs/*.md.

A command is any line (in a code block or an inline code span) that runs ``python``/``python3`` on one of the
project's entry points; a code block's ``\\`` continuations are joined. The machine a command is meant for is
named in the markdown by a comment before its block::

    <!-- machine: paper=1x8cpu1gpu imagenet=1x64cpu8gpu env: RESNET_STUDIES_SHARED_STORAGE=1 -->

(per preset; ``*=`` for every preset), which holds until the next such comment or the next heading. A command
without one is meant for the machine the docs' quick start names: this one.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ("README.md", "cluster/README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")))
_MACHINE = re.compile(r"<!--\s*machine:\s*(?P<machines>.*?)(?:\s+env:\s*(?P<env>.*?))?\s*-->")
_INLINE = re.compile(r"`([^`]*\bpython3?\b[^`]*)`")
PLACEHOLDER_HOME = "/home/user"


@dataclass
class Command:
    """One documented command: where it is, its entry point and arguments, and the machine it names."""

    doc: str
    line: int
    text: str
    entry: str  # "sweeps/depth_vs_error.py" or a module, e.g. "resnet_core.train"
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # VAR=value prefixes and the annotation's env
    machines: dict[str, str] = field(default_factory=dict)  # preset (or "*") -> --assume-cluster SPEC
    inline: bool = False  # in a sentence's code span, not a code block

    @property
    def is_reference(self) -> bool:
        """A module named in a sentence without arguments ("`python -m dashboards.report` reads ..."): a name,
        not a command to run."""
        return self.inline and not self.argv and not self.entry.endswith(".py")

    def machine(self, preset: str) -> str | None:
        return self.machines.get(preset, self.machines.get("*"))

    def __str__(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def documented_commands() -> list[Command]:
    return [command for doc in DOCS for command in _commands_in(doc)]


def _commands_in(doc: str) -> list[Command]:
    found, machines, env = [], {}, {}
    lines = (ROOT / doc).read_text().splitlines()
    in_code, pending, start = False, "", 0
    for number, line in enumerate(lines, 1):
        if match := _MACHINE.search(line):
            machines = dict(item.split("=", 1) for item in match["machines"].split())
            env = dict(item.split("=", 1) for item in (match["env"] or "").split())
            continue
        if line.startswith("#") and not in_code:
            machines, env = {}, {}
        if line.strip().startswith("```"):
            in_code = not in_code
            continue
        inline = not (in_code or pending or re.match(r"    +\S*python3? ", line))  # else: a code block
        if not inline:
            pending, start = (pending + " " + line.strip(), start) if pending else (line.strip(), number)
            if pending.endswith("\\"):
                pending = pending[:-1]
                continue
            texts, pending = [pending], ""
        else:
            texts, start = _INLINE.findall(line), number
        for text in texts:
            if command := _parse(doc, start, text, machines, env):
                command.inline = inline
                found.append(command)
    return found


def _parse(doc: str, line: int, text: str, machines: dict[str, str], env: dict[str, str]) -> Command | None:
    try:
        words = shlex.split(text.replace("$PWD", "/work").replace("$HOME", PLACEHOLDER_HOME), comments=True)
    except ValueError:
        return None
    words = [PLACEHOLDER_HOME + w[1:] if w.startswith("~") else w for w in words]
    segments, current = [], []
    for word in words:  # a chain (a && b; c): the last command in it that runs python
        if word in ("&&", ";", "|", "||"):
            segments, current = [*segments, current], []
        else:
            current.append(word)
    words = next((seg for seg in reversed([*segments, current]) if _python_at(seg) is not None), [])
    at = _python_at(words)
    if at is None or at + 1 >= len(words):
        return None
    prefix = dict(w.split("=", 1) for w in words[:at] if re.fullmatch(r"[A-Z_]+=\S*", w))
    rest = words[at + 1:]
    entry, argv = (rest[1], rest[2:]) if rest[0] == "-m" and len(rest) > 1 else (rest[0], rest[1:])
    return Command(doc, line, text, entry, argv, {**env, **prefix}, dict(machines))


def _python_at(words: list[str]) -> int | None:
    """The index of the last ``python`` word of ``words`` that has something after it, or None."""
    for index in range(len(words) - 1, -1, -1):
        if re.fullmatch(r"(\S*/)?python3?", words[index]) and index + 1 < len(words):
            return index
    return None
