"""He 2016's CIFAR tables, He 2015 Figure 6's right panel and CIFAR-100 as presets: their recipes, the switches
that compare them with the reference codes (Nesterov momentum), and the paper numbers the report sets beside them."""

import pytest
import torch
from omegaconf import OmegaConf

from depthstudy.config import compose


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
@pytest.mark.parametrize("caffe", [False, True], ids=["pytorch", "caffe"])
def test_nesterov_momentum_is_the_formula_of_the_reference_codes(fused, caffe):
    """optim.nesterov=true: v = m*v + g, w -= lr*(g + m*v) (Torch's optim.sgd as fb.resnet.torch calls it). With
    momentum_form=caffe, at an lr change it is Caffe's Nesterov solver: V = m*V + lr*g, w -= (1+m)*V - m*V_old."""
    from depthstudy.optim import make_optimizer, set_lr

    p = torch.nn.Parameter(torch.zeros(1))
    o = OmegaConf.create({"lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "wd_scope": "all", "nesterov": True})
    opt = make_optimizer(torch.nn.Linear(1, 1, bias=False), o, lambda _: None, fused=fused)
    opt.param_groups[0]["params"] = [p]
    p.grad = torch.ones(1)
    opt.step()  # v = 1; w = -0.1 * (1 + 0.9 * 1)
    assert p.item() == pytest.approx(-0.19)
    set_lr(opt, 0.01, caffe_momentum=caffe)
    p.grad = torch.full((1,), 2.0)
    opt.step()
    if caffe:  # V_old = 0.1 * 1, V = 0.9 * 0.1 + 0.01 * 2 = 0.11: w -= 1.9 * 0.11 - 0.9 * 0.1
        assert p.item() == pytest.approx(-0.19 - (1.9 * 0.11 - 0.9 * 0.1))
    else:  # v = 0.9 * 1 + 2 = 2.9: w -= 0.01 * (2 + 0.9 * 2.9)
        assert p.item() == pytest.approx(-0.19 - 0.01 * (2 + 0.9 * 2.9))


def test_nesterov_is_off_by_default_and_checked(cli):
    assert compose(["experiment=he2015"]).optim.nesterov is False
    result = cli("config", "optim.nesterov=maybe")
    assert result.exit_code == 2 and "optim.nesterov" in result.output
    result = cli("config", "optim.nesterov=true", "optim.momentum=0")
    assert result.exit_code == 2 and "optim.nesterov=true needs optim.momentum > 0" in result.output
