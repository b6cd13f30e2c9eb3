"""The checks of cluster/rehearse.sh, run from its client namespace: what the cluster and the tracking server did.

Each subcommand prints what it found and exits 1 with a message naming what is wrong. MLflow credentials come
from the environment (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD), the Ray token from RAY_AUTH_TOKEN_PATH.
"""

from __future__ import annotations

import argparse
import base64
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


class CheckFailed(Exception):
    pass


def http_status(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


# --- set-up ------------------------------------------------------------------------------------------------

def wait_nodes(args: argparse.Namespace) -> None:
    """Wait until the cluster has ``count`` alive nodes; print their addresses."""
    from ray.util.state import list_nodes

    deadline, addresses = time.time() + args.timeout, []
    while time.time() < deadline:
        try:
            addresses = sorted(n.node_ip for n in list_nodes(address=args.address, filters=[("state", "=", "ALIVE")]))
        except Exception:  # the dashboard is still starting
            addresses = []
        if len(addresses) >= args.count:
            print(" ".join(addresses))
            return
        time.sleep(1)
    raise CheckFailed(f"{args.count} Ray nodes expected, {len(addresses)} alive after {args.timeout}s: {addresses}")


def create_user(args: argparse.Namespace) -> None:
    """Create an MLflow user (as the admin whose credentials are in the environment); password from a file."""
    from mlflow.server import get_app_client

    client = get_app_client("basic-auth", tracking_uri=args.uri)
    client.create_user(username=args.username, password=Path(args.password_file).read_text().strip())
    print(f"MLflow user {args.username!r} created")


# --- unauthenticated clients -------------------------------------------------------------------------------

def refused(args: argparse.Namespace) -> None:
    """Ray's Jobs API without a token / with a wrong one, MLflow without / with wrong credentials: all refused."""
    jobs = args.ray.rstrip("/") + "/api/jobs/"
    runs = args.mlflow.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
    cases = [
        ("Ray Jobs API, no token", http_status(jobs), 401),
        ("Ray Jobs API, wrong token", http_status(jobs, {"Authorization": "Bearer " + "0" * 64}), 403),
        ("MLflow, no credentials", http_status(runs), 401),
        ("MLflow, wrong password", http_status(runs, basic(os.environ["MLFLOW_TRACKING_USERNAME"], "wrong")), 401),
        ("MLflow, foreign Host header", http_status(runs, {"Host": "attacker.example",
                                                           **basic(os.environ["MLFLOW_TRACKING_USERNAME"],
                                                                   os.environ["MLFLOW_TRACKING_PASSWORD"])}), 403),
    ]
    for what, got, expected in cases:
        print(f"  {what}: HTTP {got}")
        if got != expected:
            raise CheckFailed(f"{what}: expected HTTP {expected}, got {got}")


# --- the sweeps --------------------------------------------------------------------------------------------

def trial_runs(client, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    return client.search_runs([found.experiment_id], "tags.role = 'trial'", max_results=1000)


def wait_trial_on(args: argparse.Namespace) -> None:
    """Wait until a trial runs on ``node`` and has logged ``min_step``; print it as JSON (to kill its node)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.uri)
    deadline = time.time() + args.timeout
    while time.time() < deadline:
        for run in trial_runs(client, args.experiment):
            tags = run.data.tags
            if tags.get("node_ip") != args.node or tags.get("outcome") != "running":
                continue
            step = max((m.step for m in client.get_metric_history(run.info.run_id, "train/error")), default=0)
            if step >= args.min_step:
                print(run.info.run_id, step, run.info.run_name)
                return
        time.sleep(0.5)
    raise CheckFailed(f"no trial of {args.experiment!r} reached iteration {args.min_step} on {args.node} "
                      f"within {args.timeout}s")


def last_step(args: argparse.Namespace) -> None:
    """The last iteration a run has logged (train/error)."""
    from mlflow.tracking import MlflowClient

    history = MlflowClient(args.uri).get_metric_history(args.run_id, "train/error")
    print(max((m.step for m in history), default=0))


def check_sweep(args: argparse.Namespace) -> None:
    """Every run FINISHED, ``trials`` trial runs (no duplicate), every metric at every expected step once,
    trials on at least ``min_nodes`` nodes. With ``--moved``: that trial left ``--lost`` and resumed elsewhere
    from a checkpoint, in the same run. Prints which trials ran where, and how the moved one moved."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(args.uri)
    experiment = client.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise CheckFailed(f"no MLflow experiment {args.experiment!r}")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    sweeps = [r for r in runs if r.data.tags.get("role") == "sweep"]
    trials = [r for r in runs if r.data.tags.get("role") == "trial"]
    problems = []
    if len(sweeps) != 1:
        problems.append(f"{len(sweeps)} sweep runs, expected 1")
    names = [r.info.run_name for r in trials]
    if len(trials) != args.trials or len(set(names)) != len(names):
        problems.append(f"{len(trials)} trial runs, expected {args.trials} with distinct names: {sorted(names)}")
    problems += [f"run {r.info.run_name!r} is {r.info.status}" for r in runs if r.info.status != "FINISHED"]
    expected = list(range(args.eval_every, args.iterations + 1, args.eval_every))
    nodes: dict[str, list[str]] = {}
    for run in trials:
        nodes.setdefault(run.data.tags.get("node_ip", "?"), []).append(run.info.run_name)
        if "train/error" not in run.data.metrics:
            problems.append(f"{run.info.run_name}: no train/error")
        for key in run.data.metrics:
            steps = sorted(m.step for m in client.get_metric_history(run.info.run_id, key))
            if steps != expected:
                problems.append(f"{run.info.run_name} {key}: steps {steps}, expected each of {expected} once")
    if len(nodes) < args.min_nodes:
        problems.append(f"trials ran on {sorted(nodes)}, expected at least {args.min_nodes} nodes")
    for ip, names in sorted(nodes.items()):
        print(f"  trials ran on {ip}: {', '.join(sorted(names))}")
    if args.moved:
        run = client.get_run(args.moved)
        name, tags = run.info.run_name, run.data.tags
        moved_to, attempts = tags.get("node_ip"), int(tags.get("attempts", "1"))
        resumed_from = int(tags.get("resumed_from_iteration", "0"))
        if run.info.run_id not in {r.info.run_id for r in trials}:
            problems.append(f"the killed trial's run {args.moved} is not among the sweep's trial runs")
        if moved_to in (None, args.lost):
            problems.append(f"{name} did not move off the lost node {args.lost} (node_ip {moved_to})")
        if attempts < 2:
            problems.append(f"{name} has attempts={attempts}: it was not retried")
        # Its last checkpoint: a trial logs an evaluation, then checkpoints it, so the checkpoint Tune holds is
        # that of the last logged iteration or, when the kill fell in between, of the evaluation before.
        if not (resumed_from > 0 and args.killed_after - 2 * args.eval_every < resumed_from <= args.killed_after):
            problems.append(f"{name} resumed from iteration {resumed_from}: not its last checkpoint (it had logged "
                            f"iteration {args.killed_after} when its node was killed)")
        print(f"  {name!r} moved from {args.lost} to {moved_to}: attempt {attempts} resumed from the checkpoint "
              f"of iteration {resumed_from} (it had logged iteration {args.killed_after} when its node was killed), "
              f"in the same MLflow run {run.info.run_id}")
    if problems:
        raise CheckFailed("; ".join(problems))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("wait-nodes")
    p.add_argument("address"), p.add_argument("count", type=int), p.add_argument("--timeout", type=int, default=120)
    p.set_defaults(run=wait_nodes)
    p = commands.add_parser("create-user")
    p.add_argument("uri"), p.add_argument("username"), p.add_argument("password_file")
    p.set_defaults(run=create_user)
    p = commands.add_parser("refused")
    p.add_argument("--ray", required=True), p.add_argument("--mlflow", required=True)
    p.set_defaults(run=refused)
    p = commands.add_parser("wait-trial-on")
    p.add_argument("uri"), p.add_argument("experiment"), p.add_argument("node")
    p.add_argument("--min-step", type=int, required=True), p.add_argument("--timeout", type=int, default=240)
    p.set_defaults(run=wait_trial_on)
    p = commands.add_parser("last-step")
    p.add_argument("uri"), p.add_argument("run_id")
    p.set_defaults(run=last_step)
    p = commands.add_parser("check-sweep")
    p.add_argument("uri"), p.add_argument("experiment")
    p.add_argument("--trials", type=int, required=True), p.add_argument("--iterations", type=int, required=True)
    p.add_argument("--eval-every", type=int, required=True), p.add_argument("--min-nodes", type=int, default=1)
    p.add_argument("--moved", help="run id of the trial whose node was killed")
    p.add_argument("--lost", help="address of the killed node"), p.add_argument("--killed-after", type=int)
    p.set_defaults(run=check_sweep)
    args = parser.parse_args(argv)
    try:
        args.run(args)
    except CheckFailed as exc:
        print(f"check failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
