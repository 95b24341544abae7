"""The optimiser and the learning-rate schedule: which parameters weight decay reaches (decided here
only), the momentum form, lr milestones in iterations, and the paper's warm-up rule for deep nets."""

from __future__ import annotations

from collections import deque

import torch
from omegaconf import DictConfig

from depthstudy.errors import UsageError
from depthstudy.schema import milestone_iterations


def make_optimizer(model: torch.nn.Module, o: DictConfig, say, fused: bool = False,
                   lr_as_tensor: bool = False) -> torch.optim.SGD:
    """SGD; the one place that decides which parameters weight decay applies to.

    fused: one kernel updates every tensor (trainer.fused_optimizer). PyTorch's default on CPU is a
    Python loop over tensors, ~3x slower for ResNet-110's 329 tensors; the update is the same.
    lr_as_tensor: the learning rate as a 0-d tensor on the parameters' device, changed in place (set_lr), so
    that a compiled update (CompiledUpdate) reads it instead of baking it in: no recompile at a milestone.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        # 'weights': conv and linear weights (ndim > 1) only; BN gamma/beta and biases are 1-D.
        (decay if o.wd_scope == "all" or p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    n = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
    say(f"weight decay {o.weight_decay:g} ({o.wd_scope}) on {len(decay)} tensors ({n(decay):,} params)"
        + (f"; none on {len(no_decay)} tensors ({n(no_decay):,} params)" if no_decay else ""))
    params = [g for g in groups if g["params"]]
    for g in params if lr_as_tensor else []:
        g["lr"] = torch.tensor(float(o.lr), device=g["params"][0].device)
    try:
        # nesterov (opt-in): fb.resnet.torch's `nesterov = true` (train.lua); He 2015/2016 trained in Caffe with plain SGD
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, nesterov=bool(o.get("nesterov", False)),
                               fused=fused or None)
    except RuntimeError as e:  # this torch has no fused SGD for the device
        raise UsageError(f"trainer.fused_optimizer=true is not supported here ({str(e).splitlines()[0]}); "
                         "set trainer.fused_optimizer=false") from None


def fused_update(trainer: DictConfig) -> bool:
    """Whether SGD runs PyTorch's fused kernel: trainer.fused_optimizer, unless trainer.compile_optimizer asks
    torch.compile to build the update (torch.compile leaves a fused optimizer's step uncompiled)."""
    return bool(trainer.fused_optimizer) and not bool(trainer.get("compile_optimizer", False))


def make_update(model: torch.nn.Module, o: DictConfig, trainer: DictConfig, say, cuda_graphs: bool):
    """(the SGD optimizer, what train_step updates with): the optimizer itself, or, with trainer.compile_optimizer,
    its step compiled (CompiledUpdate, from foreach SGD with the lr as a tensor)."""
    compile_update = bool(trainer.get("compile_optimizer", False))
    optimizer = make_optimizer(model, o, say, fused=fused_update(trainer), lr_as_tensor=compile_update)
    return optimizer, CompiledUpdate(optimizer, cuda_graphs) if compile_update else optimizer


def load_state(optimizer: torch.optim.SGD, saved: dict) -> None:
    """A checkpoint's optimizer state (momentum buffers, the lr) into this run's optimizer, which keeps how it
    computes the update (fused, foreach, the lr as a tensor): the checkpoint's groups carry the old run's choice."""
    kept = [{k: g[k] for k in ("fused", "foreach", "lr") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(saved)
    for group, mine in zip(optimizer.param_groups, kept):
        lr = float(group["lr"])
        group.update(mine)
        _put_lr(group, lr)


def _put_lr(group: dict, lr: float) -> None:
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(lr)  # in place: a compiled update reads this tensor
    else:
        group["lr"] = lr


class CompiledUpdate:
    """The optimizer as train_step uses it (zero_grad, step), with its step compiled by torch.compile: with CUDA
    graphs (mode reduce-overhead) the update replays as a graph too. Its lr is a tensor (make_optimizer's
    lr_as_tensor), so a learning-rate change is a new value, not a recompile: compiling happens in the first
    calls only, where device.WithFallback covers a failure."""

    def __init__(self, optimizer: torch.optim.SGD, cuda_graphs: bool):
        self.optimizer = optimizer
        # The momentum buffers exist before the first step, as zeros (the first step's v = m*0 + g is its v = g):
        # made inside the first compiled step instead, they would live in the CUDA graphs' memory pool, and the
        # next iteration's cudagraph_mark_step_begin frees them (and the step would recompile once without them).
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"] if group["momentum"] else []:
                    optimizer.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
        self._step = torch.compile(optimizer.step, mode="reduce-overhead" if cuda_graphs else None)

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        self._step()


def set_lr(optimizer: torch.optim.SGD, lr: float, caffe_momentum: bool) -> None:
    for group in optimizer.param_groups:
        old = float(group["lr"])  # a tensor lr: one host sync, at the few lr changes only
        if caffe_momentum and old != lr:
            # Caffe's v = m*v + lr*g equals PyTorch's v = m*v + g with v rescaled by old/new at a change.
            for p in group["params"]:
                buf = optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.mul_(old / lr)
        _put_lr(group, lr)


class Schedule:
    """Step schedule in iterations, with the paper's optional warm-up for deep nets.

    Warm-up (He 2015, ResNet-110: "0.01 ... until the training error is below 80% (about 400
    iterations)"): lr `warmup.lr` for a bounded prefix of the schedule. It ends after the first
    iteration at which the mean training error of the last 10 mini-batches is below
    `warmup.until_train_error` % (null: no error rule, a fixed-length warm-up), and at the latest
    after `warmup.max_iterations` (null: no cap of its own) or at the first milestone: it never
    outlasts its cap and never suppresses a learning-rate drop. `warmup_ended_by` says which ended
    it ("error" or "cap"). Its state (warming, when and how it ended, the 10-batch window) is part
    of a checkpoint.
    """

    WINDOW = 10  # mini-batches the warm-up rule averages over

    def __init__(self, s: DictConfig, lr: float, depth: int):
        # A milestone is an iteration, or a fraction of the run (0.5: half way), so a shortened run keeps its shape.
        self.milestones = milestone_iterations(s.milestones, int(s.iterations))
        self.lr, self.gamma = lr, s.gamma
        w = s.warmup
        self.warmup = w.min_depth is not None and depth >= w.min_depth  # does the rule apply to this net
        self.warmup_lr, self.warmup_until = w.lr, w.until_train_error
        # The cap: max_iterations, and never past the first milestone (nor the end of the run).
        self.warmup_max = min(c for c in (w.max_iterations, *self.milestones[:1], int(s.iterations)) if c is not None)
        self.warming, self.warmup_ended, self.warmup_ended_by = self.warmup and self.warmup_max > 0, -1, None
        self.recent: deque[float] = deque(maxlen=self.WINDOW)

    def lr_at(self, step: int, warming: bool) -> float:
        if warming:
            return self.warmup_lr
        return self.lr * self.gamma ** sum(step >= m for m in self.milestones)

    def end_warmup_if_due(self, done: int, batch_error: float) -> bool:
        """Record one batch's training error (%) after iteration `done`; True when warm-up ends here."""
        self.recent.append(batch_error)
        full = len(self.recent) == self.recent.maxlen
        below = self.warmup_until is not None and full and sum(self.recent) / len(self.recent) < self.warmup_until
        if below or done >= self.warmup_max:
            self.warming, self.warmup_ended, self.warmup_ended_by = False, done, "error" if below else "cap"
            return True
        return False

    def state(self) -> dict:
        return {"warming": self.warming, "warmup_ended": self.warmup_ended, "warmup_ended_by": self.warmup_ended_by,
                "recent_errors": list(self.recent)}

    def restore(self, state: dict) -> None:
        self.warming, self.warmup_ended = state["warming"], state["warmup_ended"]
        self.warmup_ended_by = state.get("warmup_ended_by")  # checkpoints from before it was recorded: unknown
        self.recent = deque(state["recent_errors"], maxlen=self.WINDOW)
