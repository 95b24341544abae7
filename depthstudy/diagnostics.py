"""Instruments that look inside a net: why residual nets train where plain ones do not.

- layer_responses: He 2015 Figure 7, the standard deviation of each 3x3 layer's response
  (after BN, before the ReLU or the addition) on a fixed held-out batch.
- block_diagnostics: per block, ||F(x)|| / ||x|| (how far the block is from the identity), the
  norm of its branch's last BN gamma (what weight decay shrinks towards an identity block) and its RMS
  (||gamma|| / sqrt(C): about 1 for an untouched BN, whatever the width), the norms of its weights and of
  W[l+2], how far its output is from its input, and the same with W[l+2] zeroed (the lecture's claims).
Both run in eval mode without gradients; the model is left as it was found.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from depthstudy import events
from depthstudy.models import ResidualBlock, evaluating


def layer_responses(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Std of every 3x3 layer's response, in layer order."""
    layers = model.response_layers()
    outputs: dict[int, float] = {}
    hooks = [m.register_forward_hook(lambda mod, inp, out, i=i: outputs.__setitem__(i, out.float().std().item()))
             for i, m in enumerate(layers)]
    try:
        with evaluating(model):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return [outputs[i] for i in range(len(layers))]


def block_diagnostics(model: nn.Module, x: torch.Tensor) -> list[dict[str, float]]:
    """Per block, in order, on real activations (the block's input a[l] on the held-out batch x):
    branch_ratio    ||F(a)|| / ||a||
    gamma_norm, gamma_rms  the branch's last BN gamma: its norm and RMS (nan without BN)
    weight_norm     the norm of all the block's weights; last_weight_norm: ||W[l+2]||, its branch's last weight layer
    change_ratio    ||a[l+2] - s|| / ||s||: how far the block's output is from what its shortcut passes on
                    (s = shortcut(a[l]); a plain block: s = a[l], nan where its width changes)
    zeroed_change   the same with the last layer's scale zeroed (W[l+2] and b[l+2], or BN's gamma and beta): 0 for
                    a residual block (the identity is a setting at zero), 1 for a plain pair (its output is 0)
    """
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    inputs: dict[int, torch.Tensor] = {}
    hooks = [b.register_forward_pre_hook(lambda mod, args, i=i: inputs.__setitem__(i, args[0]))
             for i, b in enumerate(blocks)]
    out = []
    try:
        with evaluating(model):
            model(x)
            for i, b in enumerate(blocks):
                xin = inputs[i].float()
                last = b.last_layer()
                has_bn = isinstance(last, nn.modules.batchnorm._BatchNorm)
                gamma = last.weight.norm().item() if has_bn else math.nan
                weights = [m.weight for m in b.modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and m is not b.gate]
                out.append({
                    "branch_ratio": (b.residual(b.preactivate(inputs[i])).float().norm() / xin.norm().clamp_min(1e-12)).item(),
                    "gamma_norm": gamma,
                    "gamma_rms": gamma / math.sqrt(last.weight.numel()) if has_bn else math.nan,
                    "weight_norm": math.sqrt(sum(w.float().pow(2).sum().item() for w in weights)),
                    "last_weight_norm": b.last_weight().weight.float().norm().item(),
                    "change_ratio": _change(b, inputs[i]),
                    "zeroed_change": _change(b, inputs[i], zeroed=True),
                })
    finally:
        for h in hooks:
            h.remove()
    return out


@torch.no_grad()
def _change(block: ResidualBlock, a: torch.Tensor, zeroed: bool = False) -> float:
    """||block(a) - s|| / ||s|| with s what the shortcut passes on (a itself for a plain block of one width)."""
    s = block.shortcut(block.preactivate(a)) if block.shortcut is not None else a
    if zeroed:  # the block as zero_branch() would leave it, without touching its weights
        last = {id(p) for p in block.last_layer().parameters(recurse=False)}
        zeros = {n: torch.zeros_like(p) for n, p in block.named_parameters() if id(p) in last}
        y = torch.func.functional_call(block, zeros, (a,))
    else:
        y = block(a)
    if y.shape != s.shape:
        return math.nan
    return ((y.float() - s.float()).norm() / s.float().norm().clamp_min(1e-12)).item()


def diagnostic_scalars(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """Everything above as TensorBoard scalars (tag names from depthstudy.events)."""
    values = {events.response_tag(i): v for i, v in enumerate(layer_responses(model, x))}
    for i, d in enumerate(block_diagnostics(model, x)):
        for key, v in d.items():
            if math.isfinite(v):
                values[events.block_tag(key, i)] = v
    return values
