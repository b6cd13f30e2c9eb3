"""The trainer's warm-up and divergence checks between evaluations, without making the device wait.

Every CHECK_EVERY iterations the loop hands ``Checks`` the window's loss and error sums (still on the device);
their values arrive on the host one window later, when the copy has surely finished, so the steady state has
no host sync (a GPU stays ahead of the Python loop). At an evaluation, where the loop waits anyway, all are read.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class Checks:
    """The warm-up and divergence checks of each window, read one window late so the device never waits.

    ``submit`` snapshots a window's sums and starts copying them to the host without a sync; ``due`` yields
    (mean loss, training error %) of the windows whose copies are surely done: all but the newest, or every one
    when ``everything`` (at an evaluation, where the loop waits for the device anyway). On a CPU the copy is
    immediate, and only the lag remains.
    """

    def __init__(self, device: torch.device, batch_size: int):
        self.device, self.batch_size = device, batch_size
        self.pending: list[tuple[torch.Tensor, torch.cuda.Event | None, int]] = []

    def submit(self, loss: torch.Tensor, wrong: torch.Tensor, steps: int) -> None:
        """A window's summed loss and wrong predictions over ``steps`` steps, still on the device."""
        sums = torch.stack([loss, wrong.to(loss.dtype)])  # a snapshot, in stream order: the sums may be reset next
        event = None
        if self.device.type == "cuda":
            host = torch.empty(2, pin_memory=True).copy_(sums, non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        else:
            host = sums
        self.pending.append((host, event, steps))

    def due(self, everything: bool) -> Iterator[tuple[float, float]]:
        """(mean loss, training error %) of each window whose copy is done, oldest first; forgets them."""
        ready = self.pending if everything else self.pending[:-1]
        self.pending = [] if everything else self.pending[-1:]
        for host, event, steps in ready:
            if event is not None:
                event.synchronize()
            loss, wrong = host.tolist()
            yield loss / steps, 100.0 * wrong / (steps * self.batch_size)
