"""depthstudy sweep: a grid of runs through Hydra's own multirun, so every launcher works.

Before anything runs, the grid is expanded exactly as Hydra's basic sweeper expands it
(command-line sweeps plus a preset's `hydra.sweeper.params`), and every point is composed and
validated: a bad value anywhere in the grid stops the sweep before its first run.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table

from depthstudy import cluster, config
from depthstudy.errors import DepthstudyError, UsageError
from depthstudy.interrupt import StopWorkersOnCtrlC, sigterm_as_ctrl_c
from depthstudy.launch import run_hydra
from depthstudy.rundir import (FINAL_STATUSES, RunBusyError, check_not_busy, check_same_experiment, lock_holder,
                              read_summary, status_of)
from depthstudy.tables import Fitted, count


@dataclass
class PlannedRun:
    overrides: list[str]  # this job's overrides, as Hydra will pass them
    run_dir: Path
    launcher: str  # the Hydra launcher's _target_
    launcher_jobs: int  # its n_jobs, where it has one
    job_name: str = ""  # hydra.job.name: what a cluster's queue shows
    cfg: object = None  # the composed config (with its hydra node)
    grid: tuple = ()  # the overrides of the grid it belongs to (a preset's `grids`; () for a one-grid sweep)
    estimate: object = None  # depthstudy.estimate.Estimate, in a dry run
    live: str = ""  # the live process or cluster job already on this unfinished run ("job 12_0 RUNNING"): not launched

    @property
    def summary(self) -> dict | None:
        return read_summary(self.run_dir)

    @property
    def status(self) -> str:
        return status_of(self.run_dir, self.summary)


def plan(overrides: list[str] | None) -> list[PlannedRun]:
    overrides = config.normalize_overrides(overrides)
    runs = []
    grids = config.expand_grids(overrides)  # once: each expansion composes the base config
    jobs = [job for _, grid_jobs in grids for job in grid_jobs]
    grid_of = [tuple(grid) for grid, grid_jobs in grids for _ in grid_jobs]
    for job, grid, cfg in zip(jobs, grid_of, config.compose_jobs(jobs)):
        config.validate(cfg)
        run_dir = Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)
        # A directory that holds another experiment is refused now, not halfway through the sweep.
        check_same_experiment(run_dir, OmegaConf.to_container(config.without_hydra(cfg), resolve=True),
                              bool(cfg.trainer.force_resume), config.key_defaults)
        launcher = cfg.hydra.launcher
        runs.append(PlannedRun(job, run_dir, str(launcher.get("_target_", "")), int(launcher.get("n_jobs", 1) or 1),
                               str(cfg.hydra.job.name), cfg, grid=grid))
    _check_sweeper(runs[0].cfg)
    _check_signal_delay(runs)
    dirs = [r.run_dir for r in runs]
    earlier: dict[Path, object] = {}  # runs of earlier grids: trained before this grid starts
    for _, grid_runs in _by_grid(runs):  # a run to grow from exists, or an earlier grid trains it
        for r in grid_runs:
            config.check_init_from(r.cfg, planned=earlier)
        earlier.update({r.run_dir.resolve(): r.cfg for r in grid_runs})
    if len(set(dirs)) != len(dirs):
        dup = next(d for d in dirs if dirs.count(d) > 1)
        raise UsageError(f"two runs of this grid would share the directory {dup}; "
                                "vary only keys that change the run (see run_name in configs/config.yaml)")
    return runs


def _on_slurm(runs: list[PlannedRun]) -> bool:
    return "submitit" in runs[0].launcher and "Local" not in runs[0].launcher


def _check_signal_delay(runs: list[PlannedRun]) -> None:
    """SLURM sends the time-limit warning signal_delay_s before the limit: a delay as long as the limit sends it
    as the job starts, before anything in the job can catch it, and the run would train on until SLURM kills it."""
    launcher = runs[0].cfg.hydra.launcher
    timeout_s, delay = 60 * int(launcher.get("timeout_min") or 0), int(launcher.get("signal_delay_s") or 0)
    if _on_slurm(runs) and timeout_s and delay >= timeout_s:
        raise UsageError(f"hydra.launcher.signal_delay_s={delay} (SLURM's warning before the time limit) is not "
                         f"shorter than hydra.launcher.timeout_min={timeout_s // 60}: the warning would come as the "
                         f"job starts; lower signal_delay_s (to {timeout_s // 4}, say) or raise timeout_min")


def find_live(runs: list[PlannedRun]) -> list[PlannedRun]:
    """Mark (r.live) the unfinished runs that a live process or cluster job is already on, and return them: a run
    whose lock is held, whose recorded cluster job squeue still lists, or a queued job of this sweep (squeue by
    job name) that will train it. A rerun of a sweep launches only runs neither finished nor live."""
    todo = [r for r in runs if r.status not in FINAL_STATUSES]
    for r in todo:
        if r.status == "running":  # its summary says a process trains it: is its lock held?
            try:
                check_not_busy(r.run_dir)
            except RunBusyError:
                r.live = f"pid {lock_holder(r.run_dir)[0] or '?'}"
    queue = cluster.queue() if todo and _on_slurm(runs) else None
    for job in queue or []:
        if job.name != runs[0].job_name:
            continue
        run = next((r for r in todo if cluster.last_job_id(r.summary) == job.id), None)
        if run is None:  # queued, not started: which run it will train, from submitit's record of the job
            overrides = cluster.job_overrides(str(runs[0].cfg.hydra.launcher.submitit_folder), job.id)
            run = next((r for r in todo if overrides and set(r.overrides) <= set(overrides)), None)
        if run is not None:
            run.live = f"job {job.id} {job.state}" + (f" ({job.reason})" if job.state == "PENDING" else "")
    return [r for r in todo if r.live]


def _check_sweeper(cfg) -> None:
    """The grid is expanded here as Hydra's basic sweeper would, and launched through depthstudy's own sweeper."""
    target = str(cfg.hydra.sweeper.get("_target_", ""))
    if not target.endswith(".DepthstudySweeper"):
        raise UsageError(f"depthstudy sweep launches its grid through its own sweeper (hydra/sweeper=depthstudy: "
                         f"Hydra's basic sweeper plus the list of unfinished runs), not {target.rsplit('.', 1)[-1]}; "
                         "leave hydra/sweeper out")


def _estimate(runs: list[PlannedRun], console: Console):
    """Each unfinished run's Estimate (r.estimate), and the measured start-up of a run (or None)."""
    from depthstudy.estimate import estimate_runs, startup_seconds  # torch: only for an estimate

    todo = [r for r in runs if r.status not in FINAL_STATUSES]
    threads = _threads_per_worker(runs)
    for r, e in zip(todo, estimate_runs([config.without_hydra(r.cfg) for r in todo], console.print, threads)):
        r.estimate = e
    probe = next((r for r in todo if not r.cfg.model.get("init_from")), None)  # a run that needs no other run
    if probe is None or min(r.estimate.seconds for r in todo) > 3600:  # seconds of start-up against hours: not measured
        return None
    startup = startup_seconds(config.without_hydra(probe.cfg), probe.overrides, probe.estimate.step_s, console.print)
    for r in todo if startup else []:
        r.estimate.seconds += startup.job_s
    return startup


def _other_runs(runs: list[PlannedRun]) -> list[tuple[Path, dict]]:
    """The runs already in the sweep directory that this sweep does not plan (an earlier sweep's), with their
    configs, so that the HPARAMS columns' values include theirs."""
    from depthstudy.rundir import read_config
    from depthstudy.runs import find_run_dirs

    planned = {r.run_dir.resolve() for r in runs}
    out = []
    for path in find_run_dirs(runs[0].run_dir.parent) if runs[0].run_dir.parent.is_dir() else []:
        if path.resolve() not in planned:
            try:
                out.append((path, read_config(path)))
            except Exception:  # an unreadable config.yaml: the report names it; here it only misses a column value
                continue
    return out


def _by_grid(runs: list[PlannedRun]) -> list[tuple[list[str], list[PlannedRun]]]:
    """(the grid's overrides, its planned runs), grid by grid, in the order they run."""
    grids: dict[tuple, list[PlannedRun]] = {}
    for r in runs:
        grids.setdefault(r.grid, []).append(r)
    return [(list(grid), grid_runs) for grid, grid_runs in grids.items()]


def _in_workers(runs: list[PlannedRun]) -> bool:
    """joblib runs the jobs in worker processes of this machine (the basic launcher runs them in this one)."""
    return runs[0].launcher.startswith("hydra_plugins.hydra_joblib_launcher.")


def _threads_per_worker(runs: list[PlannedRun]) -> int | None:
    """A joblib sweep's CPU jobs each get their share of the cores (loky sets it in the workers); None otherwise."""
    if not _in_workers(runs):
        return None
    return max(1, len(os.sched_getaffinity(0)) // _workers(runs, runs[0].launcher_jobs))


def _say_total(runs: list[PlannedRun], console: Console, startup=None, packed=None) -> None:
    from depthstudy.estimate import duration

    todo = [r for r in runs if r.estimate is not None]
    if not todo:
        console.print("nothing to train: every run is done")
        return
    total = sum(r.estimate.seconds for r in todo) + (startup.import_s if startup else 0.0)
    source = "cached calibration" if all(r.estimate.cached for r in todo) else "calibration just now"
    scaled = sum(bool(r.estimate.scaled_from) for r in todo)
    how = f"{source}: a few eager training steps of each net on trainer.device={todo[0].cfg.trainer.device}"
    how += f" ({scaled} of {len(todo)} runs not timed: scaled from a timed net by MACs)" if scaled else ""
    how += ", evaluation"
    how += (f", {startup.job_s:.1f} s of start-up per run and {startup.import_s:.1f} s of imports per process "
            "(one-iteration runs, measured)") if startup else "; each run's start-up adds a few seconds (not measured)"
    threads = _threads_per_worker(runs)
    if packed:  # a joblib sweep on GPUs: its runs share them (_gpu_jobs)
        pace = (f"{packed.gain:.2f}x one run's pace on a GPU, measured; " if packed.gain else  # None for one per GPU
                "" if packed.per_gpu == 1 else "their gain on a GPU not measured, counted as none; ")
        line = (f"estimated: {duration(total / packed.speedup)} for {count(len(todo), 'run')}, {packed.at_once} ({pace}"
                f"{duration(total)} of run time; {how})")
    elif threads is not None and "cuda" not in str(todo[0].cfg.trainer.device):
        workers = _workers(runs, runs[0].launcher_jobs)
        wall = 0.0
        for _, grid_runs in _by_grid(runs):  # grids run one after another
            times = [r.estimate.seconds for r in grid_runs if r.estimate is not None]
            if times:
                wall += max(sum(times) / min(workers, len(times)), max(times)) + (startup.import_s if startup else 0.0)
        line = (f"estimated: {duration(wall)} for {count(len(todo), 'run')}, {workers} at a time with {threads} "
                f"CPU thread{'s' if threads > 1 else ''} each ({duration(total)} of run time; {how})")
    else:
        line = f"estimated: {duration(total)} for {count(len(todo), 'run')} one after another ({how})"
        if runs[0].launcher_jobs != 1 or "submitit" in runs[0].launcher:
            line += "; parallel jobs shorten it where they do not share the same cores or GPU"
    console.print(line)


def _dry_run(runs: list[PlannedRun], overrides: list[str] | None, console: Console, estimate: bool) -> None:
    """What the sweep would do: the GPU packing, each run's status (and estimated time), the total."""
    packed = _gpu_jobs(runs, config.normalize_overrides(overrides))
    if packed:
        console.print(packed.line)
    startup = _estimate(runs, console) if estimate else None
    console.print(runs_table(runs, f"{count(len(runs), 'run')} (dry run: nothing trained)", dry_run=True))
    if estimate:
        _say_total(runs, console, startup, packed)


def _unfinished_error(runs: list[PlannedRun], worker_died: Exception | None) -> DepthstudyError | None:
    """Why the sweep did not do all it was asked, and what to do; None when every run finished or diverged."""
    unfinished = [r for r in runs if r.status not in FINAL_STATUSES and not r.live]  # a live run is its job's
    if worker_died is not None and unfinished:
        return DepthstudyError(f"a worker process of the sweep died ({_exit_of(worker_died)}); joblib then stops "
                               f"every worker, so {len(unfinished)} of {len(runs)} runs did not finish. Run the same "
                               "command again: finished runs are skipped, the others resume from their last checkpoint")
    if unfinished:  # a diverged run is a result; a run that did not end is not
        return DepthstudyError(f"{len(unfinished)} of {len(runs)} runs did not finish: " + "; ".join(
            f"{r.run_dir.name}: {r.status if r.status != 'new' else 'did not start'}"
            + (f" ({r.summary['error']})" if (r.summary or {}).get("error") else "")
            for r in unfinished[:5]) + ("; ..." if len(unfinished) > 5 else "")
            + ". Fix the cause and run the same command again: finished runs are skipped")
    return None


def run_sweep(overrides: list[str] | None, dry_run: bool, console: Console, estimate: bool = True) -> list[PlannedRun]:
    runs = plan(overrides)
    if dry_run:
        _dry_run(runs, overrides, console, estimate)
        return runs
    to_train = _say_plan(runs, console)
    if not to_train:  # nothing to launch: on a cluster, a job that only says "already finished" waits in the queue
        console.print(runs_table(runs, "sweep results (nothing to train)"))
        _say_next(runs[0].run_dir.parent, console)
        return runs
    in_workers = _in_workers(runs)
    args = config.normalize_overrides(overrides)
    # The sweep's own settings go on Hydra's command line (Hydra applies its hydra.* overrides to every job): the
    # sweep directory as an absolute path, since joblib's worker processes outlive one sweep in a long-lived
    # process (a notebook, the tests) and keep the working directory they started in.
    args.append(f"hydra.sweep.dir={config.quoted(runs[0].run_dir.parent.resolve())}")
    # The jobs' own settings go into their override lists (the sweeper launches those lists as they are).
    job_extras = []
    if in_workers and not any(a.startswith("trainer.progress=") for a in args):
        job_extras.append("trainer.progress=lines")  # bars of parallel runs would overwrite each other
    launcher_jobs = runs[0].launcher_jobs
    packed = _gpu_jobs(runs, args)
    if packed:
        launcher_jobs = packed.n_jobs
        job_extras += packed.overrides
        console.print(packed.line)
    from depthstudy.events import write_study_experiment

    # TensorBoard's HPARAMS tab for the whole sweep: the grid's axes as filterable columns, in every run directory
    # (an earlier sweep's runs too: TensorBoard would take their older definition as soon as this one).
    others = _other_runs(runs)
    write_study_experiment(runs[0].run_dir.parent, [r.run_dir for r in runs] + [path for path, _ in others],
                           [OmegaConf.to_container(config.without_hydra(r.cfg), resolve=True) for r in runs]
                           + [c for _, c in others])
    stopper = StopWorkersOnCtrlC() if in_workers else None
    grids = _by_grid(runs)
    worker_died = None
    try:
        with stopper or sigterm_as_ctrl_c(), SweepProgress(runs, console):
            try:
                for grid, grid_runs in grids:
                    if stopper and stopper.interrupted:
                        break
                    todo = [r for r in grid_runs if r.status not in FINAL_STATUSES and not r.live]
                    if not todo:  # nothing of this grid to train
                        continue
                    # an idle worker would die of a Ctrl-C: no more workers than this grid's jobs
                    workers = [f"hydra.launcher.n_jobs={_workers(todo, launcher_jobs)}"] if in_workers else []
                    with _jobs_file([r.overrides + job_extras for r in todo]) as jobs:
                        # one grid after another (init_from's come first), only its unfinished runs
                        run_hydra(grid + args + workers + [f"hydra.sweeper.jobs_file={config.quoted(jobs)}"],
                                  multirun=True)
            except Exception as e:
                if type(e).__name__ == "TerminatedWorkerError":  # joblib: one worker killed stops the whole pool
                    worker_died = e
                elif not (stopper and stopper.interrupted):  # else a worker starting up died of the Ctrl-C: see below
                    raise
        if stopper and stopper.interrupted:
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        if "submitit" in runs[0].launcher and "Local" not in runs[0].launcher:  # the cluster's jobs go on
            console.print(f"[yellow]the sweep's cluster jobs keep running; `scancel --name {runs[0].job_name}` stops "
                          "them, each at the end of an iteration with a checkpoint; rerun the sweep to resume[/]")
        raise
    finally:
        console.print(runs_table(runs, "sweep results"))
    error = _unfinished_error(runs, worker_died)
    if error:
        raise error
    if worker_died is not None:  # every run had ended: what was asked is done
        console.print(f"[yellow]a worker process of the sweep died ({_exit_of(worker_died)}) after every run ended[/]")
    _say_next(runs[0].run_dir.parent, console)
    return runs


def _say_plan(runs: list[PlannedRun], console: Console) -> int:
    """What the sweep will do: done, left to live jobs, to train (the count it returns); a SLURM sweep without memory."""
    live = find_live(runs)
    to_train = sum(r.status not in FINAL_STATUSES for r in runs) - len(live)
    done = len(runs) - to_train - len(live)
    console.print(f"sweep: {count(len(runs), 'run')}, {done} already done, "
                  + (f"{len(live)} left to the job or process already on it, " if live else "")
                  + f"{to_train} to train, under {runs[0].run_dir.parent}")
    for r in live:
        console.print(f"  {r.run_dir.name}: left to its {r.live}", highlight=False)
    launcher = runs[0].cfg.hydra.launcher
    if to_train and _on_slurm(runs) and not any(launcher.get(k) for k in ("mem_gb", "mem_per_cpu", "mem_per_gpu")):
        console.print("[yellow]sweep: no memory asked for (hydra.launcher.mem_gb=8 or mem_per_cpu=4G, say): where "
                      "the cluster has no default, each job takes a whole node's memory and they run one at a time[/]")
    return to_train


def _say_next(sweep_dir: Path, console: Console) -> None:
    """What to do with a finished sweep, as `depthstudy train` says it for one run (pasteable, spaces and all)."""
    import shlex

    where = shlex.quote(str(sweep_dir))
    console.print(f"next: depthstudy report {where}   |   tensorboard --logdir {where}   |   depthstudy runs {where}",
                  highlight=False, soft_wrap=True)


def _exit_of(error: Exception) -> str:
    """How joblib says its workers ended ("The exit codes of the workers are {SIGKILL(-9)}": killed, by hand or by
    the out-of-memory killer)."""
    import re

    found = re.search(r"exit codes[^{]*\{([^}]*)\}", str(error))
    if not found:
        return "no exit code given"
    codes = found.group(1)
    return f"exit {codes}" + (": killed, by hand or for lack of memory" if "SIGKILL" in codes else "")


@contextmanager
def _jobs_file(jobs: list[list[str]]):
    """A temporary JSON file of the jobs to launch, for the depthstudy sweeper (hydra_plugins.depthstudy_sweeper)."""
    fd, name = tempfile.mkstemp(prefix="depthstudy-jobs-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(jobs, f)
        yield Path(name)
    finally:
        os.unlink(name)


class SweepProgress:
    """One line whenever the sweep's state changes: runs finished / total, running, failed, and an ETA from the
    pace so far. Read from the runs' summary.json files (any launcher), every few seconds, in a thread."""

    def __init__(self, runs: list[PlannedRun], console: Console, every_s: float = 3.0, queue_every_s: float = 15.0):
        self.runs, self.console, self.every_s = runs, console, every_s
        self._stop, self._last = threading.Event(), None
        self.queue_every_s, self._queue_checked, self._said_stuck = queue_every_s, 0.0, set()

    def __enter__(self):
        self._started, self._done_before = time.monotonic(), self._counts()["done"]
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _counts(self) -> dict:
        statuses = [r.status for r in self.runs]
        return {"done": sum(s in FINAL_STATUSES for s in statuses), "running": statuses.count("running"),
                "failed": sum(s in ("failed", "crashed") for s in statuses)}

    def _watch(self) -> None:
        while not self._stop.wait(self.every_s):
            self._report()
            if _on_slurm(self.runs) and time.monotonic() - self._queue_checked > self.queue_every_s:
                self._queue_checked = time.monotonic()
                self._say_stuck()

    def _say_stuck(self) -> None:
        """Name the sweep's jobs that pend for a reason that will not clear by itself, once each, with what to
        change: else the sweep would say "0/1 done, 0 running" for ever."""
        name, folder = self.runs[0].job_name, str(self.runs[0].cfg.hydra.launcher.submitit_folder)
        stuck: dict[str, list[str]] = {}
        for job in cluster.queue() or []:
            if (job.name == name and job.state == "PENDING" and cluster.stuck_reason(job.reason)
                    and Path(folder.replace("%j", job.id)).is_dir() and (job.id, job.reason) not in self._said_stuck):
                self._said_stuck.add((job.id, job.reason))
                stuck.setdefault(job.reason, []).append(job.id)
        for reason, ids in stuck.items():
            shown = ", ".join(ids[:5]) + (", ..." if len(ids) > 5 else "")
            self.console.print(f"[red]sweep: job{'s' if len(ids) > 1 else ''} {shown} will not start "
                               f"({reason}): {cluster.stuck_reason(reason)}; then Ctrl-C, `scancel --name {name}` "
                               "and run the sweep again[/]", highlight=False)

    def _report(self) -> None:
        counts = self._counts()
        if counts != self._last:
            self._last = counts
            fresh, left = counts["done"] - self._done_before, len(self.runs) - counts["done"]
            pace = (time.monotonic() - self._started) / fresh if fresh else None
            eta = f", about {pace * left / 60:.1f} min left" if pace and left else ""
            self.console.print(f"[bold]sweep: {counts['done']}/{len(self.runs)} done, {counts['running']} running"
                               + (f", {counts['failed']} failed" if counts["failed"] else "") + f"{eta}[/]")

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._report()  # the final state, however quickly it came
        return False


@dataclass
class GpuPlan:
    """How a joblib sweep shares this machine's GPUs (trainer.jobs_per_gpu, depthstudy.packing)."""

    per_gpu: int  # runs at once on each GPU
    gpus: int
    why: str
    gain: float | None  # per_gpu runs' images/s on one GPU over one run's, where measured
    overrides: list[str]  # for its jobs
    given_jobs: int | None = None  # the command line's hydra.launcher.n_jobs, where it gives one

    @property
    def speedup(self) -> float:
        """The sweep's pace over one run's: the GPUs side by side, each with its measured gain (none if unmeasured)."""
        return min(self.gpus, self.n_jobs) * (self.gain or 1.0)

    @property
    def n_jobs(self) -> int:
        return self.given_jobs or self.per_gpu * self.gpus

    @property
    def at_once(self) -> str:
        k, g = self.per_gpu, self.gpus
        gpus = f"{g} GPU{'s' if g > 1 else ''}"
        if self.given_jobs:
            return f"{self.given_jobs} run{'s' if self.given_jobs > 1 else ''} at a time on {gpus}"
        return f"{k} run{'s' if k > 1 else ''} at once on each of {gpus}"

    @property
    def line(self) -> str:
        return f"sweep: {self.at_once} ({self.why})"


def _gpu_jobs(runs: list[PlannedRun], args: list[str]) -> GpuPlan | None:
    """A joblib sweep on a machine with GPUs: how it shares them; None for other launchers or on a CPU. Where the
    command line gives n_jobs itself, that many run at a time, spread over the GPUs (their gain unmeasured)."""
    cfg = runs[0].cfg
    device = str(cfg.trainer.device)
    if not _in_workers(runs) or device == "cpu":
        return None
    from depthstudy import packing

    gpus = packing.visible_gpus()
    if not gpus:
        return None
    gpus = gpus if device == "auto" else 1  # auto spreads the jobs over the GPUs (packing.gpu_slot); cuda:N does not
    if any(a.startswith("hydra.launcher.n_jobs=") for a in args):  # the user's choice
        given = _workers(runs, runs[0].launcher_jobs)
        return GpuPlan(-(-given // gpus), gpus, "hydra.launcher.n_jobs", None, [], given_jobs=given)
    from depthstudy.device import compile_mode
    import torch

    mode = compile_mode(bool(cfg.trainer.compile), cfg.trainer.cuda_graphs, torch.device("cuda"))
    setting = cfg.trainer.jobs_per_gpu
    k, why, gain = packing.decide(setting, str(cfg.trainer.precision), mode, [int(r.cfg.model.depth) for r in runs])
    return GpuPlan(k, gpus, why, gain if k > 1 else None, [f"trainer.jobs_per_gpu={k}"] if setting == "auto" else [])


def _workers(runs: list[PlannedRun], launcher_jobs: int) -> int:
    """joblib's n_jobs (-1: every core, -2: all but one...), but no more workers than jobs."""
    n = launcher_jobs if launcher_jobs > 0 else (os.cpu_count() or 1) + 1 + launcher_jobs
    return max(1, min(n, len(runs)))


def _varying(runs: list[PlannedRun]) -> list[str]:
    """Override keys whose value differs between runs: the grid's axes, less those the run name already shows
    (depth, shortcut, weight decay, seed), so the table fits an 80-column terminal with the names whole."""
    values: dict[str, set] = {}
    for r in runs:
        for o in r.overrides:
            key, _, value = o.partition("=")
            values.setdefault(key, set()).add(value)
    return [k for k, v in values.items() if len(v) > 1 and k not in config.NAME_KEYS]


def _fmt(x) -> str:
    return "" if x is None else f"{x:.2f}"


def runs_table(runs: list[PlannedRun], title: str, dry_run: bool = False) -> Fitted:
    """The sweep's runs, one row each, fitted to the terminal (run names whole; the least useful columns go first)."""
    keys = _varying(runs)
    table = Table(title=title)
    table.add_column("run")
    for k in keys:
        table.add_column(k.split(".")[-1])
    table.add_column("status")
    if dry_run and any(r.estimate for r in runs):
        table.add_column("est. time", justify="right", no_wrap=True)
    if not dry_run:
        for col in ("train err %", "val err %", "test err %", "time s"):
            table.add_column(col, justify="right")
    colours = {"finished": "green", "diverged": "red", "failed": "red", "crashed": "red", "interrupted": "yellow",
               "running": "yellow"}
    for r in runs:
        s = r.summary or {}
        status = r.status
        if status == "diverged":
            status = f"diverged @{s.get('diverged_at')}"
        row = [r.run_dir.name] + [dict(o.partition("=")[::2] for o in r.overrides).get(k, "") for k in keys]
        if r.live:
            status += f" ({' '.join(r.live.split()[:2])})"  # left to that job or process
        row.append(f"[{colours.get(r.status, 'white')}]{status}[/]")
        if dry_run and any(r.estimate for r in runs):
            from depthstudy.estimate import duration

            row.append(duration(r.estimate.seconds) if r.estimate else "")
        if not dry_run:
            row += [_fmt(s.get("train_error")), _fmt(s.get("val_error")), _fmt(s.get("test_error")),
                    _fmt(s.get("wall_time_s"))]
        table.add_row(*row)
    return Fitted(table, ("run", "status"), ("time s", "val err %", "train err %", *[k.split(".")[-1] for k in keys]),
                  more="`depthstudy runs` lists them")
