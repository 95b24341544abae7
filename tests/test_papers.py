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


def test_he2016_recipe_is_he2015s_with_its_400_iteration_warm_up_for_every_net():
    from depthstudy.optim import Schedule
    from depthstudy.rundir import flatten

    he2015, he2016 = (flatten(OmegaConf.to_container(compose([f"experiment={e}"]), resolve=True))
                      for e in ("he2015", "he2016"))
    differ = {k for k in he2015 if he2015[k] != he2016[k]}
    assert differ == {"name", "schedule.warmup.min_depth", "schedule.warmup.until_train_error",
                      "schedule.warmup.max_iterations"}
    s = compose(["experiment=he2016"]).schedule
    for depth in (20, 110, 164, 1001):  # "for all CIFAR experiments ... 0.01 at the beginning 400 iterations"
        sched = Schedule(s, 0.1, depth)
        assert sched.warmup and sched.warmup_max == 400 and sched.warmup_until is None


@pytest.mark.parametrize("preset,runs,nets", [
    ("he2016_units", 50, {(110, "A", False, b) for b in ("post", "bn_after_add", "relu_before_add", "relu_pre", "pre")}
     | {(164, "B", True, b) for b in ("post", "bn_after_add", "relu_before_add", "relu_pre", "pre")}),
    ("he2016_deep", 40, {(d, "B", True, b) for d in (164, 1001) for b in ("post", "pre")}),
    ("he2016_cifar100", 10, {(164, "B", True, b) for b in ("post", "pre")}),
    ("he2015_fig6_right", 2, {(110, "A", False, "post"), (1202, "A", False, "post")}),
])
def test_paper_presets_plan_the_papers_runs(preset, runs, nets, tmp_path):
    from depthstudy import sweep

    planned = sweep.plan([f"experiment={preset}", f"out_dir={tmp_path}"])
    assert len(planned) == runs
    m = [r.cfg.model for r in planned]
    assert {(x.depth, x.shortcut, x.bottleneck, x.block) for x in m} == nets
    seeds = {r.cfg.seed for r in planned}
    assert seeds == ({0} if preset == "he2015_fig6_right" else {0, 1, 2, 3, 4})  # He 2016: medians of 5 runs
    assert all(r.cfg.data.val_size == 0 and r.cfg.optim.nesterov is False for r in planned)
    if preset.startswith("he2016"):
        assert all(r.cfg.schedule.warmup.max_iterations == 400 and r.cfg.schedule.warmup.min_depth == 0 for r in planned)
    data = {r.cfg.data.name for r in planned}
    assert data == ({"cifar10", "cifar100"} if preset == "he2016_deep" else {"cifar100"} if "cifar100" in preset
                    else {"cifar10"})
    assert len({r.run_dir for r in planned}) == runs  # every run its own directory
