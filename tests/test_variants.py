"""He 2016 variants, the lecture's MLP, and the instruments that look inside the nets."""

import pytest
import torch
import torch.nn.functional as F

from depthstudy.diagnostics import block_diagnostics, layer_responses
from depthstudy.errors import UsageError
from depthstudy.models import MLP, BasicBlock, BlockSpec, CifarResNet, MLPBlock, ZeroPadShortcut, count_params

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
    BlockSpec(branch_init="zero_gamma", block="pre"),
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
    ("model.block=mid", "model.block='mid' is unknown; choose one of: post, pre"),
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
