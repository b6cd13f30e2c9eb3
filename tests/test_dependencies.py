"""What pyproject.toml declares: every package the installed code imports, bounds where pip cannot check a pairing."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OWN = {"resnet_core", "tracking", "sweeps", "dashboards", "__future__"}


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imports(package: str) -> set[str]:
    """Top-level modules imported anywhere in ``package`` (lazy imports inside functions included)."""
    found = set()
    for path in (ROOT / package).glob("**/*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - OWN


@pytest.mark.parametrize("package", ["resnet_core", "tracking", "sweeps"])
def test_every_imported_package_is_a_declared_dependency(package):
    """Not merely present through another package (psutil came only through Ray's vendored copy, and only once
    ``ray`` had been imported)."""
    declared = {_name(d) for d in PROJECT["dependencies"]}
    provided_by = {module: {d.lower().replace("_", "-") for d in dists}
                   for module, dists in importlib.metadata.packages_distributions().items()}
    missing = sorted(m for m in _imports(package) if not provided_by.get(m, set()) & declared)
    assert not missing, f"imported by {package}/ but not declared in pyproject.toml's dependencies: {missing}"


@pytest.mark.parametrize("package", ["torchcodec", "optuna", "torch", "torchvision", "ray", "mlflow"])
def test_packages_pip_cannot_pair_for_us_have_an_upper_bound(package):
    """torchcodec declares no torch requirement and the searcher reads Optuna's internals: an open range would
    let pip install a release nobody tested."""
    spec = next(d for d in PROJECT["dependencies"] if _name(d) == package)
    assert "==" in spec or "<" in spec, f"{spec!r} has no upper bound"


def test_browser_driver_stays_out_of_the_main_install():
    """playwright is for rendering a report to PNG on a person's machine, not for every Ray node."""
    assert "playwright" not in {_name(d) for d in PROJECT["dependencies"]}
    assert {_name(d) for d in PROJECT["optional-dependencies"]["screenshot"]} == {"playwright"}
    assert "boto3" in {_name(d) for d in PROJECT["optional-dependencies"]["server"]}  # S3 artifact store


def test_cluster_constraints_satisfy_every_declared_range():
    """cluster/constraints.txt (what the cluster recipes install with) pins every main dependency at a version its
    range accepts: a pin moved in pyproject.toml without regenerating the file fails here, not on a node."""
    from packaging.requirements import Requirement

    pinned = {}
    for line in (ROOT / "cluster" / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pinned[_name(name)] = version
    for spec in PROJECT["dependencies"] + PROJECT["optional-dependencies"]["server"]:
        requirement = Requirement(spec)
        name = _name(requirement.name)
        if name == "resnet-depth-studies":
            continue
        assert name in pinned, f"{name} ({spec}) is not pinned in cluster/constraints.txt"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"cluster/constraints.txt pins {name}=={pinned[name]}, outside {spec}: run scripts/freeze-constraints.sh")


@pytest.mark.parametrize("recipe", ["cluster/Dockerfile", "cluster/ray-up.yaml"])
def test_cluster_recipes_install_with_the_constraints(recipe):
    installs = [line for line in (ROOT / recipe).read_text().splitlines() if "pip install" in line
                and not line.lstrip().startswith("#")]
    assert installs and all("constraints.txt" in line for line in installs), installs
