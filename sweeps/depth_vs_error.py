"""The depth study (paper Fig. 6, Table 6): plain vs residual nets of several depths, every trial in MLflow.

    python sweeps/depth_vs_error.py                      # embedded local Ray; picks smoke or paper
    python sweeps/depth_vs_error.py --preset smoke --seeds 3
    python sweeps/depth_vs_error.py --preset imagenet --plan-only --assume-cluster 1x64cpu8gpu  # trains nothing
    ray job submit --working-dir . -- python sweeps/depth_vs_error.py --preset paper \
        --tracking-uri sqlite:///$PWD/mlflow.db --storage-path $PWD/ray_results --data-dir $PWD/data
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps.presets import (IMAGENET, IMAGENET_DESCRIPTION, IMAGENET_RESOURCES, IMAGENET_SEEDS, IMAGENET_SMOKE,
                            IMAGENET_SMOKE_DESCRIPTION, PAPER, PAPER_DESCRIPTION, PAPER_GPUS_PER_TRIAL, PAPER_SEEDS,
                            SMOKE, SMOKE_DESCRIPTION)
from sweeps.study import DEPTH, FAMILY, GridStudy, Preset

STUDY = GridStudy(
    name="depth_vs_error",
    description=__doc__.strip().splitlines()[0],
    axes=(FAMILY, DEPTH),
    presets={
        "smoke": Preset("smoke", SMOKE_DESCRIPTION + ": shows degradation in minutes", SMOKE,
                        grid=({"family": ("plain", "residual"), "depth": (20, 56)},),
                        seeds=2, cpus_per_trial=1, gpus_per_trial=0),
        "paper": Preset("paper", PAPER_DESCRIPTION, PAPER,
                        grid=({"family": ("plain",), "depth": (20, 32, 44, 56)},
                              {"family": ("residual",), "depth": (20, 32, 44, 56, 110)}),
                        seeds=PAPER_SEEDS, cpus_per_trial=1, gpus_per_trial=PAPER_GPUS_PER_TRIAL,
                        special_cells=(({"family": "residual", "depth": 110}, {"optim.warmup": True}),),
                        recipe="paper"),
        # Table 2 / Fig. 4: plain-18/34 and ResNet-18/34, option A (zero-padding shortcuts: no extra parameter).
        "imagenet": Preset("imagenet", IMAGENET_DESCRIPTION, {**IMAGENET, "model.shortcut": "A"},
                           grid=({"family": ("plain", "residual"), "depth": (18, 34)},),
                           seeds=IMAGENET_SEEDS, **IMAGENET_RESOURCES, recipe="paper"),
        "imagenet-smoke": Preset("imagenet-smoke", IMAGENET_SMOKE_DESCRIPTION + ": the Table 2 grid in minutes",
                                 {**IMAGENET_SMOKE, "model.shortcut": "A"},
                                 grid=({"family": ("plain", "residual"), "depth": (18, 34)},),
                                 seeds=1, cpus_per_trial=1, gpus_per_trial=0),
    },
    report_sections=("verdict", "curves", "depth", "paper", "responses"),
)


def main(argv: list[str] | None = None) -> int:
    """This study's command line; returns the exit code. Imports the CLI only when run."""
    from sweeps import cli

    return cli.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
