"""Test-only driver: connect to the Ray cluster at RAY_ADDRESS, wait until NODES nodes are alive, build the depth
study's plan from argv and run the per-node data check (sweeps/driver/node_data.py). Prints "OK", or "REFUSED: "
and the message."""

from __future__ import annotations

import os
import sys
import time

import ray

from sweeps.cli import plan_from_argv
from sweeps.depth_vs_error import STUDY
from sweeps.driver.node_data import check_data_on_nodes

if __name__ == "__main__":
    ray.init(logging_level="WARNING", log_to_driver=False)
    deadline = time.time() + 240
    while sum(node["Alive"] for node in ray.nodes()) < int(os.environ["NODES"]) and time.time() < deadline:
        time.sleep(1)
    try:
        check_data_on_nodes(plan_from_argv(STUDY, sys.argv[1:]))
        print("OK")
    except ValueError as exc:
        print(f"REFUSED: {exc}")
    finally:
        ray.shutdown()
