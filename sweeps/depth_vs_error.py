"""The depth study (paper Fig. 6, Table 6): plain vs residual nets of several depths, every trial in MLflow.

    python sweeps/depth_vs_error.py                      # embedded local Ray; picks smoke or paper
    python sweeps/depth_vs_error.py --preset smoke --seeds 3
    ray job submit --working-dir . -- python sweeps/depth_vs_error.py --preset paper
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps.cli import sweep_main

STUDY = "depth_vs_error"


def main(argv: list[str] | None = None) -> int:
    return sweep_main(STUDY, __doc__.strip().splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
