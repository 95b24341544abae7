"""Hydra's entry point: exactly one training run per call, whatever the launcher (basic, joblib, submitit).
The one module that knows both Hydra and training: it runs the job Hydra composed, honours a sweep's
stop file, and records how a failed job ended in its run directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

import hydra
from omegaconf import DictConfig

from depthstudy import interrupt, rundir
from depthstudy.config import CONFIG_DIR, CONFIG_NAME, key_defaults, validate
from depthstudy.errors import DepthstudyError, UsageError
from depthstudy.progress import say


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name=CONFIG_NAME)
def hydra_entry(cfg: DictConfig):
    return run_job(cfg)


def run_job(cfg: DictConfig) -> dict:
    """Train the run Hydra composed. In a sweep a failed run is recorded and the sweep goes on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    in_sweep = hc.mode == RunMode.MULTIRUN
    if not in_sweep and cfg.trainer.progress != "none":  # the next seconds go to importing torch and loading data
        say(f"{run_dir.name}: starting (importing torch, loading {cfg.data.name}, building the net)")
    from depthstudy.train import train  # torch: only once a job really runs

    if interrupt.in_sweep_worker():  # Ctrl-C is the sweep's to handle (interrupt.StopWorkersOnCtrlC)
        interrupt.ignore_ctrl_c()
    if interrupt.sweep_is_gone():  # the sweep was killed: this worker must not outlive it
        os._exit(1)
    if interrupt.sweep_asked_to_stop():  # the sweep was interrupted: queued jobs start nothing
        return {"status": "skipped"}
    try:
        validate(cfg)
        from depthstudy.packing import gpu_slot

        with gpu_slot(hc.job.num if in_sweep else None, str(cfg.trainer.device)) as gpu:
            return train(cfg, run_dir, in_sweep, gpu, key_defaults=key_defaults)
    except KeyboardInterrupt:
        if interrupt.sweep_is_gone():  # checkpoint and summary saved; nobody is left to report to
            os._exit(1)
        if _pass_on_cluster_signal():  # a time limit or preemption: the run is interrupted, not failed
            return {"status": "interrupted"}
        if interrupt.sweep_asked_to_stop():  # checkpoint saved; the sweep reports the interruption once every job returned
            return {"status": "interrupted"}
        raise
    except Exception as e:
        if not isinstance(e, (UsageError, rundir.RunBusyError)):  # the run is ours: its directory says how it ended
            # A bug or a library failure in a sweep keeps its traceback beside the run.
            bug = in_sweep and not isinstance(e, DepthstudyError)
            rundir.record_failure(run_dir, e, traceback.format_exc() if bug else None)
        if not in_sweep:
            raise AbortRun(e) from e
        say(f"error: {run_dir.name}: {e}", err=True)
        return {"status": "failed", "error": str(e)}


def _pass_on_cluster_signal() -> bool:
    """After SLURM's pre-timeout or preemption signal stopped the run (checkpoint saved, status interrupted),
    hand the signal to the launcher's own handler (submitit's): it requeues the job, which then resumes from
    the checkpoint, or says it cannot (no requeues left), which leaves the run interrupted, not failed."""
    taken = interrupt.take_deferred_signal()
    if not taken or taken[0] != signal.SIGUSR2:
        return False
    signum, previous = taken
    if callable(previous):
        try:
            previous(signum, None)  # submitit: requeue and exit, or raise when it will not requeue
        except Exception as e:
            print(f"{type(e).__name__}: {e}; the run was interrupted with a checkpoint: run the sweep again "
                  "to resume it", file=sys.stderr)
    return True


class AbortRun(SystemExit):
    """Carries a single run's error past Hydra's handler (which would print a traceback) to the CLI."""

    def __init__(self, error: Exception):
        super().__init__(1)
        self.error = error


def train_one(overrides: list[str]) -> Path:
    """`depthstudy train OVERRIDES`: check the config and the run directory before Hydra writes anything, train
    (or skip a finished run, or resume), and return the run directory."""
    from depthstudy.config import check_run_dir, load_checked

    args, cfg = load_checked(overrides)
    check_run_dir(cfg)
    run_dir = Path(str(cfg.hydra.run.dir))
    summary = rundir.read_summary(run_dir)
    if rundir.status_of(run_dir, summary) in rundir.FINAL_STATUSES:  # not through Hydra: it would rewrite .hydra/
        say(rundir.nothing_to_do(run_dir, summary))
        return run_dir
    run_hydra(args, multirun=False)
    return run_dir


def run_hydra(overrides: list[str], multirun: bool) -> None:
    """Call the Hydra app as if from its own command line (keeps multirun and the launchers)."""
    argv, full_error = sys.argv, os.environ.get("HYDRA_FULL_ERROR")
    sys.argv = ["depthstudy"] + (["--multirun"] if multirun else []) + overrides
    # Hydra would print a launcher's error as a long traceback and exit: let it reach the CLI's one line instead.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        hydra_entry()
    except AbortRun as abort:
        raise abort.error from None
    except Exception as e:
        # A cluster launcher's submission (submitit's FailedJobError around sbatch's message) is the user's to fix.
        if not (isinstance(e, subprocess.CalledProcessError) or type(e).__module__.startswith("submitit")):
            raise
        reason = " ".join(str(e).split())[:300]
        raise DepthstudyError(f"job submission failed ({reason}); no job of this sweep was submitted") from None
    finally:
        sys.argv = argv
        if full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = full_error
