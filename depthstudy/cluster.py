"""SLURM as a sweep and its jobs see it: the job this process runs in, the queue's jobs of a sweep, and why a job
waits. Reads squeue only: clusters without accounting have no sacct. No torch."""

from __future__ import annotations

import getpass
import os
import pickle
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


def this_job() -> dict | None:
    """The SLURM job this process runs in, for summary.json's cluster_jobs: its id as squeue and sacct show it
    (12_3: task 3 of array job 12), the restart count (a requeued job keeps its id) and when it started; None
    outside SLURM."""
    env = os.environ
    if not env.get("SLURM_JOB_ID"):
        return None
    array, task = env.get("SLURM_ARRAY_JOB_ID"), env.get("SLURM_ARRAY_TASK_ID")
    job = {"id": f"{array}_{task}" if array and task else env["SLURM_JOB_ID"], "job_id": env["SLURM_JOB_ID"]}
    if array and task:
        job.update(array_job_id=array, array_task_id=task)
    job.update(restart=int(env.get("SLURM_RESTART_COUNT") or 0), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return job


def jobs_of(previous: dict | None) -> list[dict]:
    """Every cluster job that trained the run, this process's last: what summary.json's cluster_jobs holds."""
    jobs = [j for j in (previous or {}).get("cluster_jobs") or [] if isinstance(j, dict)]
    job = this_job()
    return jobs + [job] if job else jobs


def last_job_id(summary: dict | None) -> str | None:
    jobs = (summary or {}).get("cluster_jobs") or []
    return str(jobs[-1].get("id")) if jobs and isinstance(jobs[-1], dict) else None


@dataclass
class QueuedJob:
    id: str  # 12_3 for task 3 of array job 12
    name: str  # the job name (hydra.job.name: depthstudy-<name>)
    state: str  # PENDING, RUNNING, CONFIGURING, REQUEUED, ...
    reason: str  # why it pends (squeue's %r): Resources, Priority, PartitionTimeLimit, ...


def queue() -> list[QueuedJob] | None:
    """This user's jobs in the queue, one per array task; None where there is no squeue or it does not answer."""
    if not shutil.which("squeue"):
        return None
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%j|%T|%r"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return [QueuedJob(*line.split("|", 3)) for line in out.stdout.splitlines() if line.count("|") >= 3]


def job_overrides(submitit_folder: str, job_id: str) -> list[str] | None:
    """The overrides a queued job of a submitit sweep will run (from submitit's pickle of the job), or None where
    this job has none in this folder (another sweep's job of the same name)."""
    path = Path(submitit_folder.replace("%j", job_id)) / f"{job_id}_submitted.pkl"
    try:
        with open(path, "rb") as f:
            delayed = pickle.load(f)  # submitit's DelayedSubmission: the launcher called with (overrides, ...)
        return [str(o) for o in delayed.args[0]]
    except Exception:  # missing, or not a depthstudy job: not this sweep's
        return None


# Reasons a job pends that do not clear by themselves, and what to change (squeue's %r; SLURM's job_reason list).
STUCK = {
    "PartitionTimeLimit": "its time limit is over the partition's maximum (sinfo shows it): lower "
                          "hydra.launcher.timeout_min or choose another hydra.launcher.partition",
    "PartitionNodeLimit": "it asks for more nodes than the partition allows: lower hydra.launcher.nodes",
    "PartitionConfig": "the partition cannot give what it asks (CPUs, memory or GPUs per node): lower "
                       "hydra.launcher.cpus_per_task / mem_gb / gpus_per_node or choose another partition",
    "ReqNodeNotAvail": "the nodes it needs are down, drained or reserved: choose another hydra.launcher.partition "
                       "or ask the cluster's admins",
    "PartitionDown": "the partition is down: choose another hydra.launcher.partition",
    "PartitionInactive": "the partition is inactive: choose another hydra.launcher.partition",
    "QOSMaxWallDurationPerJobLimit": "its time limit is over the QOS's maximum: lower hydra.launcher.timeout_min "
                                     "or choose another QOS (hydra.launcher.qos)",
    "AssocMaxWallDurationPerJobLimit": "its time limit is over your account's maximum: lower "
                                       "hydra.launcher.timeout_min",
    "BadConstraints": "its constraints cannot be met: change hydra.launcher.constraint",
    "InvalidAccount": "the account is not valid: change hydra.launcher.account",
    "InvalidQOS": "the QOS is not valid: change hydra.launcher.qos",
    "DependencyNeverSatisfied": "it depends on a job that failed",
    "JobHeldAdmin": "an admin holds it",
    "JobHeldUser": "it is held: `scontrol release <job>` lets it start",
}


def stuck_reason(reason: str) -> str | None:
    """What to change, for a pending reason that will not clear by itself; None for one that will (Resources...)."""
    for key, advice in STUCK.items():
        if reason.startswith(key) or reason.startswith(f"({key}"):
            return advice
    return None
