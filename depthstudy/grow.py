"""Grow a deeper net from a trained one (model.init_from=RUN_DIR): the lecture's "adding a residual block does
not hurt", as a feature for any of the nets.

The trained net's stem, head and classifier, and its blocks stage by stage, are copied into the new net; the
new net's extra blocks in each stage are the inserted ones, after the copied blocks of their stage (where the
width no longer changes, so an inserted block maps its input to an output of the same size). How they start
is model.grow_init:
  zero            residual, the branch's last layer (its BN's gamma and beta, or W[l+2] and b[l+2]) set to 0:
                  F(x) = 0 and x >= 0 after a ReLU, so the grown net computes exactly the trained net's function
                  (with model.combine=add; a scaled or gated combine does not pass s(x) through unchanged, and the
                  recorded largest logit change says by how much)
  default         residual, He init (a control: the grown net starts as another function)
  plain           no shortcut, He init (the lecture's plain layers)
  plain_identity  no shortcut, W = I and b = 0 in both layers: relu(I relu(I x)) = x for x >= 0, exact for the
                  MLP without normalisation (BN would renormalise, so other nets are refused)
"""

from __future__ import annotations

import torch
from torch import nn

from depthstudy.errors import UsageError
from depthstudy.models import ResidualBlock, he_init


def grow(trained: nn.Module, new: nn.Module, init: str) -> list[int]:
    """Copy `trained` into `new` (in place) and initialise the inserted blocks; returns their indices in new.blocks."""
    old_stages, new_stages = trained.stages(), new.stages()
    if type(trained) is not type(new) or len(old_stages) != len(new_stages):
        raise UsageError(f"model.init_from: a {type(trained).__name__} cannot grow into a {type(new).__name__}; "
                         "use the same model.arch")
    if any(len(n) < len(o) for o, n in zip(old_stages, new_stages)):
        raise UsageError(f"model.init_from: the new net (depth {new.depth}) has fewer blocks per stage than the trained "
                         f"one (depth {trained.depth}); choose model.depth >= {trained.depth}")
    for part in ("stem", "head", "fc"):
        if hasattr(trained, part):
            _copy(getattr(trained, part), getattr(new, part), part)
    inserted = []
    for old, fresh in zip(old_stages, new_stages):
        for i, j in zip(old, fresh):
            _copy(trained.blocks[i], new.blocks[j], f"block {i}")
        inserted += fresh[len(old):]
    for j in inserted:
        _initialise(new.blocks[j], init)
    return inserted


def _copy(src: nn.Module, dst: nn.Module, what: str) -> None:
    try:
        dst.load_state_dict(src.state_dict())
    except RuntimeError as e:  # another shortcut, block type, width or norm
        reason = str(e).splitlines()[-1].strip()[:160]
        raise UsageError(f"model.init_from: the trained net's {what} does not fit the new net ({reason}); keep the "
                         "trained run's model settings and change only model.depth") from None


@torch.no_grad()
def _initialise(block: ResidualBlock, init: str) -> None:
    if block.alpha is not None:  # skipinit's branch scale: 1, or an inserted block could neither pass nor learn
        block.alpha.fill_(1.0)
    if init in ("default", "plain"):  # He init whatever the net's own model.branch_init
        he_init(block, block.spec.init_mode)
    if init == "default":
        return
    if init == "zero":
        if block.shortcut is None:
            raise UsageError("model.grow_init=zero inserts residual blocks: the net has no shortcuts "
                             "(model.shortcut=none); use plain or plain_identity")
        block.zero_branch()
        return
    block.make_plain()  # plain, plain_identity: a block without a shortcut inside the grown net
    if init == "plain_identity":
        layers = [m for m in block.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
        if not all(isinstance(m, nn.Linear) and m.in_features == m.out_features for m in layers) or any(
                isinstance(m, nn.modules.batchnorm._BatchNorm) for m in block.modules()):
            raise UsageError("model.grow_init=plain_identity needs layers that can be the identity: the MLP "
                             "without normalisation (model=mlp model.norm=none)")
        for m in layers:
            m.weight.copy_(torch.eye(m.in_features))
            m.bias.zero_()


def rebuild(model: nn.Module, record: dict) -> None:
    """A grown net's structure from what its summary.json recorded (no need for the source run): inserted
    plain blocks lose their shortcut; the weights then come from the run's own checkpoint."""
    if record.get("grow_init") in ("plain", "plain_identity"):
        for j in record.get("inserted_blocks", []):
            model.blocks[j].make_plain()


def grow_from_run(model_cfg, model: nn.Module, data, device: torch.device, fresh: bool, batch_size: int,
                  recorded: dict | None = None) -> dict:
    """Grow `model` (built from model_cfg, on the CPU) from the run model_cfg.init_from names.

    fresh: a new run, so the trained weights are copied in and the claim is measured: the training-split error
    (eval mode, every image) of the trained net and of the grown one, and the largest change of any logit.
    Resuming: only the grown net's structure is rebuilt (which inserted blocks are plain), from `recorded` (the
    run's summary.json "grown_from") where there is one, else from the source's config; the run's own checkpoint
    then holds the weights. Returns what summary.json records under "grown_from".
    """
    if not fresh and recorded and "inserted_blocks" in recorded:
        rebuild(model, recorded)
        return dict(recorded)  # with the measurements of the run's start, which a resumed run keeps
    from pathlib import Path

    from omegaconf import OmegaConf

    from depthstudy import checkpoint, rundir, schema
    from depthstudy.models import build_model

    source = Path(str(model_cfg.init_from)).expanduser()
    source_cfg = rundir.read_source_run(source, f"model.init_from={source}")  # config.check_init_from's check too
    if fresh:
        schema.check_source(model_cfg, data.name, source_cfg, rundir.source_summary(source))
    old_cfg = OmegaConf.create(source_cfg)
    trained = build_model(old_cfg.model, data.shape, data.num_classes)
    record = {"run": str(source), "depth": int(old_cfg.model.depth), "grow_init": str(model_cfg.grow_init)}
    if fresh:
        saved = checkpoint.load(source)
        trained.load_state_dict(saved["model"])
        record["iterations"] = int(saved["step"])
    record["inserted_blocks"] = grow(trained, model, str(model_cfg.grow_init))
    if fresh:
        record.update(_same_function(trained, model, data, device, batch_size))
    return record


@torch.no_grad()
def _same_function(trained: nn.Module, grown: nn.Module, data, device: torch.device, batch_size: int) -> dict:
    """Training-split error (%) of both nets in eval mode, and the largest |logit change|, over every image."""
    from depthstudy.data import eval_batches
    from depthstudy.models import evaluating

    trained, grown = trained.to(device), grown.to(device)
    wrong = {"before": 0, "after": 0}
    change = 0.0
    with evaluating(trained), evaluating(grown):
        for x, y in eval_batches(data, data.train, batch_size):
            a, b = trained(x).float(), grown(x).float()
            wrong["before"] += int((a.argmax(1) != y).sum())
            wrong["after"] += int((b.argmax(1) != y).sum())
            change = max(change, float((a - b).abs().max()))
    grown.cpu()
    n = len(data.train)
    return {"train_error_before": 100.0 * wrong["before"] / n, "train_error_after": 100.0 * wrong["after"] / n,
            "max_logit_change": change}
