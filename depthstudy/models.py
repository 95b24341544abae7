"""Plain and residual nets: He 2015's CIFAR family (depth 6n+2), its He 2016 variants, and the lecture's MLP.

CIFAR layout (PAPER.md, He 2015 section 4.2):
    3x3 conv (16), BN, ReLU
    stage 1: n blocks, 16 filters, 32x32 maps
    stage 2: n blocks, 32 filters, 16x16 maps (first block has stride 2)
    stage 3: n blocks, 64 filters,  8x8 maps  (first block has stride 2)
    global average pool, fully connected, (softmax in the loss)
Each block holds two 3x3 conv layers, so depth = 6n + 2. The defaults (post-activation block,
shortcuts added, default init, BN) are the paper's; every variant is a named switch in BlockSpec.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from depthstudy.errors import UsageError
from depthstudy.schema import (ARCHS, SHORTCUTS, ModelConfig, blocks_per_stage, bottleneck_blocks, is_bottleneck,
                               mlp_blocks, model_config, unit_of)

# A block is built from the model's config: its options are declared once, in depthstudy.schema.
BlockSpec = ModelConfig
STAGE_WIDTHS = (16, 32, 64)


@contextmanager
def evaluating(model: nn.Module):
    """Eval mode (BN uses its running statistics) and no gradients; the model is left as it was found."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def conv3x3(cin: int, cout: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    # No bias by default: the BN that follows has its own shift (beta).
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)


class ZeroPadShortcut(nn.Module):
    """Option A where the size changes: stride-2 subsampling, then zero channels (or features) appended.

    No parameters, so a residual net has exactly the parameter count of its plain twin.
    """

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.extra, self.stride = cout - cin, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 2:  # MLP features: a[l] padded with zeros up to the new width
            return F.pad(x, (0, self.extra))
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class ProjectionShortcut(nn.Sequential):
    """Options B and C: 1x1 conv (with the block's stride), BN; for the MLP a linear map W_s."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str = "bn", dim: int = 2):
        if dim == 1:
            super().__init__(nn.Linear(cin, cout, bias=False))
        else:
            layers = [nn.Conv2d(cin, cout, 1, stride=stride, bias=norm == "none")]
            super().__init__(*layers, *([nn.BatchNorm2d(cout)] if norm == "bn" else []))


def make_shortcut(kind: str, cin: int, cout: int, stride: int, norm: str = "bn", dim: int = 2) -> nn.Module | None:
    """The one place the shortcut is decided (None means the plain net: no shortcut at all)."""
    resizes = stride != 1 or cin != cout
    if kind == "none":
        return None
    if kind == "C" or (kind == "B" and resizes):
        return ProjectionShortcut(cin, cout, stride, norm, dim)
    if kind in ("A", "B"):
        return ZeroPadShortcut(cin, cout, stride) if resizes else nn.Identity()
    raise UsageError(f"model.shortcut={kind!r} is unknown; choose one of: {', '.join(SHORTCUTS)}")


class ResidualBlock(nn.Module):
    """Two layers F(x) and a shortcut s(x), combined per BlockSpec. Subclasses define branch().

    post (He 2015):  a[l+2] = relu(s(a[l]) + F(a[l]))     plain: a[l+2] = relu(F(a[l]))
    pre  (He 2016):  x[l+1] = s(x[l]) + F(x[l])           plain: x[l+1] = F(x[l])
    bn_after_add:    relu(BN(s + F)); relu_before_add and relu_pre: s + F (He 2016 Fig. 4 (b)-(d))
    """

    def __init__(self, spec: BlockSpec, shortcut: nn.Module | None, gate: nn.Module | None):
        super().__init__()
        self.spec, self.shortcut, self.gate = spec, shortcut, gate
        self.unit = unit_of(spec)
        self.alpha = nn.Parameter(torch.zeros(())) if spec.branch_init == "skipinit" and shortcut is not None else None

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def residual(self, x: torch.Tensor) -> torch.Tensor:
        """What the block adds to its shortcut (F(x), scaled where the variant scales it)."""
        f = self.branch(x)
        return f if self.alpha is None else self.alpha * f

    preact = "branch"  # where a pre-activation block's first activation sits (see BasicBlock)

    def preactivate(self, x: torch.Tensor) -> torch.Tensor:
        """What both paths receive: x itself, or, where the first activation sits before the split, BN-ReLU(x)
        (pre) or ReLU(x) (relu_pre)."""
        if self.preact != "both":
            return x
        return F.relu(self.bn1(x)) if self.unit == "pre" else F.relu(x)

    def after_addition(self, out: torch.Tensor) -> torch.Tensor:
        """f in He 2016's x[l+1] = f(s + F): ReLU (post), BN then ReLU (bn_after_add), the identity otherwise."""
        if self.unit == "bn_after_add":
            return F.relu(self.norms[-1](out))
        return F.relu(out) if self.unit == "post" else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.preactivate(x)
        f = self.residual(x)
        if self.shortcut is None:
            out = f
        else:
            s, c = self.shortcut(x), self.spec.combine
            if c == "add":
                out = s + f  # the residual connection
            elif c == "scale":  # He 2016: lambda * s + (1 - lambda) * F, or F unscaled
                out = self.spec.scale * s + ((1 - self.spec.scale) if self.spec.scale_branch else 1.0) * f
            elif c == "exclusive_gate":
                g = torch.sigmoid(self.gate(x))
                out = (1 - g) * s + g * f
            elif c == "shortcut_gate":
                out = (1 - torch.sigmoid(self.gate(x))) * s + f
            else:  # dropout on the shortcut
                out = F.dropout(s, self.spec.shortcut_dropout, self.training) + f
        return self.after_addition(out)

    @torch.no_grad()
    def zero_branch(self) -> None:
        """F(x) = 0: the branch's last scaled layer zeroed, weight and bias (branch_init=zero_gamma, grow_init=zero)."""
        last = self.last_layer()
        last.weight.zero_()
        if last.bias is not None:
            last.bias.zero_()

    def make_plain(self) -> None:
        """No shortcut and no gate: a plain block inside a residual net (grow_init=plain, plain_identity)."""
        self.shortcut = None
        self.gate = None


def _conv_gate(spec: BlockSpec, cin: int, cout: int, stride: int) -> nn.Module | None:
    """The 1x1-conv gate of the gated combines (He 2016), None otherwise."""
    if spec.combine in ("exclusive_gate", "shortcut_gate") and spec.shortcut != "none":
        return nn.Conv2d(cin, cout, 1, stride=stride)
    return None


def _norm2d(spec: BlockSpec, c: int) -> nn.Module:
    return nn.BatchNorm2d(c) if spec.norm == "bn" else nn.Identity()


class ConvUnit(ResidualBlock):
    """A CIFAR unit of k conv layers (conv1..convk) with BN and ReLU placed as He 2016 Fig. 4 says (model.block):

    post, bn_after_add, relu_before_add, relu_pre: BN i follows conv i (bn_after_add: the last BN follows the
    addition instead); relu_pre starts the branch with a ReLU. pre: BN i precedes conv i (bn1 at the input width).
    Where the first activation of pre and relu_pre sits (`preact`, He 2016's appendix and fb.resnet.torch's
    preresnet): "branch", inside F (the shortcut takes x as it is); "both", before the split, so F and the
    shortcut both take the activated x (the first block of a stage that changes size); "none", no activation of
    its own (the net's first block, whose input is the stem's conv-BN-ReLU). Post-activation units have "branch".

    `responses` are the layer outputs He 2015 Figure 7 measures (after BN, before ReLU or addition; the conv
    outputs where no BN follows a conv: pre, and bn_after_add's last conv).
    """

    PREACTS = ("branch", "both", "none")

    def _layers(self, convs: list[nn.Conv2d], preact: str, interleave: bool) -> None:
        """Name the convs conv1..convk and make their BNs bn1..bnk. Checkpoints know these names, and a
        checkpoint's optimizer state follows the order parameters were registered in: interleave keeps each
        class's order (BasicBlock: the convs, then the BNs; BottleneckBlock: bn1, conv1, bn2, ...)."""
        assert preact in self.PREACTS, preact
        self.preact = preact if self.unit in ("pre", "relu_pre") else "branch"
        pre = self.unit == "pre"
        norms = [None if pre and i == 0 and self.preact == "none" else
                 _norm2d(self.spec, conv.in_channels if pre else conv.out_channels) for i, conv in enumerate(convs)]
        pairs = [(f"bn{i}", bn) for i, bn in enumerate(norms, 1)], [(f"conv{i}", c) for i, c in enumerate(convs, 1)]
        for name, layer in ([p for pair in zip(*pairs) for p in pair] if interleave else pairs[1] + pairs[0]):
            setattr(self, name, layer)
        self.convs, self.norms = list(convs), norms
        if self.unit == "pre":
            self.responses = list(convs)
        elif self.unit == "bn_after_add":
            self.responses = [*self.norms[:-1], convs[-1]]
        else:
            self.responses = list(self.norms)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """F(x): the residual branch, before it meets the shortcut (x already preactivated where `preact` is both)."""
        if self.unit == "pre":
            h = F.relu(self.bn1(x)) if self.preact == "branch" else x
            for i, conv in enumerate(self.convs):
                h = conv(h if i == 0 else F.relu(self.norms[i](h)))
            return h
        h = F.relu(x) if self.unit == "relu_pre" and self.preact == "branch" else x
        last = len(self.convs) - 1
        for i, (conv, bn) in enumerate(zip(self.convs, self.norms)):
            h = conv(h)
            if i == last and self.unit == "bn_after_add":
                return h  # its BN comes after the addition
            h = bn(h)
            if i < last or self.unit == "relu_before_add":
                h = F.relu(h)
        return h

    def last_layer(self) -> nn.Module:
        """The branch's last scaled layer: zeroing it makes F(x) = 0 (branch_init=zero_gamma)."""
        if self.spec.norm == "bn" and self.unit not in ("pre", "bn_after_add"):
            return self.norms[-1]
        return self.convs[-1]

    def last_weight(self) -> nn.Module:
        """The branch's last weight layer, W[l+2] in the lecture's notation."""
        return self.convs[-1]


class BasicBlock(ConvUnit):
    """Two 3x3 convs (the first with the block's stride) and the shortcut, in the unit model.block names:
    post: 3x3 conv, BN, ReLU, 3x3 conv, BN; add the shortcut (if any); ReLU.
    pre:  BN, ReLU, 3x3 conv, BN, ReLU, 3x3 conv; add the shortcut (if any). See ConvUnit for the others."""

    def __init__(self, cin: int, cout: int, stride: int, spec: BlockSpec | str, preact: str = "branch"):
        spec = BlockSpec(shortcut=spec) if isinstance(spec, str) else spec
        super().__init__(spec, make_shortcut(spec.shortcut, cin, cout, stride, spec.norm), _conv_gate(spec, cin, cout, stride))
        bias = spec.norm == "none"
        self._layers([conv3x3(cin, cout, stride, bias), conv3x3(cout, cout, bias=bias)], preact, interleave=False)


class BottleneckBlock(ConvUnit):
    """He 2016's bottleneck (ResNet-164, ResNet-1001): 1x1 conv (width), 3x3 conv (width), 1x1 conv (4 x width),
    with BN and ReLU where model.block puts them (pre: BN, ReLU before each); add the shortcut. The stride of a
    unit that halves the map sits on the 3x3 conv (fb.resnet.torch) or, with bottleneck_stride=1x1, on the first
    1x1 (KaimingHe/resnet-1k-layers): the parameter count is the same."""

    EXPANSION = 4

    def __init__(self, cin: int, width: int, stride: int, spec: BlockSpec, preact: str = "branch"):
        cout = self.EXPANSION * width
        super().__init__(spec, make_shortcut(spec.shortcut, cin, cout, stride, spec.norm), _conv_gate(spec, cin, cout, stride))
        bias, first = spec.norm == "none", spec.bottleneck_stride == "1x1"
        self._layers([nn.Conv2d(cin, width, 1, stride=stride if first else 1, bias=bias),
                      conv3x3(width, width, 1 if first else stride, bias), nn.Conv2d(width, cout, 1, bias=bias)], preact,
                     interleave=True)


class CifarResNet(nn.Module):
    """He 2015's CIFAR net of depth 6n+2 (plain when shortcut='none'), with He 2016's variants."""

    def __init__(self, depth: int, shortcut: str | BlockSpec = "A", in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        spec = BlockSpec(shortcut=shortcut) if isinstance(shortcut, str) else shortcut
        spec.check()
        bottleneck = is_bottleneck(spec)
        n = bottleneck_blocks(depth) if bottleneck else blocks_per_stage(depth)
        self.depth, self.spec = depth, spec
        w0 = STAGE_WIDTHS[0]
        # Every unit starts with conv, BN, ReLU: in a pre-activation net that activation is the first block's,
        # shared by its branch and its shortcut (He 2016's appendix; for relu_pre the stem keeps its BN).
        self.stem = nn.Sequential(conv3x3(in_channels, w0, bias=spec.norm == "none"), _norm2d(spec, w0), nn.ReLU())
        blocks, cin = [], w0
        for stage, width in enumerate(STAGE_WIDTHS):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                preact = "branch" if i > 0 else "none" if stage == 0 else "both"
                if bottleneck:
                    blocks.append(BottleneckBlock(cin, width, stride, spec, preact))
                    cin = BottleneckBlock.EXPANSION * width
                else:
                    blocks.append(BasicBlock(cin, width, stride, spec, preact))
                    cin = width
        self.blocks = nn.Sequential(*blocks)
        # Pre-activation nets end with the activation their last block no longer has (He 2016's appendix).
        unit = unit_of(spec)
        self.head = (nn.Sequential(_norm2d(spec, cin), nn.ReLU()) if unit == "pre" else nn.ReLU() if unit == "relu_pre"
                     else nn.Identity())
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self, spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def response_layers(self) -> list[nn.Module]:
        """Every 3x3 layer's response module, in layer order (He 2015 Figure 7)."""
        return [self.stem[1]] + [m for b in self.blocks for m in b.responses]

    def stages(self) -> list[list[int]]:
        """The blocks' indices, stage by stage (16, 32, 64 channels)."""
        n = len(self.blocks) // len(STAGE_WIDTHS)
        return [list(range(i * n, (i + 1) * n)) for i in range(len(STAGE_WIDTHS))]


class MLPBlock(ResidualBlock):
    """The lecture's fully connected block: a[l+2] = g(W[l+2] g(W[l+1] a[l] + b[l+1]) + b[l+2] + s(a[l])).

    Where the width changes (e.g. 128 -> 256) the shortcut is W_s a[l]: a learned projection
    (B, C) or a fixed zero-padding (A).
    """

    def __init__(self, cin: int, cout: int, spec: BlockSpec):
        gate = nn.Linear(cin, cout) if spec.combine in ("exclusive_gate", "shortcut_gate") and spec.shortcut != "none" else None
        super().__init__(spec, make_shortcut(spec.shortcut, cin, cout, 1, spec.norm, dim=1), gate)
        self.fc1, self.fc2 = nn.Linear(cin, cout), nn.Linear(cout, cout)
        self.bn1 = nn.BatchNorm1d(cout) if spec.norm == "bn" else nn.Identity()
        self.bn2 = nn.BatchNorm1d(cout) if spec.norm == "bn" else nn.Identity()
        self.responses = [self.bn1, self.bn2]

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.fc2(F.relu(self.bn1(self.fc1(x)))))

    def last_layer(self) -> nn.Module:
        return self.bn2 if self.spec.norm == "bn" else self.fc2

    def last_weight(self) -> nn.Module:
        return self.fc2


class MLP(nn.Module):
    """Flattened input -> Linear+ReLU -> n blocks (first half at widths[0], the rest at widths[1]) -> Linear."""

    def __init__(self, depth: int, spec: BlockSpec, in_features: int, num_classes: int, widths=(128, 256)):
        super().__init__()
        spec.check()
        spec.check_mlp_block()  # a spec made without arch=mlp passes check()
        n = mlp_blocks(depth)
        self.depth, self.spec = depth, spec
        self.stem = nn.Sequential(nn.Flatten(), nn.Linear(in_features, widths[0]), nn.ReLU())
        blocks, cin = [], widths[0]
        for i in range(n):
            width = widths[0] if i < (n + 1) // 2 else widths[-1]
            blocks.append(MLPBlock(cin, width, spec))
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)
        init_weights(self, spec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.blocks(self.stem(x)))

    def response_layers(self) -> list[nn.Module]:
        return [self.stem[1]] + [m for b in self.blocks for m in b.responses]

    def stages(self) -> list[list[int]]:
        """The blocks' indices, stage by stage: widths[0] wide, then widths[1]."""
        n, half = len(self.blocks), (len(self.blocks) + 1) // 2
        return [list(range(half)), list(range(half, n))]


def he_init(module: nn.Module, mode: str = "fan_in") -> None:
    """He ("MSRA") init of every conv and linear weight in module, zero biases; BN as the identity.
    mode (model.init_mode): the n of std sqrt(2 / n) for conv layers, fan_in (k*k*in) or fan_out (k*k*out, as
    resnet-1k-layers' and fb.resnet.torch's ConvInit); linear layers always fan_in (theirs keep Torch's default)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in" if isinstance(m, nn.Linear) else mode, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def init_weights(model: nn.Module, spec: BlockSpec) -> None:
    """He ("MSRA") init, std sqrt(2 / fan_in) (or fan_out: model.init_mode), for conv and linear weights; BN
    starts as the identity.

    Gates start nearly closed towards the branch (bias gate_bias, He 2016). zero_gamma zeroes each
    branch's last BN gamma (or its last layer without BN), so every block starts as the identity.
    """
    he_init(model, spec.init_mode)
    for block in model.modules():
        if isinstance(block, ResidualBlock):
            if block.gate is not None:
                nn.init.constant_(block.gate.bias, spec.gate_bias)
            if spec.branch_init == "zero_gamma" and block.shortcut is not None:
                block.zero_branch()


def build_model(model_cfg, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The net a config asks for (model.arch, model.depth, model.shortcut and the variant switches)."""
    spec = model_config(model_cfg)
    if model_cfg.arch == "cifar_resnet":
        return CifarResNet(int(model_cfg.depth), spec, input_shape[0], num_classes)
    if model_cfg.arch == "mlp":
        in_features = 1
        for s in input_shape:
            in_features *= s
        return MLP(int(model_cfg.depth), spec, in_features, num_classes, tuple(model_cfg.get("widths", (128, 256))))
    raise UsageError(f"model.arch={model_cfg.arch!r} is unknown; choose one of: {', '.join(ARCHS)}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Exact multiply-accumulates of one forward pass for one input (conv and linear layers)."""
    macs = 0

    def hook(module, inputs, output):
        nonlocal macs
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            macs += output[0].numel() * per_output
        else:
            macs += output[0].numel() * module.in_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with evaluating(model):
            p = next(model.parameters())
            model(torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
    return macs
