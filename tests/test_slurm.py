"""Cluster sweeps on a real SLURM (Hydra's submitit_slurm launcher). Marked `slurm`: not in the default run.

    bash ../shared/tools/slurm-local.sh start     # a single-node SLURM on this machine (root, Debian)
    python -m pytest -m slurm
"""

import shutil
import signal
import subprocess
import sys
import time

import pytest

from helpers import summary

pytestmark = pytest.mark.slurm

SLURM = ["hydra/launcher=submitit_slurm", "hydra.launcher.timeout_min=5", "hydra.launcher.cpus_per_task=1"]
SMALL = ["model.depth=8", "optim.batch_size=32", "trainer.threads=1", "trainer.progress=lines"]
COMPARED = ("status", "iterations", "train_error", "train_loss", "val_error", "val_loss", "test_error", "test_loss")


@pytest.fixture(scope="module", autouse=True)
def slurm():
    if not shutil.which("sbatch"):
        pytest.skip("no SLURM here: start one with ../shared/tools/slurm-local.sh start")
    idle = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True)
    if idle.returncode != 0 or not any(state in idle.stdout for state in ("idle", "mix", "alloc")):
        pytest.skip(f"SLURM is not answering (sinfo: {idle.stdout.strip() or idle.stderr.strip()})")


def depthstudy(*args, cwd, wait=True):
    cmd = [sys.executable, "-m", "depthstudy", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def run_dirs(root, name):
    return sorted(p for p in (root / "runs" / name).iterdir() if p.is_dir() and not p.name.startswith("."))


def wait_until_running(proc, root, name, timeout=180):
    """The sweep's run directories, once its (first) run's job has started training on the cluster."""
    deadline = time.time() + timeout
    while True:
        runs = run_dirs(root, name) if (root / "runs" / name).exists() else []
        if runs and (runs[0] / "summary.json").exists() and summary(runs[0]).get("status") == "running":
            return runs
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.2)


def test_a_two_run_sweep_finishes_reports_and_a_rerun_submits_only_what_is_not_finished(tmp_path):
    args = ["sweep", *SMALL, "model.shortcut=none,A", "schedule.iterations=6", "schedule.milestones=[4]", *SLURM,
            "name=pair"]
    first = depthstudy(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    assert [summary(r)["status"] for r in run_dirs(tmp_path, "pair")] == ["finished", "finished"]
    assert depthstudy("report", "runs/pair", cwd=tmp_path).returncode == 0
    submitted = set((tmp_path / "runs" / "pair" / ".submitit").iterdir())
    again = depthstudy(*args, cwd=tmp_path)
    assert again.returncode == 0 and "2 already done, 0 to train" in again.stdout
    assert set((tmp_path / "runs" / "pair" / ".submitit").iterdir()) == submitted  # no job submitted
    shutil.rmtree(run_dirs(tmp_path, "pair")[0])  # one run lost: only its job is submitted again
    third = depthstudy(*args, cwd=tmp_path)
    assert third.returncode == 0 and "1 already done, 1 to train" in third.stdout, third.stdout + third.stderr
    jobs = [p.name for p in set((tmp_path / "runs" / "pair" / ".submitit").iterdir()) - submitted]
    assert len([j for j in jobs if not j.startswith(".submission")]) == 1, jobs  # 24_0, 24_1 first; now 26
    assert [summary(r)["status"] for r in run_dirs(tmp_path, "pair") if r.name != "report"] == ["finished"] * 2


def test_a_time_limit_signal_ends_interrupted_with_a_checkpoint_and_resumes_to_the_same_result(tmp_path):
    """SLURM's pre-timeout signal (SIGUSR2, sent here with scancel) stops the run at the end of an iteration
    with a checkpoint; submitit's default max_num_timeout=0 does not requeue, so the run is interrupted, and
    the same sweep command resumes it to the result of an uninterrupted run."""
    budget = ["schedule.iterations=1500", "schedule.milestones=[1000]", "trainer.log_every=10",
              "trainer.ckpt_every=100000", "trainer.eval_every=500"]
    (tmp_path / "ref").mkdir()
    assert depthstudy("train", *SMALL, *budget, cwd=tmp_path / "ref").returncode == 0
    reference = summary(run_dirs(tmp_path / "ref", "default")[0])

    args = ["sweep", *SMALL, *budget, "seed=0", *SLURM, "name=limit"]
    proc = depthstudy(*args, cwd=tmp_path, wait=False)
    runs = wait_until_running(proc, tmp_path, "limit")
    time.sleep(2)
    jobs = subprocess.run(["squeue", "-h", "-o", "%i", "-n", "depthstudy-limit"], capture_output=True, text=True)
    assert jobs.stdout.split(), "the job is named after the sweep"
    for job in jobs.stdout.split():
        subprocess.run(["scancel", "-s", "USR2", job], check=True)
    out, _ = proc.communicate(timeout=300)
    s = summary(runs[0])
    assert s["status"] == "interrupted" and 0 < s["iterations"] < 1500, out
    assert proc.returncode == 1 and "did not finish" in out  # the sweep says so
    import torch

    assert torch.load(runs[0] / "checkpoint.pt", weights_only=True)["step"] == s["iterations"]

    resumed = depthstudy(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    result = summary(runs[0])
    assert {k: result[k] for k in COMPARED} == {k: reference[k] for k in COMPARED}


def test_a_submission_error_is_one_line_and_nothing_is_submitted(tmp_path):
    result = depthstudy("sweep", *SMALL, "schedule.iterations=6", "schedule.milestones=[4]", *SLURM,
                        "hydra.launcher.partition=no-such-partition", "name=bad", cwd=tmp_path)
    assert result.returncode == 1
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert errors == [errors[0]] and "job submission failed" in errors[0] and "no-such-partition" in errors[0]
    assert "Traceback" not in result.stdout + result.stderr


def test_ctrl_c_says_the_jobs_go_on_and_scancel_stops_them_at_a_checkpoint(tmp_path):
    args = ["sweep", *SMALL, "schedule.iterations=100000", "schedule.milestones=[0.5]", "trainer.ckpt_every=100000",
            *SLURM, "name=longrun"]
    proc = depthstudy(*args, cwd=tmp_path, wait=False)
    runs = wait_until_running(proc, tmp_path, "longrun")
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "scancel --name depthstudy-longrun" in out, out
    assert subprocess.run(["squeue", "-h", "-n", "depthstudy-longrun"], capture_output=True, text=True).stdout.strip()
    subprocess.run(["scancel", "--name", "depthstudy-longrun"], check=True)
    deadline = time.time() + 120
    while summary(runs[0]).get("status") == "running":
        assert time.time() < deadline, "scancel did not stop the run"
        time.sleep(0.5)
    s = summary(runs[0])
    assert s["status"] == "interrupted" and s["iterations"] > 0
    import torch

    assert torch.load(runs[0] / "checkpoint.pt", weights_only=True)["step"] == s["iterations"]
