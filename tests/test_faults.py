"""Fault injection: damaged files are named and kept out of the numbers, never read as data."""

import json
import os
import shutil

import pytest

from helpers import TINY, only_run, summary, tmpfs
from depthstudy import events


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """Two finished tiny runs (log every iteration), trained once for this file's tests to damage copies of."""
    from typer.testing import CliRunner

    from depthstudy.cli import app

    root, here = tmp_path_factory.mktemp("trained"), os.getcwd()
    os.chdir(root)
    try:
        for seed in (0, 1):
            args = ["train", *TINY, "model.depth=8", "trainer.log_every=1", f"seed={seed}"]
            assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    finally:
        os.chdir(here)
    return root / "runs"


@pytest.fixture
def trained(cli, tmp_path, trained_once):
    """A finished tiny run and a second one, beside it, to keep the report going: this test's own copies."""
    shutil.copytree(trained_once, tmp_path / "runs")
    return sorted(p for p in (tmp_path / "runs" / "default").iterdir() if p.is_dir())


def report_md(cli, root):
    result = cli("report", str(root))
    return result, (root / "report" / "report.md").read_text()


def test_one_flipped_byte_in_an_event_file_is_reported_not_read(cli, tmp_path, trained):
    run = trained[0]
    (path,) = run.glob("events.out.tfevents.*")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle of the file
    path.write_bytes(bytes(data))
    result, md = report_md(cli, tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert f"{run.name}: event file unreadable: {path.name} is corrupted record at byte" in md
    assert "| 1/2 damaged 1 |" in md  # the other seed is still reported


def test_curves_that_disagree_with_summary_json_are_flagged(cli, tmp_path, trained):
    run = trained[0]
    s = summary(run)
    s["test_error"] += 5.0  # as if the event file held another run's (or a damaged) final point
    (run / "summary.json").write_text(json.dumps(s))
    result, md = report_md(cli, tmp_path / "runs")
    assert result.exit_code == 0
    assert f"{run.name}: final test error" in md and "in summary.json (not averaged)" in md


@pytest.mark.parametrize("content", [b"\x00\xff\x13binary", b"[1, 2]", b"", b"{\"status\": ", b"{}"])
def test_an_unreadable_summary_names_the_file_and_the_rest_goes_on(cli, tmp_path, trained, content):
    run = trained[0]
    (run / "summary.json").write_bytes(content)
    result, md = report_md(cli, tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert f"{run.name}: summary.json unreadable" in md
    dry = cli("sweep", *TINY, "model.depth=8", "seed=0,1", "--dry-run", "--no-estimate")  # planning reads it too
    assert dry.exit_code == 0, dry.output
    (row,) = [r for r in json.loads(cli("runs", str(tmp_path / "runs"), "--json").output) if r["run"] == run.name]
    assert row["status"] == "damaged" and "summary.json unreadable" in row["error"]  # not "new"


def test_an_unreadable_config_names_the_file_and_the_rest_goes_on(cli, tmp_path, trained):
    (trained[0] / "config.yaml").write_bytes(b"\x00\xff: [unclosed")
    result, md = report_md(cli, tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert f"{trained[0].name}: config.yaml unreadable" in md and "| 1/1 |" in md
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(rows) == 2 and "None" not in md  # the header and the one real group: no made-up depth-0 group
    for figure in ("depth.svg", "curves.svg"):  # in no group, yet each figure's caption counts it
        assert "1 damaged run left out" in (tmp_path / "runs" / "report" / figure).read_text()
    # a sweep that would resume it says which file and what to do, in one line
    again = cli("sweep", *TINY, "model.depth=8", "trainer.log_every=1", "seed=0,1")
    assert again.exit_code == 1 and f"{trained[0].name}/config.yaml is unreadable (UnicodeDecodeError)" in again.output
    assert "move its directory away" in again.output and "Traceback" not in again.output


@pytest.mark.parametrize("damage,said", [
    ("gone", "no config.yaml: what the run is cannot be known"),  # was: the run vanished from runs and report
    ("empty", "config.yaml unreadable (empty)"),  # was: averaged, or 'Number of columns must be a positive integer'
    ("torn", "config.yaml lacks seed"),  # parses, but half of it is gone: was averaged
    ("depth eight", "config.yaml lacks model.depth"),  # was: ValueError for the whole report
])
def test_a_missing_or_incomplete_config_is_a_damaged_run_never_averaged(cli, tmp_path, trained, damage, said):
    config = trained[0] / "config.yaml"
    text = config.read_text()
    if damage == "gone":
        config.unlink()
    elif damage == "empty":
        config.write_text("")
    elif damage == "torn":
        config.write_text(text[:text.index("\nseed:")])
    else:
        config.write_text(text.replace("depth: 8", "depth: eight", 1))
    result, md = report_md(cli, tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert f"{trained[0].name}: {said}" in md and "| 1/1 |" in md  # the other seed is the group's one run
    assert "1 damaged run left out" in (tmp_path / "runs" / "report" / "depth.svg").read_text()
    (row,) = [r for r in json.loads(cli("runs", str(tmp_path / "runs"), "--json").output) if r["run"] == trained[0].name]
    assert row["status"] == "damaged" and said.split(":")[0] in row["error"]  # runs says what report says
    if damage == "gone":  # the rerun refuses to guess what the run was
        again = cli("train", *TINY, "model.depth=8", "trainer.log_every=1", "seed=0")
        assert again.exit_code == 2 and "holds a trained run but no config.yaml" in again.output


def test_a_finished_run_whose_event_files_are_gone_is_not_averaged(cli, tmp_path, trained):
    """It had been counted 2/2 with one seed's numbers and no problem line."""
    for f in trained[0].glob("events.out.tfevents.*"):
        f.unlink()
    result, md = report_md(cli, tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert f"{trained[0].name}: no training curve in its event files" in md and "| 1/2 damaged 1 |" in md


@pytest.mark.parametrize("kept,said", [
    (lambda step: step >= 4, "its training curve starts at iteration 4"),  # event files deleted, then resumed
    (lambda step: step not in (3, 4), "its training curve has no points between iterations 2 and 5"),  # an older file cut short
])
def test_a_training_curve_that_lost_points_is_not_averaged(cli, tmp_path, trained, kept, said):
    """The report had drawn a straight line over the lost iterations and averaged the run."""
    from torch.utils.tensorboard import SummaryWriter

    curves = events.read_scalars(trained[0])
    for f in trained[0].glob("events.out.tfevents.*"):
        f.unlink()
    with SummaryWriter(str(trained[0])) as w:  # what is left: the same points, some lost
        for tag, points in curves.items():
            for step, value in points:
                if kept(step) or tag != events.TRAIN_ERROR and tag != events.TRAIN_LOSS:
                    w.add_scalar(tag, value, step)
    result, md = report_md(cli, tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert f"{trained[0].name}: {said}" in md and "| 1/2 damaged 1 |" in md


def test_a_log_every_lowered_on_resume_is_no_gap():
    """log_every 1000, stopped at 500 before its first point, resumed with 20: its curve starts at 520, whole."""
    from pathlib import Path

    from depthstudy.runs import Run, gaps

    curve = {events.TRAIN_ERROR: [(step, 1.0) for step in range(520, 1001, 20)]}
    run = Run(Path("r"), {"trainer.log_every": 20}, "finished", curves=curve,
              summary={"status": "finished", "log_every_used": [20, 1000]})
    assert gaps(run) == []
    run.summary = {"status": "finished", "log_every_used": [20]}  # one cadence all along: 500 iterations are lost
    assert "starts at iteration 520" in gaps(run)[0]


def test_a_summary_field_of_the_wrong_type_is_a_damaged_run_not_a_crash(cli, tmp_path, trained):
    s = summary(trained[0])
    s["test_error"] = "abc"
    (trained[0] / "summary.json").write_text(json.dumps(s))
    listed = cli("runs", str(tmp_path / "runs"))
    assert listed.exit_code == 0 and "damaged" in listed.output, listed.output  # was: ValueError, exit 1
    result, md = report_md(cli, tmp_path / "runs")
    assert result.exit_code == 0 and f"{trained[0].name}: summary.json unreadable" in md


def test_a_lost_summary_is_rebuilt_whole_by_running_the_command_again(cli, tmp_path, trained):
    """The run resumes at its last iteration from its checkpoint: nothing to train, so the last training numbers
    come from its event files; the held-out errors from a fresh evaluation of the same weights."""
    run = trained[0]
    before = summary(run)
    (run / "summary.json").unlink()
    assert cli("train", *TINY, "model.depth=8", "trainer.log_every=1", "seed=0").exit_code == 0
    after = summary(run)
    assert (after["status"], after["iterations"]) == ("finished", before["iterations"])
    for key in ("train_loss", "train_error", "val_error", "test_error"):
        assert after[key] == pytest.approx(before[key], rel=1e-6), key


def test_a_run_without_summary_json_counts_only_if_its_curves_reach_the_end(cli, tmp_path, trained):
    """No summary.json: read as another writer's run, but one whose curves stop short is not a result."""
    from omegaconf import OmegaConf

    run = trained[0]
    (run / "summary.json").unlink()
    result, md = report_md(cli, tmp_path / "runs")
    assert "unreadable" not in md and "| 2/2 |" in md  # complete curves: a result
    (row,) = [r for r in json.loads(cli("runs", str(tmp_path / "runs"), "--json").output) if r["run"] == run.name]
    assert row["status"] == "external" and "no summary.json" in row["error"]
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.schedule.iterations = 12  # planned 12, logged 6
    OmegaConf.save(cfg, run / "config.yaml")
    result, md = report_md(cli, tmp_path / "runs")
    assert f"{run.name}: no summary.json, and the event files end at iteration 6 of 12" in md and "| 1/1 |" in md


def test_a_torn_tail_in_a_superseded_event_file_stays_in_the_report(cli, tmp_path, trained):
    """A resumed run: the first process died while writing its last record; the resumed process wrote a newer file."""
    run = trained[0]
    (first,) = run.glob("events.out.tfevents.*")
    newer = run / (first.name.replace("events.out.tfevents.", "events.out.tfevents.9") )
    shutil.copy(first, newer)  # sorts after: the resumed process's file
    first.write_bytes(first.read_bytes()[:-5])  # torn last record
    assert events.read_scalars(run)[events.TRAIN_ERROR]
    result, md = report_md(cli, tmp_path / "runs")
    assert result.exit_code == 0 and "unreadable" not in md
    newer.write_bytes(newer.read_bytes()[:-5])  # the newest file torn: the run's own final data is damaged
    result, md = report_md(cli, tmp_path / "runs")
    assert f"{newer.name} is truncated at byte" in md


def test_a_diverged_run_writes_strict_json(cli, tmp_path):
    assert cli("train", *TINY, "model.depth=8", "optim.lr=1e12").exit_code == 0
    text = (only_run(tmp_path) / "summary.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    s = json.loads(text)
    assert s["status"] == "diverged" and s["train_loss"] is None
    result, md = report_md(cli, tmp_path / "runs")  # a result, not damage: its curves end before the diverged point
    # exit 1: nothing finished (issue 27), but the diverged run is a result in report.md, not damage
    assert result.exit_code == 1 and "diverged at iteration" in md and "damaged" not in md


@pytest.fixture
def small_disk(tmp_path):
    """A 600 KiB tmpfs (root only): a checkpoint of ResNet-20 (about 1 MB) cannot fit."""
    yield from tmpfs(tmp_path, "600k")


def test_only_an_error_with_a_disk_errno_is_called_a_full_disk(tmp_path, monkeypatch):
    """A nearly full disk does not make every error a disk error: a bug stays itself (with its traceback)."""
    from collections import namedtuple

    from depthstudy import train
    from depthstudy.errors import DepthstudyError

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**20, 2**20))  # 1 MiB free

    def failing(message):
        def _train(*args, **kwargs):
            raise (OSError(28, message) if "space" in message else RuntimeError(message))
        return _train

    monkeypatch.setattr(train, "_train", failing("a bug"))
    with pytest.raises(RuntimeError, match="a bug"):
        train.train(None, tmp_path / "run")
    monkeypatch.setattr(train, "_train", failing("No space left on device"))
    with pytest.raises(DepthstudyError, match="no space left on the device"):
        train.train(None, tmp_path / "run")


def test_a_full_disk_is_one_line_and_the_summary_keeps_the_true_iteration_count(cli, small_disk):
    result = cli("train", "model.depth=20", "schedule.iterations=30", "schedule.milestones=[20]",
                 "trainer.ckpt_every=10", "trainer.progress=none", "trainer.threads=1", f"out_dir={small_disk}")
    assert result.exit_code == 1 and "no space left on the device" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "enforce fail" not in result.output
    assert "it had none yet" in result.output  # its first checkpoint: no "previous checkpoint is kept"
    (run,) = (small_disk / "default").iterdir()
    s = summary(run)
    assert s["status"] == "failed" and s["iterations"] == 0  # its first checkpoint failed: a resume starts at 0
    assert s["history"][-1]["to_iteration"] == 0
    assert not list(run.glob(".*.tmp"))  # the torn temp file is gone
