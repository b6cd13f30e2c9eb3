"""The data on every node that may run a trial (sweeps/driver/node_data.py), on a real two-node Ray cluster: a
head without CPUs and a worker node in its own mount namespace, where the data directory is another tree (or
missing). Root only (a mount namespace), like the cluster rehearsal."""

from __future__ import annotations

import os
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


@pytest.mark.parametrize("worker_sees", ["other files", "nothing"])
def test_a_node_with_other_data_is_refused_naming_it(tmp_path, worker_sees):
    data = write_imagenet(tmp_path / "imagenet")
    other = tmp_path / "other"
    if worker_sees == "other files":
        write_imagenet(other, train_per_class=5)
    else:
        other.mkdir()
    temp_dir = tempfile.mkdtemp(prefix="nd", dir="/tmp")  # short: Ray's socket paths have a length limit
    port = free_port()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "RAY_USAGE_STATS_ENABLED": "0",
           "RAY_AUTH_MODE": "token", "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    env.pop("RAY_ADDRESS", None)
    common = ["--block", "--temp-dir", temp_dir, "--disable-usage-stats", "--object-store-memory", "100000000"]
    nodes = [ray_node([str(BIN / "ray"), "start", "--head", "--port", str(port), "--num-cpus", "0",
                       "--include-dashboard", "false", *common], env, tmp_path / "head.log")]
    try:
        time.sleep(5)
        nodes.append(ray_node([str(BIN / "ray"), "start", "--address", f"127.0.0.1:{port}", "--num-cpus", "1",
                               *common], env, tmp_path / "worker.log", mount=(other, data)))
        flags = ["--preset", "smoke", "--dataset", "imagenet", "--data-dir", str(data), "--depths", "18", "--seeds",
                 "1", "--set", "model.layout=imagenet", "--set", "model.depth=18"]
        deadline, result = time.time() + 120, None
        while time.time() < deadline:  # until the worker node has joined (the check needs it)
            result = subprocess.run([sys.executable, str(REPO / "tests/support/node_data_driver.py"), *flags],
                                    env={**env, "RAY_ADDRESS": f"127.0.0.1:{port}"}, capture_output=True, text=True,
                                    timeout=300)
            if "OK" not in result.stdout.splitlines():
                break
            time.sleep(3)
        output = result.stdout + result.stderr
        assert "REFUSED: the data is not the same on every node that may run a trial (1 such node(s))" in output, (
            output + (tmp_path / "worker.log").read_text())
        problem = output.split("trial (1 such node(s))", 1)[1]
        assert problem.count("\n  node ") == 1, output  # the worker, not the head (no CPU: it runs no trial)
        expected = "has digest" if worker_sees == "other files" else str(data)
        assert expected in problem, output
    finally:
        for node in reversed(nodes):
            stop_group(node, timeout=60)
        subprocess.run(["rm", "-rf", temp_dir], check=False)
