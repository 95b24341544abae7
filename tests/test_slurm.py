"""Cluster sweeps on a real SLURM (Hydra's submitit_slurm launcher). Marked `slurm`: not in the default run.

    bash ../shared/tools/slurm-local.sh start     # a single-node SLURM on this machine (root, Debian)
    python -m pytest -m slurm
"""

import os
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


def job_logs(root, name) -> str:
    """Every job log of the sweep (submitit's .submitit/<job>/<job>_0_log.out and .err), one after another."""
    return "\n".join(p.read_text() for p in sorted((root / "runs" / name / ".submitit").rglob("*_log.*")))


def squeue(name) -> list[str]:
    """`<job id> <state>` of each of the sweep's jobs in the queue."""
    out = subprocess.run(["squeue", "-h", "-r", "-n", name, "-o", "%i %T"], capture_output=True, text=True)
    return out.stdout.split("\n")[:-1]


def test_a_rerun_while_the_jobs_are_queued_or_running_submits_nothing_and_names_the_live_jobs(tmp_path):
    args = ["sweep", *SMALL, "model.shortcut=none,A", "schedule.iterations=100000", "schedule.milestones=[0.5]",
            "trainer.ckpt_every=100000", *SLURM, "hydra.launcher.array_parallelism=1", "name=live"]
    first = depthstudy(*args, cwd=tmp_path, wait=False)
    try:
        wait_until_running(first, tmp_path, "live")  # one job trains, the other waits for the array's throttle
        submitted = set((tmp_path / "runs" / "live" / ".submitit").iterdir())
        again = depthstudy(*args, cwd=tmp_path)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "2 left to the job or process already on it, 0 to train" in again.stdout, again.stdout
        assert "RUNNING" in again.stdout and "PENDING" in again.stdout  # which job has which run, and its state
        assert set((tmp_path / "runs" / "live" / ".submitit").iterdir()) == submitted  # nothing submitted again
        assert len(squeue("depthstudy-live")) == 2
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
        subprocess.run(["scancel", "--name", "depthstudy-live"])


def test_a_signal_before_training_starts_requeues_the_job_and_the_run_finishes(tmp_path):
    """USR2 while the job imports torch (its run not started): the job says so and submitit requeues it
    (max_num_timeout=1), the requeued job trains the run to the end; no traceback in the job log."""
    args = ["sweep", *SMALL, "schedule.iterations=30", "schedule.milestones=[20]", *SLURM,
            "hydra.launcher.max_num_timeout=1", "name=early"]
    proc = depthstudy(*args, cwd=tmp_path, wait=False)
    deadline = time.time() + 180
    while True:  # the job's process, once it imports torch: depthstudy's guard is on, training not started
        pids = subprocess.run(["pgrep", "-f", "submitit.core._submit"], capture_output=True, text=True).stdout.split()
        if any("libtorch" in open(f"/proc/{p}/maps").read() for p in pids if os.path.exists(f"/proc/{p}/maps")):
            break
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.05)
    job = squeue("depthstudy-early")[0].split()[0]
    subprocess.run(["scancel", "-s", "USR2", job], check=True)
    out, _ = proc.communicate(timeout=300)
    logs = job_logs(tmp_path, "early")
    assert proc.returncode == 0, out + logs
    run = run_dirs(tmp_path, "early")[0]
    assert summary(run)["status"] == "finished" and summary(run)["iterations"] == 30
    assert "submitit requeued the job" in logs and ("not started" in logs or "interrupted at iteration" in logs), logs
    assert "Traceback" not in logs and "run the same command" not in logs, logs
    assert [j["restart"] for j in summary(run)["cluster_jobs"]][-1] == 1  # the requeued job finished it


def test_a_real_time_limit_requeues_once_then_leaves_the_run_interrupted_and_says_why(tmp_path):
    """SLURM's own warning (signal_delay_s before a 1-minute limit), twice: the first time submitit requeues the
    job (max_num_timeout=1), the second time it does not; the run is interrupted with a checkpoint, the job logs
    say which, and summary.json records both jobs' processes."""
    args = ["sweep", *SMALL, "schedule.iterations=1000000", "schedule.milestones=[0.5]", "trainer.ckpt_every=100000",
            "hydra/launcher=submitit_slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=1",
            "hydra.launcher.signal_delay_s=30", "hydra.launcher.max_num_timeout=1", "name=limit1"]
    result = depthstudy(*args, cwd=tmp_path)
    logs = job_logs(tmp_path, "limit1")
    assert result.returncode == 1 and "did not finish" in result.stderr, result.stdout + result.stderr + logs
    assert "job submission failed" not in result.stderr
    run = run_dirs(tmp_path, "limit1")[0]
    s = summary(run)
    assert s["status"] == "interrupted" and s["iterations"] > 0
    assert [j["restart"] for j in s["cluster_jobs"]] == [0, 1] and s["cluster_jobs"][0]["id"] == s["cluster_jobs"][1]["id"]
    assert "submitit requeued the job" in logs and "not requeued (Job not requeued because: timed-out too many" in logs
    assert "Traceback" not in logs, logs
    import torch

    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == s["iterations"]


def test_a_job_that_can_never_start_is_named_with_what_to_change(tmp_path):
    """timeout_min=120 on a partition of 60 minutes at most: the job pends (PartitionTimeLimit) for ever."""
    args = ["sweep", *SMALL, "schedule.iterations=6", "schedule.milestones=[4]", "hydra/launcher=submitit_slurm",
            "hydra.launcher.cpus_per_task=1", "hydra.launcher.timeout_min=120", "name=never"]
    proc = depthstudy(*args, cwd=tmp_path, wait=False)
    try:
        deadline, seen = time.time() + 120, []
        while not any("will not start" in line for line in seen):
            assert time.time() < deadline and proc.poll() is None, "".join(seen)
            seen.append(proc.stdout.readline())
        line = next(line for line in seen if "will not start" in line)
        assert "PartitionTimeLimit" in line and "hydra.launcher.timeout_min" in line, line
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=60)
        subprocess.run(["scancel", "--name", "depthstudy-never"])


def test_scancel_while_the_sweep_waits_leaves_an_interrupted_run_and_a_clean_job_log(tmp_path):
    args = ["sweep", *SMALL, "schedule.iterations=100000", "schedule.milestones=[0.5]", "trainer.ckpt_every=100000",
            *SLURM, "name=cancelled"]
    proc = depthstudy(*args, cwd=tmp_path, wait=False)
    runs = wait_until_running(proc, tmp_path, "cancelled")
    time.sleep(1)
    subprocess.run(["scancel", "--name", "depthstudy-cancelled"], check=True)
    out, _ = proc.communicate(timeout=180)
    logs = job_logs(tmp_path, "cancelled")
    s = summary(runs[0])
    assert s["status"] == "interrupted" and s["iterations"] > 0, out + logs
    assert proc.returncode == 1 and "did not finish" in out and "job submission failed" not in out, out
    assert "Traceback" not in logs and "KeyboardInterrupt" not in logs, logs
    assert "(SIGTERM); run the sweep again to resume" in logs, logs
    listed = depthstudy("runs", "runs/cancelled", cwd=tmp_path)
    assert f"(job {s['cluster_jobs'][-1]['id']})" in listed.stdout, listed.stdout
