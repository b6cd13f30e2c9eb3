"""Probes of what happens inside a network: layer responses (paper Fig. 7) and gradient norms."""

from __future__ import annotations

import torch
from torch import nn

from resnet_core.models import response_layers


@torch.no_grad()
def layer_response_std(model: nn.Module, images: torch.Tensor, autocast: torch.autocast | None = None) -> dict[str, float]:
    """Standard deviation of each 3×3 layer's response (after BN, before ReLU/addition), in network order.

    This is the quantity of the paper's Fig. 7 (layers from ``response_layers``). The paper says only that it
    is measured on CIFAR-10; the rest is our choice: one forward pass over ``images`` (``fit`` passes the
    first ``run.probe_images`` test images, the same fixed batch at every evaluation), the model in eval
    mode (BN normalises with its running statistics, dropout is off), and one std per layer over all of its
    outputs in the batch (images, channels and positions together), computed in fp32. ``model`` is the
    uncompiled ResNet; its train/eval mode is restored afterwards.
    """
    layers = response_layers(model)
    stds: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda _m, _i, out, name=name: stds.__setitem__(name, out.float().std()))
        for name, module in layers
    ]
    was_training = model.training
    model.eval()
    try:
        if autocast is not None:
            with autocast:
                model(images)
        else:
            model(images)
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    values = torch.stack([stds[name] for name, _ in layers]).tolist()  # one device sync for all layers
    return dict(zip([name for name, _ in layers], values))


@torch.no_grad()
def gradient_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of each weight tensor's gradient (left by the last backward pass), keyed by parameter name."""
    named = [(name, p.grad) for name, p in model.named_parameters() if p.grad is not None and name.endswith("weight")]
    if not named:
        return {}
    norms = torch.stack([g.float().norm() for _, g in named]).tolist()
    return dict(zip([name for name, _ in named], norms))


def global_norm(norms: dict[str, float]) -> float:
    """Combined L2 norm of several per-tensor norms."""
    return float(sum(v * v for v in norms.values()) ** 0.5)
