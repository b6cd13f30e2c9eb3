"""The data on every node that may run a trial (sweeps/driver/node_data.py), on a real three-node Ray cluster: a
head without CPUs and two worker nodes, each in its own mount namespace, where the data directory is another
tree or empty. Root only (a mount namespace), like the cluster rehearsal."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from support import REPO
from support.imagenet import write_imagenet
from support.processes import free_port, stop_group

pytestmark = pytest.mark.cluster
BIN = Path(sys.executable).parent


def ray_node(command: list[str], env: dict, log: Path, mount: tuple[Path, Path] | None = None) -> subprocess.Popen:
    """`ray start ... --block` in its own process group; with ``mount`` (source, target), in a mount namespace
    of its own where ``target`` shows ``source``."""
    if mount is not None:
        shell = f'mount --bind "{mount[0]}" "{mount[1]}" && exec "$@"'
        command = ["unshare", "--mount", "--propagation", "private", "sh", "-c", shell, "sh", *command]
    return subprocess.Popen(command, env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def started(node: subprocess.Popen, log: Path, timeout: float = 180) -> None:
    """Wait until a blocking `ray start` says its node is up."""
    deadline = time.time() + timeout
    while "block forever" not in log.read_text():
        assert node.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.5)


def test_nodes_with_other_data_or_none_are_refused_naming_each(tmp_path):
    """Two worker nodes: one sees another tree at the data directory, one an empty directory."""
    data = write_imagenet(tmp_path / "imagenet")
    other, empty = write_imagenet(tmp_path / "other", train_per_class=5), tmp_path / "empty"
    empty.mkdir()
    temp_dir = tempfile.mkdtemp(prefix="nd", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token", "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    env.pop("RAY_ADDRESS", None)
    common = ["--block", "--temp-dir", temp_dir, "--disable-usage-stats", "--object-store-memory", "100000000"]
    nodes = [ray_node([str(BIN / "ray"), "start", "--head", "--port", str(port), "--num-cpus", "0",
                       "--include-dashboard", "false", *common], env, tmp_path / "head.log")]
    try:
        started(nodes[0], tmp_path / "head.log")  # the head's GCS must be up before a node can join it
        for name, seen in (("other", other), ("empty", empty)):  # one at a time: a loaded machine times out two
            nodes.append(ray_node([str(BIN / "ray"), "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1",
                                   *common], env, tmp_path / f"{name}.log", mount=(seen, data)))
            started(nodes[-1], tmp_path / f"{name}.log")
        flags = ["--preset", "smoke", "--dataset", "imagenet", "--data-dir", str(data), "--depths", "18", "--seeds",
                 "1", "--set", "model.layout=imagenet", "--set", "model.depth=18"]
        result = subprocess.run([sys.executable, str(REPO / "tests/support/node_data_driver.py"), *flags],
                                env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}", "NODES": "3"}, capture_output=True,
                                text=True, timeout=300)
        output = result.stdout + result.stderr
        heading = "REFUSED: the data is not the same on every node that may run a trial (2 such node(s))"
        assert heading in output, output + (tmp_path / "other.log").read_text()
        problems = output.split(heading, 1)[1].split("\n  node ")[1:]
        assert len(problems) == 2, output  # the two workers, not the head (no CPU: it runs no trial)
        assert sum("has digest" in p for p in problems) == 1, output  # the other tree
        assert sum(str(data) in p and "has digest" not in p for p in problems) == 1, output  # nothing there
    finally:
        for node in reversed(nodes):
            stop_group(node, signal.SIGKILL, timeout=30)
        subprocess.run(["rm", "-rf", temp_dir], check=False)
