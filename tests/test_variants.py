"""He 2016 variants, the lecture's MLP, and the instruments that look inside the nets."""

import pytest
import torch
import torch.nn.functional as F

from depthstudy.diagnostics import block_diagnostics, layer_responses
from depthstudy.errors import UsageError
from depthstudy.models import (MLP, BasicBlock, BlockSpec, CifarResNet, MLPBlock, ProjectionShortcut, ZeroPadShortcut,
                              count_params)

BASE = 269_722  # ResNet-20, option A (PAPER.md)


@pytest.mark.parametrize("spec,extra_params", [
    (BlockSpec(), 0),
    (BlockSpec(combine="scale"), 0),
    (BlockSpec(combine="dropout"), 0),
    (BlockSpec(branch_init="zero_gamma"), 0),
    (BlockSpec(branch_init="skipinit"), 9),  # one alpha per block
    # one 1x1 conv gate (weights + bias) per block: 7 blocks 16->16 / 32->32 / 64->64 minus the resizing ones
    (BlockSpec(combine="exclusive_gate"), 3 * (16 * 16 + 16) + (16 * 32 + 32) + 2 * (32 * 32 + 32)
     + (32 * 64 + 64) + 2 * (64 * 64 + 64)),
    (BlockSpec(combine="shortcut_gate"), 3 * (16 * 16 + 16) + (16 * 32 + 32) + 2 * (32 * 32 + 32)
     + (32 * 64 + 64) + 2 * (64 * 64 + 64)),
    (BlockSpec(shortcut="C"), 3 * (16 * 16 + 32) + (16 * 32 + 64) + 2 * (32 * 32 + 64) + (32 * 64 + 128)
     + 2 * (64 * 64 + 128)),
    # pre-activation: the stem loses its BN (32), each block's first BN moves to the input width
    # (stage-2/3 first blocks: 16 and 32 instead of 32 and 64 channels), and a final BN (128) is added.
    (BlockSpec(block="pre"), -32 - 2 * 16 - 2 * 32 + 128),
])
def test_variant_shapes_and_parameter_counts(spec, extra_params):
    model = CifarResNet(20, spec, 3, 10)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert count_params(model) == BASE + extra_params


def test_no_bn_variant_has_biases_instead():
    model = CifarResNet(20, BlockSpec(norm="none", branch_init="skipinit"), 3, 10)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("spec", [
    BlockSpec(branch_init="zero_gamma"), BlockSpec(branch_init="skipinit"),
    BlockSpec(branch_init="zero_gamma", norm="none"), BlockSpec(branch_init="skipinit", norm="none"),
    BlockSpec(branch_init="zero_gamma", block="pre"), BlockSpec(branch_init="zero_gamma", block="relu_before_add"),
    BlockSpec(branch_init="zero_gamma", block="relu_pre"), BlockSpec(branch_init="skipinit", block="relu_before_add"),
])
def test_zero_init_and_alpha_zero_blocks_are_the_identity_at_init(spec):
    model = CifarResNet(20, spec, 3, 10)
    block = model.blocks[1]  # 16 -> 16, stride 1
    x = torch.rand(4, 16, 8, 8)  # >= 0, like a ReLU output
    for mode in (block.train, block.eval):
        mode()
        assert torch.equal(block(x), x)


@pytest.mark.parametrize("combine", ["exclusive_gate", "shortcut_gate"])
def test_gates_start_nearly_closed_towards_the_branch(combine):
    """He 2016: every gate's bias starts at gate_bias (-6), so g = sigmoid(...) is about 0.0025 at init."""
    model = CifarResNet(20, BlockSpec(combine=combine, gate_bias=-6.0), 3, 10).eval()
    gates = [b.gate for b in model.blocks]
    assert len(gates) == 9 and all(torch.equal(g.bias, torch.full_like(g.bias, -6.0)) for g in gates)
    x = torch.relu(torch.randn(4, 16, 32, 32))  # a ReLU output, as the first stage's blocks receive
    assert torch.sigmoid(gates[0](x)).mean().item() < 0.01


def test_exclusive_gate_mixes_shortcut_and_branch_by_the_gate():
    block = BasicBlock(16, 16, 1, BlockSpec(combine="exclusive_gate", gate_bias=-6.0)).eval()
    x = torch.rand(2, 16, 8, 8)
    g = torch.sigmoid(block.gate(x))
    expected = F.relu((1 - g) * x + g * block.branch(x))
    assert torch.allclose(block(x), expected)


def test_constant_scaling_halves_both_paths():
    block = BasicBlock(16, 16, 1, BlockSpec(combine="scale", scale=0.5)).eval()
    x = torch.rand(2, 16, 8, 8)
    assert torch.allclose(block(x), F.relu(0.5 * x + 0.5 * block.branch(x)))


def test_figure7_hooks_read_the_bn_outputs_before_relu_and_addition():
    model = CifarResNet(8, "A", 1, 10).eval()
    x = torch.randn(16, 1, 8, 8)
    stds = layer_responses(model, x)
    # Manual forward, layer by layer.
    with torch.no_grad():
        h = model.stem[1](model.stem[0](x))
        manual = [h.std().item()]
        h = F.relu(h)
        for b in model.blocks:
            r1 = b.bn1(b.conv1(h))
            r2 = b.bn2(b.conv2(F.relu(r1)))
            manual += [r1.std().item(), r2.std().item()]
            h = F.relu(b.shortcut(h) + r2)
    assert len(stds) == 7 == len(model.response_layers())
    assert stds == pytest.approx(manual, rel=1e-5)
    assert model.training is False


def test_block_diagnostics_measure_distance_from_the_identity():
    model = CifarResNet(8, BlockSpec(branch_init="zero_gamma"), 1, 10)
    d = block_diagnostics(model, torch.randn(8, 1, 8, 8))
    assert [x["branch_ratio"] for x in d] == [0.0, 0.0, 0.0]  # zero-gamma blocks add nothing: identity
    assert [x["gamma_norm"] for x in d] == [0.0, 0.0, 0.0]
    assert all(x["weight_norm"] > 0 for x in d)
    assert model.training  # left as found


def test_mlp_zero_padding_shortcut_equals_padding_the_vector():
    shortcut = ZeroPadShortcut(128, 256, 1)
    a = torch.rand(3, 128)
    assert torch.equal(shortcut(a), torch.cat([a, torch.zeros(3, 128)], dim=1))


def test_mlp_block_is_the_lecture_formula():
    block = MLPBlock(128, 256, BlockSpec(shortcut="B", norm="none")).eval()
    a = torch.rand(3, 128)
    w_s = block.shortcut[0].weight
    expected = F.relu(block.fc2(F.relu(block.fc1(a))) + a @ w_s.T)  # g(W[l+2] a[l+1] + b[l+2] + W_s a[l])
    assert torch.allclose(block(a), expected, atol=1e-6)


@pytest.mark.parametrize("depth,shortcut,params", [
    (4, "none", 64 * 128 + 128 + (128 * 128 + 128) * 2 + 128 * 10 + 10),
    (6, "A", 64 * 128 + 128 + (128 * 128 + 128) * 2 + (128 * 256 + 256) + (256 * 256 + 256) + 256 * 10 + 10),
    (6, "B", 64 * 128 + 128 + (128 * 128 + 128) * 2 + (128 * 256 + 256) + (256 * 256 + 256) + 128 * 256 + 256 * 10 + 10),
])
def test_mlp_shapes_and_parameter_counts(depth, shortcut, params):
    model = MLP(depth, BlockSpec(shortcut=shortcut, norm="none"), 64, 10)
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert count_params(model) == params


@pytest.mark.parametrize("depth", [3, 5, 0, 2])
def test_mlp_depth_must_be_even_and_at_least_4(depth):
    with pytest.raises(UsageError, match="2n\\+2"):
        MLP(depth, BlockSpec(), 64, 10)


@pytest.mark.parametrize("override,message", [
    ("model.block=mid", "model.block='mid' is unknown; choose one of: post, pre, bottleneck, bn_after_add"),
    ("model.combine=multiply", "choose one of: add, scale, exclusive_gate, shortcut_gate, dropout"),
    ("model.branch_init=ones", "choose one of: default, zero_gamma, skipinit"),
    ("model.norm=ln", "model.norm='ln' is unknown; choose one of: bn, none"),
])
def test_unknown_variants_are_refused(cli, override, message):
    result = cli("train", override)
    assert result.exit_code == 2 and message in result.output


def test_a_run_logs_the_instruments_and_report_draws_them(cli, tmp_path):
    from helpers import TINY
    from depthstudy import events

    assert cli("train", *TINY, "model.depth=8", "trainer.diagnostics_every=3").exit_code == 0
    (run,) = (tmp_path / "runs" / "default").iterdir()
    scalars = events.read_scalars(run)
    assert len(events.indexed(scalars, events.RESPONSE_PREFIX)) == 7
    ratios = events.indexed(scalars, events.BLOCK_PREFIX + "branch_ratio/")
    assert len(ratios) == 3 and [s for s, _ in ratios[0][1]] == [3, 6]
    result = cli("report", str(tmp_path / "runs"))
    assert result.exit_code == 0, result.output
    out = tmp_path / "runs" / "report"
    assert (out / "responses.png").exists() and (out / "blocks.png").exists()
    # The figures draw this run's data: its line is labelled, and the blocks panel has one point per block.
    responses, blocks = (out / "responses.svg").read_text(), (out / "blocks.svg").read_text()
    assert "residual (A)-8" in responses and "residual (A)-8" in blocks
    assert "||F(x)|| / ||x||" in blocks


def test_constant_scaling_weighs_the_branch_by_one_minus_lambda():
    """He 2016 Table 1: lambda * x + (1 - lambda) * F(x); with scale_branch=false, F(x) unscaled."""
    x = torch.rand(2, 16, 8, 8)
    block = BasicBlock(16, 16, 1, BlockSpec(combine="scale", scale=0.3)).eval()
    assert torch.allclose(block(x), F.relu(0.3 * x + 0.7 * block.branch(x)))
    block = BasicBlock(16, 16, 1, BlockSpec(combine="scale", scale=0.3, scale_branch=False)).eval()
    assert torch.allclose(block(x), F.relu(0.3 * x + block.branch(x)))


def test_pre_activation_net_is_wired_as_he_2016():
    """The whole forward pass of a pre-activation ResNet-8, written out by hand (fb.resnet.torch's
    preresnet): stem conv-BN-ReLU; the first block's branch starts at its conv; a block that changes size
    applies BN-ReLU before the split, so its option-A shortcut takes the activated input; BN-ReLU at the end."""
    torch.manual_seed(0)
    model = CifarResNet(8, BlockSpec(block="pre"), 3, 10)
    for m in model.modules():  # non-trivial BN statistics, so a missing or misplaced BN shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    b0, b1, b2 = model.blocks
    relu = F.relu

    def option_a(h):
        return torch.cat([h[:, :, ::2, ::2], torch.zeros_like(h[:, :, ::2, ::2])], dim=1)

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = relu(model.stem[1](model.stem[0](x)))
        h = h + b0.conv2(relu(b0.bn2(b0.conv1(h))))  # no BN-ReLU of its own: the stem's is its pre-activation
        for b in (b1, b2):
            a = relu(b.bn1(h))  # before the split
            h = option_a(a) + b.conv2(relu(b.bn2(b.conv1(a))))
        h = relu(model.head[0](h))
        expected = model.fc(h.mean((2, 3)))
        assert torch.allclose(model(x), expected, atol=1e-5)
    assert b0.bn1 is None and [b.preact for b in model.blocks] == ["none", "both", "both"]
    deeper = CifarResNet(14, BlockSpec(block="pre"), 3, 10)
    assert [b.preact for b in deeper.blocks] == ["none", "branch", "both", "branch", "both", "branch"]


def bottleneck_params(n: int, classes: int = 10) -> int:
    """He 2016's pre-activation bottleneck net (option B shortcuts), counted by hand from its layer list."""
    total = 3 * 16 * 9 + 2 * 16  # stem: 3x3 conv, BN
    cin = 16
    for w in (16, 32, 64):
        for i in range(n):
            bn1 = 0 if (w == 16 and i == 0) else 2 * cin  # the first block's pre-activation is the stem's
            total += bn1 + cin * w + 2 * w + 9 * w * w + 2 * w + w * 4 * w  # 1x1, BN, 3x3, BN, 1x1
            if cin != 4 * w:
                total += cin * 4 * w + 2 * 4 * w  # projection: 1x1 conv, BN
            cin = 4 * w
    return total + 2 * 256 + 256 * classes + classes  # final BN, fully connected


def test_bottleneck_nets_have_he_2016s_depths_and_parameter_counts():
    from torch import nn

    spec = BlockSpec(shortcut="B", block="bottleneck")
    r164 = CifarResNet(164, spec, 3, 10)
    assert count_params(r164) == bottleneck_params(18) == 1_704_154  # He 2016: "1.7M"
    assert r164(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert len(r164.response_layers()) == 1 + 3 * 54  # the stem and every layer of 54 blocks: 164 - 2 = 162
    r1001 = CifarResNet(1001, spec, 3, 10)
    bn = sum(p.numel() for m in r1001.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert count_params(r1001) == bottleneck_params(111) == 10_328_602
    assert round((count_params(r1001) - bn) / 1e6, 1) == 10.2  # He 2016's "10.2M" counts weights, not BN's


@pytest.mark.parametrize("depth", [21, 57, 111, 165])
def test_bottleneck_depth_must_be_9n_plus_2(depth):
    with pytest.raises(UsageError, match=r"9n\+2.*164.*1001"):
        CifarResNet(depth, BlockSpec(block="bottleneck"), 3, 10)


def _random_bn(model):
    """Non-trivial BN statistics and affine parameters, so that a missing or misplaced BN shows; eval mode."""
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def _option_a(h):
    return torch.cat([h[:, :, ::2, ::2], torch.zeros_like(h[:, :, ::2, ::2])], dim=1)


# He 2016 Fig. 4 (b)-(d), each block written out by hand: (shortcut input, branch output) -> block output.
HAND_UNITS = {
    # (b) BN after addition: conv-BN-ReLU-conv, add, BN, ReLU
    "bn_after_add": lambda b, h: (h, lambda s: F.relu(b.bn2(s + b.conv2(F.relu(b.bn1(b.conv1(h))))))),
    # (c) ReLU before addition: conv-BN-ReLU-conv-BN-ReLU, add
    "relu_before_add": lambda b, h: (h, lambda s: s + F.relu(b.bn2(b.conv2(F.relu(b.bn1(b.conv1(h))))))),
    # (d) ReLU-only pre-activation: ReLU-conv-BN-ReLU-conv-BN, add
    "relu_pre": lambda b, h: (h, lambda s: s + b.bn2(b.conv2(F.relu(b.bn1(b.conv1(F.relu(h))))))),
}


@pytest.mark.parametrize("unit", sorted(HAND_UNITS))
def test_he_2016_unit_variants_are_wired_as_figure_4(unit):
    """A whole ResNet-8 of each Fig. 4 unit, written out by hand. Post-activation-like units (b, c) keep the
    stem's conv-BN-ReLU and end without an extra activation; ReLU-only pre-activation (d), like full
    pre-activation, takes the stem's ReLU as its first unit's activation, applies its ReLU before the split in
    units that change size (so option A pads the activated input), and ends with a ReLU (He 2016's appendix)."""
    model = _random_bn(CifarResNet(8, BlockSpec(block=unit), 3, 10))
    b0, b1, b2 = model.blocks
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        h = F.relu(model.stem[1](model.stem[0](x)))
        for i, b in enumerate((b0, b1, b2)):
            if unit == "relu_pre":
                if i == 0:  # the stem's ReLU is its pre-activation: no ReLU of its own
                    h = h + b.bn2(b.conv2(F.relu(b.bn1(b.conv1(h)))))
                    continue
                a = F.relu(h)  # before the split
                h = _option_a(a) + b.bn2(b.conv2(F.relu(b.bn1(b.conv1(a)))))
                continue
            _, out = HAND_UNITS[unit](b, h)
            h = out(h if i == 0 else _option_a(h))
        if unit == "relu_pre":
            h = F.relu(h)
        expected = model.fc(h.mean((2, 3)))
        assert torch.allclose(model(x), expected, atol=1e-5)
    # a unit inside a stage (no size change) is the formula of HAND_UNITS, its shortcut the identity
    block = _random_bn(CifarResNet(14, BlockSpec(block=unit), 3, 10)).blocks[1]
    h = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        s, out = HAND_UNITS[unit](block, h)
        assert torch.allclose(block(h), out(s), atol=1e-5)


def _bottleneck_by_hand(b, h, unit):
    """One bottleneck unit inside a stage (identity shortcut), written out: conv i is 1x1, 3x3, 1x1."""
    if unit == "pre":
        f = b.conv3(F.relu(b.bn3(b.conv2(F.relu(b.bn2(b.conv1(F.relu(b.bn1(h)))))))))
        return h + f
    f = b.bn3(b.conv3(F.relu(b.bn2(b.conv2(F.relu(b.bn1(b.conv1(F.relu(h) if unit == "relu_pre" else h))))))))
    return F.relu(h + f) if unit == "post" else h + f


@pytest.mark.parametrize("unit", ["post", "relu_pre", "pre"])
def test_bottleneck_units_follow_the_block_setting(unit):
    model = _random_bn(CifarResNet(20, BlockSpec(block=unit, bottleneck=True, shortcut="B"), 3, 10))
    block = model.blocks[1]  # 64 -> 64 in stage 1: identity shortcut
    h = torch.relu(torch.randn(2, 64, 8, 8))
    with torch.no_grad():
        assert torch.allclose(block(h), _bottleneck_by_hand(block, h, unit), atol=1e-5)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_bottleneck_stride_sits_on_the_3x3_or_the_first_1x1():
    """fb.resnet.torch's preresnet.lua strides the 3x3; KaimingHe/resnet-1k-layers the first 1x1. Same count."""
    spec = dict(block="pre", bottleneck=True, shortcut="B")
    on3, on1 = (CifarResNet(20, BlockSpec(**spec, bottleneck_stride=s), 3, 10) for s in ("3x3", "1x1"))
    b3, b1 = on3.blocks[2], on1.blocks[2]  # first block of stage 2: 64 -> 128, stride 2
    assert (b3.conv1.stride, b3.conv2.stride) == ((1, 1), (2, 2))
    assert (b1.conv1.stride, b1.conv2.stride) == ((2, 2), (1, 1))
    assert count_params(on3) == count_params(on1)
    assert on1(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # the old spelling, block=bottleneck, is the same net as block=pre with bottleneck=true
    old = CifarResNet(20, BlockSpec(block="bottleneck", shortcut="B"), 3, 10)
    assert [n for n, _ in old.named_parameters()] == [n for n, _ in on3.named_parameters()]


@pytest.mark.parametrize("unit,bottleneck", [("bn_after_add", False), ("relu_before_add", False), ("relu_pre", False),
                                             ("post", True), ("relu_pre", True)])
def test_unit_variants_keep_the_parameter_count(unit, bottleneck):
    """Fig. 4: "All these units consist of the same components -- only the orders are different"."""
    if not bottleneck:
        assert count_params(CifarResNet(110, BlockSpec(block=unit), 3, 10)) == 1_727_962  # ResNet-110, A
        return
    # bottleneck ResNet-164 (Table 2's "original" and "ReLU-only pre-activation"): a BN after each conv (w, w, 4w)
    # instead of before it (cin, w, w) as in full pre-activation, and no final BN
    model = CifarResNet(164, BlockSpec(block=unit, bottleneck=True, shortcut="B"), 3, 10)
    after = sum(2 * (w + w + 4 * w) for w in (16, 32, 64) for _ in range(18))
    convs = 1_676_464  # every conv of ResNet-164 with B's projections (their BNs: 2 * (64 + 128 + 256))
    assert count_params(model) == convs + 2 * 16 + after + 2 * (64 + 128 + 256) + 256 * 10 + 10


def test_resnet_1001_counts_10_33m_parameters_and_the_papers_10_2m_leaves_out_bn():
    """He 2016 Table 4 gives ResNet-1001 10.2M. Ours with B: 10,328,602. Not the projections' BN (896 of them;
    resnet-1k-layers' projections have none), not the stride placement (no parameters): the BN layers' gamma and
    beta (150,112) are the difference; without them 10,178,490, 10.2M (ResNet-164: 1.68M or 1.70M, both 1.7M)."""
    from torch import nn

    model = CifarResNet(1001, BlockSpec(block="pre", bottleneck=True, shortcut="B"), 3, 10)
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    projection_bn = sum(p.numel() for m in model.modules() if isinstance(m, ProjectionShortcut) for p in m[1].parameters())
    assert (count_params(model), bn, projection_bn) == (10_328_602, 150_112, 896)
    assert round((count_params(model) - projection_bn) / 1e6, 2) == 10.33
    assert round((count_params(model) - bn) / 1e6, 1) == 10.2


@pytest.mark.parametrize("mode", ["fan_in", "fan_out"])
def test_init_mode_sets_he_inits_n_for_the_conv_layers(mode):
    torch.manual_seed(0)
    model = CifarResNet(20, BlockSpec(block="pre", bottleneck=True, shortcut="B", init_mode=mode), 3, 10)
    checked = 0
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.weight.numel() > 2000 and m.in_channels != m.out_channels:
            k = m.kernel_size[0] * m.kernel_size[1]
            n = k * (m.in_channels if mode == "fan_in" else m.out_channels)
            assert m.weight.std().item() == pytest.approx((2 / n) ** 0.5, rel=0.1)
            checked += 1
    assert checked >= 4
    assert model.fc.weight.std().item() == pytest.approx((2 / 256) ** 0.5, rel=0.2)  # the FC layer: fan_in always
