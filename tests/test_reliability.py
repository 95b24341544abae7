"""Interruption, locking, damaged files and changed configs: nothing is lost, nothing is mixed."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import torch

from helpers import as_if_made_before, only_run, summary, write_cifar
from depthstudy import events

LONG = ["model.depth=8", "schedule.iterations=60", "schedule.milestones=[40]", "optim.batch_size=32",
        "trainer.log_every=5", "trainer.eval_every=20", "trainer.ckpt_every=10", "trainer.threads=1",
        "trainer.progress=lines"]
COMPARED = ("status", "iterations", "train_error", "train_loss", "val_error", "val_loss", "test_error", "test_loss")


def default_ctrl_c():
    """In the child: Ctrl-C handled as usual, even if this test runs in a background job (which ignores SIGINT,
    and a child inherits that)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)


def depthstudy(*args, cwd, wait=True):
    cmd = [sys.executable, "-m", "depthstudy", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=default_ctrl_c)
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)


def wait_for_run_dir(parent, proc, timeout=120):
    """The run directory the process makes under parent; fails (never hangs) if the process ends first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        runs = list(parent.glob("*")) if parent.exists() else []
        if runs:
            return runs[0]
        time.sleep(0.05)
    raise AssertionError(f"no run directory under {parent} after {timeout} s")


def wait_for_checkpoint(run_dir, min_step, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        try:
            if torch.load(run_dir / "checkpoint.pt", weights_only=True)["step"] >= min_step:
                return
        except (FileNotFoundError, RuntimeError, EOFError):
            pass
        time.sleep(0.05)
    raise TimeoutError


def test_kill_9_then_rerun_gives_the_uninterrupted_result(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert depthstudy("train", *LONG, cwd=tmp_path / "a").returncode == 0
    reference = summary(only_run(tmp_path / "a"))

    proc = depthstudy("train", *LONG, cwd=tmp_path / "b", wait=False)
    run = wait_for_run_dir(tmp_path / "b" / "runs" / "default", proc)
    wait_for_checkpoint(run, 20, proc)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait()
    assert summary(run)["status"] == "running"
    resumed = depthstudy("train", *LONG, cwd=tmp_path / "b")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming at iteration" in resumed.stdout
    result = summary(run)
    assert {k: result[k] for k in COMPARED} == {k: reference[k] for k in COMPARED}

    scalars = events.read_scalars(run)  # TensorBoard's reader: no duplicated or backwards steps
    for tag in (events.TRAIN_ERROR, events.VAL_ERROR, events.LR):
        steps = [s for s, _ in scalars[tag]]
        assert steps == sorted(set(steps)), tag
    assert [s for s, _ in scalars[events.TRAIN_ERROR]] == list(range(5, 61, 5))
    ref_curve = events.read_scalars(only_run(tmp_path / "a"))[events.TRAIN_LOSS]
    assert [s for s, _ in scalars[events.TRAIN_LOSS]] == [s for s, _ in ref_curve]
    assert [v for _, v in scalars[events.TRAIN_LOSS]] == pytest.approx([v for _, v in ref_curve])


def test_ctrl_c_saves_a_checkpoint_and_the_rerun_finishes(tmp_path):
    # 300 iterations (seconds): the run cannot finish before the Ctrl-C lands, even on a busy machine; no
    # evaluations on the way, so that the rerun to the end stays short.
    args = [*LONG, "schedule.iterations=300", "trainer.eval_every=0"]
    proc = depthstudy("train", *args, cwd=tmp_path, wait=False)
    run = wait_for_run_dir(tmp_path / "runs" / "default", proc)
    wait_for_checkpoint(run, 10, proc)
    running = summary(run)  # summary.json is whole (valid JSON) while the run trains
    assert running["status"] == "running" and running["total_iterations"] == 300
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "checkpoint saved" in out
    s = summary(run)
    assert s["status"] == "interrupted" and 10 <= s["iterations"] < 300
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == s["iterations"]

    rerun = depthstudy("train", *args, cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"resuming at iteration {s['iterations']}" in rerun.stdout
    assert summary(run)["status"] == "finished" and summary(run)["iterations"] == 300


def test_a_second_process_on_the_same_run_is_refused(cli, tmp_path):
    from depthstudy.rundir import run_lock

    args = [*LONG, "trainer.progress=none", "schedule.iterations=4", "schedule.milestones=[2]"]
    assert cli("train", *args).exit_code == 0
    run = only_run(tmp_path)
    before = (run / "summary.json").read_text()
    with run_lock(run):  # as another process would hold it
        result = cli("train", *args)
    assert result.exit_code == 1
    assert "is in use by another depthstudy process" in result.output
    assert (run / "summary.json").read_text() == before


def test_a_corrupted_checkpoint_is_refused_and_left_in_place(cli, tmp_path):
    args = [*LONG, "trainer.progress=none", "schedule.iterations=4", "schedule.milestones=[2]"]
    cli("train", *args)
    run = only_run(tmp_path)
    (run / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    result = cli("train", *args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"checkpoint {run / 'checkpoint.pt'} is unreadable" in result.output
    assert (run / "checkpoint.pt").read_bytes() == b"not a checkpoint"


def test_a_crash_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    from depthstudy import checkpoint, rundir

    checkpoint.save(tmp_path, {"step": 1})

    class Boom(Exception):
        pass

    def explode(f):
        f.write(b"half a checkpoint")
        raise Boom

    with pytest.raises(Boom):
        rundir.atomic_write_bytes(tmp_path / checkpoint.CHECKPOINT, explode)
    assert checkpoint.load(tmp_path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.CHECKPOINT]  # no temp file left behind


def test_resuming_with_a_different_config_is_refused_unless_forced(cli, tmp_path):
    args = [*LONG, "trainer.progress=none", "schedule.iterations=4", "schedule.milestones=[2]", f"hydra.run.dir={tmp_path / 'run'}"]
    assert cli("train", *args).exit_code == 0
    before = (tmp_path / "run" / "config.yaml").read_text()
    result = cli("train", *args, "optim.lr=0.05")
    assert result.exit_code == 2
    assert "holds a run with a different config (optim.lr: 0.1 -> 0.05)" in result.output
    assert "trainer.force_resume=true" in result.output
    assert (tmp_path / "run" / "config.yaml").read_text() == before
    # Where and how it runs is not a different experiment.
    assert cli("train", *args, "trainer.log_every=1", "trainer.device=cpu").exit_code == 0
    forced = cli("train", *args, "optim.lr=0.05", "trainer.force_resume=true")
    assert forced.exit_code == 0


def test_a_run_made_before_a_key_existed_is_the_same_experiment_at_its_default(cli, tmp_path):
    """Upgrading depthstudy must not turn a study's runs into "a different config": a key the saved config lacks
    ran as its default. At another value it is a change, and refused."""
    args = ["model.depth=8", "trainer.progress=none", "schedule.iterations=4", "schedule.milestones=[2]",
            "model.shortcut=none,A", "name=old"]
    assert cli("sweep", *args).exit_code == 0
    for run in (tmp_path / "runs" / "old").glob("*-d8-*"):
        as_if_made_before(run, "model.grow_init", "data.pad_fill")
    again = cli("sweep", *args)
    assert again.exit_code == 0 and "2 already done, 0 to train" in again.output, again.output
    one = [*args[:-2], f"hydra.run.dir={tmp_path / 'one'}"]
    assert cli("train", *one).exit_code == 0
    as_if_made_before(tmp_path / "one", "model.grow_init", "data.pad_fill")
    rerun = cli("train", *one, "trainer.progress=lines")
    assert rerun.exit_code == 0 and "already finished" in rerun.output, rerun.output
    changed = cli("train", *one, "data.pad_fill=mean", "data.augment=true")  # with no augmentation the fill is inert
    assert changed.exit_code == 2 and "data.pad_fill: None -> 'mean'" in changed.output, changed.output


def test_missing_cifar_is_a_runtime_error_with_advice(cli, tmp_path):
    result = cli("train", "data=cifar10", f"data.root={tmp_path / 'data'}", "trainer.progress=none")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "cifar10 not found" in result.output and "data.download=true" in result.output


def test_corrupted_cifar_names_the_file(cli, tmp_path):
    write_cifar(tmp_path / "data")
    result = cli("train", "data=cifar10", f"data.root={tmp_path / 'data'}", "trainer.progress=none")
    assert result.exit_code == 1 and "data_batch_1 is corrupted (md5 mismatch)" in result.output


def test_debug_shows_the_traceback_and_keeps_the_exit_code(cli, tmp_path):
    result = cli("train", "data=cifar10", f"data.root={tmp_path / 'data'}", "trainer.progress=none", "--debug")
    assert result.exit_code == 1 and "Traceback" in result.output and "cifar10 not found" in result.output


def ctrl_c_a_joblib_sweep(tmp_path, grid, n_jobs, started):
    """Start a sweep, wait until the runs `started` matches have begun, press Ctrl-C: the terminal sends
    it to the whole process group, the sweep and its joblib workers alike."""
    args = ["sweep", "model.depth=8", *grid, "schedule.iterations=600", "schedule.milestones=[500]",
            "optim.batch_size=32", "trainer.log_every=5", "trainer.ckpt_every=1000", "trainer.threads=1",
            "trainer.progress=lines", "hydra/launcher=joblib", f"hydra.launcher.n_jobs={n_jobs}", "name=g"]
    proc = subprocess.Popen([sys.executable, "-m", "depthstudy", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            preexec_fn=default_ctrl_c)
    sweep_dir = tmp_path / "runs" / "g"
    deadline = time.time() + 120
    while sum((p / "summary.json").exists() for p in sweep_dir.glob(started)) < 2:
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 130, out
    assert "Traceback" not in out and "stopping: running jobs save a checkpoint" in out
    for run in sweep_dir.glob(started):
        s = summary(run)
        assert s["status"] == "interrupted", out
        assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == s["iterations"] > 0
    assert not (Path(tempfile.gettempdir()) / f"depthstudy-sweep-{proc.pid}").exists()  # cleaned up
    return args, sweep_dir


def test_a_second_sweep_in_the_same_process_reaches_joblibs_reused_workers():
    """joblib keeps its loky workers, and the environment they started with, for the next sweep of a notebook:
    the stop file they watch must be the one the next sweep writes on Ctrl-C."""
    from joblib import Parallel, delayed

    from depthstudy.interrupt import STOP_FILE_ENV, StopWorkersOnCtrlC

    def in_worker(key):
        return os.environ.get(key)

    def watched():
        return Parallel(n_jobs=2, backend="loky")(delayed(in_worker)(STOP_FILE_ENV) for _ in range(2))

    with StopWorkersOnCtrlC() as first:
        assert watched() == [str(first.stop_file)] * 2
    with StopWorkersOnCtrlC() as second:
        assert watched() == [str(second.stop_file)] * 2


@pytest.mark.slow  # 40 s of CI; the Ctrl-C part is also in the next test and in test_integrity's SIGTERM test
def test_ctrl_c_of_a_joblib_sweep_checkpoints_running_jobs_and_skips_queued_ones(tmp_path):
    args, sweep_dir = ctrl_c_a_joblib_sweep(tmp_path, ["model.shortcut=none,A", "seed=0,1"], 2, "plain-*")
    assert not any((run / "summary.json").exists() for run in sweep_dir.glob("resA-*"))  # queued: never started

    again = subprocess.run([sys.executable, "-m", "depthstudy", *args], cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.count("resuming at iteration") == 2
    assert all(summary(run)["status"] == "finished" for run in sweep_dir.iterdir() if run.is_dir())


def test_ctrl_c_with_more_joblib_workers_than_jobs_still_checkpoints_the_running_jobs(tmp_path):
    """An idle worker would die of the Ctrl-C, and joblib would then kill the busy ones."""
    ctrl_c_a_joblib_sweep(tmp_path, ["model.shortcut=none,A"], 3, "*-s0-*")


def test_kill_9_of_a_joblib_sweep_stops_its_workers_at_a_checkpoint(tmp_path):
    """Workers must not outlive the sweep: each sees its parent gone, saves a checkpoint and exits;
    the rerun resumes them."""
    import socket

    args = ["sweep", "model.depth=8", "model.shortcut=none,A", "schedule.iterations=3000", "schedule.milestones=[2000]",
            "optim.batch_size=32", "trainer.log_every=5", "trainer.ckpt_every=100000", "trainer.threads=1",
            "trainer.progress=none", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "name=g"]
    proc = subprocess.Popen([sys.executable, "-m", "depthstudy", *args], cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    sweep_dir = tmp_path / "runs" / "g"
    deadline = time.time() + 120
    while sum((p / "summary.json").exists() for p in sweep_dir.glob("*-d8-*")) < 2:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    runs = sorted(p for p in sweep_dir.glob("*-d8-*"))
    workers = [int((r / ".lock").read_text().partition("@")[0]) for r in runs]
    assert all((r / ".lock").read_text().endswith("@" + socket.gethostname()) for r in runs)
    proc.kill()  # SIGKILL to the sweep only: its workers are not told
    proc.wait()
    deadline = time.time() + 60
    while any(_alive(pid) for pid in workers):
        assert time.time() < deadline, "a worker outlived its sweep"
        time.sleep(0.1)
    for run in runs:
        s = summary(run)
        assert s["status"] == "interrupted" and 0 < s["iterations"] < 3000
        assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == s["iterations"]


def test_kill_9_of_one_joblib_worker_ends_the_sweep_in_one_line_that_says_what_to_do(tmp_path):
    """joblib stops its whole pool when one worker dies: the sweep says so and how to go on, no traceback."""
    args = ["sweep", "model.depth=8", "model.shortcut=none,A", "schedule.iterations=3000", "schedule.milestones=[2000]",
            "optim.batch_size=32", "trainer.log_every=5", "trainer.ckpt_every=50", "trainer.threads=1",
            "trainer.progress=none", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "name=k"]
    proc = subprocess.Popen([sys.executable, "-m", "depthstudy", *args], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    sweep_dir = tmp_path / "runs" / "k"
    deadline = time.time() + 120
    while sum((p / "summary.json").exists() for p in sweep_dir.glob("*-d8-*")) < 2:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.05)
    worker = int((sorted(sweep_dir.glob("*-d8-*"))[0] / ".lock").read_text().partition("@")[0])
    os.kill(worker, signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    assert "error: a worker process of the sweep died (exit SIGKILL(-9): killed" in out and "Traceback" not in out
    assert "Run the same command again: finished runs are skipped" in out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its new parent) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_a_refused_rerun_changes_nothing_in_the_run_directory(cli, tmp_path):
    args = [*LONG, "trainer.progress=none", "schedule.iterations=4", "schedule.milestones=[2]", f"hydra.run.dir={tmp_path / 'run'}"]
    assert cli("train", *args).exit_code == 0
    s = summary(tmp_path / "run")
    (tmp_path / "run" / "summary.json").write_text(json.dumps({**s, "status": "interrupted"}))  # resumable
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    assert cli("train", *args, "optim.lr=0.05").exit_code == 2  # another experiment
    forced = cli("train", *args, "model.depth=14", "trainer.force_resume=true")  # another net's checkpoint
    assert forced.exit_code == 2 and "holds a run of another model (model.depth: 8 -> 14)" in forced.output
    assert len(forced.output.strip().splitlines()) == 1
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file()}
    changed = [str(p) for p in before if before[p] != after.get(p) and p.name != ".lock"]
    assert not changed, changed  # .hydra/config.yaml, overrides.yaml and config.yaml describe the run as it was


def test_temp_files_of_a_killed_save_are_removed_on_the_next_start(cli, tmp_path):
    args = [*LONG, "trainer.progress=none", "schedule.iterations=4", "schedule.milestones=[2]", f"hydra.run.dir={tmp_path / 'run'}"]
    (tmp_path / "run").mkdir()
    stale = tmp_path / "run" / ".checkpoint.pt.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert cli("train", *args).exit_code == 0
    assert not stale.exists()


@pytest.mark.parametrize("where,message", [("/proc/depthstudy-x", "cannot write under /proc/depthstudy-x"),
                                           ("FILE/sub", "is a file, not a directory")])
def test_an_unwritable_output_location_is_one_line(cli, tmp_path, where, message):
    (tmp_path / "FILE").write_text("not a directory")
    out = where.replace("FILE", str(tmp_path / "FILE"))
    result = cli("train", *LONG, "trainer.progress=none", f"out_dir={out}")
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_warm_up_setting_does_not_make_a_net_it_cannot_touch_another_run():
    """He2015's warm-up cap changed (400 -> none): a ResNet-20 made with the cap is the same run; a ResNet-110 not."""
    from omegaconf import OmegaConf

    from depthstudy.config import compose
    from depthstudy.rundir import config_changes

    def resolved(*overrides):
        return OmegaConf.to_container(compose(["experiment=he2015", *overrides]), resolve=True)

    cap = "schedule.warmup.max_iterations=400"
    assert config_changes(resolved("model.depth=20", cap), resolved("model.depth=20")) == []
    assert config_changes(resolved("model.depth=110", cap), resolved("model.depth=110")) == [
        "schedule.warmup.max_iterations: 400 -> None"]
    # without augmentation the crop's padding is inert too (report.md listed data.pad_fill for the quick study)
    assert config_changes(resolved("data.augment=false"), resolved("data.augment=false", "data.pad_fill=zero")) == []
    assert config_changes(resolved(), resolved("data.pad_fill=zero")) == ["data.pad_fill: 'mean' -> 'zero'"]
