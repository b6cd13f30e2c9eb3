"""Top-1 / top-5 error and loss of a model over batches, single-view or multi-view (10-crop).

Shared by both data paths: the in-memory one (``trainer.evaluate``) and the streaming one (ImageNet).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from resnet_core.parallel import Shard


@dataclass(frozen=True)
class Scores:
    error: float  # top-1 error, %
    top5_error: float  # %, top-k with k = min(5, classes)
    loss: float  # mean cross-entropy (of the averaged softmax for multi-view batches)
    images: int


@torch.no_grad()
def evaluate_batches(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                     autocast: torch.autocast | None, channels_last: bool, shard: Shard = Shard()) -> Scores:
    """Scores of ``model`` in eval mode over ``(images, labels)`` batches, left in train mode afterwards.

    A batch of N×V×C×H×W images holds V views of each image (10-crop): their softmax scores are averaged,
    as the paper does. The sums stay on the device: one sync at the end. In a data-parallel run each process
    passes its share of the images, and every process gets the scores of all of them (``shard``).
    """
    model.eval()
    # loss, top-1 wrong, top-5 wrong, images; float32 counts are exact up to 16.7 M images
    totals, n = torch.zeros(4, device=next(model.parameters()).device), 0
    for x, y in batches:
        views = x.shape[1] if x.dim() == 5 else 1
        x = x.flatten(0, 1) if views > 1 else x
        x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
        with autocast or contextlib.nullcontext():
            logits = model(x)
        log_p = F.log_softmax(logits.float(), dim=1)
        if views > 1:  # the log of the views' mean softmax
            log_p = log_p.view(len(y), views, -1).logsumexp(1) - math.log(views)
        top = log_p.topk(min(5, log_p.shape[1]), dim=1).indices
        totals[:3] += torch.stack([F.nll_loss(log_p, y, reduction="sum"), (top[:, 0] != y).sum().float(),
                                   (top != y[:, None]).all(1).sum().float()])
        n += len(y)
    model.train()
    totals[3] = n
    loss, wrong, wrong5, n = shard.sum(totals).tolist()
    if not n:
        raise ValueError("nothing to evaluate: no batches")
    n = int(n)
    return Scores(100.0 * wrong / n, 100.0 * wrong5 / n, loss / n, n)
