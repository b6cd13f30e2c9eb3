"""The shortcut-option study (paper §3.3, Table 3): residual nets with shortcuts A, B and C beside the plain net.

    python sweeps/shortcut_options.py                              # embedded local Ray; picks smoke or paper
    python sweeps/shortcut_options.py --preset smoke --options A,C --seeds 3
    ray job submit --working-dir . -- python sweeps/shortcut_options.py --preset paper

A: identity shortcuts, zero-padded where the shape changes (no parameters); B: projections where the shape
changes; C: projections everywhere. The plain net of the same depth is the baseline.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sweeps.presets import (IMAGENET, IMAGENET_DESCRIPTION, IMAGENET_RESOURCES, IMAGENET_SEEDS, PAPER,
                            PAPER_DESCRIPTION, PAPER_GPUS_PER_TRIAL, PAPER_SEEDS, SMOKE, SMOKE_DESCRIPTION, schedule)
from sweeps.study import CONFIG_FLAGS, DEPTH, FAMILY, SHORTCUT, GridStudy, Preset


def grid(depths: tuple[int, ...]) -> tuple[dict, ...]:
    """Plain nets, and residual nets with each shortcut option, at ``depths``."""
    return ({"family": ("plain",), "depth": depths},
            {"family": ("residual",), "shortcut": ("A", "B", "C"), "depth": depths})


STUDY = GridStudy(
    name="shortcut_options",
    description=__doc__.strip().splitlines()[0],
    axes=(FAMILY, SHORTCUT, DEPTH),
    presets={
        # 1000 iterations at depths 20 and 32: 16 trials in about 6 minutes on two cores.
        "smoke": Preset("smoke", SMOKE_DESCRIPTION + ": compares the options in minutes",
                        {**SMOKE, **schedule(1000, 125)}, grid=grid((20, 32)),
                        seeds=2, cpus_per_trial=1, gpus_per_trial=0),
        "paper": Preset("paper", PAPER_DESCRIPTION, PAPER, grid=grid((20, 56, 110)),
                        seeds=PAPER_SEEDS, cpus_per_trial=1, gpus_per_trial=PAPER_GPUS_PER_TRIAL,
                        special_cells=(({"family": "residual", "depth": 110}, {"optim.warmup": True}),),
                        recipe="paper"),
        # Table 3: plain-34, ResNet-34 A/B/C, and the bottleneck ResNet-50/101/152 with option B.
        "imagenet": Preset("imagenet", IMAGENET_DESCRIPTION, IMAGENET,
                           grid=({"family": ("plain",), "depth": (34,)},
                                 {"family": ("residual",), "shortcut": ("A", "B", "C"), "depth": (34,)},
                                 {"family": ("residual",), "shortcut": ("B",), "depth": (50, 101, 152)}),
                           seeds=IMAGENET_SEEDS, **IMAGENET_RESOURCES, recipe="paper"),
    },
    report_sections=("shortcuts", "curves", "responses"),
    config_flags=tuple(flag for flag in CONFIG_FLAGS if flag != "model.shortcut"),  # --options varies it
)


def main(argv: list[str] | None = None) -> int:
    """This study's command line; returns the exit code. Imports the CLI only when run."""
    from sweeps import cli

    return cli.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
