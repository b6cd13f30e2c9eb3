"""Tests for data-parallel training (resnet_core/parallel.py through ``fit``): two real processes in a gloo
process group, started by ``torch.distributed.run``, against one process training the same config."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from resnet_core import TrainConfig
from resnet_core.device import autocast_for
from resnet_core.parallel import Shard
from resnet_core.trainer import TrainingState, held_out_metrics, load_data, training_batch
from tests.support.imagenet import write_imagenet
from tests.support.configs import TRAINER_BASE, imagenet_config

ROOT = Path(__file__).resolve().parents[1]
WORKER = ROOT / "tests" / "support" / "parallel_fit.py"


def run_two_processes(config: TrainConfig, out: Path) -> list[dict]:
    """Train ``config`` in two gloo processes; what each rank wrote (tests/support/parallel_fit.py)."""
    out.mkdir()
    (out / "config.json").write_text(json.dumps(config.to_dict()))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(WORKER),
               str(out / "config.json"), str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


def test_a_shard_takes_its_slice_and_refuses_a_batch_it_cannot_split() -> None:
    assert Shard().part(32) == slice(0, 32) and not Shard().is_parallel
    assert [Shard(r, 4).part(32) for r in range(4)] == [slice(0, 8), slice(8, 16), slice(16, 24), slice(24, 32)]
    assert Shard(1, 3).every(list(range(8))) == [1, 4, 7]
    with pytest.raises(ValueError, match=r"optim.batch_size=30 must be a multiple of the 4 data-parallel workers"):
        Shard(0, 4).local_batch(30)


def in_memory_config() -> TrainConfig:
    return TrainConfig.from_dict({**TrainConfig().to_dict(), **TRAINER_BASE})


@pytest.mark.slow
@pytest.mark.parametrize("data", ["in-memory", "imagenet"])
def test_two_processes_train_one_model_on_the_whole_batch(tmp_path: Path, data: str) -> None:
    """Each process trains on its half of every batch (the halves make the one-process batch), both take the
    same decisions from summed metrics, end with the same weights, and their held-out scores are those of the
    whole split."""
    config = in_memory_config() if data == "in-memory" else imagenet_config(write_imagenet(tmp_path / "tree"))
    ranks = run_two_processes(config, tmp_path / "out")

    device = torch.device("cpu")
    torch.manual_seed(config.run.seed)
    single = load_data(config, device)
    x, y = training_batch(TrainingState(config, single, device), single)
    assert torch.equal(torch.cat([r["first_batch"][0] for r in ranks]), x)
    assert torch.equal(torch.cat([r["first_batch"][1] for r in ranks]), y)

    first, second = (r["evaluations"] for r in ranks)
    assert len(first) == config.optim.iterations // config.run.eval_every
    def without_timing(evaluations: list[dict]) -> list[dict]:
        return [{k: v for k, v in e.items() if not k.startswith("perf/")} for e in evaluations]

    assert without_timing(first) == without_timing(second)  # every metric summed over both processes: one decision
    assert first[-1]["train/images"] == config.run.eval_every * config.optim.batch_size
    assert all(torch.equal(ranks[0]["model"][k], ranks[1]["model"][k]) for k in ranks[0]["model"])

    # The scores both processes got (each scoring half the images) are those of the whole split.
    state = TrainingState(config, single, device)
    state.restore(torch.load(tmp_path / "out" / "checkpoint.pt", weights_only=True))
    whole = held_out_metrics(state.model, single, config.run, autocast_for(config, device), final=True)
    for key in (k for k in whole if k.endswith(("error", "images", "error_10crop", "images_10crop"))):
        assert first[-1][key] == pytest.approx(whole[key], abs=1e-9), key
    assert first[-1]["test/loss"] == pytest.approx(whole["test/loss"], rel=1e-6)
