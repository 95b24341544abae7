"""A run directory gives only its own run's numbers (issue 27): edited configs and copies are named, a forced resume
leaves a trace, symbolic links are followed alike, no path escapes, and output or a disk going away ends in one line."""

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from helpers import TINY, summary, tmpfs
from depthstudy import api, events
from depthstudy.cli import app
from depthstudy.rundir import run_lock

@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Two finished tiny runs (seeds 0 and 1), trained once for the module."""
    root = tmp_path_factory.mktemp("made")
    for seed in (0, 1):
        result = CliRunner().invoke(app, ["train", *TINY, "model.depth=8", f"seed={seed}", f"out_dir={root / 'runs'}"],
                                    catch_exceptions=False)
        assert result.exit_code == 0, result.output
    return root / "runs"


@pytest.fixture
def runs(made, tmp_path):
    """The two runs, copied into this test's working directory (runs/default/...), where TINY's commands find them."""
    shutil.copytree(made, tmp_path / "runs", symlinks=True)
    return sorted(p for p in (tmp_path / "runs" / "default").iterdir() if p.is_dir())


def rows(cli, root="runs"):
    result = cli("runs", root, "--json")
    assert result.exit_code == 0, result.output
    return {r["run"]: r for r in json.loads(result.output)}


def one_line_error(result, code):
    assert result.exit_code == code, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output, result.output
    return result.output


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


# --- 1. what a run is: config.yaml must agree with summary.json ---

def test_an_edited_config_is_a_damaged_run_in_every_command(cli, tmp_path, runs):
    run, other = runs
    edit(run / "config.yaml", "  depth: 8\n", "  depth: 14\n")
    said = "config.yaml was changed after the run trained"
    result = cli("report", "runs")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "runs" / "report" / "report.md").read_text()
    assert f"{run.name}: {said}" in md and "| 14 | 0/1 damaged 1 |" in md and "| 8 | 1/1 |" in md
    assert rows(cli)[run.name]["status"] == "damaged" and said in rows(cli)[run.name]["error"]
    assert api.load_runs("runs").set_index("run").loc[run.name, "status"] == "damaged"
    assert said in one_line_error(cli("eval", str(run)), 2)  # was torch's multi-KB state_dict error
    assert said in one_line_error(cli("train", *TINY, "model.depth=8"), 2)  # its command does not continue it
    assert said in one_line_error(cli("sweep", *TINY, "model.depth=8", "seed=0,1", "--dry-run"), 2)
    assert rows(cli)[other.name]["status"] == "finished"


def test_a_run_made_before_config_hash_is_still_checked_by_its_name(cli, tmp_path, runs):
    run = runs[0]
    s = summary(run)
    del s["config_hash"]
    (run / "summary.json").write_text(json.dumps(s))
    assert rows(cli)[run.name]["status"] == "finished"
    edit(run / "config.yaml", "  depth: 8\n", "  depth: 14\n")
    row = rows(cli)[run.name]
    assert row["status"] == "damaged" and "config.yaml says resA-d14-wd0.0001-s0 but the run was made as" in row["error"]


def test_a_runtime_key_edited_in_config_yaml_is_no_damage(cli, made, runs):
    edit(runs[0] / "config.yaml", f"out_dir: {made}\n", "out_dir: /moved\n")  # where it ran, not what it computed
    assert rows(cli)[runs[0].name]["status"] == "finished"


@pytest.mark.parametrize("field,value,said", [("status", "finishd", "says status 'finishd', which depthstudy never"),
                                              ("test_error", float("nan"), "says test_error is nan")])
def test_a_summary_depthstudy_did_not_write_is_damaged_and_runs_json_stays_json(cli, tmp_path, runs, field, value, said):
    run = runs[0]
    (run / "summary.json").write_text(json.dumps({**summary(run), field: value}))  # json.dumps writes bare NaN
    listed = cli("runs", "runs", "--json")
    assert "NaN" not in listed.output
    row = {r["run"]: r for r in json.loads(listed.output)}[run.name]
    assert row["status"] == "damaged" and said in row["error"]
    result = cli("report", "runs")
    assert f"{run.name}: summary.json {said}" in (tmp_path / "runs" / "report" / "report.md").read_text()
    assert "UserWarning" not in result.output


# --- 2. what a point is: a configuration and seed counts once ---

def test_a_copied_run_directory_is_counted_once_and_named(cli, tmp_path, runs):
    run, other = runs
    shutil.copytree(run, run.parent / (run.name + ".bak"))
    result = cli("report", "runs")
    assert result.exit_code == 0, result.output
    md = (tmp_path / "runs" / "report" / "report.md").read_text()
    assert "| 8 | 2/3 copy 1 |" in md
    assert f"{run.name}.bak: the same configuration and seed as {run.relative_to(tmp_path)}, which is counted" in md
    (table,) = json.loads((tmp_path / "runs" / "report" / "table.json").read_text())
    assert table["test_n"] == 2 and table["test_error_mean"] == pytest.approx(
        (summary(run)["test_error"] + summary(other)["test_error"]) / 2)
    listed = cli("runs", "runs")
    assert "finished (copy)" in listed.output and f"{run.name}.bak: the same configuration and seed as" in listed.output
    frame = api.load_runs("runs").set_index("run")
    assert frame.loc[run.name + ".bak", "status"] == "copy" and frame.loc[run.name, "status"] == "finished"


def test_two_sweeps_with_the_same_runs_are_one_set_of_points(cli, tmp_path, runs):
    shutil.copytree(tmp_path / "runs" / "default", tmp_path / "runs" / "again")  # another name=, the same configs
    cli("report", "runs")
    md = (tmp_path / "runs" / "report" / "report.md").read_text()
    assert "| 8 | 2/4 copy 2 |" in md and "2 seeds" in md


# --- 3. a run's history ---

@contextmanager
def stopping_at_the_first_iteration():
    """As if Ctrl-C came during the first iteration: the run saves a checkpoint at iteration 1 and ends interrupted."""
    from depthstudy import train

    class Stop:
        requested = True

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train, "stop_on_interrupt", contextmanager(lambda: (yield Stop())))
        yield


def test_a_forced_resume_onto_another_config_is_recorded(cli, tmp_path):
    with stopping_at_the_first_iteration():
        assert cli("train", *TINY, "model.depth=8").exit_code == 130
    (run,) = (tmp_path / "runs" / "default").iterdir()
    assert summary(run)["status"] == "interrupted"
    result = cli("train", *TINY, "model.depth=8", "optim.lr=0.05", "trainer.force_resume=true", f"hydra.run.dir={run}")
    assert result.exit_code == 0, result.output
    first, second = summary(run)["history"]
    assert (first["from_iteration"], first["to_iteration"], first["config_changes"]) == (0, 1, [])
    assert (second["from_iteration"], second["to_iteration"]) == (1, 6)
    assert second["config_changes"] == ["optim.lr: 0.1 -> 0.05"]
    listed = cli("runs", "runs")
    assert "finished (forced)" in listed.output and "at iteration 1: optim.lr: 0.1 -> 0.05" in listed.output
    cli("report", "runs")
    md = (tmp_path / "runs" / "report" / "report.md").read_text()
    assert f"Resumed with another config (trainer.force_resume): {run.name} at iteration 1: optim.lr: 0.1 -> 0.05" in md
    assert any(b"resumed_with_changes" in f.read_bytes() for f in run.glob(events.EVENT_FILES))  # the HPARAMS tab


def test_a_process_killed_between_the_summary_and_the_config_of_a_forced_resume_is_resumed(cli, tmp_path, runs):
    """A forced resume writes summary.json (with the new config_hash) before config.yaml: killed in between, the same
    command goes on."""
    from depthstudy.rundir import config_hash, read_config

    run = runs[0]
    (run / "summary.json").write_text(json.dumps({**summary(run), "status": "interrupted"}))
    config = read_config(run)
    config["optim"]["lr"] = 0.05
    (run / "summary.json").write_text(json.dumps({**summary(run), "config_hash": config_hash(config)}))
    assert rows(cli)[run.name]["status"] == "damaged"
    result = cli("train", *TINY, "model.depth=8", "optim.lr=0.05", "trainer.force_resume=true", f"hydra.run.dir={run}")
    assert result.exit_code == 0, result.output
    assert rows(cli)[run.name]["status"] == "finished"


def test_a_rerun_that_trains_nothing_leaves_hydra_files_alone(cli, runs):
    before = {p.name: p.read_text() for p in (runs[0] / ".hydra").iterdir()}
    result = cli("train", *TINY, "model.depth=8", "trainer.eval_batch_size=100")
    assert result.exit_code == 0 and "already finished" in result.output
    assert {p.name: p.read_text() for p in (runs[0] / ".hydra").iterdir()} == before


# --- 4. symbolic links ---

def test_a_symlinked_run_directory_is_read_by_every_command(cli, tmp_path, runs):
    run = runs[0]
    moved = tmp_path / "elsewhere" / run.name
    moved.parent.mkdir()
    run.rename(moved)
    run.symlink_to(moved)
    (run.parent / "loop").symlink_to(run.parent)  # a link back up: read once, no endless walk
    assert set(rows(cli)) == {r.name for r in runs}
    assert cli("report", "runs").exit_code == 0
    assert "| 8 | 2/2 |" in (tmp_path / "runs" / "report" / "report.md").read_text()
    dry = cli("sweep", *TINY, "model.depth=8", "seed=0,1", "--dry-run", "--no-estimate")
    assert dry.exit_code == 0 and dry.output.count("finished") == 2, dry.output


# --- 5. paths ---

@pytest.mark.parametrize("command,setting,said", [
    ("train", "hydra.run.dir=", "hydra.run.dir is empty"),
    ("sweep", "hydra.sweep.dir=", "hydra.sweep.dir is empty"),
    ("sweep", "hydra.sweep.subdir=../../esc", "hydra.sweep.subdir='../../esc' must name a directory inside"),
    ("sweep", "hydra.sweep.subdir=/tmp/esc", "must name a directory inside hydra.sweep.dir"),
])
def test_no_hydra_path_puts_a_run_outside_its_place(cli, tmp_path, command, setting, said):
    (tmp_path / "a" / "b").mkdir(parents=True)
    os.chdir(tmp_path / "a" / "b")
    result = cli(command, *TINY, setting, "out_dir=o1")
    assert said in one_line_error(result, 2)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing written anywhere


# --- 10. lower ---

def test_a_report_where_no_run_finished_exits_1(cli, tmp_path):
    assert cli("train", *TINY, "model.depth=8", "optim.lr=1e12").exit_code == 0  # diverges
    result = cli("report", "runs")
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == ("error: none of the 1 runs under runs finished (see above): the "
                                                      "report has no number to show")
    assert "diverged at iteration" in (tmp_path / "runs" / "report" / "report.md").read_text()


def test_eval_of_good_and_bad_runs_prints_the_good_and_names_the_bad(cli, tmp_path, runs):
    result = cli("eval", str(runs[0]), "nope", str(runs[1]))
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()  # a run's line may break between splits on a narrow terminal
    assert [ln.split()[0] for ln in lines if ln.startswith("/")] == [str(runs[0]), str(runs[1])]
    assert lines[-1].startswith("error: 1 of 3 runs not evaluated: nope is not a run directory")


def test_a_dead_run_is_crashed_even_if_its_pid_lives_again_or_its_lock_file_is_gone(cli, runs):
    import socket

    for run in runs:
        (run / "summary.json").write_text(json.dumps({**summary(run), "status": "running"}))
    (runs[0] / ".lock").write_text(f"{os.getpid()}@{socket.gethostname()}")  # a live pid that holds no lock on it
    (runs[1] / ".lock").unlink(missing_ok=True)  # a finished run has none: its process removed it
    assert [rows(cli)[r.name]["status"] for r in runs] == ["crashed", "crashed"]
    with run_lock(runs[0]):  # the process that trains a run holds its lock
        assert rows(cli)[runs[0].name]["status"] == "running"
    said = one_line_error(cli("train", *TINY, "model.depth=14", f"model.init_from={runs[0]}"), 2)
    assert "that run is crashed, not finished" in said


def test_a_refusal_suggests_only_what_would_work(cli, runs):
    said = one_line_error(cli("train", *TINY, "model.depth=14", f"hydra.run.dir={runs[0]}"), 2)
    assert "holds a run of another model" in said and "choose another hydra.run.dir=" in said
    assert "force_resume" not in said and "name=" not in said  # a force_resume here is refused too
    said = one_line_error(cli("train", *TINY, "model.depth=14", f"hydra.run.dir={runs[0]}",
                              "trainer.force_resume=true"), 2)
    assert "even with trainer.force_resume=true" in said


# --- 6 and 8: output and disks that go away (real processes) ---

def depthstudy(*args, cwd, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "depthstudy", *args], cwd=cwd, text=True, **kwargs)


def test_a_closed_pipe_does_not_fail_the_run(tmp_path):
    talking = [a for a in TINY if not a.startswith("trainer.progress=")] + ["trainer.progress=lines"]
    proc = depthstudy("train", *talking, "model.depth=8", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()  # `| head -1`
    proc.stdout.close()
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert proc.stderr.read() == ""
    (run,) = (tmp_path / "runs" / "default").iterdir()
    assert summary(run)["status"] == "finished"
    proc = depthstudy("config", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()
    # silent; exit 1 where a write met the closed pipe, 0 where all of it fit the pipe before `head` closed it
    assert proc.wait(timeout=300) in (0, 1) and proc.stderr.read() == ""


def test_a_file_size_limit_is_named_and_the_count_stays_true(tmp_path):
    import resource

    limit = lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))  # noqa: E731  the checkpoint: 600 KB
    proc = depthstudy("train", *TINY, "model.depth=8", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      preexec_fn=limit)
    assert proc.wait(timeout=300) == 1
    err = proc.stderr.read()
    assert len(err.strip().splitlines()) == 1 and "EFBIG" in err and "ulimit -f" in err, err
    assert "free some space" not in err
    (run,) = (tmp_path / "runs" / "default").iterdir()
    s = summary(run)
    assert s["status"] == "failed" and s["iterations"] == 0  # its first checkpoint (iteration 3) failed


@pytest.fixture
def tiny_disk(tmp_path):
    """A 40 KiB tmpfs (root only): the event files fill it before the run's first checkpoint."""
    yield from tmpfs(tmp_path, "40k")


def test_a_disk_filled_by_event_files_is_one_line_without_a_thread_traceback(tmp_path, tiny_disk):
    budget = [a for a in TINY if a.split("=")[0] not in ("schedule.iterations", "trainer.log_every", "trainer.ckpt_every")]
    proc = depthstudy("train", *budget, "model.depth=8", "schedule.iterations=20", "trainer.log_every=1",
                      "trainer.diagnostics_every=1", "trainer.ckpt_every=1000", f"out_dir={tiny_disk}", cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.wait(timeout=300) == 1
    err = proc.stderr.read()
    assert len(err.strip().splitlines()) == 1 and "no space left on the device (ENOSPC)" in err, err
    (run,) = (tiny_disk / "default").iterdir()
    s = summary(run)
    assert s["status"] == "failed" and s["iterations"] == 0


def test_sigterm_to_a_joblib_sweep_stops_it_like_ctrl_c_and_leaves_no_job_file(tmp_path):
    import signal
    import time

    temp = tmp_path / "tmp"
    temp.mkdir()
    args = ["sweep", "model.depth=8", "model.shortcut=none,A", "schedule.iterations=3000", "schedule.milestones=[2000]",
            "optim.batch_size=32", "trainer.ckpt_every=100000", "trainer.threads=1", "trainer.progress=none",
            "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]  # two workers: the sweep itself only waits
    proc = subprocess.Popen([sys.executable, "-m", "depthstudy", *args], cwd=tmp_path, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(temp)})
    deadline = time.time() + 120
    while len(list((tmp_path / "runs").glob("default/*/summary.json"))) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.05)
    assert list(temp.glob("depthstudy-jobs-*.json"))
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert not list(temp.glob("depthstudy-*")), list(temp.iterdir())  # the job file and the stop file are gone
    for run in (tmp_path / "runs" / "default").glob("*/summary.json"):
        assert json.loads(run.read_text())["status"] == "interrupted"


def test_a_rerun_after_a_killed_final_summary_write_logs_no_point_twice(cli, runs):
    """Killed after its final checkpoint and events, before its final summary.json: the rerun finishes the run
    without logging the final evaluation again."""
    run = runs[0]
    before = events.read_scalars(run)
    (run / "summary.json").write_text(json.dumps({**summary(run), "status": "running", "iterations": 3}))
    result = cli("train", *TINY, "model.depth=8")
    assert result.exit_code == 0, result.output
    assert summary(run)["status"] == "finished"
    after = events.read_scalars(run)
    for tag in (events.VAL_ERROR, events.TEST_LOSS, events.TRAIN_ERROR, events.block_tag("weight_norm", 0)):
        assert after[tag] == before[tag], tag
