"""The He 2015 CIFAR networks: plain and residual, depth 6n+2, shortcut none | A | B | C.

Layout (PAPER.md, He 2015 section 4.2):
    3x3 conv (16), BN, ReLU
    stage 1: n blocks, 16 filters, 32x32 maps
    stage 2: n blocks, 32 filters, 16x16 maps (first block has stride 2)
    stage 3: n blocks, 64 filters,  8x8 maps  (first block has stride 2)
    global average pool, fully connected, (softmax in the loss)
Each block holds two 3x3 conv layers, so depth = 6n + 2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from depthstudy.errors import UsageError

SHORTCUTS = ("none", "A", "B", "C")
STAGE_WIDTHS = (16, 32, 64)


def blocks_per_stage(depth: int) -> int:
    """n for depth 6n+2, or a UsageError naming the valid depths."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 8 or (depth - 2) % 6:
        raise UsageError(
            f"model.depth={depth} is not of the form 6n+2 with n >= 1; valid depths are "
            "8, 14, 20, 26, 32, 38, 44, 50, 56, ..., 110, ..., 1202 (the paper uses 20, 32, 44, 56, 110, 1202)"
        )
    return (depth - 2) // 6


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    # No bias: the BN that follows has its own shift (beta).
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class ZeroPadShortcut(nn.Module):
    """Option A where the size changes: stride-2 subsampling, then zero channels appended.

    No parameters, so a residual net has exactly the parameter count of its plain twin.
    """

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.extra, self.stride = cout - cin, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra))


class ProjectionShortcut(nn.Sequential):
    """Options B and C: 1x1 conv (with the block's stride), BN."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


def make_shortcut(kind: str, cin: int, cout: int, stride: int) -> nn.Module | None:
    """The one place the shortcut is decided (None means the plain net: no shortcut at all)."""
    resizes = stride != 1 or cin != cout
    if kind == "none":
        return None
    if kind == "C" or (kind == "B" and resizes):
        return ProjectionShortcut(cin, cout, stride)
    if kind in ("A", "B"):
        return ZeroPadShortcut(cin, cout, stride) if resizes else nn.Identity()
    raise UsageError(f"model.shortcut={kind!r} is not a shortcut type; choose one of: {', '.join(SHORTCUTS)}")


class BasicBlock(nn.Module):
    """3x3 conv, BN, ReLU, 3x3 conv, BN; add the shortcut (if any); ReLU.

    Residual: a[l+2] = relu(z[l+2] + shortcut(a[l])). Plain (shortcut none): a[l+2] = relu(z[l+2]).
    """

    def __init__(self, cin: int, cout: int, stride: int, shortcut: str):
        super().__init__()
        self.conv1, self.bn1 = conv3x3(cin, cout, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv3x3(cout, cout), nn.BatchNorm2d(cout)
        self.shortcut = make_shortcut(shortcut, cin, cout, stride)

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        """F(x): the residual branch, z[l+2] before the addition."""
        return self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.shortcut is None:
            return F.relu(self.branch(x))
        return F.relu(self.shortcut(x) + self.branch(x))


class CifarResNet(nn.Module):
    """He 2015's CIFAR net of depth 6n+2 (plain when shortcut='none')."""

    def __init__(self, depth: int, shortcut: str = "A", in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        n = blocks_per_stage(depth)
        make_shortcut(shortcut, 1, 1, 1)  # refuse an unknown shortcut before building anything
        self.depth, self.shortcut_kind = depth, shortcut
        self.stem = nn.Sequential(conv3x3(in_channels, STAGE_WIDTHS[0]), nn.BatchNorm2d(STAGE_WIDTHS[0]), nn.ReLU())
        blocks, cin = [], STAGE_WIDTHS[0]
        for stage, width in enumerate(STAGE_WIDTHS):
            for i in range(n):
                stride = 2 if stage > 0 and i == 0 else 1
                blocks.append(BasicBlock(cin, width, stride, shortcut))
                cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)
        he_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def he_init(model: nn.Module) -> None:
    """He ("MSRA") init, std sqrt(2 / fan_in), for conv and linear weights; BN starts as the identity."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def build_model(model_cfg, in_channels: int, num_classes: int) -> nn.Module:
    """The net a config asks for (model.arch, model.depth, model.shortcut)."""
    if model_cfg.arch == "cifar_resnet":
        return CifarResNet(int(model_cfg.depth), str(model_cfg.shortcut), in_channels, num_classes)
    raise UsageError(f"model.arch={model_cfg.arch!r} is unknown; choose one of: cifar_resnet")


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
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            p = next(model.parameters())
            model(torch.zeros(1, *input_shape, device=p.device, dtype=p.dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return macs
