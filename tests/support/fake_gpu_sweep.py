"""The depth study on a Ray node that claims a GPU this machine does not have:
``python tests/support/fake_gpu_sweep.py STUDY-FLAGS...``.

Ray is started as ``ray start --num-gpus 1`` would start it, so Ray assigns trials a GPU (and sets
CUDA_VISIBLE_DEVICES) while torch finds none: the situation of a GPU node whose NVIDIA driver is too old for
the torch build. The study then runs exactly as ``python sweeps/depth_vs_error.py STUDY-FLAGS...`` would.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo

import ray  # noqa: E402

from sweeps.cli import main  # noqa: E402
from sweeps.depth_vs_error import STUDY  # noqa: E402

if __name__ == "__main__":
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="WARNING", log_to_driver=True)
    sys.exit(main(STUDY, sys.argv[1:]))
