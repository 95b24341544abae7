"""What a user at an 80-column terminal, a Hydra habit or a notebook relies on (issue 30)."""

from __future__ import annotations

import json
import re

import pytest
from omegaconf import OmegaConf

from depthstudy import events
from depthstudy.config import compose


def write_run(root, overrides, train_err=12.345, test_err=23.456, status="finished"):
    """A finished run as train.py leaves it: config.yaml, event files, summary.json."""
    from torch.utils.tensorboard import SummaryWriter

    cfg = compose(overrides)
    run = root / cfg.run_name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    w = SummaryWriter(str(run))
    for step in (10, 20):
        for tag, value in ((events.TRAIN_ERROR, train_err), (events.VAL_ERROR, test_err), (events.TEST_ERROR, test_err)):
            w.add_scalar(tag, value, step)
    w.close()
    (run / "summary.json").write_text(json.dumps({
        "status": status, "iterations": 20, "total_iterations": 64000, "train_error": train_err,
        "val_error": test_err, "test_error": test_err, "wall_time_s": 12345.678}))
    return run


@pytest.fixture
def study(tmp_path):
    """The paper's recipe at three depths, two families, two seeds: report sets Table 6 beside it."""
    root = tmp_path / "runs" / "he2015"
    for depth in (20, 56, 110):
        for shortcut in ("none", "A"):
            for seed in (0, 1):
                write_run(root, ["experiment=he2015", f"model.depth={depth}", f"model.shortcut={shortcut}",
                                 f"seed={seed}"], train_err=depth / 10 + seed, test_err=depth / 5 + seed)
    return root


def _lines(output: str) -> list[str]:
    return output.splitlines()


def _terminal(monkeypatch, columns: int) -> None:
    """The CLI's tables printed as on a terminal of this width (CliRunner's output is a pipe: 160 columns)."""
    from rich.console import Console

    monkeypatch.setattr("depthstudy.cli._console", lambda: Console(width=columns))


@pytest.mark.parametrize("columns", [80, 200])
def test_runs_fits_the_terminal_with_every_run_name_whole(study, cli, monkeypatch, columns):
    _terminal(monkeypatch, columns)
    result = cli("runs", str(study))
    assert result.exit_code == 0, result.output
    assert max(map(len, _lines(result.output))) <= columns
    names = sorted(p.name for p in study.iterdir())
    shown = [re.split(r"\s*│\s*", line)[1] for line in _lines(result.output) if line.startswith("│ ")]
    assert sorted(shown) == names  # whole, never plain-d2…
    assert "12 runs under" in result.output and "…" not in result.output
    assert "23.00" in result.output  # numbers whole
    if columns == 200:
        assert "time s" in result.output and "not shown" not in result.output
    else:  # what did not fit is named, and where to read it
        assert "not shown at 80 columns: time s" in result.output and "--json" in result.output


def test_one_run_is_one_run(tmp_path, cli):
    write_run(tmp_path / "runs" / "one", ["model.depth=8"])
    assert "1 run under" in cli("runs", str(tmp_path / "runs" / "one")).output


@pytest.mark.parametrize("columns", [80, 200])
def test_report_table_fits_the_terminal_with_families_and_numbers_whole(study, cli, monkeypatch, columns):
    _terminal(monkeypatch, columns)
    result = cli("report", str(study), "--format", "png")
    assert result.exit_code == 0, result.output
    assert max(map(len, _lines(result.output))) <= columns
    rows = [re.split(r"\s*│\s*", line.strip("│ ")) for line in _lines(result.output) if line.startswith("│ ")]
    assert {(r[0], r[1]) for r in rows} == {(f, d) for f in ("plain", "residual (A)") for d in ("20", "56", "110")}
    assert {r[2] for r in rows} == {"2/2"}
    numbers = {cell for r in rows for cell in r[3:] if re.fullmatch(r"[-+]?\d+\.\d\d", cell)}
    assert {"2.50", "22.50", "+15.89", "6.61"} <= numbers  # whole, the gap to Table 6 included
    assert "…" not in result.output
    assert ("not shown at 80 columns: paper;" in result.output) == (columns == 80)  # "He 2015 Table 6": report.md


def test_a_table_too_wide_drops_columns_in_order_and_says_so():
    from rich.console import Console
    from rich.table import Table

    from depthstudy.tables import Fitted

    table = Table(title="t")
    for h in ("run", "status", "a long header", "b", "c"):
        table.add_column(h)
    table.add_row("resA-d110-wd0.0001-s0-lr0.2-6f3a2b", "running (pid 12345)", "123456.78", "1.00", "2.00")
    console = Console(width=60, record=True)
    console.print(Fitted(table, drop=("c", "a long header", "b")))
    text = console.export_text()
    assert max(map(len, text.splitlines())) <= 60
    assert "resA-d110-wd0.0001-s0-lr0.2-6f3a2b" in text and "123456.78" not in text
    assert "not shown at 60 columns: c, a long header" in text and "1.00" in text


def test_eval_lines_break_between_splits_never_inside_a_number():
    from depthstudy.tables import fields

    parts = ["runs/quick/resA-d56-wd0.0001-s0", "[300/300 it]", "train 2.67% (loss 0.0912)",
             "val 3.10% (loss 0.1021)", "test 4.25% (loss 0.1500)"]
    narrow = fields(parts, 80)
    assert max(map(len, narrow.splitlines())) <= 80 and len(narrow.splitlines()) == 2
    assert all(p in narrow for p in parts)
    assert fields(parts, 200) == "  ".join(parts)


@pytest.mark.parametrize("command", ["train", "sweep", "config", "runs", "eval", "report", "bench"])
def test_no_help_text_is_cut_at_80_columns(command):
    from typer.testing import CliRunner

    from depthstudy.cli import app

    output = CliRunner().invoke(app, [command, "--help"], terminal_width=80, env={"COLUMNS": "80"}).output
    assert "…" not in output and max(map(len, output.splitlines())) <= 80


@pytest.mark.parametrize("args,said", [
    (["sweep", "quick"], "quick is not an override: overrides are key=value; use experiment=quick"),
    (["train", "cifar10"], "use data=cifar10"),
    (["sweep", "quik"], "did you mean experiment=quick?"),
    (["train", "experiment=quik"], "experiment=quik is not an option of experiment; did you mean experiment=quick?"),
    (["sweep", "experiment=he2015fig6", "--dry-run"], "did you mean experiment=he2015_fig6?"),
    (["train", "data=cifar"], "did you mean data=cifar10?"),
    (["train", "--cfg", "job"], "--cfg is Hydra's flag, not one of `depthstudy train`: `depthstudy config OVERRIDES`"),
    (["train", "-m", "model.depth=20,32"], "`depthstudy sweep OVERRIDES` trains the grid"),
    (["sweep", "--multirun"], "`depthstudy sweep` does that already; drop --multirun"),
    (["train", "--config-name=he2015"], "a preset is chosen by experiment=NAME"),
])
def test_hydra_habits_get_a_pointer_in_one_line(cli, args, said):
    result = cli(*args)
    assert result.exit_code == 2 and said in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: ")


@pytest.mark.parametrize("args,said", [
    (["clean"], "error: No such command 'clean'; the commands: train, sweep, config, runs, diff, eval, report, bench"),
    (["trian"], "error: No such command 'trian'; did you mean `depthstudy train`?"),
    (["runs", "--jsn"], "error: No such option: --jsn"),
    (["eval"], "error: Missing argument"),
])
def test_clicks_usage_errors_are_one_line_like_every_other(args, said):
    """Through the installed entry point (CliRunner would not show click's own formatting)."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, "-c", "from depthstudy.cli import main; main()", *args], capture_output=True,
                       text=True)
    assert p.returncode == 2 and p.stderr.startswith(said) and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert "╭" not in p.stderr and "Traceback" not in p.stderr


def test_the_estimate_is_never_negative_and_a_negative_cache_entry_is_measured_again(tmp_path, monkeypatch):
    """Start-up is a difference of two timings: on a busy machine the second run can be slower than the first."""
    import subprocess
    import types

    from depthstudy import estimate
    from depthstudy.config import without_hydra

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    children = []

    def child(*args, **kwargs):
        children.append(args)
        return types.SimpleNamespace(stdout=json.dumps({"import_s": -0.883, "job_s": 0.5,
                                                         "status": ["finished", "finished"]}))

    monkeypatch.setattr(subprocess, "run", child)
    cfg = without_hydra(compose(["model.depth=8"]))
    first = estimate.startup_seconds(cfg, [], step_s=0.0)
    assert first.import_s == 0.0 and first.job_s >= 0 and not first.cached
    from depthstudy.rundir import read_cached, write_cached

    assert all(v >= 0 for entry in read_cached(estimate.CACHE).values() for v in entry)
    write_cached(estimate.CACHE, {k: [-0.883, 0.5] for k in read_cached(estimate.CACHE)})  # an older version's entry
    again = estimate.startup_seconds(cfg, [], step_s=0.0)
    assert len(children) == 2 and again.import_s == 0.0 and not again.cached


def test_a_dry_run_over_its_time_budget_times_one_net_and_scales_the_rest_by_macs(cli, tmp_path, monkeypatch):
    """he2015_fig6 (CIFAR nets up to ResNet-110) on a CPU: one net timed, nine scaled, said line by line and in the
    total; no start-up measured for runs of hours."""
    from depthstudy import estimate

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    timed = []
    monkeypatch.setattr(estimate, "step_seconds", lambda cfg, device: timed.append(cfg.run_name) or 2.0)
    monkeypatch.setattr(estimate, "CALIBRATION_BUDGET_S", 1.0)
    monkeypatch.setattr(estimate, "busy_cpu", lambda: None)  # the timing is kept, whatever this machine's load
    monkeypatch.setattr(estimate, "startup_seconds", lambda *a, **k: pytest.fail("start-up measured"))
    _terminal(monkeypatch, 200)
    result = cli("sweep", "experiment=he2015_fig6", "--dry-run")
    assert result.exit_code == 0, result.output
    assert timed == ["plain-d20-wd0.0001-s0"]  # the smallest net, once
    assert "calibrating plain-d20-wd0.0001-s0" in result.output
    scaled = re.search(r"plain-d110-wd0.0001-s0: ([\d.]+) s per iteration, not timed: plain-d20-wd0.0001-s0's x "
                       r"([\d.]+) \(MACs\)", result.output)
    assert scaled and float(scaled.group(1)) == pytest.approx(2.0 * float(scaled.group(2)), abs=0.1)
    assert "9 of 10 runs not timed: scaled from a timed net by MACs" in " ".join(result.output.split())
    cached = json.loads((tmp_path / "cache" / "depthstudy" / estimate.CACHE).read_text())
    assert list(cached.values()) == [2.0]  # only the timed step is kept, never a scaled one


def test_a_slow_step_ends_the_warm_up_and_is_timed_once(monkeypatch):
    from depthstudy import estimate
    from depthstudy.config import without_hydra

    steps = []
    monkeypatch.setattr(estimate, "train_step", lambda *a: steps.append(1))
    monkeypatch.setattr(estimate, "SLOW_STEP_S", -1.0)  # every step is slow
    estimate.step_seconds(without_hydra(compose(["model.depth=8", "trainer.threads=1"])), __import__("torch").device("cpu"))
    assert len(steps) == 2  # one warm-up step, one timed (a fast net: 2 + 6)


def test_dir_of_the_package_lists_its_lazy_api():
    import depthstudy

    assert {"train_run", "load_runs", "load_curves", "write_report", "__version__"} <= set(dir(depthstudy))


def test_runs_json_has_each_runs_config_keys(study, cli):
    rows = json.loads(cli("runs", str(study), "--json").output)
    assert {(r["config"]["model.depth"], r["config"]["model.shortcut"], r["config"]["seed"]) for r in rows} == {
        (d, s, seed) for d in (20, 56, 110) for s in ("none", "A") for seed in (0, 1)}


def test_runs_and_report_default_to_the_same_directory():
    from typer.main import get_command

    from depthstudy.cli import app

    commands = get_command(app).commands
    defaults = {name: next(p.default for p in commands[name].params if p.name == "runs_dir") for name in ("runs", "report")}
    assert str(defaults["runs"]) == str(defaults["report"]) == "runs"


def test_a_sweep_ends_with_the_next_commands(cli, tmp_path):
    from helpers import TINY

    result = cli("sweep", "model.depth=8", *TINY, "name=next")
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == ("next: depthstudy report runs/next   |   tensorboard --logdir "
                                                      "runs/next   |   depthstudy runs runs/next")
    again = cli("sweep", "model.depth=8", *TINY, "name=next")  # nothing to train: the same pointer
    assert again.output.strip().splitlines()[-1].startswith("next: depthstudy report runs/next")


def test_a_run_records_its_provenance_and_keeps_a_log_of_its_output(cli, tmp_path):
    import subprocess
    from pathlib import Path

    import torch

    import depthstudy
    from helpers import TINY, only_run, summary

    assert cli("train", *TINY).exit_code == 0
    run = only_run(tmp_path)
    s = summary(run)
    prov = s["provenance"]
    assert (prov["depthstudy"], prov["torch"]) == (depthstudy.__version__, torch.__version__.split("+")[0]) or \
        prov["torch"] == torch.__version__
    head = subprocess.run(["git", "-C", str(Path(depthstudy.__file__).resolve().parent.parent), "rev-parse", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    assert head and prov["commit"].split("+")[0] == head  # the tests run from a checkout
    assert prov["host"] and prov["python"] and s["history"][-1]["provenance"] == prov  # each process's own
    log = (run / "train.log").read_text()
    assert "finished, error % train" in log and "it 6/6" in log  # written with trainer.progress=none too
    assert not (run / ".lock").exists()


def test_tensorboard_lists_the_error_groups_first_and_older_perf_tags_are_still_read(tmp_path):
    """TensorBoard sorts tag groups and opens the first: test/, train/, val/ (errors), never perf/."""
    from torch.utils.tensorboard import SummaryWriter

    tags = [events.TRAIN_ERROR, events.VAL_ERROR, events.TEST_ERROR, events.TRAIN_LOSS, events.LR, events.THROUGHPUT,
            events.EVAL_TIME, events.response_tag(0)]
    groups = sorted({t.split("/")[0] for t in tags})
    assert groups[:3] == ["test", "train", "val"]
    with SummaryWriter(str(tmp_path)) as w:  # a run written before: its perf/ tags read under today's names
        w.add_scalar("perf/images_per_s", 100.0, 2)
        w.add_scalar("perf/eval_s", 1.5, 2)
    scalars = events.read_scalars(tmp_path)
    assert scalars[events.THROUGHPUT] == [(2, 100.0)] and scalars[events.EVAL_TIME] == [(2, 1.5)]


def test_every_depth_gets_a_colour_far_from_every_other():
    """Distance in CIELAB (DE76), the closest pair: the quick study's two depths (20/44), three (20/32/56) and the paper's five
    as far apart as the colour-blind-safe palette allows (its earlier order: 59.5 and 26.4)."""
    import numpy as np
    from matplotlib.colors import to_rgb

    from depthstudy.figures import _depth_colours

    def lab(hex_colour):
        rgb = np.array(to_rgb(hex_colour))
        rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
        xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ rgb
        f = np.cbrt(xyz / np.array([0.9505, 1.0, 1.089]))
        return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])

    for depths, least in (([20, 44], 65), ([20, 32, 56], 65), ([20, 32, 44, 56, 110], 30), ([20, 32, 44, 56, 110, 164, 1202], 25)):
        colours = [lab(c) for c in _depth_colours(depths).values()]
        closest = min(np.linalg.norm(a - b) for i, a in enumerate(colours) for b in colours[i + 1:])
        assert closest > least, (depths, closest)
