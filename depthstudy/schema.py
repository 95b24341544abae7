"""What a config may say, declared once, without torch: the model options (their types, defaults and
meaning), the choices every group offers, and the depth rules.

`ModelConfig` is the single source of the model's arguments (as nanoGPT's GPTConfig is): Hydra types
every `model.*` override against it (it is the base of configs/model/*.yaml, registered as
`model/base`; MLPConfig adds the MLP's widths), models.py builds nets from it, and config.validate checks its choices. Defaults are
He 2015's; every variant is a named switch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, List, Optional

from depthstudy.errors import UsageError

ARCHS = ("cifar_resnet", "mlp")
SHORTCUTS = ("none", "A", "B", "C")
# He 2016 Fig. 4's units (a)-(e): post (a), bn_after_add (b), relu_before_add (c), relu_pre (d), pre (e); bottleneck:
# the same as pre with model.bottleneck=true (its spelling before model.bottleneck existed, kept for those runs).
BLOCKS = ("post", "pre", "bottleneck", "bn_after_add", "relu_before_add", "relu_pre")
BOTTLENECK_STRIDES = ("3x3", "1x1")
INIT_MODES = ("fan_in", "fan_out")
COMBINES = ("add", "scale", "exclusive_gate", "shortcut_gate", "dropout")
BRANCH_INITS = ("default", "zero_gamma", "skipinit")
NORMS = ("bn", "none")
GROW_INITS = ("zero", "default", "plain", "plain_identity")
DATASETS = ("digits", "cifar10", "cifar100")
# Images a data set's training pool holds (what data.val_size and data.test_size are cut from): checked
# before a sweep starts, without loading anything. data.py's loaders produce exactly these.
DATASET_TRAIN_IMAGES = {"digits": 1797, "cifar10": 50000, "cifar100": 50000}
DATASET_TEST_IMAGES = {"digits": 0, "cifar10": 10000, "cifar100": 10000}  # a separate test file (digits: test_size)
DATASET_SHAPES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32), "cifar100": (3, 32, 32)}
DATASET_CLASSES = {"digits": 10, "cifar10": 10, "cifar100": 100}
PRECISIONS = ("fp32", "tf32", "bf16")
PROGRESS_MODES = ("auto", "bar", "lines", "none")


@dataclass
class ModelConfig:
    """How a net is built. Defaults: He 2015 (section 4.2)."""

    arch: str = "cifar_resnet"  # cifar_resnet: He 2015's CIFAR nets, depth 6n+2 | mlp: the lecture's MLP, depth 2n+2
    depth: Any = 20  # layers with weights (typed by validate(), which names the valid depths)
    shortcut: str = "A"  # none (plain) | A zero-pad | B projection where size changes | C projection everywhere
    block: str = "post"  # the unit, He 2016 Fig. 4 (written for two 3x3 convs; the bottleneck's three work alike):
    #   post (a): conv-BN-ReLU-conv-BN, add, ReLU (He 2015) | bn_after_add (b): conv-BN-ReLU-conv, add, BN, ReLU
    #   | relu_before_add (c): conv-BN-ReLU-conv-BN-ReLU, add | relu_pre (d): ReLU-conv-BN-ReLU-conv-BN, add
    #   | pre (e): BN-ReLU-conv-BN-ReLU-conv, add | bottleneck: pre with bottleneck=true (the older spelling)
    bottleneck: bool = False  # true: 1x1 (width), 3x3 (width), 1x1 (4 x width) units, depth 9n+2 (He 2016's
    #   ResNet-164/1001; its code projects where the size changes: use shortcut B)
    bottleneck_stride: str = "3x3"  # the conv that strides in a bottleneck unit that halves the map: 3x3
    #   (fb.resnet.torch's preresnet.lua) | 1x1, the first (KaimingHe/resnet-1k-layers); He 2016 does not say
    init_mode: str = "fan_in"  # He init's n: fan_in, k*k*in_channels (Caffe's MSRA filler default) | fan_out,
    #   k*k*out_channels for the conv layers (fb.resnet.torch and resnet-1k-layers); He 2016 cites He init only
    combine: str = "add"  # how shortcut s and branch F meet (He 2016 Table 1):
    #   add: s + F | scale: scale*s + (1-scale)*F (scale_branch) or scale*s + F | exclusive_gate: (1-g)*s + g*F
    #   shortcut_gate: (1-g)*s + F | dropout: dropout(s) + F; with g = sigmoid(1x1 conv(x) + gate_bias)
    scale: float = 0.5  # combine=scale: the constant
    scale_branch: bool = True  # combine=scale: the branch by 1 - scale too (He 2016's 12.35% at 0.5), or unscaled ("fail")
    gate_bias: float = -6.0  # combine=*_gate: initial bias of the gate
    shortcut_dropout: float = 0.5  # combine=dropout: drop probability on the shortcut
    branch_init: str = "default"  # default | zero_gamma: last BN gamma (or last layer) = 0 | skipinit: s + alpha*F, alpha = 0
    norm: str = "bn"  # bn | none (no normalisation; pair with zero_gamma or skipinit)
    init_from: Optional[str] = None  # a run directory: start from its trained net (same arch, shallower or equal):
    #   its stem, head and blocks are copied stage by stage, and new blocks are inserted after them in each stage
    grow_init: str = "zero"  # the inserted blocks: zero (residual, last layer 0: the grown net computes exactly the
    #   trained net's function) | default (residual, He init) | plain (no shortcut, He init) | plain_identity
    #   (no shortcut, both layers the identity matrix: exact for the MLP without normalisation)

    def check(self) -> None:
        """Refuse an unknown choice with a line that lists the valid ones."""
        for name, choices in (("shortcut", SHORTCUTS), ("block", BLOCKS), ("combine", COMBINES),
                              ("branch_init", BRANCH_INITS), ("norm", NORMS), ("grow_init", GROW_INITS),
                              ("bottleneck_stride", BOTTLENECK_STRIDES), ("init_mode", INIT_MODES)):
            value = getattr(self, name)
            if value not in choices:
                raise UsageError(f"model.{name}={value!r} is unknown; choose one of: {', '.join(choices)}")
        if self.init_from and self.grow_init == "zero" and self.shortcut == "none":
            raise UsageError("model.grow_init=zero inserts residual blocks, and model.shortcut=none has no shortcuts; "
                             "use model.grow_init=plain or plain_identity")
        if self.init_from and self.grow_init == "plain_identity" and (self.norm != "none" or self.arch != "mlp"):
            raise UsageError("model.grow_init=plain_identity needs layers that can be the identity: the MLP without "
                             "normalisation (model=mlp model.norm=none)")
        if self.arch == "mlp":
            self.check_mlp_block()
        if not 0 <= self.shortcut_dropout < 1:
            raise UsageError(f"model.shortcut_dropout={self.shortcut_dropout} must be in [0, 1)")


    def check_mlp_block(self) -> None:
        """The MLP has the lecture's post-activation block only."""
        if self.block != "post" or self.bottleneck:
            setting = "model.bottleneck=true" if self.bottleneck else f"model.block={self.block}"
            raise UsageError(f"{setting} is for the CIFAR nets; the MLP uses the lecture's post-activation block "
                             "(model.block=post, model.bottleneck=false)")


@dataclass
class MLPConfig(ModelConfig):
    """The lecture's MLP: the same block options, and the widths before and after the width change."""

    widths: List[int] = field(default_factory=lambda: [128, 256])


def model_config(model_cfg) -> ModelConfig:
    """A ModelConfig from a config node or dict; keys it lacks keep the paper's defaults."""
    return ModelConfig(**{f.name: model_cfg[f.name] for f in fields(ModelConfig) if f.name in model_cfg})


def unit_of(model_cfg) -> str:
    """The unit's arrangement (He 2016 Fig. 4) of a model config: its block, with bottleneck read as pre."""
    block = model_cfg.get("block", "post") if hasattr(model_cfg, "get") else model_cfg.block
    return "pre" if block == "bottleneck" else block


def is_bottleneck(model_cfg) -> bool:
    """Whether the net's units are 1x1-3x3-1x1 bottlenecks (model.bottleneck, or its older spelling block=bottleneck)."""
    get = model_cfg.get if hasattr(model_cfg, "get") else lambda k, d=None: getattr(model_cfg, k, d)
    return bool(get("bottleneck", False)) or get("block", "post") == "bottleneck"


def blocks_per_stage(depth) -> int:
    """n for depth 6n+2, or a UsageError naming the valid depths."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 8 or (depth - 2) % 6:
        raise UsageError(
            f"model.depth={depth} is not of the form 6n+2 with n >= 1; valid depths are "
            "8, 14, 20, 26, 32, 38, 44, 50, 56, ..., 110, ..., 1202 (the paper uses 20, 32, 44, 56, 110, 1202)"
        )
    return (depth - 2) // 6


def bottleneck_blocks(depth) -> int:
    """n for a bottleneck net of depth 9n+2 (three 1x1/3x3/1x1 layers per block), or a UsageError."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 11 or (depth - 2) % 9:
        raise UsageError(f"model.depth={depth} is not of the form 9n+2 with n >= 1, as model.bottleneck=true needs; "
                         "valid depths are 11, 20, 29, ..., 164, ..., 1001 (He 2016 uses 164 and 1001)")
    return (depth - 2) // 9


def depth_rule(model_cfg):
    """The depth check of a model config's architecture and block."""
    if model_cfg.arch == "mlp":
        return mlp_blocks
    return bottleneck_blocks if is_bottleneck(model_cfg) else blocks_per_stage


def mlp_blocks(depth) -> int:
    """n for an MLP of depth 2n+2, or a UsageError."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 4 or depth % 2:
        raise UsageError(f"model.depth={depth}: an MLP has depth 2n+2 (input layer, n blocks of 2, classifier): "
                         "an even number >= 4, e.g. 4, 10, 20, 40")
    return (depth - 2) // 2


def register() -> None:
    """The schemas Hydra types configs/model/*.yaml against: `model/base` and `model/mlp_base`."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="model", name="base", node=ModelConfig)
    ConfigStore.instance().store(group="model", name="mlp_base", node=MLPConfig)


def milestone_iterations(milestones, iterations: int) -> list[int]:
    """lr milestones as iterations: an int is an iteration, a float a fraction of the run (0.5: half way)."""
    return sorted(round(m * iterations) if isinstance(m, float) else int(m) for m in milestones)


# The model settings a grown net may change: its depth, and how it grows.
GROWABLE = ("depth", "init_from", "grow_init")


def _model_defaults(arch) -> dict:
    """Every model key's default, for the net family `arch` (a run saved before a key existed had the default)."""
    schema = MLPConfig if arch == "mlp" else ModelConfig
    return {f.name: f.default_factory() if callable(f.default_factory) else f.default for f in fields(schema)}


def check_source(model_cfg, data_name: str, source_cfg: dict, source_summary: dict | None) -> None:
    """Refuse, before anything is written, a growth the trained run cannot give: another data set or model
    setting (only depth may change), a shallower net, or a run that has not finished training."""
    source = model_cfg.init_from
    data, old = source_cfg.get("data"), source_cfg.get("model")
    if not isinstance(data, dict) or not isinstance(old, dict):
        raise UsageError(f"model.init_from={source}: its config.yaml has no data or model section; is it a run?")
    if data.get("name") != data_name:
        raise UsageError(f"model.init_from={source} was trained on {data.get('name')}, this run uses {data_name}")
    defaults = _model_defaults(old.get("arch"))
    value = lambda cfg, k: cfg[k] if k in cfg else defaults.get(k)  # noqa: E731
    differ = [f"model.{k}: {value(old, k)!r} there, {value(model_cfg, k)!r} here" for k in sorted(set(old) | set(model_cfg))
              if k not in GROWABLE and value(old, k) != value(model_cfg, k)]
    if differ:
        raise UsageError(f"model.init_from={source}: only model.depth may differ from the trained run ("
                         + "; ".join(differ[:3]) + ")")
    if int(model_cfg.depth) < int(old.get("depth", 0)):
        raise UsageError(f"model.init_from={source}: model.depth={model_cfg.depth} is shallower than the trained "
                         f"run's {old.get('depth')}; growing only adds blocks")
    status = (source_summary or {}).get("status")
    if status == "diverged":
        raise UsageError(f"model.init_from={source}: that run diverged; a diverged net cannot be grown from")
    if status is None:
        raise UsageError(f"model.init_from={source}: its summary.json is missing or unreadable, so whether it finished "
                         "is unknown; rerun its command to finish it, then grow from it")
    if status != "finished":
        raise UsageError(f"model.init_from={source}: that run is {status}, not finished; train it to the end first "
                         "(rerun its command), then grow from it")
