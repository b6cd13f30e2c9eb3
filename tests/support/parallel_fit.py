"""One process of a data-parallel ``fit`` (tests/test_parallel.py starts two with ``torch.distributed.run``).

    python -m torch.distributed.run --nproc-per-node 2 tests/support/parallel_fit.py CONFIG.json OUT_DIR

Each process writes ``OUT_DIR/rank<r>.pt``: its slice of the first training batch, the metrics of every
evaluation and its final model state; rank 0 also ``OUT_DIR/checkpoint.pt``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from resnet_core import TrainConfig, fit  # noqa: E402
from resnet_core.trainer import load_data, training_batch, TrainingState  # noqa: E402


def main(config_path: str, out: str) -> None:
    dist.init_process_group("gloo")
    config = TrainConfig.from_dict(json.loads(Path(config_path).read_text()))
    device = torch.device("cpu")
    torch.manual_seed(config.run.seed)
    data = load_data(config, device)
    first = training_batch(TrainingState(config, data, device), data)
    evaluations, final = [], None
    for result in fit(config, dataset=data):
        evaluations.append(result.metrics)
        final = result.state()
    rank = dist.get_rank()
    torch.save({"first_batch": first, "evaluations": evaluations, "model": final["model"]},
               Path(out) / f"rank{rank}.pt")
    if rank == 0:
        torch.save(final, Path(out) / "checkpoint.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:])
