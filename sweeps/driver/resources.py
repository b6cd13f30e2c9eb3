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
from sweeps.tracking.store import is_local_store

log = logging.getLogger(__name__)


def check_cluster(plan: SweepPlan) -> None:
    """Raise ValueError naming every reason the connected cluster cannot run ``plan``."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    check_trial_fits(plan, nodes)
    check_nodes_share_storage(plan, nodes)


def trial_request(plan: SweepPlan) -> dict[str, float]:
    return {"CPU": plan.cpus_per_trial, "GPU": plan.gpus_per_trial}


def fits(request: dict[str, float], resources: dict[str, Any]) -> bool:
    """Whether one node with ``resources`` can hold a trial asking for ``request`` (Ray places a trial on one node)."""
    return all(float(resources.get(name, 0)) >= amount for name, amount in request.items() if amount > 0)


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
    """Refuse a trial no node can hold (its trials would stay PENDING forever), unless an autoscaler can add one."""
    request = trial_request(plan)
    if any(fits(request, node) for node in nodes):
        return
    groups = autoscaler_groups()
    node_types = None if groups is None else [resources for resources, _ in groups]
    if node_types is None or any(fits(request, node_type) for node_type in node_types):
        return
    asked = ", ".join(f"{amount:g} {name}" for name, amount in request.items() if amount > 0)
    offered = "; ".join(", ".join(f"{node.get(name, 0):g} {name}" for name in request) for node in nodes)
    grows = " and no autoscaler can add one that does" if node_types else " and it does not autoscale"
    raise ValueError(f"no node of this Ray cluster can run a trial: each trial asks for {asked} (--cpus-per-trial, "
                     f"--gpus-per-trial), its node(s) have {offered}{grows}. Ask for less, or connect to a "
                     f"cluster that has it (RAY_ADDRESS)")


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
