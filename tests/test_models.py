import pytest
import torch

from depthstudy.errors import UsageError
from depthstudy.models import BasicBlock, CifarResNet, ProjectionShortcut, ZeroPadShortcut, count_macs, count_params

# PAPER.md: exact parameter counts for option A and the plain twin (BN affine and FC included).
PAPER_PARAMS = {20: 269_722, 32: 464_154, 44: 658_586, 56: 853_018, 110: 1_727_962, 1202: 19_421_274}
PAPER_MMACS = {20: 40.55, 32: 68.86, 44: 97.17, 56: 125.49, 110: 252.89}


@pytest.mark.parametrize("depth", sorted(PAPER_PARAMS))
def test_parameter_counts_match_the_paper_for_plain_and_option_a(depth):
    assert count_params(CifarResNet(depth, "A")) == PAPER_PARAMS[depth]
    assert count_params(CifarResNet(depth, "none")) == PAPER_PARAMS[depth]


@pytest.mark.parametrize("depth", sorted(PAPER_MMACS))
def test_forward_macs_match_the_paper(depth):
    assert count_macs(CifarResNet(depth, "A"), (3, 32, 32)) / 1e6 == pytest.approx(PAPER_MMACS[depth], abs=0.01)


def test_option_b_projects_only_where_size_changes_and_c_everywhere():
    b, c = CifarResNet(20, "B"), CifarResNet(20, "C")
    assert sum(isinstance(m, ProjectionShortcut) for m in b.modules()) == 2
    assert sum(isinstance(m, ProjectionShortcut) for m in c.modules()) == 9
    # B adds two 1x1 conv + BN: 16*32 + 2*32 and 32*64 + 2*64.
    assert count_params(b) - PAPER_PARAMS[20] == 16 * 32 + 64 + 32 * 64 + 128
    a = CifarResNet(20, "A")
    assert sum(isinstance(m, ZeroPadShortcut) for m in a.modules()) == 2
    assert all(blk.shortcut is None for blk in CifarResNet(20, "none").blocks)


@pytest.mark.parametrize("channels,classes,size", [(3, 10, 32), (1, 10, 8), (3, 100, 32), (3, 10, 20)])
def test_output_shape_follows_the_data(channels, classes, size):
    out = CifarResNet(20, "A", channels, classes)(torch.randn(2, channels, size, size))
    assert out.shape == (2, classes)


@pytest.mark.parametrize("depth", [21, 0, -8, 7, 2])
def test_depth_not_6n_plus_2_is_refused_with_the_valid_depths(depth):
    with pytest.raises(UsageError, match=r"6n\+2.*20, 32, 44, 56"):
        CifarResNet(depth, "A")


def test_unknown_shortcut_lists_the_choices():
    with pytest.raises(UsageError, match="none, A, B, C"):
        CifarResNet(20, "D")


@pytest.mark.parametrize("shortcut,stride,cin,cout", [("A", 1, 16, 16), ("A", 2, 16, 32), ("B", 1, 32, 32)])
def test_zeroed_branch_makes_the_block_the_identity(shortcut, stride, cin, cout):
    """The lecture's argument: with W[l+2], b[l+2] = 0 (here the last BN's gamma and beta),
    a[l+2] = g(0 + a[l]) = a[l] for any a[l] >= 0 (a ReLU output)."""
    block = BasicBlock(cin, cout, stride, shortcut)
    torch.nn.init.zeros_(block.bn2.weight)
    torch.nn.init.zeros_(block.bn2.bias)
    x = torch.rand(4, cin, 8, 8)  # non-negative, like the output of a ReLU
    expected = block.shortcut(x)
    for mode in (block.train, block.eval):
        mode()
        assert torch.equal(block(x), expected)
    if stride == 1:
        assert torch.equal(block(x), x)


def test_zeroed_conv_weight_also_gives_the_identity():
    block = BasicBlock(16, 16, 1, "A").eval()
    torch.nn.init.zeros_(block.conv2.weight)
    torch.nn.init.zeros_(block.bn2.bias)  # bn2 of a zero input with running stats (0, 1) is beta
    x = torch.rand(2, 16, 8, 8)
    assert torch.allclose(block(x), x, atol=1e-6)


def test_plain_block_does_not_keep_its_input():
    block = BasicBlock(16, 16, 1, "none")
    torch.nn.init.zeros_(block.bn2.weight)
    torch.nn.init.zeros_(block.bn2.bias)
    assert torch.equal(block(torch.rand(2, 16, 8, 8)), torch.zeros(2, 16, 8, 8))


def test_option_a_shortcut_subsamples_even_positions_and_appends_zero_channels():
    """Oracle built by hand: out[:, :16] = x at even rows and columns, out[:, 16:] = 0 (fb.resnet.torch's
    shortcut A: stride-2 subsampling, then zero channels concatenated after the input's)."""
    x = torch.arange(1, 2 * 16 * 6 * 6 + 1, dtype=torch.float32).reshape(2, 16, 6, 6)
    out = ZeroPadShortcut(16, 32, 2)(x)
    expected = torch.zeros(2, 32, 3, 3)
    for i in range(3):
        for j in range(3):
            expected[:, :16, i, j] = x[:, :, 2 * i, 2 * j]
    assert torch.equal(out, expected)


def test_option_a_net_uses_the_zero_pad_shortcut_where_stages_change():
    """In a whole net, the stage-2 block's output is relu(shortcut + branch): with the branch zeroed it is
    exactly the hand-built option-A tensor of its input."""
    model = CifarResNet(8, "A", 3, 10).eval()
    block = model.blocks[1]  # 16 -> 32 channels, stride 2
    torch.nn.init.zeros_(block.bn2.weight)
    torch.nn.init.zeros_(block.bn2.bias)
    x = torch.rand(2, 16, 8, 8)
    expected = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 16, 4, 4)], dim=1)
    assert torch.equal(block(x), expected)


def test_he_init_gives_each_layer_the_std_sqrt_2_over_fan_in():
    torch.manual_seed(0)
    model = CifarResNet(56, "A")
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d) and m.weight.numel() > 2000:  # big enough for a tight std estimate
            fan_in = m.weight[0].numel()
            assert m.weight.std().item() == pytest.approx((2 / fan_in) ** 0.5, rel=0.1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            assert torch.equal(m.weight, torch.ones_like(m.weight)) and torch.equal(m.bias, torch.zeros_like(m.bias))


def test_post_activation_block_is_relu_of_shortcut_plus_branch_computed_by_hand():
    """He 2015's block, written out: relu(x + BN(conv(relu(BN(conv(x))))))."""
    block = BasicBlock(16, 16, 1, "A").eval()
    for bn in (block.bn1, block.bn2):  # non-trivial running statistics and affine parameters
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    x = torch.randn(2, 16, 8, 8)

    def bn(layer, h):
        return (h - layer.running_mean[:, None, None]) / (layer.running_var[:, None, None] + layer.eps).sqrt() \
            * layer.weight[:, None, None] + layer.bias[:, None, None]

    h = torch.relu(bn(block.bn1, torch.nn.functional.conv2d(x, block.conv1.weight, padding=1)))
    expected = torch.relu(x + bn(block.bn2, torch.nn.functional.conv2d(h, block.conv2.weight, padding=1)))
    with torch.no_grad():
        assert torch.allclose(block(x), expected, atol=1e-5)
