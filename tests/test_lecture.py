"""The lecture's claims as features: growing a trained net (model.init_from), the block instruments the claims
read, grids that run one after another, and the report's lecture section."""

import json
import math
from pathlib import Path

import pytest
import torch

from depthstudy.config import compose, expand_grids
from depthstudy.diagnostics import block_diagnostics
from depthstudy.grow import grow
from depthstudy.models import build_model
from helpers import TINY, as_if_made_before, only_run, summary

MLP = ["model=mlp", "model.norm=none"]


def net(*overrides, shape=(1, 8, 8)):
    torch.manual_seed(0)
    return build_model(compose(list(overrides)).model, shape, 10).eval()


@pytest.mark.parametrize("arch,small,large,init", [
    (MLP, 6, 14, "zero"), (MLP, 6, 14, "plain_identity"), (["model.norm=bn"], 8, 20, "zero"),
    (["model.block=pre"], 8, 14, "zero"), (["model.shortcut=B"], 8, 14, "zero"),
], ids=["mlp-zero", "mlp-plain-identity", "resnet-zero", "preact-zero", "resnet-B-zero"])
def test_inserted_blocks_that_start_at_zero_leave_the_function_exactly_as_it_was(arch, small, large, init):
    trained, grown = net(*arch, f"model.depth={small}"), net(*arch, f"model.depth={large}")
    for p in trained.parameters():  # a "trained" net: nothing at its init values
        p.data.add_(0.05 * torch.randn_like(p))
    for m in trained.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    inserted = grow(trained, grown, init)
    per_stage = [len(s) for s in grown.stages()]
    old = [len(s) for s in trained.stages()]
    assert len(inserted) == sum(per_stage) - sum(old)  # the new blocks are the inserted ones, stage by stage
    assert all(j - sum(per_stage[:k]) >= old[k] for k, stage in enumerate(grown.stages()) for j in stage if j in inserted)
    x = torch.rand(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(trained(x), grown(x))  # bit for bit


def test_default_and_plain_insertions_change_the_function_and_impossible_growth_is_refused():
    from depthstudy.errors import UsageError

    x = torch.rand(16, 1, 8, 8)
    for init in ("default", "plain"):
        trained, grown = net(*MLP, "model.depth=6"), net(*MLP, "model.depth=10", "model.branch_init=zero_gamma")
        grow(trained, grown, init)
        with torch.no_grad():
            assert not torch.allclose(trained(x), grown(x))
    with pytest.raises(UsageError, match="plain_identity needs layers that can be the identity"):
        grow(net("model.depth=8"), net("model.depth=14"), "plain_identity")
    with pytest.raises(UsageError, match="fewer blocks per stage"):
        grow(net("model.depth=14"), net("model.depth=8"), "zero")
    with pytest.raises(UsageError, match="does not fit the new net"):
        grow(net("model.depth=8", "model.shortcut=B"), net("model.depth=14", "model.shortcut=C"), "zero")


@torch.no_grad()
def test_block_instruments_equal_a_hand_computation_on_an_mlp():
    model = net(*MLP, "model.depth=6", "model.widths=[4,6]", shape=(1, 2, 2))
    x = torch.rand(5, 1, 2, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rows = block_diagnostics(model, x)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the zeroed layers are restored
    a = torch.relu(model.stem[1](x.flatten(1)))  # the first block's input a[l]
    b = model.blocks[0]
    h = torch.relu(b.fc1(a))
    out = torch.relu(b.fc2(h) + a)  # a[l+2] = g(W[l+2] a[l+1] + b[l+2] + a[l])
    assert rows[0]["last_weight_norm"] == pytest.approx(float(b.fc2.weight.norm()), rel=1e-6)
    assert rows[0]["change_ratio"] == pytest.approx(float((out - a).norm() / a.norm()), rel=1e-5)
    assert rows[0]["zeroed_change"] == 0.0  # relu(0 + a) = a, exactly
    a1 = out  # the second block changes the width 4 -> 6: its shortcut zero-pads
    s = torch.cat([a1, torch.zeros(5, 2)], 1)
    b1 = model.blocks[1]
    out1 = torch.relu(b1.fc2(torch.relu(b1.fc1(a1))) + s)
    assert rows[1]["change_ratio"] == pytest.approx(float((out1 - s).norm() / s.norm()), rel=1e-5)
    plain = block_diagnostics(net(*MLP, "model.depth=6", "model.shortcut=none", "model.widths=[4,4]", shape=(1, 2, 2)), x)
    assert [r["zeroed_change"] for r in plain] == [1.0, 1.0]  # a plain pair outputs relu(0) = 0
    widening = block_diagnostics(net(*MLP, "model.depth=6", "model.shortcut=none", shape=(1, 2, 2)), x)
    assert math.isnan(widening[1]["change_ratio"])  # no input of its output's size to compare with


def test_grids_expand_in_order_with_the_command_line_winning():
    grids = expand_grids(["experiment=lecture", "seed=3"])
    parts = [{o.split("=")[1] for job in jobs for o in job if o.startswith("part=")} for _, jobs in grids]
    assert parts == [{"depth"}, {"depth"}, {"weight_decay"}, {"weight_decay_bn"}, {"grow_base"}, {"grow"}, {"grow"}]
    assert [len(jobs) for _, jobs in grids] == [16, 8, 6, 2, 1, 4, 1]  # the grids' seeds 0,1,2 -> seed=3
    assert all("seed=3" in job for _, jobs in grids for job in jobs)


def test_each_grown_run_starts_from_the_base_of_its_own_seed():
    from depthstudy.sweep import plan

    runs = plan(["experiment=lecture", "out_dir=/tmp/nowhere"])
    bases = {int(r.cfg.seed): r.run_dir for r in runs if r.cfg.part == "grow_base"}
    grown = [r for r in runs if r.cfg.part == "grow"]
    assert sorted(bases) == [0, 1, 2] and len(set(bases.values())) == 3 and len(grown) == 15
    assert all(Path(r.cfg.model.init_from) == bases[int(r.cfg.seed)] for r in grown)


def test_init_from_grows_a_trained_run_and_records_what_it_inserted(cli, tmp_path):
    base = [*TINY, *MLP, "model.depth=6", "name=base"]
    assert cli("train", *base).exit_code == 0
    source = only_run(tmp_path, "base")
    result = cli("train", *TINY, *MLP, "model.depth=10", f"model.init_from={source}", "name=grown",
                 "trainer.progress=lines")
    assert result.exit_code == 0, result.output
    g = summary(only_run(tmp_path, "grown"))["grown_from"]
    assert (g["depth"], g["grow_init"], g["inserted_blocks"], g["iterations"]) == (6, "zero", [1, 3], 6)
    assert g["max_logit_change"] == 0.0 and g["train_error_after"] == g["train_error_before"]
    assert "blocks [1, 3] inserted (zero)" in result.output


def test_a_resumed_grown_run_rebuilds_its_plain_blocks(cli, tmp_path):
    from depthstudy.data import load_data
    from depthstudy.grow import grow_from_run

    assert cli("train", *TINY, *MLP, "model.depth=6", "name=base").exit_code == 0
    cfg = compose([*MLP, "model.depth=10", f"model.init_from={only_run(tmp_path, 'base')}", "model.grow_init=plain"])
    data = load_data(cfg.data)
    model = build_model(cfg.model, data.shape, data.num_classes)
    record = grow_from_run(cfg.model, model, data, torch.device("cpu"), fresh=False, batch_size=500)
    assert record["inserted_blocks"] == [1, 3] and "max_logit_change" not in record  # nothing measured on resume
    assert [model.blocks[i].shortcut is None for i in range(4)] == [False, True, False, True]


def test_init_from_that_names_no_trained_run_is_one_line_and_writes_nothing(cli, tmp_path):
    result = cli("train", *TINY, f"model.init_from={tmp_path / 'nowhere'}")
    assert result.exit_code == 2 and "no trained run there" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_a_later_grid_grows_from_a_run_an_earlier_grid_trained(cli, tmp_path):
    """Two grids through the real sweep: the grown runs start from the base the first grid trains."""
    args = ["sweep", *TINY, *MLP, "name=g",
            "grids=[{part: base, model.depth: 6, hydra.sweep.subdir: base},"
            "{part: grow, model.depth: 10, model.init_from: runs/g/base, model.grow_init: 'zero,plain_identity'}]"]
    result = cli(*args)
    assert result.exit_code == 0, result.output
    runs = [summary(p.parent) for p in (tmp_path / "runs" / "g").glob("*/summary.json")]
    assert len(runs) == 3 and all(s["status"] == "finished" for s in runs)
    grown = [s["grown_from"] for s in runs if "grown_from" in s]
    assert [(g["inserted_blocks"], g["max_logit_change"]) for g in grown] == [([1, 3], 0.0)] * 2


LECTURE_SMALL = ("grids=[{part: depth, model.shortcut: 'none,A,B', model.depth: 6},"
                 "{part: weight_decay, model.shortcut: 'none,A', model.depth: 6, model.branch_init: default,"
                 " optim.weight_decay: '0,0.1'},"
                 "{part: weight_decay_bn, model: resnet, model.depth: 8, optim.weight_decay: 0.1},"
                 "{part: grow_base, model.shortcut: A, model.depth: 6, hydra.sweep.subdir: grow-base},"
                 "{part: grow, model.shortcut: A, model.depth: 10, model.init_from: runs/lecture/grow-base,"
                 " model.grow_init: 'zero,plain'},"
                 "{part: grow, model.shortcut: A, model.depth: 6, model.init_from: runs/lecture/grow-base}]")


def test_the_lecture_report_states_each_claim_with_its_measurement_and_figure(cli, tmp_path):
    """The lecture preset's structure at smoke size (its own grids, a few iterations): five sections, seven figures."""
    result = cli("sweep", "experiment=lecture", *TINY, "hydra/launcher=basic", LECTURE_SMALL)
    assert result.exit_code == 0, result.output
    assert cli("report", "runs/lecture").exit_code == 0
    out = tmp_path / "runs" / "lecture" / "report"
    md = (out / "lecture.md").read_text()
    for n in range(1, 6):
        assert f"## {n}. " in md
    for stem in ("lecture_1_depth", "lecture_2_identity", "lecture_2_learning", "lecture_3_weight_decay", "lecture_3_bn", "lecture_4_grow",
                 "lecture_5_projection"):
        assert (out / f"{stem}.png").exists() and f"({stem}.png)" in md
    assert "every zero-padding (A) residual block returns exactly what its shortcut passes on" in md
    assert "largest logit change 0 exactly" in md and "**Learning the identity**" in md
    assert "No verdict: 1 seed to compare; the rule needs 3" in md  # one seed here: no verdict is drawn from it
    assert "| depth 10, inserted: zero | " in md and "| depth 6, trained on (no blocks inserted) | " in md
    assert "# The lecture, measured" in (out / "report.md").read_text()
    assert not (out / "depth.png").exists()  # the study's figures would mix the claims' runs


@pytest.mark.slow
def test_the_lecture_preset_end_to_end(cli, tmp_path):
    """`depthstudy sweep experiment=lecture && depthstudy report runs/lecture` (the preset's header: its time)."""
    assert cli("sweep", "experiment=lecture", "trainer.progress=none").exit_code == 0
    assert cli("report", "runs/lecture").exit_code == 0
    md = (tmp_path / "runs" / "lecture" / "report" / "lecture.md").read_text()
    assert md.count("No verdict") == 0 and md.count("Agrees") + md.count("**Disagrees**") >= 7  # every rule decided


def test_eval_of_a_grown_run_rebuilds_its_plain_blocks_and_growth_is_checked_before_anything_is_written(cli, tmp_path):
    assert cli("train", *TINY, *MLP, "model.depth=6", "name=base").exit_code == 0
    source = only_run(tmp_path, "base")
    grown = [*TINY, *MLP, "model.depth=10", f"model.init_from={source}", "model.grow_init=plain", "name=grown"]
    assert cli("train", *grown).exit_code == 0
    run = only_run(tmp_path, "grown")
    row = json.loads(cli("eval", str(run), "--json").output)[0]
    assert row["test_error"] == summary(run)["test_error"]  # the net that was trained, not one with shortcuts back
    for args, message in (
            (["model.shortcut=B"], "only model.depth may differ from the trained run (model.shortcut: 'A' there, 'B' here"),
            (["model.depth=4"], "model.depth=4 is shallower than the trained run's 6"),
            (["model.grow_init=plain_identity", "model.norm=bn"], "plain_identity needs layers that can be the identity"),
            (["data=cifar10"], "was trained on digits, this run uses cifar10")):
        bad = cli("train", *grown, *args, "name=refused")
        assert bad.exit_code == 2 and message in bad.output, bad.output
        assert not (tmp_path / "runs" / "refused").exists()
    (source / "summary.json").write_text(json.dumps({"status": "interrupted", "iterations": 3}))
    bad = cli("train", *grown, "name=refused")
    assert bad.exit_code == 2 and "that run is interrupted, not finished" in bad.output


def test_a_grown_run_is_evaluated_without_its_source(cli, tmp_path):
    import shutil

    assert cli("train", *TINY, *MLP, "model.depth=6", "name=base").exit_code == 0
    source = only_run(tmp_path, "base")
    grown = [*TINY, *MLP, "model.depth=10", f"model.init_from={source}", "model.grow_init=plain", "name=grown"]
    assert cli("train", *grown).exit_code == 0
    shutil.rmtree(source)  # moved away: the grown run's summary says what was inserted
    run = only_run(tmp_path, "grown")
    row = json.loads(cli("eval", str(run), "--json").output)[0]
    assert row["test_error"] == summary(run)["test_error"]


def test_growth_is_checked_against_an_earlier_grids_run_before_anything_trains(cli, tmp_path):
    bad = cli("sweep", *TINY, *MLP, "name=g",
              "grids=[{part: base, model.depth: 6, hydra.sweep.subdir: base},"
              "{part: grow, model.depth: 10, model.shortcut: B, model.init_from: runs/g/base}]")
    assert bad.exit_code == 2 and "only model.depth may differ from the trained run (model.shortcut: 'A' there" in bad.output
    assert not (tmp_path / "runs").exists()


def test_a_source_saved_before_a_model_key_existed_can_still_be_grown_from(cli, tmp_path):
    assert cli("train", *TINY, *MLP, "model.depth=6", "name=base").exit_code == 0
    source = only_run(tmp_path, "base")
    as_if_made_before(source, *(f"model.{k}" for k in ("scale_branch", "gate_bias", "shortcut_dropout", "init_from",
                                                        "grow_init")))  # an older schema
    result = cli("train", *TINY, *MLP, "model.depth=10", f"model.init_from={source}", "name=grown")
    assert result.exit_code == 0, result.output


def _grown_runs():
    """What claim_grow reads: a trained net, four insertions at depth 18 and the net trained on without growing."""
    from pathlib import Path

    from depthstudy import events
    from depthstudy.runs import Run

    def run(name, part, depth, curve, **summary):
        config = {"part": part, "model.depth": depth, "model.shortcut": "A", "model.arch": "mlp", "seed": 0,
                  "data.name": "digits", "schedule.iterations": 200, "optim.batch_size": 64}
        return Run(Path(name), config, "finished", curves={events.TRAIN_ERROR: curve, events.TRAIN_LOSS: curve},
                   summary={"iterations": 200, **summary})

    curve = [(s, 80.0 / (1 + s / 10)) for s in range(10, 201, 10)]
    runs = [run("base", "grow_base", 10, curve)]
    for init in ("default", "plain", "plain_identity", "zero"):
        runs.append(run(f"grown-{init}", "grow", 18, curve, grown_from={
            "inserted_blocks": [1, 3, 5, 7], "grow_init": init, "train_error_before": 0.6, "train_error_after": 80.0,
            "max_logit_change": 1.0}))
    runs.append(run("control", "grow", 10, curve, grown_from={"inserted_blocks": [], "grow_init": "zero"}))
    return runs


@pytest.mark.parametrize("style", ["default", "paper", "slide"])
def test_the_grow_figure_keeps_its_legend_off_the_title_and_its_axis_label_within_the_plot(tmp_path, monkeypatch, style):
    """lecture_4_grow.png with the lecture's five grown runs (long legend labels): the legend covered the title
    ("inserting bl...") and the x-axis label was wider than the plot."""
    from depthstudy import figures, lecture

    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, out, stem, formats: drawn.append(fig) or [])
    with figures.styled(style):
        lines, _ = lecture.claim_grow(_grown_runs(), tmp_path, ["png"])
    (fig,) = drawn
    fig.canvas.draw()
    (ax,) = fig.axes
    (legend,) = fig.legends
    title = fig._suptitle.get_window_extent()
    assert len(legend.get_texts()) == 6 and not legend.get_window_extent().overlaps(title)
    assert not legend.get_window_extent().overlaps(ax.get_window_extent())  # nor the data
    assert ax.xaxis.label.get_window_extent().width <= ax.get_window_extent().width
    assert "blocks inserted" in [t.get_text() for t in ax.texts]
    assert "![claim 4](lecture_4_grow.png)" in lines


def test_a_pdf_only_lecture_section_links_its_pdfs(tmp_path):
    from depthstudy import lecture

    lines, files = lecture.claim_grow(_grown_runs(), tmp_path, ["pdf"])
    assert [f.name for f in files] == ["lecture_4_grow.pdf"] and "[claim 4 (PDF)](lecture_4_grow.pdf)" in lines
    assert not any(".png" in line for line in lines)


# --- every verdict rule on constructed numbers: it says "disagrees" when the data disagree ---

INF = math.inf


def _seeds(*values):
    return dict(enumerate(values))


def test_the_depth_rule_agrees_only_when_plain_degrades_and_residual_does_not_on_every_seed():
    from depthstudy.lecture import depth_rule

    plain_deep, plain_ref = _seeds(40.0, 35.0, 50.0), _seeds(1.0, 0.5, 0.0)
    res_ref = _seeds(0.5, 0.0, 0.2)
    assert depth_rule(plain_deep, plain_ref, _seeds(0.4, 0.1, 1.0), res_ref).agrees is True
    residual_degrades = depth_rule(plain_deep, plain_ref, _seeds(0.4, 30.0, 1.0), res_ref)  # one seed of three
    assert residual_degrades.agrees is False and "the residual net did not stay within 2 points" in residual_degrades.text
    diverged = depth_rule(plain_deep, plain_ref, _seeds(INF, INF, INF), res_ref)
    assert diverged.agrees is False and "the deepest diverged on seeds 0, 1, 2" in diverged.text
    no_degradation = depth_rule(_seeds(40.0, 1.5, 50.0), plain_ref, _seeds(0.4, 0.1, 1.0), res_ref)
    assert no_degradation.agrees is False and "the plain net did not lose more than 2 points" in no_degradation.text
    assert depth_rule(_seeds(40.0, 35.0), plain_ref, _seeds(0.4, 0.1), res_ref).agrees is None  # 2 seeds: no verdict


def test_best_shallower_takes_each_seeds_best_finished_shallower_depth():
    from depthstudy.lecture import best_shallower

    by_depth = {4: _seeds(3.0, 2.0, INF), 10: _seeds(0.5, INF, 4.0), 40: _seeds(0.0, 0.0, 0.0)}
    assert best_shallower(by_depth, 40) == {0: 0.5, 1: 2.0, 2: 4.0}


def test_the_identity_rule_disagrees_when_the_plain_block_gets_as_close_on_some_seed():
    from depthstudy.lecture import identity_rule

    assert identity_rule(residual=_seeds(0.06, 0.07, 0.05), plain=_seeds(0.5, 0.6, 0.55)).agrees is True
    assert identity_rule(residual=_seeds(0.06, 0.07, 0.6), plain=_seeds(0.5, 0.6, 0.55)).agrees is False
    assert identity_rule(residual=_seeds(0.06), plain=_seeds(0.5)).agrees is None


def test_the_weight_decay_rule_needs_the_residual_ratio_to_fall_further_than_the_plain_nets():
    from depthstudy.lecture import weight_decay_rule

    res_off, plain_off = _seeds(1.6, 1.7, 1.65), _seeds(2.1, 2.2, 2.15)
    assert weight_decay_rule(res_off, _seeds(0.6, 0.6, 0.6), plain_off, _seeds(1.9, 2.0, 1.9)).agrees is True
    # decay shrinks every layer alike: not specific to residual blocks
    alike = weight_decay_rule(res_off, _seeds(0.8, 0.85, 0.8), plain_off, _seeds(1.05, 1.1, 1.05))
    assert alike.agrees is False and "the plain net's ratio fell as much or more" in alike.text
    grows = weight_decay_rule(res_off, _seeds(0.6, 1.9, 0.6), plain_off, _seeds(2.1, 2.2, 2.15))
    assert grows.agrees is False and "did not fall on every seed" in grows.text


def test_the_shrink_rule_disagrees_when_the_branch_ratio_rises_on_a_seed():
    from depthstudy.lecture import shrink_rule

    assert shrink_rule(_seeds(0.63, 0.64, 0.63), _seeds(0.46, 0.46, 0.46)).agrees is True
    assert shrink_rule(_seeds(0.63, 0.64, 0.63), _seeds(0.46, 0.70, 0.46)).agrees is False


def test_the_grow_rule_disagrees_when_the_grown_net_ends_with_a_higher_loss_on_any_seed():
    from depthstudy.lecture import grow_rule

    control = _seeds(0.027, 0.029, 0.031)
    assert grow_rule(_seeds(0.010, 0.008, 0.012), control).agrees is True
    worse = grow_rule(_seeds(0.010, 0.008, 0.05), control)
    assert worse.agrees is False and "above 0 on some seed" in worse.text
    assert grow_rule(_seeds(0.010, 0.008, INF), control).agrees is False  # a grown net that diverged hurt
    assert grow_rule(_seeds(0.010, 0.008), control).agrees is None


def _depth_run(shortcut, init, depth, seed, error, status="finished", lr=0.01):
    from depthstudy.runs import Run

    config = {"part": "depth", "model.arch": "mlp", "model.shortcut": shortcut, "model.branch_init": init,
              "model.depth": depth, "model.norm": "none", "seed": seed, "optim.lr": lr, "optim.batch_size": 64,
              "optim.weight_decay": 1e-4, "schedule.iterations": 200, "data.name": "digits"}
    from depthstudy import events
    curves = {} if status == "diverged" else {events.TRAIN_ERROR: [(200, error)]}
    return Run(Path(f"{shortcut}-{init}-{depth}-{seed}"), config, status, curves=curves)


def test_claim_1_separates_the_shortcut_from_the_zero_init_and_shows_divergence(tmp_path):
    """Plain nets degrade; He-initialised residual nets diverge at depth 40; zero-initialised ones do not degrade:
    the section says the claim disagrees for the shortcut alone and agrees with the zero init."""
    from depthstudy import lecture

    runs = []
    for seed in range(3):
        for depth, plain, he, zero in ((10, 0.0, 0.0, 0.6), (20, 0.8, 21.0, 0.0), (40, 40.0 + seed, None, 0.1)):
            runs += [_depth_run("none", "default", depth, seed, plain), _depth_run("A", "zero_gamma", depth, seed, zero),
                     _depth_run("A", "default", depth, seed, he, status="diverged" if he is None else "finished")]
    lines, files = lecture.claim_depth(runs, tmp_path, ["png"])
    md = "\n".join(lines)
    assert ("Under this recipe, with the shortcut alone (He init for both) the claim disagrees and with residual "
            "blocks that start as the identity (zero init) the claim agrees.") in md
    assert "| mlp residual (A), He init | 0.00 | 21.00 | diverged (3 of 3) |" in md
    assert "lr 0.01, 200 iterations of batch 64, weight decay 0.0001, normalisation none" in md
    assert [f.name for f in files] == ["lecture_1_depth.png"]


def test_final_training_numbers_are_the_training_split_where_the_run_measured_it():
    from depthstudy import events
    from depthstudy.lecture import train_error, train_loss, train_measure
    from depthstudy.runs import Run

    curves = {events.TRAIN_ERROR: [(200, 9.0)], events.TRAIN_LOSS: [(200, 0.3)]}
    measured = Run(Path("m"), {}, "finished", curves=curves, summary={
        "train_error": 1.5, "train_loss": 0.05, "train_error_measure": "final weights", "split_sizes": {"train": 1200}})
    window = Run(Path("w"), {}, "finished", curves=curves, summary={})
    assert (train_error(measured), train_loss(measured)) == (1.5, 0.05)
    assert (train_error(window), train_loss(window)) == (9.0, 0.3)  # a run from before the measure
    assert train_measure([measured]).endswith("eval mode; one training image of 1200 is 0.08 points")
    assert train_measure([measured, window]).startswith("the last log window")
    assert train_loss(Run(Path("d"), {}, "diverged", curves=curves)) == math.inf


def test_identity_learning_pairs_the_two_blocks_and_is_a_function_of_its_seed():
    """Claim 2's fit: both kinds start from the same weights (the shortcut is the only difference), so at step 0
    the residual block's output is relu(F(a) + a) and the plain block's relu(F(a)) for one and the same F."""
    from depthstudy.diagnostics import identity_learning
    from depthstudy.models import MLPBlock, he_init
    from depthstudy.schema import MLPConfig

    torch.manual_seed(5)
    fit, held = torch.rand(40, 6), torch.rand(20, 6)
    curves = identity_learning(fit, held, seed=3, steps=4, lr=0.1, batch_size=8, at=[0, 2, 4])
    assert [s for s, _ in curves["residual"]] == [0, 2, 4] == [s for s, _ in curves["plain"]]
    assert curves == identity_learning(fit, held, seed=3, steps=4, lr=0.1, batch_size=8, at=[0, 2, 4])
    torch.manual_seed(3)
    block = MLPBlock(6, 6, MLPConfig(arch="mlp", shortcut="none", norm="none"))
    he_init(block)
    with torch.no_grad():
        f = block.fc2(torch.relu(block.fc1(held)))
        expect = {"plain": torch.relu(f), "residual": torch.relu(f + held)}
    for kind, out in expect.items():
        assert curves[kind][0][1] == pytest.approx(float((out - held).norm() / held.norm()), rel=1e-6)
