"""The shape of a Ray cluster that is not here: node types with their count and logical resources, read from a
short SPEC (``1x64cpu8gpu``, ``head:8cpu,4x8cpu1gpu``) or from a recipe file (KubeRay RayCluster / RayJob, ``ray
up``). What ``--plan-only --assume-cluster`` simulates (sweeps/driver/planner.py). Reads only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

SPEC_HELP = ("node groups, comma-separated, each [NAME:][COUNTx]AMOUNTS with AMOUNTS like 64cpu8gpu480gb (+name=N "
             "for a custom resource); the first node is the head. E.g. 1x64cpu8gpu, head:8cpu,4x8cpu1gpu, or the "
             "KubeRay or `ray up` recipe file itself")
_GROUP = re.compile(r"^(?:(?P<name>[A-Za-z][\w.-]*):)?(?:(?P<count>\d+)x)?(?P<amounts>.+)$")
_AMOUNT = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<unit>cpu|gpu|gb)")


@dataclass(frozen=True)
class NodeType:
    """``count`` nodes, each with these logical resources (what ``ray start`` would advertise)."""

    name: str
    count: int
    cpus: float
    gpus: float = 0
    memory_gb: float | None = None
    custom: dict[str, float] = field(default_factory=dict)
    note: str = ""  # e.g. a group that must be scaled up before a sweep can use it

    def describe(self) -> str:
        amounts = [f"{self.cpus:g} CPU", f"{self.gpus:g} GPU"]
        amounts += [f"{self.memory_gb:g} GB"] if self.memory_gb else []
        amounts += [f"{value:g} {name}" for name, value in self.custom.items()]
        return f"{self.count} × {self.name} ({', '.join(amounts)})" + (f" — {self.note}" if self.note else "")


def parse_cluster(spec: str) -> list[NodeType]:
    """The node types of ``spec``: a recipe file when it names one, else the SPEC grammar (SPEC_HELP). The first
    node of the first type is the head. Raises ValueError naming the bad part."""
    if spec.endswith((".yaml", ".yml")):
        return _from_recipe(Path(spec))
    types = [_parse_group(part.strip(), spec) for part in spec.split(",") if part.strip()]
    if not types:
        raise ValueError(f"--assume-cluster {spec!r} names no node; {SPEC_HELP}")
    return types


def _parse_group(part: str, spec: str) -> NodeType:
    match = _GROUP.match(part)
    amounts, rest = {}, ""
    if match:
        resources, _, rest = match["amounts"].partition("+")
        amounts = {m["unit"]: float(m["value"]) for m in _AMOUNT.finditer(resources)}
        if _AMOUNT.sub("", resources) or "cpu" not in amounts:
            amounts = {}
    if not amounts:
        raise ValueError(f"--assume-cluster {spec!r}: cannot read {part!r} (each group needs its CPUs, e.g. "
                         f"64cpu8gpu); {SPEC_HELP}")
    custom = {}
    for item in filter(None, rest.split("+")):
        name, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"\d+(\.\d+)?", value):
            raise ValueError(f"--assume-cluster {spec!r}: custom resource {item!r} is not NAME=N")
        custom[name] = float(value)
    count = int(match["count"] or 1)
    if count < 1:
        raise ValueError(f"--assume-cluster {spec!r}: {part!r} has no node (count {count})")
    name = match["name"] or match["amounts"]
    return NodeType(name, count, amounts["cpu"], amounts.get("gpu", 0), amounts.get("gb"), custom)


def _from_recipe(path: Path) -> list[NodeType]:
    if not path.is_file():
        raise ValueError(f"--assume-cluster {path}: no such recipe file")
    documents = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    for document in documents:
        if "available_node_types" in document:
            return _from_ray_up(document)
        if document.get("kind") == "RayCluster":
            return _from_kuberay(document["spec"])
        if document.get("kind") == "RayJob" and "rayClusterSpec" in document.get("spec", {}):
            return _from_kuberay(document["spec"]["rayClusterSpec"])
    raise ValueError(f"--assume-cluster {path}: neither a KubeRay RayCluster/RayJob nor a `ray up` recipe")


def _from_ray_up(config: dict[str, Any]) -> list[NodeType]:
    """`ray up`: each type at its max_workers (what the autoscaler may start), the head once, first."""
    head = config["head_node_type"]
    types = []
    for name, node in config["available_node_types"].items():
        resources = dict(node.get("resources", {}))
        count = 1 if name == head else int(node.get("max_workers", config.get("max_workers", 0)))
        if count:
            types.append(NodeType(name, count, float(resources.pop("CPU", 0)), float(resources.pop("GPU", 0)),
                                  custom={k: float(v) for k, v in resources.items()}))
    return sorted(types, key=lambda t: t.name != head)


def _from_kuberay(spec: dict[str, Any]) -> list[NodeType]:
    """KubeRay: the head, then each worker group at maxReplicas (what the autoscaler, or ``kubectl scale``, may
    grow it to; a group that must be scaled up by hand says so). A pod's CPUs and GPUs are its container's limits
    unless rayStartParams overrides them, as KubeRay does."""
    autoscales = bool(spec.get("enableInTreeAutoscaling"))
    types = [_kuberay_group("head", 1, spec["headGroupSpec"])]
    for group in spec.get("workerGroupSpecs", []):
        replicas, most = int(group.get("replicas", 0)), int(group.get("maxReplicas", group.get("replicas", 0)))
        note = "" if autoscales or replicas >= most else (
            f"replicas: {replicas} now and the recipe does not autoscale: scale the group up to use it")
        if most:
            types.append(_kuberay_group(group["groupName"], most, group, note))
    return types


def _kuberay_group(name: str, count: int, group: dict[str, Any], note: str = "") -> NodeType:
    container = group["template"]["spec"]["containers"][0]
    limits = container.get("resources", {}).get("limits", {})
    params = group.get("rayStartParams", {})
    cpus = float(params.get("num-cpus", _cpu_quantity(limits.get("cpu", "0"))))
    gpus = float(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
    return NodeType(name, count, cpus, gpus, _memory_gb(limits.get("memory")), note=note)


def _cpu_quantity(value: Any) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def _memory_gb(value: Any) -> float | None:
    if value is None:
        return None
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i?)?", str(value))
    if not match:
        return None
    return float(match[1]) * units.get(match[2] or "", 1) / 1e9
