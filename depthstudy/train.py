"""train(cfg, run_dir): one run, top to bottom.

build (seed -> data on the device -> model -> optimizer, schedule, batch stream) -> restore the
checkpoint if there is one -> loop (TensorBoard every log_every, val/test every eval_every,
checkpoint every ckpt_every; Ctrl-C stops at the end of an iteration) -> finish (final evaluation,
checkpoint, summary.json). The run directory's format is depthstudy.rundir's; train_step is the hot path.
"""

from __future__ import annotations

import contextlib
import math
import shlex
import time
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from depthstudy import checkpoint, events, rundir
from depthstudy.data import Data, TrainStream, eval_batches, load_data
from depthstudy.device import (WithFallback, autocast_for, compile_mode, compiled, configure_device, fresh_compiler,
                               graphs_skipped_check, memory_format, pick_device, synchronize)
from depthstudy.diagnostics import diagnostic_scalars
from depthstudy.grow import grow_from_run
from depthstudy.errors import DepthstudyError, UsageError
from depthstudy import cluster, interrupt
from depthstudy.interrupt import stop_on_interrupt
from depthstudy.models import build_model, count_params, evaluating
from depthstudy.optim import Schedule, load_state, make_update, set_lr
from depthstudy.progress import RunProgress, say


# --- one iteration (the hot path; depthstudy bench times exactly this) ---

class LossAndErrors(torch.nn.Module):
    """The model with its training loss and the batch's error count: the forward half of an iteration, whole, so
    that torch.compile (and CUDA graphs) take the loss and the counting in with the net instead of leaving a
    dozen small kernels to run one by one around it."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model
        # the batch count's 1, made once on the model's device (not a new tensor every iteration)
        self.register_buffer("one", torch.ones((), device=next(model.parameters()).device), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, [loss, misclassified images, 1]) -- the second detached, as the log window adds it up."""
        logits = self.model(x).float()
        loss = F.cross_entropy(logits, y)
        wrong = (logits.detach().argmax(1) != y).sum()
        return loss, torch.stack([loss.detach(), wrong.float(), self.one])


def train_step(forward, optimizer, x, y, autocast, window: torch.Tensor) -> torch.Tensor:
    """Forward (a LossAndErrors, eager or compiled), backward, SGD step; adds (loss, errors, 1) to `window` on the
    device (no host sync). The window is added to last: an iteration that fails before then changed nothing.

    Returns the number of misclassified images in the batch, as a device tensor.
    """
    with autocast():
        loss, counts = forward(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    window += counts
    return counts[1]


# --- evaluation ---

def evaluate(model, data: Data, split, batch_size: int, channels_last: bool, autocast) -> tuple[float, float]:
    """(error %, mean loss) over a whole split, in eval mode."""
    wrong = torch.zeros((), device=split.labels.device)
    loss = torch.zeros((), device=split.labels.device)
    with evaluating(model), autocast():
        for x, y in eval_batches(data, split, batch_size, channels_last):
            logits = model(x).float()
            loss += F.cross_entropy(logits, y, reduction="sum")
            wrong += (logits.argmax(1) != y).sum()
    n = len(split)
    return 100.0 * wrong.item() / n, loss.item() / n


# --- what a run trains with, and what a checkpoint holds ---

@dataclass
class Run:
    """Everything one run trains with, built from its config."""

    cfg: DictConfig
    run_dir: Path
    device: torch.device
    data: Data
    model: torch.nn.Module
    iteration: object  # one training iteration: train_step through the eager or compiled LossAndErrors (x, y,
    #                    autocast, window) -> wrong; a compiled one falls back to eager if compiling fails
    autocast: object
    optimizer: torch.optim.SGD
    schedule: Schedule
    stream: TrainStream
    probe: torch.Tensor  # a fixed held-out batch for the instruments (layer responses, block diagnostics)
    grown_from: dict | None = None  # model.init_from: what was grown from where, and the function check

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def total(self) -> int:
        return int(self.cfg.schedule.iterations)

    @property
    def batch_size(self) -> int:
        return int(self.cfg.optim.batch_size)


def build_net(cfg: DictConfig, device: torch.device, fresh: bool, grown: dict | None):
    """(data on the device, the run's net on the device, what growing it did or None): the part of a run that
    training and `depthstudy eval` share (each configures the device first: device.configure_device). fresh: a new run (a grown net copies its source's weights); else the
    run's checkpoint will hold them, and `grown` (its summary's grown_from) says how it was grown."""
    t = cfg.trainer
    data = load_data(cfg.data).to(device)
    model = build_model(cfg.model, data.shape, data.num_classes)
    grown_from = None
    if cfg.model.get("init_from"):  # a deeper net grown from a trained run (depthstudy.grow)
        grown_from = grow_from_run(cfg.model, model, data, device, fresh, int(t.eval_batch_size), recorded=grown)
    return data, model.to(device, memory_format=memory_format(bool(t.channels_last))), grown_from


def make_stream(cfg: DictConfig, data: Data) -> TrainStream:
    """The run's training batches: its batch size, seed, augmentation, padding and layout."""
    return TrainStream(data, cfg.optim.batch_size, cfg.seed, bool(cfg.data.augment), int(cfg.data.pad),
                       channels_last=bool(cfg.trainer.channels_last), pad_fill=str(cfg.data.get("pad_fill", "zero")))


def build(cfg: DictConfig, run_dir: Path, gpu: int | None, say, fresh: bool = True,
          grown: dict | None = None) -> Run:
    t = cfg.trainer
    device = pick_device(str(t.device), gpu)
    # This job's threads and precision; its share of the GPU where it shares one (not for `depthstudy eval`).
    configure_device(device, str(t.precision), t.threads, t.get("jobs_per_gpu", 1))
    torch.manual_seed(cfg.seed)
    data, model, grown_from = build_net(cfg, device, fresh, grown)
    mode = compile_mode(bool(t.compile), t.cuda_graphs, device)
    optimizer, update = make_update(model, cfg.optim, t, say, mode == "cuda_graphs")
    forward = LossAndErrors(model)
    iteration = partial(train_step, forward, optimizer)
    if mode != "off" or update is not optimizer:  # a failure compiling or capturing falls back to eager, in one line
        fresh_compiler()  # this run compiles as in a new process (a joblib worker trains run after run)
        iteration = WithFallback(partial(train_step, compiled(forward, mode, device), update), iteration, print,
                                 "CUDA graphs" if mode == "cuda_graphs" else "torch.compile",
                                 check=graphs_skipped_check() if mode == "cuda_graphs" else None, model=model)
    schedule = Schedule(cfg.schedule, cfg.optim.lr, int(cfg.model.depth))
    stream = make_stream(cfg, data)
    probe = next(eval_batches(data, data.val or data.test or data.train, 500, bool(t.channels_last)))[0]
    return Run(cfg, run_dir, device, data, model, iteration, autocast_for(device, str(t.precision)), optimizer,
               schedule, stream, probe, grown_from)


@dataclass
class RunState:
    """Where a run is: what a checkpoint holds besides the weights, optimizer and schedule state."""

    window: torch.Tensor  # the current log window's sums: loss, wrong count, batches (on the device)
    step: int = 0  # iterations done
    saved: int = 0  # iterations the last checkpoint holds: where a resume starts
    earlier_s: float = 0.0  # wall time of the processes before this one
    eval_s: float = 0.0  # seconds spent evaluating, all processes
    compile_s: float = 0.0  # seconds of the iterations that compiled (torch.compile, CUDA graphs), all processes
    started: float = field(default_factory=time.perf_counter)  # when this process began training

    def elapsed(self) -> float:
        return self.earlier_s + time.perf_counter() - self.started

    def to_checkpoint(self, run: Run) -> dict:
        cuda = run.device.type == "cuda"
        return {"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(), "step": self.step,
                "elapsed_s": self.elapsed(), **run.schedule.state(), "window": self.window.cpu(),
                "torch_rng": torch.get_rng_state(), "cuda_rng": torch.cuda.get_rng_state_all() if cuda else [],
                "eval_s": self.eval_s, "compile_s": self.compile_s}

    @classmethod
    def restore(cls, saved: dict | None, run: Run) -> RunState:
        """A fresh state, or everything that decides the next iteration taken from the checkpoint."""
        if saved is None:
            return cls(window=torch.zeros(3, device=run.device))
        run.model.load_state_dict(saved["model"])
        load_state(run.optimizer, saved["optimizer"])
        torch.set_rng_state(saved["torch_rng"])
        if run.device.type == "cuda" and saved.get("cuda_rng"):
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        run.schedule.restore(saved)
        return cls(window=saved["window"].to(run.device), step=saved["step"], saved=saved["step"],
                   earlier_s=saved["elapsed_s"],
                   eval_s=saved.get("eval_s", 0.0), compile_s=saved.get("compile_s", 0.0))


class LogWindow:
    """Training loss, error and images/s over the mini-batches since the last log point. The sums live on
    the device (train_step adds to them without a host sync); reading them is the one sync per window."""

    def __init__(self, sums: torch.Tensor, batch_size: int):
        self.sums, self.batch_size = sums, batch_size
        self.carried = int(sums[2].item())  # batches of this window trained before an interruption
        self.started = time.perf_counter()
        self.images, self.train_s = 0, 0.0  # trained by this process, and the seconds it took: its throughput

    def exclude(self, seconds: float, batches: int = 0) -> None:
        """Evaluation and saving do not count as training time; compiling iterations count neither their time nor
        their batches."""
        self.started += seconds
        self.carried += batches

    def read(self) -> tuple[dict, float | None]:
        """The window's {train_loss, train_error} and images/s (None: no batch of it counts); then a new window."""
        loss_sum, wrong_sum, batches = self.sums.tolist()
        now = time.perf_counter()
        fresh, self.carried = int(batches) - self.carried, 0  # only this process's batches count as its speed
        ips = fresh * self.batch_size / max(now - self.started, 1e-9) if fresh > 0 else None
        self.images, self.train_s = self.images + fresh * self.batch_size, self.train_s + now - self.started
        self.started = now
        self.sums.zero_()
        return {"train_loss": loss_sum / batches, "train_error": 100.0 * wrong_sum / (batches * self.batch_size)}, ips


# --- the run ---

def train(cfg: DictConfig, run_dir: Path, in_sweep: bool = False, gpu: int | None = None, key_defaults=None) -> dict:
    """gpu: as for device.pick_device. key_defaults: as for rundir.config_changes (a run made before a key existed
    ran as its default)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with rundir.run_lock(run_dir):
        try:
            return _train(cfg, run_dir, in_sweep, gpu, key_defaults)
        except (OSError, RuntimeError) as e:  # a full disk, a file-size limit: said by its cause, in one line
            # By errno only: the free-space guess is for torch.save's "enforce fail" (checkpoint.py makes it), and
            # here it would call any error of a run on a nearly full disk (a CUDA one, a bug) a full disk.
            problem = rundir.disk_problem(e)
            if problem is None:
                raise
            saved = getattr(e, "iterations", None)
            again = f"resume from iteration {saved}" if saved else "start it again"
            error = DepthstudyError(f"could not write into {run_dir}: {problem[0]}; {problem[1]} and run the same "
                                    f"command to {again}")
            error.iterations = saved
            raise error from None


def _train(cfg: DictConfig, run_dir: Path, in_sweep: bool, gpu: int | None, key_defaults=None) -> dict:
    config = OmegaConf.to_container(cfg, resolve=True)
    changes = rundir.check_same_experiment(run_dir, config, bool(cfg.trainer.force_resume), key_defaults)
    previous = rundir.read_summary(run_dir)
    if previous and previous["status"] in rundir.FINAL_STATUSES and not rundir.summary_problem(previous):
        say(rundir.nothing_to_do(run_dir, previous))
        return previous
    rundir.remove_stale_temp_files(run_dir)
    resuming = (run_dir / checkpoint.CHECKPOINT).exists()
    if not resuming:  # a new run: its config first, so that any failure is recorded beside it
        rundir.write_config(run_dir, config)

    said = []
    run = build(cfg, run_dir, gpu, said.append, fresh=not resuming, grown=(previous or {}).get("grown_from"))
    saved = checkpoint.load(run_dir)
    try:
        state = RunState.restore(saved, run)
    except (RuntimeError, KeyError, ValueError) as e:  # e.g. trainer.force_resume onto another net's checkpoint
        raise UsageError(
            f"checkpoint {run_dir / checkpoint.CHECKPOINT} does not fit this run ({str(e).splitlines()[0][:200]}); "
            "nothing was changed: use another name= or out_dir=, or move the checkpoint away") from None
    summary = start_summary(run, state, config, previous, changes)
    # A resume writes its config only now (a checkpoint that does not fit leaves the directory as it was), and after
    # the summary that records the change: killed between the two, the same command goes on (check_same_experiment).
    rundir.write_summary(run_dir, summary)
    if resuming:
        rundir.write_config(run_dir, config)
    # purge_step: whatever an earlier process logged after this run's checkpoint (or at all, if it never
    # saved one) is dropped by TensorBoard's reader, so curves never show duplicated or backwards steps.
    writer = events.EventWriter(run_dir, resume_step=state.step + 1)
    if saved is None:
        writer.session_start(events.hparams_of(config))
    elif changes:  # a forced resume onto another config: the HPARAMS tab shows the new settings and the change
        writer.session_start({**events.hparams_of(config), "resumed_with_changes": f"at iteration {state.step}: "
                              + "; ".join(changes)})
    if run.grown_from is not None and not resuming:
        g = run.grown_from
        said.append(f"grown from {g['run']} (depth {g['depth']}): blocks {g['inserted_blocks']} inserted "
                    f"({g['grow_init']}); training error {g['train_error_before']:.2f}% -> "
                    f"{g['train_error_after']:.2f}%, largest logit change {g['max_logit_change']:.3g}")
    progress = RunProgress(str(cfg.trainer.progress), run.name, run.total, state.step, log=run.run_dir / rundir.LOG_FILE)
    progress.print(f"{run.name}: {summary['params']:,} params on {run.device}"
                   + (f", resuming at iteration {state.step}" if state.step else ""))
    for line in said:
        progress.print(f"{run.name}: {line}")
    if isinstance(run.iteration, WithFallback):
        run.iteration.say = lambda line: progress.print(f"{run.name}: {line}")  # through the progress output
        if state.step < run.total:
            progress.print(f"{run.name}: compiling ({run.iteration.what}): the first iterations take a while")

    try:
        status, last, meter = loop(run, state, writer, progress, summary)
        summary = finish(run, state, status, last, meter, writer, progress, summary)
        if not in_sweep:  # a single run: where it is and what to do next (a sweep prints its own table)
            where = shlex.quote(str(run.run_dir.parent))  # pasteable, spaces and all
            progress.print(f"run directory: {run.run_dir}\n  next: tensorboard --logdir {where}"
                           f"   |   depthstudy report {where}   |   depthstudy runs {where}")
        return summary
    except Exception as e:
        e.iterations = state.saved  # the failure record says where the run resumes: its last checkpoint
        progress.close()
        raise


def start_summary(run: Run, state: RunState, config: dict, previous: dict | None, changes: list[str]) -> dict:
    """summary.json as this process starts: status running, what the run is (params, config_hash) and its history,
    every process that trained it so far and this one (from_iteration, to_iteration, and the config changes a forced
    resume made)."""
    previous = previous or {}
    # Every log cadence the run has used (trainer.log_every may change on resume): runs.gaps reads its curves by them.
    cadences = [c for c in previous.get("log_every_used") or [] if isinstance(c, int)]
    history = [h for h in previous.get("history") or [] if isinstance(h, dict)]
    history.append({"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from_iteration": state.step,
                    "to_iteration": state.step, "config_changes": changes, "provenance": rundir.provenance()})
    summary = {"status": "running", "run_name": run.name, "iterations": state.step, "total_iterations": run.total,
               "params": count_params(run.model), "config_hash": rundir.config_hash(config), "device": str(run.device),
               "precision": run.cfg.trainer.precision, "history": history, "provenance": rundir.provenance(),
               "log_every_used": sorted({*cadences, int(run.cfg.trainer.log_every)})}
    if cluster.jobs_of(previous):  # every SLURM job that trained the run, for sacct and `depthstudy runs`
        summary["cluster_jobs"] = cluster.jobs_of(previous)
    if run.grown_from is not None:
        summary["grown_from"] = run.grown_from  # resumed: what its first process recorded (grow.grow_from_run)
    return summary


def _reached(summary: dict, step: int) -> None:
    """summary.json's iterations (where a resume starts) and this process's entry of its history."""
    summary["iterations"] = summary["history"][-1]["to_iteration"] = step


def loop(run: Run, state: RunState, writer, progress, summary: dict) -> tuple[str, dict, LogWindow]:
    """Train from state.step to the last iteration: (finished | diverged | interrupted, last log window, meter).
    At each checkpoint summary.json's iterations moves on with it: what a resume starts from, for `depthstudy runs`."""
    schedule, total, batch_size = run.schedule, run.total, run.batch_size
    # The cadences as plain ints: a config lookup per iteration would cost more than the bookkeeping itself.
    t = run.cfg.trainer
    log_every, eval_every, diagnostics_every, ckpt_every = (int(t.log_every), int(t.eval_every),
                                                            int(t.diagnostics_every), int(t.ckpt_every))
    caffe = run.cfg.optim.momentum_form == "caffe"
    meter = LogWindow(state.window, batch_size)
    state.started = meter.started = time.perf_counter()
    # The iterations that compile (WithFallback's first calls) are timed apart, with a device sync each.
    compiling = isinstance(run.iteration, WithFallback) and run.iteration.tries > 0
    compiled_n, compiled_s, last, lr = 0, 0.0, {}, None
    run.model.train()
    with stop_on_interrupt() as stop:
        for step in range(state.step, total):
            new_lr = schedule.lr_at(step, schedule.warming)
            if new_lr != lr:
                set_lr(run.optimizer, new_lr, caffe)
                lr = new_lr
            x, y = run.stream.batch(step)
            began = time.perf_counter() if compiling else 0.0
            wrong = run.iteration(x, y, run.autocast, meter.sums)
            state.step = done = step + 1
            if compiling:
                synchronize(run.device)
                seconds = time.perf_counter() - began
                state.compile_s, compiled_n, compiled_s = state.compile_s + seconds, compiled_n + 1, compiled_s + seconds
                meter.exclude(seconds, batches=1)
                compiling = run.iteration.tries > 0
                if not compiling:
                    progress.print(f"{run.name}: the first {compiled_n} iteration{'s' if compiled_n > 1 else ''} "
                                   f"(compiling) took {compiled_s:.1f} s, not counted in images/s")
            progress.advance(done)
            # The paper's rule: lr 0.01 until training error < 80% (a host sync per step, during warm-up only).
            if schedule.warming and schedule.end_warmup_if_due(done, 100.0 * wrong.item() / batch_size):
                progress.print(f"{run.name}: warm-up ended at iteration {done}")

            if done % log_every == 0 or done == total:
                last, ips = meter.read()
                if not math.isfinite(last["train_loss"]):
                    progress.print(f"{run.name}: loss is {last['train_loss']} at iteration {done}: diverged, stopping")
                    return "diverged", last, meter
                writer.scalars(done, {events.TRAIN_LOSS: last["train_loss"], events.TRAIN_ERROR: last["train_error"],
                                      events.LR: lr, **({events.THROUGHPUT: ips} if ips is not None else {})})
                progress.update(done, last["train_loss"], last["train_error"], ips, lr)
            if done == total:
                break
            paused = time.perf_counter()
            if eval_every and done % eval_every == 0:
                evaluate_and_log(run, state, writer, progress)
            if diagnostics_every and done % diagnostics_every == 0:
                writer.scalars(done, diagnostic_scalars(run.model, run.probe))
            stopping = stop.requested  # read once: a stop that arrives after this waits for the next iteration
            if done % ckpt_every == 0 or stopping:
                checkpoint.save(run.run_dir, state.to_checkpoint(run))
                state.saved = done
                _reached(summary, done)
                with contextlib.suppress(OSError):  # bookkeeping: a full disk fails the next checkpoint, in its words
                    rundir.write_summary(run.run_dir, summary)
            meter.exclude(time.perf_counter() - paused)
            if stopping:
                return "interrupted", last, meter
    return "finished", last, meter


def evaluate_and_log(run: Run, state: RunState, writer, progress) -> dict:
    """Val and test error and loss at state.step, to TensorBoard and the progress output."""
    t, started, out = run.cfg.trainer, time.perf_counter(), {}
    for split_name, split in (("val", run.data.val), ("test", run.data.test)):
        if split is not None:
            err, loss = evaluate(run.model, run.data, split, int(t.eval_batch_size), bool(t.channels_last), run.autocast)
            out[f"{split_name}_error"], out[f"{split_name}_loss"] = err, loss
            writer.scalars(state.step, {events.ERROR_TAGS[split_name]: err, events.LOSS_TAGS[split_name]: loss})
    seconds = time.perf_counter() - started
    state.eval_s += seconds
    writer.scalars(state.step, {events.EVAL_TIME: seconds})
    progress.print(f"{run.name} it {state.step}: error % " + " ".join(
        f"{k.removesuffix('_error')} {v:.2f}" for k, v in out.items() if k.endswith("_error")))
    return out


TRAIN_ERROR_MEASURE = "final weights, whole training split, eval mode, no augmentation"


def measure_training_split(run: Run, last: dict, progress) -> dict:
    """A finished run's train_error and train_loss: its final weights over the whole training split in eval mode,
    without augmentation, so that the number does not depend on trainer.log_every or on the last batches drawn.
    The last log window's numbers (where Fig. 6's training curves end) stay, as train_window_error/loss."""
    t = run.cfg.trainer
    err, loss = evaluate(run.model, run.data, run.data.train, int(t.eval_batch_size), bool(t.channels_last),
                         run.autocast)
    window = {f"train_window_{k}": last.pop(f"train_{k}") for k in ("error", "loss") if f"train_{k}" in last}
    progress.print(f"{run.name}: training split, eval mode: error {err:.2f}%")
    sizes = {name: len(split) for name, split in (("train", run.data.train), ("val", run.data.val),
                                                   ("test", run.data.test)) if split is not None}
    return {**window, "train_error": err, "train_loss": loss, "train_error_measure": TRAIN_ERROR_MEASURE,
            "split_sizes": sizes}  # one image of a split is 100 / size points of its error


def final_evaluation(run: Run, state: RunState, writer, progress, at_end: dict) -> dict:
    """The final val and test errors and losses, and the instruments, measured and logged; or, where an earlier
    process of this run logged them at this last iteration (`at_end`: tag -> value) before it was killed, read back:
    logged again, each final point would show twice."""
    splits = [name for name in ("val", "test") if getattr(run.data, name) is not None]
    tags = {"error": events.ERROR_TAGS, "loss": events.LOSS_TAGS}
    if splits and all(tags[kind][s] in at_end for s in splits for kind in tags):
        out = {f"{s}_{kind}": at_end[tags[kind][s]] for s in splits for kind in tags}
    else:
        out = evaluate_and_log(run, state, writer, progress)
    if not any(tag.startswith(events.INSTRUMENTS) for tag in at_end):
        writer.scalars(state.step, diagnostic_scalars(run.model, run.probe))
    return out


def finish(run: Run, state: RunState, status: str, last: dict, meter: LogWindow, writer, progress,
           summary: dict) -> dict:
    """Final evaluation and checkpoint of a finished run; summary.json for every ending."""
    if status == "interrupted":
        progress.close()
        writer.close()
        summary["status"] = "interrupted"
        _reached(summary, state.step)
        rundir.write_summary(run.run_dir, summary)
        say(f"{run.name}: interrupted at iteration {state.step}; checkpoint saved{interrupt.resume_hint()}")
        raise KeyboardInterrupt
    at_end = {}  # what an earlier process logged at the last iteration
    if status == "finished" and "train_loss" not in last:  # resumed at its end (its summary.json was lost): the
        logged = events.read_scalars(run.run_dir)  # last window's training numbers are those the event files hold
        last.update({key: logged[tag][-1][1] for key, tag in (("train_loss", events.TRAIN_LOSS),
                                                              ("train_error", events.TRAIN_ERROR)) if logged.get(tag)})
        at_end = {tag: points[-1][1] for tag, points in logged.items() if points and points[-1][0] == state.step}
    if status == "finished":
        with stop_on_interrupt():  # a first Ctrl-C now waits for the final evaluation and checkpoint
            last.update(final_evaluation(run, state, writer, progress, at_end))
            last.update(measure_training_split(run, last, progress))
            if events.FINAL_TRAIN_ERROR not in at_end:  # an earlier process may have logged it before it was killed
                writer.scalars(state.step, {events.FINAL_TRAIN_ERROR: last["train_error"]})
            checkpoint.save(run.run_dir, state.to_checkpoint(run))  # the finished run keeps its final weights
            state.saved = state.step
    else:
        summary["diverged_at"] = state.step
    writer.session_end(ok=status == "finished")
    writer.close()
    progress.close()
    summary.update(last)
    warmup_ended = run.schedule.warmup_ended
    _reached(summary, state.step)
    summary.update(
        status=status,
        wall_time_s=round(state.elapsed(), 2), eval_time_s=round(state.eval_s, 2),
        compile_time_s=round(state.compile_s, 2) if state.compile_s else None,
        train_images_per_s=round(meter.images / max(meter.train_s, 1e-9), 1) if meter.images else None,
        warmup_ended_at=warmup_ended if warmup_ended >= 0 else None,
        warmup_ended_by=run.schedule.warmup_ended_by,  # "error": the paper's rule; "cap": max_iterations, a milestone or the end
    )
    rundir.write_summary(run.run_dir, summary)
    progress.print(f"{run.name}: {status}, error % " + " ".join(  # fits 80 columns with the run name
        f"{k} {summary[f'{k}_error']:.2f}" for k in ("train", "val", "test") if summary.get(f"{k}_error") is not None))
    return summary
