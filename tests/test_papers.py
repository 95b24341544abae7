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


# The papers' numbers, typed from them (He 2015 Table 6; He 2016 Tables 2 and 3): the oracle for the report.
TABLE2 = {(110, "post"): 6.61, (110, "bn_after_add"): 8.17, (110, "relu_before_add"): 7.84, (110, "relu_pre"): 6.71,
          (110, "pre"): 6.37, (164, "post"): 5.93, (164, "bn_after_add"): 6.50, (164, "relu_before_add"): 6.14,
          (164, "relu_pre"): 5.91, (164, "pre"): 5.46}
TABLE3 = {("cifar10", 164, "post"): 5.93, ("cifar10", 164, "pre"): 5.46, ("cifar10", 1001, "post"): 7.61,
          ("cifar10", 1001, "pre"): 4.92, ("cifar100", 164, "post"): 25.16, ("cifar100", 164, "pre"): 24.33,
          ("cifar100", 1001, "post"): 27.82, ("cifar100", 1001, "pre"): 22.71}
SMOKE = ["seed=0", "schedule.iterations=2", "schedule.milestones=[1]", "schedule.warmup.max_iterations=1",
         "optim.batch_size=8", "trainer.log_every=1", "trainer.eval_every=2", "trainer.ckpt_every=2",
         "trainer.progress=none", "trainer.threads=1"]


def _expected(preset: str, data: str, depth: int, block: str) -> tuple[float, str] | None:
    if preset == "he2015_fig6_right":
        return {110: 6.61, 1202: 7.93}[depth], "He 2015 Table 6"
    if (depth, block) in TABLE2 and data == "cifar10":
        return TABLE2[depth, block], "He 2016 Table 2"
    return TABLE3[data, depth, block], "He 2016 Table 3"


def _smoke_report(cli, tmp_path, preset: str, *narrow: str) -> list[dict]:
    """Sweep a preset at smoke size on CIFAR files in the real format, then report twice: as run (its budget departs
    from the recipe: no paper number), and with each run's config.yaml given the preset's budget back (what a
    full-length run of it records): the paper's number and table beside every run."""
    import json

    from helpers import write_cifar
    from depthstudy.rundir import config_hash

    write_cifar(tmp_path / "data", n=24)
    write_cifar(tmp_path / "data", n=24, name="cifar100")
    result = cli("sweep", f"experiment={preset}", f"data.root={tmp_path / 'data'}", *SMOKE, *narrow)
    assert result.exit_code == 0, result.output
    root = tmp_path / "runs" / preset
    assert cli("report", str(root)).exit_code == 0
    md = (root / "report" / "report.md").read_text()
    assert "paper test %" not in md and "`schedule.iterations`: 2 (paper: 64000)" in md
    full = compose([f"experiment={preset}"])
    for config in root.glob("*/config.yaml"):  # as a full-length run writes config.yaml, and its hash in summary.json
        cfg = OmegaConf.load(config)
        cfg.schedule, cfg.optim.batch_size = full.schedule, full.optim.batch_size
        config.write_text(OmegaConf.to_yaml(cfg))
        summary = json.loads((config.parent / "summary.json").read_text())
        summary["config_hash"] = config_hash(OmegaConf.to_container(cfg, resolve=True))
        (config.parent / "summary.json").write_text(json.dumps(summary))
    assert cli("report", str(root)).exit_code == 0
    md = (root / "report" / "report.md").read_text()
    assert "Every setting follows" in md
    records = json.loads((root / "report" / "table.json").read_text())
    for rec in records:
        cfg = OmegaConf.load(next(root.glob(f"*d{rec['depth']}*/config.yaml")))  # any run: data and block below
        block, data = rec.get("model.block", cfg.model.block), rec.get("data.name", cfg.data.name)
        number, table = _expected(preset, data, rec["depth"], block)
        assert (rec["paper_test_error"], rec["paper_table"]) == (number, table), rec
        assert rec["paper_statistic"] == ("" if table == "He 2015 Table 6" else "median of 5")
        assert f"| {number:.2f} |" in md and table in md
    assert ("He 2015 Table 6 (ResNet, A)" if preset == "he2015_fig6_right" else "(median of 5)") \
        in (root / "report" / "depth.svg").read_text()
    return records


@pytest.mark.slow  # 17-20 s of CI; the paper column of every He 2016 recipe is checked without training below
def test_a_smoke_run_of_he2016_presets_gets_the_right_paper_column(cli, tmp_path, skip_md5):
    """Fast: one of Table 2's units at both its depths (the slow test runs every preset whole)."""
    records = _smoke_report(cli, tmp_path, "he2016_units", "model.block=relu_pre")
    assert sorted((r["depth"], r["paper_test_error"]) for r in records) == [(110, 6.71), (164, 5.91)]


@pytest.mark.slow
@pytest.mark.parametrize("preset,configs", [("he2016_units", 10), ("he2016_deep", 8), ("he2016_cifar100", 2),
                                            ("he2015_fig6_right", 2)])
def test_a_smoke_run_of_every_paper_preset_gets_the_right_paper_column(cli, tmp_path, skip_md5, preset, configs):
    assert len(_smoke_report(cli, tmp_path, preset)) == configs


def _flat(*overrides):
    from depthstudy.rundir import flatten

    return flatten(OmegaConf.to_container(compose(list(overrides)), resolve=True))


@pytest.mark.parametrize("overrides,expected", [
    (["experiment=he2015", "model.depth=110"], (6.61, "He 2015 Table 6")),
    (["experiment=he2016", "model.depth=110"], (6.61, "He 2016 Table 2")),  # the same number, another recipe
    (["experiment=he2016", "model.depth=110", "model.block=bn_after_add"], (8.17, "He 2016 Table 2")),
    (["experiment=he2016", "model.depth=164", "model.bottleneck=true", "model.shortcut=B", "model.block=pre"],
     (5.46, "He 2016 Table 2")),
    (["experiment=he2016", "model.depth=164", "model.block=bottleneck", "model.shortcut=B"],  # the older spelling
     (5.46, "He 2016 Table 2")),
    (["experiment=he2016", "model.depth=1001", "model.bottleneck=true", "model.shortcut=B", "data=cifar100"],
     (27.82, "He 2016 Table 3")),
    # He 2015's ResNet-110 warm-up rule is not He 2016's 400 iterations, and the reverse: no number
    (["experiment=he2015", "model.depth=110", "model.block=pre"], None),
    (["experiment=he2016", "model.depth=110", "schedule.warmup.until_train_error=80"], None),
    # the reference codes' switches, and a net the tables do not have
    (["experiment=he2016", "model.depth=110", "optim.nesterov=true"], None),
    (["experiment=he2016", "model.depth=164", "model.bottleneck=true", "model.shortcut=B", "model.init_mode=fan_out"],
     None),
    (["experiment=he2016", "model.depth=164", "model.bottleneck=true", "model.shortcut=A"], None),
    (["experiment=he2015", "model.depth=56", "data=cifar100"], None),
    (["experiment=he2015_val", "model.depth=20"], None),  # the 45k/5k schedule-selection split
])
def test_a_paper_number_stands_only_beside_runs_of_its_tables_recipe(overrides, expected):
    from depthstudy.papers import reference

    ref = reference(_flat(*overrides))
    assert (ref and (ref.number, ref.table.name)) == expected


def test_runs_made_before_the_new_switches_keep_table_6():
    """A config.yaml written before model.bottleneck, model.init_mode, optim.nesterov existed ran as their defaults."""
    from depthstudy.papers import reference

    config = _flat("experiment=he2015", "model.depth=56")
    for key in ("model.bottleneck", "model.bottleneck_stride", "model.init_mode", "optim.nesterov"):
        del config[key]
    assert reference(config).number == 6.97


@pytest.mark.parametrize("override", ["model.block=relu_pre", "model.bottleneck=true"])
def test_the_mlp_refuses_he_2016s_units_in_one_line(cli, override):
    result = cli("config", "model=mlp", override)
    assert result.exit_code == 2 and f"{override} is for the CIFAR nets" in result.output
    assert "Traceback" not in result.output
