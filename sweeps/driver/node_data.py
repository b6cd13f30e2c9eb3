"""The data on every node that may run a trial: the same preflight as the driver's (files present and intact,
no image read), run on each such node before any trial, and the same identity everywhere. Driver only.

A cluster reads ``--data-dir`` on every node: a shared mount, or a copy at the same path on each. A node that
lacks the data, or holds other files there, would fail (or silently train on other data) hours later.
"""

from __future__ import annotations

from dataclasses import replace

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from resnet_core.config import DataConfig
from resnet_core.data import DatasetUnavailableError, check_dataset
from resnet_core.data_identity import data_identity
from sweeps.driver.plan import SweepPlan
from sweeps.driver.resources import fits

NEEDS_FILES = ("cifar10", "cifar100", "imagenet")  # data sets read from --data-dir
PREFLIGHT_TIMEOUT = 600  # seconds for every node's answer (ImageNet's file list takes about a minute)


def preflight(data: DataConfig) -> tuple[str | None, str | None]:
    """On one node: (the data's digest, None) when it is there and intact, else (None, what is wrong)."""
    try:
        check_dataset(data)
        return data_identity(data).digest, None
    except (DatasetUnavailableError, OSError, ValueError) as exc:
        return None, str(exc)


_remote_preflight = ray.remote(num_cpus=0, max_retries=0)(preflight)


def check_data_on_nodes(plan: SweepPlan) -> None:
    """Raise ValueError naming every node that may run a trial and lacks the plan's data or holds other data
    than the driver's. Nothing to do on one node (the driver's own check covers it) or for generated data."""
    alive = [node for node in ray.nodes() if node.get("Alive")]
    hosts = [node for node in alive if fits(plan.worker_request, node["Resources"])]
    wanted = [replace(data, download=False) for data in plan.data_configs() if data.dataset in NEEDS_FILES]
    if len(alive) <= 1 or not hosts or not wanted:
        return
    problems = []
    for data in wanted:
        expected = data_identity(data).digest
        answers = ray.get([_remote_preflight.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(data)
            for node in hosts], timeout=PREFLIGHT_TIMEOUT)
        for node, (digest, error) in zip(hosts, answers):
            where = f"node {node['NodeManagerAddress']} ({node['NodeID'][:8]})"
            if error is not None:
                problems.append(f"{where}: {error}")
            elif digest != expected:
                problems.append(f"{where}: {data.dataset} under {data.data_dir} has digest {digest}, the driver's "
                                f"has {expected} (other files: copy the same data set to every node)")
    if problems:
        raise ValueError(f"the data is not the same on every node that may run a trial ({len(hosts)} such "
                         f"node(s)); put it at the same --data-dir on each, or on storage they all mount:\n  "
                         + "\n  ".join(problems))
