"""The project's import graph, read with ``ast``: every module of the packages and the project modules it
imports (at the top or inside functions), its import circles, the imports that run against the documented
direction (docs/architecture.md), and the modules over the line limit.

    python scripts/import_graph.py            # prints circles, wrong-way imports, long modules; exit 1 if any
    python scripts/import_graph.py --edges    # also every edge, module -> module
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("resnet_core", "tracking", "sweeps", "dashboards")
MAX_LINES = 400
# Which package may import which: the science none of the others; the tracking schema (what runs, tags and
# params mean) only the science; the report the science and the schema; the sweeps all three (a sweep builds
# its report when it ends).
ALLOWED = {"resnet_core": set(), "tracking": {"resnet_core"}, "dashboards": {"resnet_core", "tracking"},
           "sweeps": {"resnet_core", "tracking", "dashboards"}}
# Rooms that must not reach into another: a trial process never imports the driver's code, nor the report.
FORBIDDEN = [("sweeps.trial", "sweeps.driver"), ("sweeps.trial", "dashboards")]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """The project modules ``path`` imports: ``from a.b import c`` counts a.b.c when that is a module, else a.b."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in known:
                found.add(name)
                break
    return found - {module_name(path)}


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imported(path, set(found)) for name, path in found.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def wrong_way(edges: dict[str, set[str]]) -> list[str]:
    """Every import against ALLOWED or FORBIDDEN, as "source -> target (why)"."""
    found = []
    for source in sorted(edges):
        package = source.split(".")[0]
        for target in sorted(edges[source]):
            other = target.split(".")[0]
            if other != package and other not in ALLOWED[package]:
                found.append(f"{source} -> {target} ({package} may import only {sorted(ALLOWED[package])})")
            for room, barred in FORBIDDEN:
                if _inside(source, room) and _inside(target, barred):
                    found.append(f"{source} -> {target} ({room} never imports {barred})")
    return found


def _inside(module: str, room: str) -> bool:
    return module == room or module.startswith(room + ".")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--edges", action="store_true", help="print every edge")
    args = parser.parse_args(argv)
    edges = graph()
    if args.edges:
        for source in sorted(edges):
            for target in sorted(edges[source]):
                print(f"{source} -> {target}")
    found, backwards = circles(edges), wrong_way(edges)
    long = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    print(f"{len(edges)} modules, {sum(map(len, edges.values()))} imports, {len(found)} circle(s), "
          f"{len(backwards)} wrong-way import(s), {len(long)} module(s) over {MAX_LINES} lines")
    for component in found:
        print("circle: " + " -> ".join(component))
    for line in backwards:
        print("wrong way: " + line)
    for name, n in long.items():
        print(f"long: {name} ({n} lines)")
    return 1 if found or backwards or long else 0


if __name__ == "__main__":
    sys.exit(main())
