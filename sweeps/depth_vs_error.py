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

from sweeps.cli import build_plan, choose_preset, connect_ray, study_arg_parser
from sweeps.runner import run_sweep

STUDY = "depth_vs_error"


def main(argv: list[str] | None = None) -> int:
    args = study_arg_parser(STUDY, __doc__.strip().splitlines()[0]).parse_args(argv)
    try:
        if args.preset is None:
            connect_ray()
        preset, why = choose_preset(args)
        print(f"preset: {preset.name} ({why}): {preset.description}", flush=True)
        plan = build_plan(STUDY, args, preset)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    connect_ray()
    results = run_sweep(plan)
    return 0 if not results.errors else 1


if __name__ == "__main__":
    sys.exit(main())
