"""train(cfg, run_dir): one run, top to bottom.

seed -> data (uint8, on the device) -> model -> optimizer and schedule -> resume from the
checkpoint if there is one -> loop (TensorBoard every log_every, val/test every eval_every,
checkpoint every ckpt_every) -> final evaluation -> summary.json.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from depthstudy import checkpoint, events
from depthstudy.config import RUNTIME_KEYS, flatten
from depthstudy.data import Data, TrainStream, eval_batches, load_data
from depthstudy.diagnostics import diagnostic_scalars
from depthstudy.errors import DepthstudyError, UsageError
from depthstudy.models import build_model, count_params
from depthstudy.progress import RunProgress

CONFIG_FILE, SUMMARY_FILE, LOCK_FILE = "config.yaml", "summary.json", ".lock"
FINAL_STATUSES = ("finished", "diverged")  # a rerun leaves these alone


# --- run directory: lock, config, summary ---

class RunBusyError(DepthstudyError):
    """Another process holds the run directory (nothing of it may be touched)."""


@contextmanager
def run_lock(run_dir: Path):
    """One process per run directory. flock is released by the kernel even after kill -9."""
    with open(run_dir / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RunBusyError(f"run directory {run_dir} is in use by another depthstudy process "
                                  f"(pid {f.read().strip() or '?'}); wait for it to finish or stop it") from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield


def read_summary(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / SUMMARY_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_summary(run_dir: Path, summary: dict) -> None:
    checkpoint.atomic_write_json(run_dir / SUMMARY_FILE, summary)


def record_failure(run_dir: Path, error: Exception) -> dict:
    """Mark a run failed (a sweep goes on); keeps what the run had already measured."""
    summary = read_summary(run_dir) or {}
    summary.update(status="failed", error=f"{type(error).__name__}: {error}", run_name=run_dir.name)
    if (run_dir / CONFIG_FILE).exists():
        write_summary(run_dir, summary)
    return summary


def config_changes(saved: dict, new: dict) -> list[str]:
    """What differs between two resolved configs, ignoring keys that do not change the experiment."""
    a, b = flatten(saved), flatten(new)
    keys = sorted(k for k in a.keys() | b.keys() if k not in RUNTIME_KEYS and a.get(k) != b.get(k))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys]


def check_same_experiment(run_dir: Path, config: dict, force: bool) -> None:
    path = run_dir / CONFIG_FILE
    if not path.exists():
        return
    changes = config_changes(OmegaConf.to_container(OmegaConf.load(path)), config)
    if changes and not force:
        raise UsageError(f"{run_dir} holds a run with a different config ({'; '.join(changes[:4])}); "
                         "choose another name= or out_dir=, or pass trainer.force_resume=true to continue it anyway")


# --- device, compilation, optimizer, schedule ---

def pick_device(device: str, job_num: int | None) -> torch.device:
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # Jobs of a parallel sweep on one machine spread over its GPUs.
        return torch.device("cuda", (job_num or 0) % torch.cuda.device_count())
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"trainer.device={device} but CUDA is not available here; use trainer.device=cpu or auto")
    return torch.device(device)


def cpu_threads(setting) -> int:
    """This job's share of the CPU: explicit, else what a launcher or SLURM granted, else every core."""
    if setting != "auto":
        return int(setting)
    for var in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return len(os.sched_getaffinity(0))


def configure_device(device: torch.device, precision: str, threads) -> None:
    """Process-wide settings a run depends on: its CPU threads; on CUDA, cuDNN autotuning and whether
    fp32 convolutions and matmuls may round through TF32 (only with precision=tf32: the paper is fp32)."""
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(threads))
        return
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"


def autocast_for(device: torch.device, precision: str):
    """A context factory: bf16 autocast for precision=bf16, a no-op otherwise."""
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def compiled(model: torch.nn.Module, mode: str, device: torch.device):
    """The model as the training step calls it: eager ("off"), torch.compile'd ("default"), or
    compiled into CUDA graphs ("cuda_graphs": forward and backward each replay as one graph)."""
    if mode == "off":
        return model
    if mode == "default":
        return torch.compile(model)
    if device.type != "cuda":
        raise UsageError(f"CUDA graphs need a CUDA device, and this run is on {device}; "
                         "use trainer.device=cuda, or leave CUDA graphs off")
    graphed = torch.compile(model, mode="reduce-overhead")

    def forward(x):
        torch.compiler.cudagraph_mark_step_begin()  # a new iteration: the last one's outputs may be overwritten
        return graphed(x)

    return forward


def compile_mode(compile: bool, cuda_graphs: bool) -> str:
    return "cuda_graphs" if cuda_graphs else "default" if compile else "off"


def make_optimizer(model: torch.nn.Module, o: DictConfig, say, fused: bool = False) -> torch.optim.SGD:
    """SGD; the one place that decides which parameters weight decay applies to.

    fused: one kernel updates every tensor (trainer.fused_optimizer). PyTorch's default on CPU is a
    Python loop over tensors, ~3x slower for ResNet-110's 329 tensors; the update is the same.
    """
    decay, no_decay = [], []
    for p in model.parameters():
        # 'weights': conv and linear weights (ndim > 1) only; BN gamma/beta and biases are 1-D.
        (decay if o.wd_scope == "all" or p.ndim > 1 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    n = lambda ps: sum(p.numel() for p in ps)  # noqa: E731
    say(f"weight decay {o.weight_decay:g} ({o.wd_scope}) on {len(decay)} tensors ({n(decay):,} params); "
        f"none on {len(no_decay)} tensors ({n(no_decay):,} params)")
    params = [g for g in groups if g["params"]]
    try:
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, fused=fused or None)
    except RuntimeError as e:  # this torch has no fused SGD for the device
        raise UsageError(f"trainer.fused_optimizer=true is not supported here ({str(e).splitlines()[0]}); "
                         "set trainer.fused_optimizer=false") from None


class Schedule:
    """Step schedule in iterations, with the paper's optional warm-up for deep nets."""

    def __init__(self, s: DictConfig, lr: float, depth: int):
        self.lr, self.milestones, self.gamma = lr, sorted(s.milestones), s.gamma
        w = s.warmup
        self.warmup = w.min_depth is not None and depth >= w.min_depth
        self.warmup_lr, self.warmup_until, self.warmup_max = w.lr, w.until_train_error, w.max_iterations

    def lr_at(self, step: int, warming: bool) -> float:
        if warming:
            return self.warmup_lr
        return self.lr * self.gamma ** sum(step >= m for m in self.milestones)


def set_lr(optimizer: torch.optim.SGD, lr: float, caffe_momentum: bool) -> None:
    for group in optimizer.param_groups:
        old = group["lr"]
        if caffe_momentum and old != lr:
            # Caffe's v = m*v + lr*g equals PyTorch's v = m*v + g with v rescaled by old/new at a change.
            for p in group["params"]:
                buf = optimizer.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.mul_(old / lr)
        group["lr"] = lr


# A sweep whose jobs run in worker processes (joblib) asks them to stop through a file, named in this
# variable, that it writes at the first Ctrl-C; the workers ignore the Ctrl-C itself (sweep.py).
STOP_FILE_ENV = "DEPTHSTUDY_STOP_FILE"


def sweep_asked_to_stop() -> bool:
    path = os.environ.get(STOP_FILE_ENV)
    return bool(path) and os.path.exists(path)


class stop_on_interrupt:
    """Ctrl-C (SIGINT), SIGTERM or the sweep's stop file asks the loop to stop at the end of the current
    iteration, so the checkpoint it then saves is consistent. A second Ctrl-C interrupts at once."""

    def __enter__(self):
        import signal
        import threading

        self._signalled, self._old = False, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not signal.SIG_IGN:  # ignored stays ignored (a sweep's workers)
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    @property
    def requested(self) -> bool:
        return self._signalled or sweep_asked_to_stop()

    def _handle(self, signum, frame):
        if self._signalled:
            raise KeyboardInterrupt
        self._signalled = True

    def __exit__(self, *exc):
        import signal

        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


# --- one iteration (the hot path; depthstudy bench times exactly this) ---

def train_step(forward, optimizer, x, y, autocast, window: torch.Tensor, one: torch.Tensor) -> torch.Tensor:
    """Forward, backward, SGD step; adds (loss, errors, 1) to `window` on the device (no host sync).

    Returns the number of misclassified images in the batch, as a device tensor.
    """
    with autocast():
        logits = forward(x)
        loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    wrong = (logits.detach().argmax(1) != y).sum()
    window += torch.stack([loss.detach(), wrong.float(), one])
    return wrong


# --- evaluation ---

def evaluate(model, data: Data, split, batch_size: int, channels_last: bool, autocast) -> tuple[float, float]:
    """(error %, mean loss) over a whole split, in eval mode."""
    model.eval()
    wrong = torch.zeros((), device=split.labels.device)
    loss = torch.zeros((), device=split.labels.device)
    with torch.no_grad(), autocast():
        for x, y in eval_batches(data, split, batch_size, channels_last):
            logits = model(x).float()
            loss += F.cross_entropy(logits, y, reduction="sum")
            wrong += (logits.argmax(1) != y).sum()
    model.train()
    n = len(split)
    return 100.0 * wrong.item() / n, loss.item() / n


# --- the run ---

def train(cfg: DictConfig, run_dir: Path, job_num: int | None = None) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        return _train(cfg, run_dir, job_num)


def _train(cfg: DictConfig, run_dir: Path, job_num: int | None) -> dict:
    t = cfg.trainer
    config = OmegaConf.to_container(cfg, resolve=True)
    name = run_dir.name
    check_same_experiment(run_dir, config, bool(t.force_resume))
    previous = read_summary(run_dir)
    if previous and previous.get("status") in FINAL_STATUSES:
        print(f"{name}: already {previous['status']} ({previous.get('iterations')} iterations); nothing to do")
        return previous
    checkpoint.atomic_write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(config))

    device = pick_device(str(t.device), job_num)
    configure_device(device, str(t.precision), t.threads)
    torch.manual_seed(cfg.seed)

    data = load_data(cfg.data).to(device)
    model = build_model(cfg.model, data.shape, data.num_classes)
    memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    params = count_params(model)
    forward = compiled(model, compile_mode(bool(t.compile), bool(t.cuda_graphs)), device)
    autocast = autocast_for(device, str(t.precision))

    progress_lines = []
    optimizer = make_optimizer(model, cfg.optim, progress_lines.append, fused=bool(t.fused_optimizer))
    schedule = Schedule(cfg.schedule, cfg.optim.lr, int(cfg.model.depth))
    stream = TrainStream(data, cfg.optim.batch_size, cfg.seed, bool(cfg.data.augment), int(cfg.data.pad),
                         channels_last=bool(t.channels_last))
    total, batch_size = int(cfg.schedule.iterations), int(cfg.optim.batch_size)

    # Resume: everything that decides the next iteration comes from the checkpoint.
    state = checkpoint.load(run_dir)
    start, elapsed, eval_time, warming, warmup_ended, recent = 0, 0.0, 0.0, schedule.warmup, -1, []
    win = torch.zeros(3, device=device)  # loss sum, wrong count, batches: the current log window
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        for group in optimizer.param_groups:  # the checkpoint's groups carry the old run's choice
            group["fused"] = bool(t.fused_optimizer) or None
        torch.set_rng_state(state["torch_rng"])
        if device.type == "cuda" and state.get("cuda_rng"):
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start, elapsed, eval_time = state["step"], state["elapsed_s"], state.get("eval_s", 0.0)
        warming, warmup_ended, recent = state["warming"], state["warmup_ended"], list(state["recent_errors"])
        win = state["window"].to(device)
    recent = deque(recent, maxlen=10)
    carried = int(win[2].item())  # batches of the current window trained before an interruption
    # purge_step: whatever an earlier process logged after this run's checkpoint (or at all, if it never
    # saved one) is dropped by TensorBoard's reader, so curves never show duplicated or backwards steps.
    writer = events.EventWriter(run_dir, resume_step=start + 1)
    if state is None:
        writer.hparams(_hparams(config), [events.TRAIN_ERROR, events.VAL_ERROR, events.TEST_ERROR])

    summary = {"status": "running", "run_name": name, "iterations": start, "total_iterations": total,
               "params": params, "device": str(device), "precision": t.precision}
    write_summary(run_dir, summary)
    progress = RunProgress(str(t.progress), name, total, start)
    progress.print(f"{name}: {params:,} params on {device}" + (f", resuming at iteration {start}" if start else ""))
    for line in progress_lines:
        progress.print(f"{name}: {line}")

    def save(done: int) -> None:
        checkpoint.save(run_dir, {
            "model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": done,
            "elapsed_s": elapsed + (time.perf_counter() - t0), "warming": warming, "warmup_ended": warmup_ended,
            "recent_errors": list(recent), "window": win.cpu(), "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if device.type == "cuda" else [], "eval_s": eval_time,
        })

    # A fixed held-out batch for the instruments (layer responses, block diagnostics).
    probe = next(eval_batches(data, data.val or data.test or data.train, 500, bool(t.channels_last)))[0]

    def run_eval(done: int) -> dict:
        nonlocal eval_time
        t_eval = time.perf_counter()
        out = {}
        for split_name, split in (("val", data.val), ("test", data.test)):
            if split is not None:
                err, loss = evaluate(model, data, split, int(t.eval_batch_size), bool(t.channels_last), autocast)
                out[f"{split_name}_error"], out[f"{split_name}_loss"] = err, loss
                writer.scalars(done, {events.ERROR_TAGS[split_name]: err, events.LOSS_TAGS[split_name]: loss})
        dt = time.perf_counter() - t_eval
        eval_time += dt
        writer.scalars(done, {events.EVAL_TIME: dt})
        progress.print(f"{name} it {done}: " + "  ".join(f"{k} {v:.2f}" for k, v in out.items() if "error" in k))
        return out

    t0 = time.perf_counter()
    t_window, eval_time_before, train_images = t0, eval_time, 0
    last, status, lr, done = {}, "finished", None, start
    one = torch.ones((), device=device)
    model.train()
    with stop_on_interrupt() as stop:
        for step in range(start, total):
            new_lr = schedule.lr_at(step, warming)
            if new_lr != lr:
                set_lr(optimizer, new_lr, cfg.optim.momentum_form == "caffe")
                lr = new_lr
            x, y = stream.batch(step)
            wrong = train_step(forward, optimizer, x, y, autocast, win, one)
            done = step + 1

            if warming:  # the paper's rule: lr 0.01 until training error < 80% (a sync per step, warm-up only)
                recent.append(100.0 * wrong.item() / batch_size)
                if (len(recent) == recent.maxlen and sum(recent) / len(recent) < schedule.warmup_until) \
                        or done >= schedule.warmup_max:
                    warming, warmup_ended = False, done
                    progress.print(f"{name}: warm-up ended at iteration {done}")

            if done % t.log_every == 0 or done == total:
                loss_sum, wrong_sum, batches = win.tolist()
                now = time.perf_counter()
                fresh, carried = int(batches) - carried, 0  # only this process's batches count as its speed
                ips = fresh * batch_size / max(now - t_window, 1e-9)
                t_window, train_images = now, train_images + fresh * batch_size
                last = {"train_loss": loss_sum / batches, "train_error": 100.0 * wrong_sum / (batches * batch_size)}
                win.zero_()
                if not math.isfinite(last["train_loss"]):
                    status = "diverged"
                    summary["diverged_at"] = done
                    progress.print(f"{name}: loss is {last['train_loss']} at iteration {done}: diverged, stopping")
                    break
                writer.scalars(done, {events.TRAIN_LOSS: last["train_loss"], events.TRAIN_ERROR: last["train_error"],
                                      events.LR: lr, events.THROUGHPUT: ips})
                progress.update(done, last["train_loss"], last["train_error"], ips, lr)
            if done == total:
                break
            t_pause = time.perf_counter()
            if t.eval_every and done % t.eval_every == 0:
                run_eval(done)
            if t.diagnostics_every and done % t.diagnostics_every == 0:
                writer.scalars(done, diagnostic_scalars(model, probe))
            stopping = stop.requested  # read once: a stop that arrives after this waits for the next iteration
            if done % t.ckpt_every == 0 or stopping:
                save(done)
            t_window += time.perf_counter() - t_pause  # evaluation and saving do not count as training time
            if stopping:
                status = "interrupted"
                break

    train_time = time.perf_counter() - t0 - (eval_time - eval_time_before)
    if status == "interrupted":
        progress.close()
        writer.close()
        summary.update(status="interrupted", iterations=done)
        write_summary(run_dir, summary)
        print(f"{name}: interrupted at iteration {done}; checkpoint saved, run the same command to resume")
        raise KeyboardInterrupt
    if status == "finished":
        with stop_on_interrupt():  # a first Ctrl-C now waits for the final evaluation and checkpoint
            last.update(run_eval(total))
            writer.scalars(total, diagnostic_scalars(model, probe))
            save(total)  # the finished run keeps its final weights
    writer.close()
    progress.close()
    summary.update(last)
    summary.update(
        status=status, iterations=done,
        wall_time_s=round(elapsed + time.perf_counter() - t0, 2), eval_time_s=round(eval_time, 2),
        train_images_per_s=round(train_images / max(train_time, 1e-9), 1) if train_images else None,
        warmup_ended_at=warmup_ended if warmup_ended >= 0 else None,
    )
    write_summary(run_dir, summary)
    progress.print(f"{name}: {status}: " + "  ".join(
        f"{k} {summary[k]:.2f}" for k in ("train_error", "val_error", "test_error") if summary.get(k) is not None))
    return summary


def _hparams(config: dict) -> dict:
    """The run's settings as TensorBoard HParams (scalars and strings only)."""
    flat = flatten({k: config[k] for k in ("model", "data", "optim", "schedule", "seed") if k in config})
    flat.update({f"trainer.{k}": config["trainer"][k] for k in ("precision", "channels_last", "compile", "cuda_graphs", "fused_optimizer")})
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}
