"""The resume check the ImageNet tests share: a run killed after its first evaluation, resumed from that checkpoint,
must go on exactly as the uninterrupted run did."""

from __future__ import annotations

from pathlib import Path

import torch

from resnet_core import Result, TrainConfig, fit, load_checkpoint

COMPARED = ("train/loss", "train/error", "val/error", "test/loss", "opt/lr", "test/error_10crop")


def assert_resumes_bit_for_bit(config: TrainConfig, uninterrupted: list[Result], tmp_path: Path) -> None:
    """Kill a run of ``config`` after its first evaluation (decoding with 2 workers), resume it with ``config``:
    every later evaluation and the final weights equal ``uninterrupted``'s (evaluated every 3 of 9 iterations)."""
    first = fit(config.replace(**{"run.data_workers": 2}))  # the killed run read its files with 2 workers
    next(first).save_checkpoint(tmp_path / "ckpt.pt")
    first.close()
    assert load_checkpoint(tmp_path / "ckpt.pt")["iteration"] == 3
    resumed = list(fit(config, resume=tmp_path / "ckpt.pt"))
    assert [r.iteration for r in resumed] == [6, 9]
    for a, b in zip(resumed, uninterrupted[1:]):
        for key in COMPARED:
            assert a.metrics.get(key) == b.metrics.get(key), key
    final, expected = resumed[-1].state()["model"], uninterrupted[-1].state()["model"]
    assert all(torch.equal(final[k], expected[k]) for k in expected)
