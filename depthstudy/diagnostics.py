"""Instruments that look inside a net: why residual nets train where plain ones do not.

- layer_responses: He 2015 Figure 7, the standard deviation of each 3x3 layer's response
  (after BN, before the ReLU or the addition) on a fixed held-out batch.
- block_diagnostics: per block, ||F(x)|| / ||x|| (how far the block is from the identity), the
  norm of its branch's last BN gamma (what weight decay shrinks towards an identity block) and its RMS
  (||gamma|| / sqrt(C): about 1 for an untouched BN, whatever the width), the norms of its weights and of
  W[l+2], how far its output is from its input, and the same with W[l+2] zeroed (the lecture's claims).
- identity_learning: the lecture's claim 2 measured: how fast a residual block and a plain block from the same
  He init learn f(a) = a on given activations (block_input: what a trained net's block receives).
The instruments run in eval mode without gradients; the model is left as it was found.
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


def identity_learning(train_a: torch.Tensor, held_a: torch.Tensor, seed: int, steps: int, lr: float,
                      batch_size: int, at: list[int]) -> dict[str, list[tuple[int, float]]]:
    """Learning f(a) = a from a standard init (the lecture's claim 2, measured rather than constructed).

    A residual block (identity shortcut) and a plain block (no shortcut) of the MLP, same width as a, no
    normalisation, He init from the same seed (so the same W[l+1], W[l+2]: the shortcut is the only difference),
    trained by SGD (momentum 0.9) on the same mini-batches of activations to output their input (mean squared
    error). Returns, per kind ("residual", "plain"), ||block(a) - a|| / ||a|| on the held-out activations at
    each step in `at` (0: at init).
    """
    from depthstudy.models import MLPBlock, he_init
    from depthstudy.schema import MLPConfig

    width = train_a.shape[1]
    curves = {}
    for kind, shortcut in (("residual", "A"), ("plain", "none")):
        torch.manual_seed(seed)
        block = MLPBlock(width, width, MLPConfig(arch="mlp", shortcut=shortcut, norm="none"))
        he_init(block)
        opt = torch.optim.SGD(block.parameters(), lr=lr, momentum=0.9)
        batches = torch.Generator().manual_seed(seed)  # the same batches for both kinds
        curve = []
        for step in range(steps + 1):
            if step in at:
                with torch.no_grad():
                    curve.append((step, ((block(held_a) - held_a).norm() / held_a.norm()).item()))
            if step == steps:
                break
            a = train_a[torch.randint(0, len(train_a), (batch_size,), generator=batches)]
            loss = torch.nn.functional.mse_loss(block(a), a)
            opt.zero_grad()
            loss.backward()
            opt.step()
        curves[kind] = curve
    return curves


@torch.no_grad()
def block_input(model: nn.Module, x: torch.Tensor, index: int) -> torch.Tensor:
    """What block `index` receives, a[l], on the inputs x (eval mode)."""
    block = [m for m in model.modules() if isinstance(m, ResidualBlock)][index]
    seen = []
    hook = block.register_forward_pre_hook(lambda mod, args: seen.append(args[0]))
    try:
        with evaluating(model):
            model(x)
    finally:
        hook.remove()
    return seen[0].float()
