"""What the connected Ray cluster must offer a sweep: room for a trial on some node, and, when it has several
nodes, a tracking store and checkpoint storage that every node reaches. Runs in the driver, before anything
is created.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import ray

from sweeps.driver.plan import SweepPlan
from tracking.store import is_local_store

log = logging.getLogger(__name__)


def check_cluster(plan: SweepPlan) -> None:
    """Raise ValueError naming every reason the connected cluster cannot run ``plan``."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    check_trial_fits(plan, nodes)
    check_nodes_share_storage(plan, nodes)


def concurrent_trials(plan: SweepPlan) -> int:
    """Tune's limit on trials at once (0: none): ``--max-concurrent`` if given; else none for single-process
    trials, whose wait for room Tune does itself; for multi-worker trials as many as the nodes alive hold side by
    side (at least one): a trial started without room would wait inside Ray Train, which retries every minute with
    an error in the log, instead of PENDING in Tune's queue. Nodes an autoscaler may start count too (the limit
    is set once, at the start: a KubeRay group at 0 replicas ran one trial at a time all sweep); a group without
    a most means no limit."""
    if plan.max_concurrent or plan.workers_per_trial == 1:
        return plan.max_concurrent or 0
    room = sum(_room(plan, node["Resources"]) for node in ray.nodes() if node.get("Alive"))
    for resources, most in autoscaler_groups() or []:
        if most < 0:
            return 0
        room += _room(plan, resources) * most
    return max(1, room // plan.workers_per_trial)


def _room_request(plan: SweepPlan) -> dict[str, float]:
    """A worker's request as the room for a trial is counted: a 1/N share of the whole trial, its coordinator
    (the Tune trial's own process) included, so N of them fit only where the whole trial does."""
    n = plan.workers_per_trial
    return {"CPU": plan.cpus_per_trial / n, "GPU": plan.gpus_per_trial / n}


def worker_placement(plan: SweepPlan) -> str:
    """Ray Train's placement strategy for a trial's workers: STRICT_PACK (all on one node, NCCL inside it) for
    GPU workers when some node alive, or of a type the autoscaler may start, holds the whole trial; else PACK
    (Ray's best effort, which may spread them over nodes even when one would hold them all)."""
    if plan.workers_per_trial == 1 or not plan.gpus_per_trial:
        return "PACK"
    shapes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    shapes += [resources for resources, _ in autoscaler_groups() or []]
    whole = any(_room(plan, shape) >= plan.workers_per_trial for shape in shapes)
    return "STRICT_PACK" if whole else "PACK"


def _room(plan: SweepPlan, resources: dict[str, Any]) -> int:
    """How many of a trial's processes one node can hold for it."""
    return capacity(_room_request(plan), resources)


def fits(request: dict[str, float], resources: dict[str, Any]) -> bool:
    """Whether one node with ``resources`` can hold a process asking for ``request`` (Ray places each on one node)."""
    return capacity(request, resources) > 0


def capacity(request: dict[str, float], resources: dict[str, Any]) -> int:
    """How many processes asking for ``request`` one node with ``resources`` can hold at once."""
    asked = [(float(resources.get(name, 0)), amount) for name, amount in request.items() if amount > 0]
    return min((int(have / amount + 1e-9) for have, amount in asked), default=1 << 30)


def autoscaler_groups() -> list[tuple[dict[str, float], int]] | None:
    """(resources, most nodes: -1 for no limit) of each node group an autoscaler may start: [] for a fixed
    cluster, None when unknown.

    An autoscaler (``ray up``, KubeRay) publishes its node groups in Ray's GCS; Ray reads them through a private
    API, fenced here: if it is gone, the answer is None and the caller must not refuse.
    """
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except (ImportError, AttributeError) as exc:
        log.warning("cannot tell whether this Ray cluster autoscales (%s)", exc)
        return None
    if config is None:
        return []
    return [(dict(group.resources), group.max_count) for group in config.node_group_configs if group.max_count != 0]


def may_have_several_nodes(alive: int) -> bool:
    """Whether trials may run on more than one machine: several nodes now, or an autoscaler that may add some
    (a cluster that autoscales from its head alone has one node at the start). When the autoscaler cannot be
    read, only the nodes alive count."""
    groups = autoscaler_groups() if alive <= 1 else None
    if alive > 1 or not groups:
        return alive > 1
    return any(most < 0 for _, most in groups) or sum(most for _, most in groups) > alive


def check_trial_fits(plan: SweepPlan, nodes: list[dict[str, Any]]) -> None:
    """Refuse a trial the cluster cannot hold (its trials would stay PENDING forever), unless an autoscaler can add
    the nodes: one node for a single-process trial; for a trial of N workers, room for N of them over all nodes."""
    needed = plan.workers_per_trial
    if sum(_room(plan, node) for node in nodes) >= needed:
        return
    groups = autoscaler_groups()
    if groups is None or _autoscaler_can_hold(plan, nodes, groups):
        return
    request = plan.worker_request
    asked = ", ".join(f"{amount:g} {name}" for name, amount in request.items() if amount > 0)
    offered = "; ".join(", ".join(f"{node.get(name, 0):g} {name}" for name in request) for node in nodes)
    grows = " and no autoscaler can add what is missing" if groups else " and it does not autoscale"
    what = (f"each trial asks for {asked} (--cpus-per-trial, --gpus-per-trial)" if needed == 1 else
            f"each trial is {needed} workers (--workers-per-trial) of {asked} each (--cpus-per-trial and "
            f"--gpus-per-trial split among them)")
    raise ValueError(f"this Ray cluster cannot run a trial: {what}, its node(s) have {offered}{grows}. Ask for "
                     f"less, or connect to a cluster that has it (RAY_ADDRESS)")


def _autoscaler_can_hold(plan: SweepPlan, nodes: list[dict[str, Any]],
                         groups: list[tuple[dict[str, float], int]]) -> bool:
    """Whether the nodes alive plus every node the autoscaler may start can hold one trial's processes."""
    if any(most < 0 and _room(plan, resources) > 0 for resources, most in groups):
        return True
    grown = sum(_room(plan, resources) * most for resources, most in groups if most > 0)
    return sum(_room(plan, node) for node in nodes) + grown >= plan.workers_per_trial


def check_nodes_share_storage(plan: SweepPlan, nodes: list[dict[str, Any]]) -> None:
    """A multi-node cluster needs a tracking server and checkpoint storage that every node can reach, also one
    that has only its head now and autoscales."""
    if not may_have_several_nodes(len(nodes)):
        return
    problems = []
    if is_local_store(plan.tracking_uri):
        problems.append(f"the tracking store {plan.tracking_uri} is local to one machine (trials on other "
                        "nodes cannot write to it): start an MLflow tracking server and pass --tracking-uri "
                        "http://HOST:5000 (see cluster/README.md)")
    if plan.is_local_storage and not os.environ.get("RESNET_STUDIES_SHARED_STORAGE"):
        problems.append(f"--storage-path {plan.storage_path} is a local directory (checkpoints written on one "
                        "node cannot be restored on another): use shared storage every node mounts, e.g. "
                        "s3://bucket/path, or an NFS path with RESNET_STUDIES_SHARED_STORAGE=1 set to confirm "
                        "the mount is shared")
    if problems:
        size = f"has {len(nodes)} nodes" if len(nodes) > 1 else "may start more nodes (it autoscales)"
        raise ValueError(f"this Ray cluster {size}, so: " + "; and ".join(problems))
