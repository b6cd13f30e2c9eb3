"""A study's command line with faults injected: ``python tests/faulty_sweep.py FAULTS.json STUDY-FLAGS...``.

For the tests that kill or restart a sweep's driver, which must run in its own process. The depth study runs
exactly as ``python sweeps/depth_vs_error.py STUDY-FLAGS...`` would, with ``FaultHooks`` as its trial hooks.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1])]

from faults import FaultHooks  # noqa: E402
from sweeps.cli import main  # noqa: E402
from sweeps.depth_vs_error import STUDY  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(STUDY, sys.argv[2:], hooks=FaultHooks.from_file(sys.argv[1])))
