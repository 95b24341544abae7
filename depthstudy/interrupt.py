"""Stopping cleanly: Ctrl-C, SIGTERM and a sweep's stop file, in one place.

A run stops at the end of an iteration, so the checkpoint it then saves is consistent; a second
Ctrl-C interrupts at once. A sweep whose jobs run in joblib worker processes cannot rely on the
workers' own Ctrl-C (an idle worker would die of it, and joblib would then kill the busy ones): the
workers ignore SIGINT, and the sweep writes a stop file, named in an environment variable, that every
job checks once per iteration.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

STOP_FILE_ENV = "DEPTHSTUDY_STOP_FILE"
SWEEP_PID_ENV = "DEPTHSTUDY_SWEEP_PID"  # the sweep process that started this worker


def sweep_temp_dir(pid=None) -> Path:
    """A sweeping process's own temporary folder (its stop file, its GPU slots), removed when the sweep ends. Per
    process, not per sweep directory: joblib keeps its worker processes, with the environment they started with,
    for the next sweep of a long-lived process (a notebook, the API)."""
    return Path(tempfile.gettempdir()) / f"depthstudy-sweep-{pid or os.getpid()}"


def sweep_asked_to_stop() -> bool:
    """The sweep wrote its stop file, or the sweep process is gone (killed: its workers must not train on)."""
    path = os.environ.get(STOP_FILE_ENV)
    return (bool(path) and os.path.exists(path)) or sweep_is_gone()


def sweep_is_gone() -> bool:
    """In a worker process of a sweep: its parent, the sweep, has died (the worker was re-parented)."""
    pid = os.environ.get(SWEEP_PID_ENV, "")
    return pid.isdigit() and int(pid) != os.getpid() and os.getppid() != int(pid)


def in_sweep_worker() -> bool:
    """A job of a sweep whose Ctrl-C the sweep handles (a joblib worker)."""
    return bool(os.environ.get(STOP_FILE_ENV))


def ignore_ctrl_c() -> None:
    """A sweep worker leaves Ctrl-C to the sweep (see StopWorkersOnCtrlC)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


# The signal that stopped the last run, with the handler it displaced (e.g. submitit's), so that whoever
# launched the run can pass it on once the checkpoint is saved (see take_deferred_signal). Process-wide: a cluster
# job's guard (launch) and the training loop's, nested inside it, see the same request.
_deferred: dict = {}
_guards: list = []  # the stop_on_interrupt guards now active in the main thread, outermost first
# SIGUSR2: what SLURM (through submitit) sends before a time limit or a preemption.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR2)


def take_deferred_signal():
    """(signum, the handler our stop displaced) of the signal that stopped the last run, once; or None."""
    item = _deferred.pop("signal", None)
    return item


def stop_requested() -> bool:
    """A stop signal arrived while a guard was active (a cluster job's, before its training began)."""
    return bool(_guards) and "signal" in _deferred


def resume_hint() -> str:
    """What an interrupted run says next: a cluster job's guard says itself whether the job is requeued."""
    return "" if any(g.job for g in _guards) else ", run the same command to resume"


class stop_on_interrupt:
    """Ctrl-C (SIGINT), SIGTERM, SLURM's pre-timeout/preemption signal (SIGUSR2) or the sweep's stop file
    asks the loop to stop at the end of the current iteration (`requested`). A second Ctrl-C interrupts at
    once (a repeated SIGTERM or SIGUSR2 does not: SLURM may signal the job step and its srun both).
    Nested guards share the outermost one's handlers and request. job: a cluster job's guard, from before
    training starts (launch), which says what follows an interruption."""

    def __init__(self, job: bool = False):
        self.job = job

    def __enter__(self):
        self._old = {}
        if threading.current_thread() is threading.main_thread():
            if not _guards:
                _deferred.pop("signal", None)  # a stop asked of an earlier run is not this one's
                for sig in STOP_SIGNALS:
                    if signal.getsignal(sig) is not signal.SIG_IGN:  # ignored stays ignored (a sweep's workers)
                        self._old[sig] = signal.signal(sig, self._handle)
            _guards.append(self)
        return self

    @property
    def requested(self) -> bool:
        return "signal" in _deferred or sweep_asked_to_stop()

    def _handle(self, signum, frame):
        if "signal" in _deferred:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        _deferred["signal"] = (signum, self._old.get(signum))

    def __exit__(self, *exc):
        if self in _guards:
            _guards.remove(self)
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


@contextmanager
def sigterm_as_ctrl_c():
    """SIGTERM to a sweep whose jobs run in this process ends it as Ctrl-C does (a run in training stops at the end of
    its iteration with a checkpoint, stop_on_interrupt), its temporary files removed; not at once, leaving them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


class StopWorkersOnCtrlC:
    """Ctrl-C (or SIGTERM) while a sweep's jobs run in joblib's worker processes.

    The terminal sends Ctrl-C to the workers too; every job leaves its worker ignoring SIGINT
    (ignore_ctrl_c) and the sweep starts no more workers than it has jobs. This process catches the
    Ctrl-C, writes the stop file and waits: each running job stops at the end of its iteration and
    saves a checkpoint, queued jobs start nothing. A second Ctrl-C aborts at once. If this process is
    killed outright (kill -9), each worker sees its parent gone and stops the same way.
    """

    def __init__(self):
        self.stop_file, self.interrupted = sweep_temp_dir() / "stop", False

    def __enter__(self):
        self.stop_file.unlink(missing_ok=True)
        self.stop_file.parent.mkdir(exist_ok=True)
        os.environ[STOP_FILE_ENV] = str(self.stop_file)
        os.environ[SWEEP_PID_ENV] = str(os.getpid())
        self._old_handlers = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}
        return self

    def _handle(self, signum, frame):
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        self.stop_file.touch()
        print("\nstopping: running jobs save a checkpoint at the end of their iteration, queued jobs are skipped "
              "(Ctrl-C again to abort at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, handler in self._old_handlers.items():
            signal.signal(sig, handler)
        os.environ.pop(STOP_FILE_ENV, None)
        os.environ.pop(SWEEP_PID_ENV, None)
        shutil.rmtree(self.stop_file.parent, ignore_errors=True)  # the stop file and the jobs' GPU slots
        return False
