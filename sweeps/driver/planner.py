"""``--plan-only``: what a sweep would ask of a cluster and how Ray would place it, without training.

With ``--assume-cluster SPEC`` the cluster is simulated: a local Ray with one raylet per node of the shape and
those logical resources (as Ray's own tests fake GPUs, ``ray.cluster_utils.Cluster``), so placement is decided by
Ray's own scheduler, not a second one of ours. Every trial's placement groups are created as Tune and Ray Train
create them (a trial's bundle; or its coordinator's bundle and its workers' PACK group), in Tune's order, until
one cannot be placed: those placed are a wave of trials that run at once. The wave is then removed and the next
one placed, PLACED_WAVES of them; the remaining trials, which ask for the same, repeat the last wave's size. (Tune
starts a trial as soon as one ends, not by waves: the waves say how many run at once and where.) Nothing trains,
nothing is written, nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import ray
from ray.cluster_utils import Cluster
from ray.util.placement_group import PlacementGroup, placement_group, placement_group_table, remove_placement_group

from resnet_core import TrainConfig
from sweeps.driver.cluster_shape import NodeType
from sweeps.driver.forecast import planned_line
from sweeps.driver.plan import COORDINATOR_CPUS, SweepPlan, check_trials
from sweeps.driver.resources import check_cluster, worker_placement
from sweeps.trial.identity import run_name

PLACED_WAVES = 4  # waves placed by Ray; the rest repeat them (a wave that does not fill costs PLACE_WAIT_S)
MAX_SIMULATED_NODES = 16  # raylets started for a shape (a few seconds each); more of one type change nothing here
PLACE_WAIT_S = 1.0  # how long a placement group may take on the simulated cluster before it counts as not placed
FIRST_WAIT_S = 10.0  # ... the first of a wave, which has the cluster to itself (Ray frees the last wave's groups)
FAKE_NODE_OBJECT_STORE = 80 * 2**20  # each simulated raylet's object store: nothing is stored in it


@dataclass(frozen=True)
class Placement:
    """Where one trial of the first wave went: node type name → the trial's processes placed there."""

    trial: str
    nodes: dict[str, int]


def run_plan_only(types: list[NodeType] | None, make_plan: Callable[[], SweepPlan]) -> int:
    """Print the plan on the assumed cluster (``types``), or on the connected one when None; 0 when every trial
    can be placed, 2 with every refusal and the flag that fixes it."""
    with simulated_cluster(types) if types else contextlib.nullcontext({}) as type_of_node:
        return plan_on_cluster(make_plan, type_of_node)


def plan_on_cluster(make_plan: Callable[[], SweepPlan], type_of_node: dict[str, str]) -> int:
    """``run_plan_only`` on the cluster Ray is connected to (``type_of_node``: node id → type name to show)."""
    plan = make_plan()
    check_trials(plan)
    print(f"each trial asks for {describe_request(plan)}; {len(plan.configs())} trials", flush=True)
    try:
        check_cluster(plan)
    except ValueError as exc:
        print(f"refused: {exc}", flush=True)
        return 2
    waves, more = place_in_waves(plan, type_of_node)
    if not waves:
        print("refused: Ray could not place a single trial on this cluster (its request adds up to more than any "
              "node has once rounded to Ray's resource unit): ask for less with --cpus-per-trial, --gpus-per-trial "
              "or --workers-per-trial", flush=True)
        return 2
    at_once = max(len(wave) for wave in waves)
    limit = f" (--max-concurrent {plan.max_concurrent})" if plan.max_concurrent else ""
    print(f"at once: at most {at_once} trial(s){limit}, in {len(waves) + more} wave(s):", flush=True)
    processes = "worker(s)" if plan.workers_per_trial > 1 else "process"
    for number, wave in enumerate(waves, 1):
        for placement in wave:
            where = ", ".join(f"{count} {processes} on {name}" for name, count in placement.nodes.items())
            print(f"  wave {number}: {placement.trial}: {where}", flush=True)
    if more:
        rest = len(plan.configs()) - sum(len(wave) for wave in waves)
        print(f"  waves {len(waves) + 1}-{len(waves) + more}: the other {rest} trials, {len(waves[-1])} at a time "
              f"(the same request as the waves above)", flush=True)
    print(planned_line(plan.configs(), at_once, plan.cpus_per_trial, plan.gpus_per_trial, time.time()), flush=True)
    print("fits: every trial can be placed", flush=True)
    return 0


def describe_request(plan: SweepPlan) -> str:
    request = plan.worker_request
    each = ", ".join(f"{amount:g} {name}" for name, amount in request.items() if amount)
    if plan.workers_per_trial == 1:
        return each
    return (f"{plan.workers_per_trial} workers of {each} each and a coordinator of {COORDINATOR_CPUS} CPU "
            f"({plan.cpus_per_trial:g} CPU, {plan.gpus_per_trial:g} GPU in all)")


def place_in_waves(plan: SweepPlan, type_of_node: dict[str, str]) -> tuple[list[list[Placement]], int]:
    """The first PLACED_WAVES waves placed by Ray, and how many more waves the remaining trials make (every trial
    of a sweep asks for the same resources, so they repeat the last wave's size); ([], 0) when not even one
    trial can be placed."""
    configs, waves = plan.configs(), []
    while configs and len(waves) < PLACED_WAVES:
        wave = place_wave(plan, configs, type_of_node)
        if not wave:
            return [], 0
        waves.append(wave)
        configs = configs[len(wave):]
    return waves, -(-len(configs) // len(waves[-1]))


def place_wave(plan: SweepPlan, configs: list[TrainConfig], type_of_node: dict[str, str]) -> list[Placement]:
    """Create each trial's placement groups, in the order Tune starts them, until one is not placed (or
    --max-concurrent are); return where the placed ones went. Every group is removed again."""
    groups: list[PlacementGroup] = []
    placed: list[Placement] = []
    try:
        for config in configs[:plan.max_concurrent or len(configs)]:
            trial_groups = _trial_groups(plan)
            groups += trial_groups
            if not all(group.wait(PLACE_WAIT_S if placed else FIRST_WAIT_S) for group in trial_groups):
                break
            nodes = Counter(type_of_node.get(node, node[:8]) for group in trial_groups[-1:]
                            for node in placement_group_table(group)["bundles_to_node_id"].values())
            placed.append(Placement(run_name(config), dict(nodes)))
    finally:
        for group in groups:
            remove_placement_group(group)
    return placed


def _trial_groups(plan: SweepPlan) -> list[PlacementGroup]:
    """The placement groups a trial makes: Tune's for its process; with workers, also Ray Train's for them."""
    bundle = {name: amount for name, amount in plan.worker_request.items() if amount}
    if plan.workers_per_trial == 1:
        return [placement_group([bundle])]
    return [placement_group([{"CPU": COORDINATOR_CPUS}]),
            placement_group([bundle] * plan.workers_per_trial, strategy=worker_placement(plan))]


@contextlib.contextmanager
def simulated_cluster(types: list[NodeType]) -> Iterator[dict[str, str]]:
    """A local Ray of the shape ``types`` (at most MAX_SIMULATED_NODES raylets), connected; yields node id →
    node type name."""
    cluster = Cluster()
    type_of_node: dict[str, str] = {}
    try:
        started = 0
        for node_type in types:
            for _ in range(min(node_type.count, MAX_SIMULATED_NODES - started)):
                node = cluster.add_node(wait=False, **_node_args(node_type))
                type_of_node[node.node_id] = node_type.name
                started += 1
        cluster.wait_for_nodes()
        if started < sum(t.count for t in types):
            print(f"(simulating the first {started} nodes of the shape)", flush=True)
        ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
        print("assumed cluster, simulated by a local Ray with these logical resources (nothing trains):\n  "
              + "\n  ".join(t.describe() for t in types), flush=True)
        yield type_of_node
    finally:
        ray.shutdown()
        cluster.shutdown()


def _node_args(node_type: NodeType) -> dict:
    args = {"num_cpus": node_type.cpus, "num_gpus": node_type.gpus, "resources": dict(node_type.custom),
            "object_store_memory": FAKE_NODE_OBJECT_STORE}
    if node_type.memory_gb:
        args["memory"] = int(node_type.memory_gb * 1e9)
    return args
