"""depthstudy report on runs written by the test with SummaryWriter (values chosen here)."""

import json
import statistics

import pytest
from omegaconf import OmegaConf
from torch.utils.tensorboard import SummaryWriter

from helpers import summary
from depthstudy import __version__, events
from depthstudy.config import compose
from depthstudy.report import make_report
from depthstudy.rundir import run_lock

# (shortcut, depth, seed) -> final train / test error the test writes.
FINAL = {
    ("none", 20, 0): (2.0, 5.0), ("none", 20, 1): (4.0, 7.0),
    ("none", 56, 0): (30.0, 35.0), ("none", 56, 1): (40.0, 45.0),
    ("A", 20, 0): (1.0, 4.0), ("A", 20, 1): (1.5, 4.5),
    ("A", 56, 0): (0.5, 3.0), ("A", 56, 1): (0.7, 3.2),
}


def write_run(root, shortcut, depth, seed, train_err, test_err, status="finished", wd=1e-4, steps=(10, 20, 30)):
    budget = [] if status else [f"schedule.iterations={steps[-1]}", "schedule.milestones=[0.5]"]  # no summary: whole
    cfg = compose([f"model.shortcut={shortcut}", f"model.depth={depth}", f"seed={seed}", f"optim.weight_decay={wd}",
                   *budget])
    run = root / cfg.run_name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    w = SummaryWriter(str(run))
    for i, step in enumerate(steps):  # curves fall towards the final values
        w.add_scalar(events.TRAIN_ERROR, train_err + 10 * (len(steps) - 1 - i), step)
        w.add_scalar(events.TEST_ERROR, test_err + 10 * (len(steps) - 1 - i), step)
        w.add_scalar(events.VAL_ERROR, test_err + 1, step)
    w.close()
    if status:  # as train.py writes it: a diverged run ends at the log point it did not log (its loss not finite)
        end = steps[-1] + (steps[-1] - steps[-2] if len(steps) > 1 else 1) if status == "diverged" else steps[-1]
        (run / "summary.json").write_text(json.dumps({"status": status, "iterations": end, "total_iterations": 30,
                                                       **({"diverged_at": end} if status == "diverged" else {})}))
    return run


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    for (shortcut, depth, seed), (tr, te) in FINAL.items():
        write_run(root, shortcut, depth, seed, tr, te)
    return root


def group(result, family, depth):
    return next(g for g in result["groups"] if g.family == family and g.depth == depth)


def test_means_and_stds_equal_what_was_written(sweep, tmp_path, cli):
    result = make_report(sweep, None, [], ["png", "svg"], console=_Quiet())
    for (shortcut, depth, _), _ in FINAL.items():
        family = "plain" if shortcut == "none" else "residual (A)"
        values = [v for (s, d, _), v in FINAL.items() if (s, d) == (shortcut, depth)]
        for split, i in (("train", 0), ("test", 1)):
            mean, std, n = group(result, family, depth).stat(split)
            assert n == 2
            assert mean == pytest.approx(statistics.fmean(v[i] for v in values))
            assert std == pytest.approx(statistics.stdev(v[i] for v in values))


def test_figures_and_report_files_are_written(sweep, cli):
    import matplotlib.image

    result = cli("report", str(sweep), "--format", "png,svg,pdf")
    assert result.exit_code == 0, result.output
    out = sweep / "report"
    for stem in ("depth", "curves"):
        image = matplotlib.image.imread(out / f"{stem}.png")
        assert image.shape[0] > 300 and image.shape[1] > 600
        assert (out / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
        assert (out / f"{stem}.pdf").read_bytes().startswith(b"%PDF")
    md = (out / "report.md").read_text()
    assert "![depth](depth.png)" in md and "| plain | 20 | 2/2 |" in md
    assert "| plain | 56 | 2/2 | 35.00 |" in md  # plain-56 train error: the median of 30 and 40
    curves = (out / "curves.csv").read_text().splitlines()
    assert len(curves) == 1 + 8 * 3 * 3  # header + 8 runs x 3 tags x 3 points: nothing down-sampled
    assert "plain" in result.output and "residual (A)" in result.output


def test_failed_diverged_and_running_runs_are_shown_not_averaged(sweep, cli):
    write_run(sweep, "none", 110, 0, 90.0, 90.0, status="diverged")
    running = write_run(sweep, "none", 56, 2, 99.0, 99.0, status="running")
    with run_lock(running):  # a running run's process holds its lock (else it is crashed)
        result = cli("report", str(sweep))
    assert result.exit_code == 0, result.output
    assert "plain-d110-wd0.0001-s0: diverged at iteration 40 (not averaged)" in result.output
    assert "plain-d56-wd0.0001-s2: running at iteration 30 of 30 (not averaged)" in result.output
    md = (sweep / "report" / "report.md").read_text()
    assert "| plain | 56 | 2/3 running 1 | 35.00 |" in md  # the running run is not in the median
    assert "| plain | 110 | 0/1 diverged 1 |" in md


def test_a_corrupted_event_file_is_reported_and_skipped(sweep, cli):
    bad = write_run(sweep, "A", 110, 0, 1.0, 1.0)
    event_file = next(bad.glob("events.out.tfevents.*"))
    event_file.write_bytes(event_file.read_bytes()[:-7])  # truncated mid-record
    (bad / "events.out.tfevents.0.garbage").write_bytes(b"\x00garbage" * 10)
    result = cli("report", str(sweep))
    assert result.exit_code == 0, result.output
    assert (sweep / "report" / "depth.png").exists()
    md = (sweep / "report" / "report.md").read_text()
    assert "resA-d110-wd0.0001-s0: event file unreadable: events.out.tfevents.0.garbage is corrupted record at " \
           f"byte 0; {event_file.name} is truncated at byte" in md
    assert "| residual (A) | 110 | 0/1 damaged 1 |" in md and "| plain | 56 | 2/2 |" in md
    event_file.unlink()  # now only the garbage file is damaged
    cli("report", str(sweep))
    assert "events.out.tfevents.0.garbage is corrupted record at byte 0; its curves are lost: move its directory away " \
           "and run its command (or sweep) again to train it afresh (not averaged)" in (sweep / "report" / "report.md").read_text()


def test_a_single_run_and_a_run_without_summary(tmp_path, cli):
    run = write_run(tmp_path / "one", "A", 20, 0, 1.0, 2.0, status=None)  # e.g. written by another tool
    result = cli("report", str(run))
    assert result.exit_code == 0, result.output
    assert "| residual (A) | 20 | 1/1 |" in (run / "report" / "report.md").read_text()


def test_by_key_draws_a_faceted_depth_plot(tmp_path, cli):
    root = tmp_path / "wd"
    for wd in (0.0, 5e-4):
        for shortcut in ("none", "A"):
            for depth in (20, 56):
                write_run(root, shortcut, depth, 0, 10.0 * (wd > 0) + depth / 10, 5.0, wd=wd)
    result = cli("report", str(root), "--by", "optim.weight_decay")
    assert result.exit_code == 0, result.output
    assert (root / "report" / "depth_by_optim_weight_decay.png").exists()
    svg = (root / "report" / "depth_by_optim_weight_decay.svg").read_text()
    for wd in ("0.0", "0.0005"):  # one column per weight decay, training and held-out rows
        assert f"weight_decay = {wd}: training" in svg and f"weight_decay = {wd}: test" in svg
    assert "weight_decay = 0.0001" not in svg


def test_every_facet_shows_all_its_points(tmp_path, monkeypatch):
    """Facets share y per row: the axis must reach the highest point of every column, not only the first."""
    from depthstudy import figures
    from depthstudy.runs import group_runs, load_runs, varying_keys

    root = tmp_path / "wd"
    for wd, errors in ((0.0, (2.0, 6.0)), (5e-4, (12.0, 16.0))):  # the second column's errors are higher
        for depth, err in zip((20, 56), errors):
            write_run(root, "A", depth, 0, err, err, wd=wd)
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, out, stem, formats: drawn.append(fig) or [])
    runs = load_runs(root)
    keys = varying_keys(runs)
    figures.plot_depth_by(group_runs(runs, keys), "optim.weight_decay", tmp_path, ["png"], keys)
    (fig,) = drawn
    for ax in fig.axes:
        top = ax.get_ylim()[1]
        ys = [y for line in ax.get_lines() for y in line.get_ydata()]
        assert ys and max(ys) <= top and ax.get_ylim()[0] == 0, ax.get_title()


def _file(p):
    p.mkdir(parents=True)
    (p / "x.txt").write_text("hi")
    return p / "x.txt"


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "nope", "does not exist"),
    (lambda p: _mkdir(p), "no runs under"),
    (lambda p: _mkdir(p / "hydra-only" / ".hydra").parent, "no runs under"),
    (_file, "is not a directory"),
])
def test_bad_runs_dir_is_one_line_and_exit_2(tmp_path, cli, make, message):
    result = cli("report", str(make(tmp_path / "target")))
    assert result.exit_code == 2 and message in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_unknown_by_key_and_format_are_refused(sweep, cli):
    assert "no such config key" in cli("report", str(sweep), "--by", "model.width").output
    assert "already an axis of the depth plot" in cli("report", str(sweep), "--by", "model.shortcut").output
    said = cli("report", str(sweep), "--by", "seed").output  # 2 seeds: not "every run has the same value"
    assert "each point is the median over the seeds" in said and "same value" not in said
    assert cli("report", str(sweep), "--format", "gif").exit_code == 2
    empty = cli("report", str(sweep), "--format", "")  # was: "0 figure files", exit 0
    assert empty.exit_code == 2 and "--format is empty" in empty.output
    (sweep.parent / "afile").write_text("")
    onto_a_file = cli("report", str(sweep), "--out", str(sweep.parent / "afile"))  # was: FileExistsError, exit 1
    assert onto_a_file.exit_code == 2 and "cannot make the report directory there" in onto_a_file.output
    assert len(onto_a_file.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_quick_study_shows_plain_error_rising_with_depth(cli, tmp_path):
    """The real quick preset (depths 20 and 44) at one seed: the degradation problem, measured (seed 0 on a 2-core
    AMD EPYC, 2026-12-06: plain-20 0%, plain-44 37.17%, residual-44 0%)."""
    result = cli("sweep", "experiment=quick", "seed=0", "trainer.progress=none")
    assert result.exit_code == 0, result.output
    report = make_report(tmp_path / "runs" / "quick", None, [], ["png"], console=_Quiet())
    plain20, plain44 = (group(report, "plain", d).median("train") for d in (20, 44))
    res44 = group(report, "residual (A)", 44).median("train")
    assert plain44 > plain20 + 10  # the bar: at least 10 points on every seed
    assert res44 < 5 and res44 < plain44 - 10


def _mkdir(p):
    p.mkdir(parents=True, exist_ok=True)
    return p


class _Quiet:
    def print(self, *args, **kwargs):
        pass


def test_paper_recipe_runs_are_set_beside_table6(tmp_path, cli):
    root = tmp_path / "cifar"
    for seed, test_err in ((0, 8.5), (1, 9.5)):
        cfg = compose(["experiment=he2015", "model.depth=20", f"seed={seed}"])
        run = root / cfg.run_name
        run.mkdir(parents=True)
        (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
        w = SummaryWriter(str(run))
        w.add_scalar(events.TRAIN_ERROR, 1.0, 64000)
        w.add_scalar(events.TEST_ERROR, test_err, 64000)
        w.close()
    result = cli("report", str(root))
    assert result.exit_code == 0, result.output
    md = (root / "report" / "report.md").read_text()
    assert "paper test %" in md and "| 9.00 | 8.75 | +0.25 |" in md  # He 2015 Table 6: ResNet-20 8.75
    assert "Every setting follows the paper's CIFAR-10 recipe" in md
    assert "He 2015 Table 6 (ResNet, A)" in (root / "report" / "depth.svg").read_text()  # the reference marker
    # Not the paper's recipe (another weight decay): no Table 6 number beside it.
    cfg = compose(["experiment=he2015", "model.depth=20", "optim.weight_decay=0.001"])
    run = root / cfg.run_name
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    (run / "summary.json").write_text(json.dumps({"status": "failed", "iterations": 0}))  # failed before any event
    result = cli("report", str(root))
    md = (root / "report" / "report.md").read_text()
    assert md.count("| 8.75 |") == 1 and "resA-d20-wd0.001-s0: failed at iteration 0 (not averaged)" in md
    assert "one run per depth, except ResNet-110: the mean of 5 runs" in md
    # The 45k/5k schedule-selection protocol is not the recipe of the reported models: no Table 6 beside it.
    cfg = compose(["experiment=he2015_val", "model.depth=32"])
    run = root / cfg.run_name
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    w = SummaryWriter(str(run))
    w.add_scalar(events.TEST_ERROR, 7.0, 64000)
    w.close()
    assert cli("report", str(root)).exit_code == 0
    md = (root / "report" / "report.md").read_text()
    assert "| 7.51 |" not in md and md.count("| 8.75 |") == 1
    # bf16 changes the numbers: said among the departures, and no Table 6 beside it (a memory layout changes neither)
    for extra in ("trainer.precision=bf16", "trainer.channels_last=false"):
        run = root / extra  # a sweep's name for it would add a slug and hash
        run.mkdir()
        (run / "config.yaml").write_text(OmegaConf.to_yaml(compose(["experiment=he2015", "model.depth=44", extra])))
        with SummaryWriter(str(run)) as w:
            w.add_scalar(events.TEST_ERROR, 7.0, 64000)
    assert cli("report", str(root)).exit_code == 0
    md = (root / "report" / "report.md").read_text()
    (departures,) = [line for line in md.splitlines() if line.startswith("Settings that differ")]
    assert "`trainer.precision`: bf16 / fp32 (paper: fp32)" in departures and "channels_last" not in departures
    assert md.count("| 7.17 |") == 1  # ResNet-44's Table 6 number, beside the fp32 run only


def test_depth_plot_goes_symlog_only_when_errors_span_orders_of_magnitude(sweep, tmp_path, cli, monkeypatch):
    from depthstudy import figures
    from depthstudy.runs import group_runs, load_runs, varying_keys

    groups = group_runs(load_runs(sweep), varying_keys(load_runs(sweep)))
    assert figures.depth_yscale(groups, "train", "auto") == "symlog"  # 0.5% residual beside 35% plain
    close = [g for g in groups if g.family == "plain"]  # 3% and 35%: one order of magnitude
    assert figures.depth_yscale(close, "train", "auto") == "linear"
    assert figures.depth_yscale(groups, "train", "linear") == "linear"
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, out, stem, formats: drawn.append(fig) or [])
    figures.plot_depth(groups, tmp_path, ["png"], [], "auto")
    # training errors 0.5-45% span orders of magnitude; the written test errors (3-45%) do not
    assert [ax.get_yscale() for ax in drawn[0].axes] == ["symlog", "linear"]
    assert drawn[0].axes[0].get_ylim() == (0, 100)
    result = cli("report", str(sweep), "--yscale", "log10")
    assert result.exit_code == 2 and "choose auto, linear or symlog" in result.output


def test_runs_csv_has_one_tidy_row_per_run_and_curves_csv_the_layer_index(sweep, cli):
    import csv

    run = write_run(sweep, "A", 110, 0, 91.33333587646484, 2.0, status="diverged")
    with SummaryWriter(str(run)) as w:
        w.add_scalar(events.response_tag(3), 0.25, 30)
    record = summary(run)
    record.update(params=1_730_714, wall_time_s=12.5, train_images_per_s=2048.0)
    (run / "summary.json").write_text(json.dumps(record))
    assert cli("report", str(sweep)).exit_code == 0
    rows = {r["run"]: r for r in csv.DictReader(open(sweep / "report" / "runs.csv"))}
    row = rows[run.name]
    assert (row["family"], row["status"], row["model.depth"], row["diverged_at"]) == ("residual (A)", "diverged", "110", "40")
    assert (row["params"], row["wall_time_s"], row["images_per_s"]) == ("1730714", "12.5", "2048.0")
    assert row["train_error"] == "91.333336"  # float32 noise rounded away
    assert row["schedule.milestones"] == "[300, 450]"  # a list, as a JSON list
    assert {"train_loss", "val_loss", "test_loss", "test_error"} <= set(row)
    curves = list(csv.DictReader(open(sweep / "report" / "curves.csv")))
    (response,) = [c for c in curves if c["run"] == run.name and c["quantity"] == events.RESPONSE_PREFIX.rstrip("/")]
    assert (response["index"], response["step"], response["value"]) == ("3", "30", "0.25")
    assert all(float(c["wall_time"]) > 1.7e9 for c in curves)
    table = {(r["family"], r["depth"]): r for r in json.loads((sweep / "report" / "table.json").read_text())}
    plain56 = table[("plain", 56)]
    assert (plain56["train_error_mean"], plain56["train_error_median"], plain56["train_n"]) == (35.0, 35.0, 2)
    assert plain56["train_error_std"] == pytest.approx(7.0710678)
    assert table[("residual (A)", 110)]["averaged"] == 0  # diverged: shown, not averaged
    assert "plain,56,2,2,35.0," in (sweep / "report" / "table.csv").read_text()


def test_paired_section_gives_per_seed_differences_with_their_interval(sweep, cli):
    assert cli("report", str(sweep)).exit_code == 0
    md = (sweep / "report" / "report.md").read_text()
    assert "coverage 50% with 2 seeds" in md  # [min, max] of 2 seeds: 1 - 2/4
    # plain - residual (A) at depth 20, seeds 0 and 1: train 2-1, 4-1.5; test 5-4, 7-4.5
    assert "| 20 | residual (A) | +1.75 [+1.00, +2.50] (2/2 > 0) | +1.75 [+1.00, +2.50] (2/2 > 0) |" in md
    # deepest minus shallowest: plain 28 and 36 points worse, residual (A) better at 56 on both seeds
    assert "| plain | 56 - 20 | +32.00 [+28.00, +36.00] (2/2 > 0) |" in md
    assert "| residual (A) | 56 - 20 | -0.65 [-0.80, -0.50] (0/2 > 0) |" in md


def test_a_seed_that_goes_the_other_way_shows_in_the_paired_count(tmp_path, cli):
    root = tmp_path / "mixed"
    for seed, (plain, res) in enumerate([(30.0, 1.0), (2.0, 3.0), (25.0, 1.0)]):
        write_run(root, "none", 20, seed, plain, plain)
        write_run(root, "A", 20, seed, res, res)
    assert cli("report", str(root)).exit_code == 0
    md = (root / "report" / "report.md").read_text()
    assert "| 20 | residual (A) | +24.00 [-1.00, +29.00] (2/3 > 0) |" in md  # the interval spans 0: no effect shown


def test_report_says_whether_the_training_curves_are_flat_at_the_end(tmp_path, cli):
    root = tmp_path / "moving"
    write_run(root, "none", 20, 0, 5.0, 5.0, steps=(10, 20, 30, 40, 50))  # falls 10 points a log point to the end
    write_run(root, "A", 20, 0, 1.0, 1.0, steps=(50,))
    assert cli("report", str(root)).exit_code == 0
    md = (root / "report" / "report.md").read_text()
    assert "plain 20: -10.0 (-10.0 to -10.0)" in md  # 80% of 50 is 40: the window at 40 minus the one at 50
    assert "residual (A) 20" not in md.split("last fifth")[1].split("\n")[0]  # one point: nothing to say


def test_one_seed_shows_its_value_without_a_zero_std(tmp_path, cli):
    write_run(tmp_path / "one", "A", 20, 0, 1.25, 4.5)
    assert cli("report", str(tmp_path / "one")).exit_code == 0
    md = (tmp_path / "one" / "report" / "report.md").read_text()
    assert "| residual (A) | 20 | 1/1 | 1.25 | 5.50 | 4.50 |" in md and "\u00b1" not in md.split("\n\n")[1]


def test_report_md_says_how_it_was_made_and_where_the_runs_depart_from_the_paper(sweep, cli):
    from depthstudy import __version__

    assert cli("report", str(sweep)).exit_code == 0
    md = (sweep / "report" / "report.md").read_text()
    assert f"Made by `depthstudy report {sweep}`" in md and f"depthstudy {__version__}" in md
    assert "`data.name`: digits (paper: cifar10)" in md and "`schedule.iterations`: 600 (paper: 64000)" in md
    assert "Table 6 (ResNet, A)" not in (sweep / "report" / "depth.svg").read_text()  # not the paper's recipe


def test_curves_show_the_seed_range_the_lr_drops_and_a_legend_beside_the_panels(tmp_path, monkeypatch):
    from depthstudy import figures
    from depthstudy.runs import group_runs, load_runs

    root = tmp_path / "lr"
    for shortcut in ("none", "A"):
        for seed in (0, 1):  # short schedule: 600 iterations, lr drops at 300 and 450
            write_run(root, shortcut, 20, seed, 5.0 + seed, 8.0, steps=(150, 300, 450, 600))
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, out, stem, formats: drawn.append(fig) or [])
    figures.plot_curves(group_runs(load_runs(root), []), tmp_path, ["png"])
    (fig,) = drawn
    fig.canvas.draw()
    panels = [ax for ax in fig.axes if ax.get_title()]
    for ax in panels:
        drops = [line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == ":"]
        assert drops == [300, 450] and ax.get_xlim()[1] < 700  # marked, and the axis is not stretched by them
        assert len(ax.collections) == 2  # the seeds' range as a band: training and test
    (legend,) = fig.legends
    box = legend.get_window_extent()
    assert all(not box.overlaps(ax.get_window_extent()) for ax in panels)  # the legend never covers data
    assert "range over seeds" in [t.get_text() for t in legend.get_texts()]


def test_lr_drops_beyond_the_logged_steps_are_not_drawn(sweep, cli):
    assert cli("report", str(sweep)).exit_code == 0  # steps 10-30 of 600: milestones 300, 450 lie beyond
    assert "lr \u00f710" not in (sweep / "report" / "curves.svg").read_text()


def _instrumented(root, shortcut, depth, responses, blocks=None):
    run = write_run(root, shortcut, depth, 0, 5.0, 8.0)
    with SummaryWriter(str(run)) as w:
        for i, v in enumerate(responses):
            w.add_scalar(events.response_tag(i), v, 30)
        for i, v in enumerate(blocks or []):
            w.add_scalar(events.block_tag("branch_ratio", i), 0.5, 30)
            w.add_scalar(events.block_tag("gamma_rms", i), v, 30)
    return run


def test_responses_of_a_diverging_net_are_clipped_and_named_not_flattening_the_rest(tmp_path, cli):
    root = tmp_path / "resp"
    _instrumented(root, "A", 8, [1.0, 1.2, 0.9, 1.1, 1.0, 0.8, 1.3])
    _instrumented(root, "A", 14, [1.0, 1.1, 0.9, 1.0, 1.2, 0.8, 1.3, 1.0, 0.9, 1.1, 1.0, 1.2, 0.9])
    _instrumented(root, "none", 8, [2.0, 30.0, 400.0, 5e3, 6e4, 1e5, 2e5])
    assert cli("report", str(root)).exit_code == 0
    svg = (root / "report" / "responses.svg").read_text()
    assert "clipped at 130: plain-8 (up to 2e+05)" in svg


def test_blocks_show_rms_gamma_with_stage_boundaries_and_labelled_axes(tmp_path, monkeypatch):
    from depthstudy import figures
    from depthstudy.runs import group_runs, load_runs

    _instrumented(tmp_path / "b", "A", 20, [1.0] * 19, blocks=[1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    drawn = []
    monkeypatch.setattr(figures, "save", lambda fig, out, stem, formats: drawn.append(fig) or [])
    figures.plot_blocks(group_runs(load_runs(tmp_path / "b"), []), tmp_path, ["png"], [])
    (fig,) = drawn
    ratio, gamma = [ax for ax in fig.axes if ax.get_title()]
    assert gamma.get_ylabel() == "RMS gamma = ||gamma|| / sqrt(C)" and ratio.get_ylabel() == "||F(x)|| / ||x||"
    (curve,) = [line for line in gamma.get_lines() if line.get_linestyle() == "-"]
    assert list(curve.get_ydata()) == pytest.approx([1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2])
    (stages,) = [line for line in gamma.get_lines() if line.get_label() == "_stage"]  # marked on the curve
    assert list(stages.get_xdata()) == [4, 7]  # ResNet-20: 3 blocks per stage, widths 16 | 32 | 64


def test_gamma_rms_is_the_norm_over_the_root_of_the_channels():
    import math

    import torch

    from depthstudy.config import compose
    from depthstudy.diagnostics import block_diagnostics
    from depthstudy.models import ResidualBlock, build_model

    model = build_model(compose(["model.depth=8"]).model, (1, 8, 8), 10)
    blocks = [m for m in model.modules() if isinstance(m, ResidualBlock)]
    for b in blocks:
        b.last_layer().weight.data.uniform_(0.2, 1.5)
    d = block_diagnostics(model, torch.randn(16, 1, 8, 8))
    for b, row in zip(blocks, d):
        gamma = b.last_layer().weight.detach()
        assert row["gamma_rms"] == pytest.approx(math.sqrt(float((gamma ** 2).mean())), rel=1e-6)
        assert row["gamma_norm"] == pytest.approx(float(gamma.norm()), rel=1e-6)


def test_style_paper_and_slide_change_the_size_and_an_unknown_style_is_refused(sweep, cli, tmp_path):
    import matplotlib.image

    widths = {}
    for style in ("default", "paper", "slide"):
        assert cli("report", str(sweep), "--style", style, "--out", str(tmp_path / style)).exit_code == 0
        widths[style] = matplotlib.image.imread(tmp_path / style / "depth.png").shape[1]
    assert widths["paper"] < 0.75 * widths["default"] < widths["slide"]
    assert (tmp_path / "paper" / "depth.svg").read_text().lstrip().startswith("<?xml")  # vector stays vector
    bad = cli("report", str(sweep), "--style", "poster")
    assert bad.exit_code == 2 and "--style poster is unknown; choose default, paper, slide" in bad.output


def test_instruments_sort_after_the_curves_and_older_runs_tags_are_still_read(tmp_path):
    run = write_run(tmp_path / "old", "A", 8, 0, 1.0, 2.0)
    with SummaryWriter(str(run)) as w:  # the tags runs had before the instruments group
        w.add_scalar("responses/std/0003", 0.5, 30)
        w.add_scalar("blocks/branch_ratio/0001", 0.25, 30)
    scalars = events.read_scalars(run)
    assert scalars[events.response_tag(3)] == [(30, 0.5)] and scalars[events.block_tag("branch_ratio", 1)] == [(30, 0.25)]
    groups = sorted({tag.split("/")[0] for tag in [events.TRAIN_ERROR, events.VAL_ERROR, events.THROUGHPUT,
                                                    events.response_tag(0), events.block_tag("gamma_rms", 0)]})
    assert groups[-1] == events.INSTRUMENTS.rstrip("/")  # TensorBoard's Time Series lists its groups sorted


def _caption(svg_path):
    """The caption line of a figure (SVG text stays text)."""
    import re

    return next(t for t in re.findall(r">([^<>]*depthstudy \d[^<>]*)<", svg_path.read_text()))


def test_depth_caption_says_the_seeds_per_point_and_the_damaged_runs_left_out(sweep, cli):
    for run in sweep.iterdir():  # layer responses too, for responses.png
        with SummaryWriter(str(run), filename_suffix=".responses") as w:
            for layer in range(3):
                w.add_scalar(events.response_tag(layer), 1.0 + layer, 30)
    assert cli("report", str(sweep)).exit_code == 0
    whole = _caption(sweep / "report" / "depth.svg")
    assert whole.endswith(", 2 seeds; depthstudy " + __version__) and "per point" not in whole
    assert "left out" not in whole  # nothing was
    for shortcut, depth, seed in (("none", 20, 1), ("A", 56, 0)):  # two points now stand for 1 seed, not 2
        bad = sweep / f"{'plain' if shortcut == 'none' else 'resA'}-d{depth}-wd0.0001-s{seed}"
        event_file = sorted(bad.glob("events.out.tfevents.*"))[-1]  # the newest: an older one may end torn
        event_file.write_bytes(event_file.read_bytes()[:-7])
    write_run(sweep, "none", 110, 0, 90.0, 90.0, status="diverged")
    assert cli("report", str(sweep)).exit_code == 0
    for stem, what in (("depth", "point"), ("curves", "curve"), ("responses", "curve")):
        text = _caption(sweep / "report" / f"{stem}.svg")
        assert f", 1-2 seeds per {what}; depthstudy " in text and text.endswith("; 1 diverged, 2 damaged runs left out")


def test_report_md_links_the_figures_in_the_formats_written(sweep, cli, tmp_path):
    """--format pdf wrote figures report.md did not link (it linked PNGs only)."""
    stems = ("curves", "depth")
    for formats, link in (("pdf", "[{0} (PDF)]({0}.pdf)"), ("svg,pdf", "![{0}]({0}.svg)"),
                          ("pdf,svg,png", "![{0}]({0}.png)")):
        out = tmp_path / formats
        assert cli("report", str(sweep), "--style", "paper", "--format", formats, "--out", str(out)).exit_code == 0
        md = (out / "report.md").read_text()
        for stem in stems:
            assert link.format(stem) in md and (out / link.format(stem).rpartition("(")[2].rstrip(")")).exists()
        assert md.count(".pdf)") == (2 if formats == "pdf" else 0)  # one link per figure, the best format only
    (tmp_path / "pdf,svg,png" / "blocks.png").write_bytes(b"not the report's")  # a file no report wrote
    again = cli("report", str(sweep), "--format", "pdf", "--out", str(tmp_path / "pdf,svg,png"))
    assert "; 4 left by an earlier report removed" in again.output  # its PNGs and SVGs would pass for this one's
    assert [p.name for p in (tmp_path / "pdf,svg,png").glob("*.*g")] == ["blocks.png"]


def test_groups_order_numbers_as_numbers():
    """A table of runs with 20, 40, 150 and 1000 iterations had listed them as text: 1000, 150, 20, 40."""
    from pathlib import Path

    from depthstudy.runs import Run, group_runs

    runs = [Run(Path(f"r{it}"), {"model.depth": 20, "model.shortcut": "A", "seed": 0, "schedule.iterations": it},
                "finished") for it in (1000, 150, 20, 40)]
    assert [g.extra for g in group_runs(runs, ["schedule.iterations"])] == [(20,), (40,), (150,), (1000,)]


def test_another_tools_tensorboard_directory_is_not_a_run(sweep):
    """torch's SummaryWriter() default directory under runs/: no config.yaml, no summary.json, no depthstudy marks."""
    from torch.utils.tensorboard import SummaryWriter

    from depthstudy.runs import find_run_dirs

    with SummaryWriter(str(sweep / "Nov27_12-00-00_host")) as w:
        w.add_scalar(events.TRAIN_ERROR, 1.0, 1)
    assert len(find_run_dirs(sweep)) == len(FINAL) and not any("Nov27" in str(d) for d in find_run_dirs(sweep))
