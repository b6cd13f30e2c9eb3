"""A study's command line with faults injected: ``python tests/support/faulty_sweep.py FAULTS.json [STUDY] STUDY-FLAGS...``.

For the tests that kill or restart a sweep's driver, which must run in its own process. ``STUDY`` names the
study module under sweeps/ (default ``depth_vs_error``); the study runs exactly as
``python sweeps/<STUDY>.py STUDY-FLAGS...`` would, with ``FaultHooks`` as its trial hooks.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parents[2])]  # tests/, the repo

from support.faults import FaultHooks  # noqa: E402
from sweeps.cli import main  # noqa: E402

if __name__ == "__main__":
    faults, argv = sys.argv[1], sys.argv[2:]
    module = argv.pop(0) if argv and not argv[0].startswith("-") else "depth_vs_error"
    study = importlib.import_module(f"sweeps.{module}").STUDY
    sys.exit(main(study, argv, hooks=FaultHooks.from_file(faults)))
