"""What a sweep will cost before it runs: time a few training steps of each distinct net on this machine.

`depthstudy sweep ... --dry-run` prints each run's estimate and the total. A calibration trains the run's
own net, batch size, device and precision (autocast as the run has it) for a few steps of train.py's
train_step, timed by device.time_steps, on random images of
the data set's shape (eager: compiled paths are faster once compiled, and compiling takes longer than
the calibration). Results are cached per machine, torch version and setting in the user cache.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from depthstudy import schema
from depthstudy.data import Data, Split, normalization
from depthstudy.device import autocast_for, configure_device, device_name, memory_format, pick_device, time_steps
from depthstudy.models import build_model
from depthstudy.rundir import read_cached, write_cached
from depthstudy.optim import fused_update, make_optimizer
from depthstudy.train import LossAndErrors, make_stream, train_step

CACHE = "step_times.json"  # in the user cache: step calibrations and start-up measurements
EVAL_COST = 1 / 3  # an evaluated image costs about a third of a trained one (forward only, no backward)


@dataclass
class Estimate:
    seconds: float  # the run's whole budget, training and evaluation
    step_s: float  # one training iteration
    cached: bool  # the step time came from an earlier calibration
    scaled_from: str = ""  # not timed: the run whose timed step was scaled by the ratio of MACs


# A dry run times nets for at most this long; the nets left are scaled from a timed one of the same family by their
# MACs (a CPU's step time grows with them: measured ResNet-20 -> 110 on 2 cores), so that it ends within a minute.
CALIBRATION_BUDGET_S = 25.0
SLOW_STEP_S = 1.0  # a warm-up step slower than this: time 2 steps, not 6


def _key(cfg: DictConfig, device: torch.device) -> str:
    t = cfg.trainer
    setting = {"model": OmegaConf.to_container(cfg.model, resolve=True), "data": str(cfg.data.name),
               "batch": int(cfg.optim.batch_size), "device": str(device), "precision": str(t.precision),
               "channels_last": bool(t.channels_last), "fused": fused_update(t), "threads": str(t.threads),
               "torch": torch.__version__, "machine": platform.node(), "processor": device_name(device)}
    return json.dumps(setting, sort_keys=True)


def _family(key: str) -> str:
    """A calibration key without the depth and shortcut: nets whose step times scale with their MACs."""
    setting = json.loads(key)
    setting["model"] = {k: v for k, v in setting["model"].items() if k not in ("depth", "shortcut")}
    return json.dumps(setting, sort_keys=True)


def macs(cfg: DictConfig) -> int:
    """One image's forward multiply-accumulates of the run's net."""
    from depthstudy.models import count_macs

    name = str(cfg.data.name)
    shape = schema.DATASET_SHAPES[name]
    return count_macs(build_model(cfg.model, shape, schema.DATASET_CLASSES[name]), shape)


def step_seconds(cfg: DictConfig, device: torch.device, steps: int = 6, warmup: int = 2) -> float:
    """Seconds per training iteration of this run's net and batch on this device (eager); where a warm-up step
    takes over SLOW_STEP_S, the warm-up ends there and one step is timed."""
    t = cfg.trainer
    configure_device(device, str(t.precision), t.threads)
    name, batch = str(cfg.data.name), int(cfg.optim.batch_size)
    shape, classes = schema.DATASET_SHAPES[name], schema.DATASET_CLASSES[name]
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2 * batch, *shape), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, classes, (2 * batch,), generator=gen)
    data = Data(name, Split(images, labels), None, None, classes, *normalization(images, str(cfg.data.normalize)))
    data = data.to(device)
    model = build_model(cfg.model, shape, classes).to(device, memory_format=memory_format(bool(t.channels_last)))
    optimizer = make_optimizer(model, cfg.optim, say=lambda s: None, fused=fused_update(t))
    stream = make_stream(cfg, data)
    window, forward = torch.zeros(3, device=device), LossAndErrors(model)
    autocast, batches = autocast_for(device, str(t.precision)), iter(range(warmup + steps))
    model.train()

    def step() -> None:
        train_step(forward, optimizer, *stream.batch(next(batches)), autocast, window)

    slow = any(time_steps(step, 1, device)[0] > SLOW_STEP_S for _ in range(warmup))
    # each step on its own (block=1): one step slowed by another process does not move the median
    return statistics.median(time_steps(step, 1 if slow else steps, device, block=1))


# Two real one-iteration runs in one child process: the first pays the process's imports (some happen only in a
# job: the data set's library, torch's compiler stack), the second only what every job pays.
_STARTUP_RUN = """
import json, sys, time
t0 = time.perf_counter()
from depthstudy.api import train_run
from depthstudy.config import quoted
t1 = time.perf_counter()
first = train_run(sys.argv[2:] + [f"hydra.run.dir={quoted(sys.argv[1] + '/first')}"])
t2 = time.perf_counter()
second = train_run(sys.argv[2:] + [f"hydra.run.dir={quoted(sys.argv[1] + '/second')}"])
t3 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0 + (t2 - t1) - (t3 - t2), "job_s": t3 - t2,
                  "status": [first.get("status"), second.get("status")]}))
"""


@dataclass
class Startup:
    import_s: float  # starting Python and importing torch, depthstudy, the data set's library: once per process
    job_s: float  # one job's own start and end: Hydra, data, net, TensorBoard, checkpoint, summary
    cached: bool


def startup_seconds(cfg: DictConfig, overrides: list[str], step_s: float, say=lambda line: None) -> Startup | None:
    """A run's fixed costs on this machine, measured once (per data set and device) by training a real run of
    one iteration in a child process, less that iteration (step_s) and its evaluation; None where that run
    fails (say, the data set is not here)."""
    import subprocess
    import sys
    import tempfile

    device = pick_device(str(cfg.trainer.device), None)
    key = json.dumps({"startup": str(cfg.data.name), "device": str(device), "torch": torch.__version__,
                      "machine": platform.node()}, sort_keys=True)
    cache = read_cached(CACHE)
    if _valid(cache.get(key)) and len(cache[key]) == 2:
        return Startup(*cache[key], cached=True)
    say(f"measuring a run's start-up on {device} (two runs of one iteration of {cfg.run_name}, in a child process)")
    with tempfile.TemporaryDirectory() as tmp:
        args = [o for o in overrides if not o.startswith(("hydra.", "hydra/", "schedule.", "trainer.progress="))]
        args += ["schedule.iterations=1", "schedule.milestones=[]", "trainer.progress=none", "trainer.eval_every=0"]
        try:
            p = subprocess.run([sys.executable, "-c", _STARTUP_RUN, tmp, *args], capture_output=True, text=True,
                               timeout=600)
            measured = json.loads(p.stdout.strip().splitlines()[-1])
        except (subprocess.TimeoutExpired, ValueError, IndexError):
            return None
    if measured.get("status") != ["finished", "finished"]:
        return None
    job_s = max(0.0, measured["job_s"] - step_s - _eval_seconds(cfg, step_s, 1))
    # a difference of two timings: on a busy machine the second run can take longer than the first, so never < 0
    import_s = max(0.0, measured["import_s"])
    cache[key] = [import_s, job_s]
    write_cached(CACHE, cache)
    return Startup(import_s, job_s, cached=False)


def _eval_seconds(cfg: DictConfig, step_s: float, evaluations: int) -> float:
    """Evaluating the held-out images `evaluations` times, at EVAL_COST of a trained image each."""
    held_out = int(cfg.data.val_size) + (int(cfg.data.get("test_size") or 0) or schema.DATASET_TEST_IMAGES[str(cfg.data.name)])
    return evaluations * held_out * step_s / int(cfg.optim.batch_size) * EVAL_COST


def busy_cpu() -> str | None:
    """Why CPU timings taken now would be off (more runnable processes than cores), or None."""
    load, cores = os.getloadavg()[0], len(os.sched_getaffinity(0))
    return f"load average {load:.1f} on {cores} cores" if load > cores else None


def _valid(value) -> bool:
    """A cache entry to use: positive seconds (a step), or non-negative ones (start-up); anything else is measured
    again (a cache written by an older version held a negative import time)."""
    values = value if isinstance(value, list) else [value]
    return bool(values) and all(isinstance(v, (int, float)) and v >= 0 for v in values) and (
        isinstance(value, list) or value > 0)


def estimate_runs(cfgs: list[DictConfig], say=lambda line: None, threads=None,
                  budget_s: float | None = None) -> list[Estimate]:
    """One Estimate per run config; each distinct net and setting is calibrated once (or read from the cache),
    smallest first, for up to budget_s; a net left when the budget is spent is scaled from a timed net of its family
    by MACs. threads: the CPU threads each run will have (a parallel launcher's share), instead of trainer.threads.
    Calibrations on a busy CPU serve this estimate but are not kept: they would skew every later one."""
    cache = read_cached(CACHE)
    cfgs = [_with_threads(cfg, threads) for cfg in cfgs]
    keys = [_key(cfg, pick_device(str(cfg.trainer.device), None)) for cfg in cfgs]
    steps, scaled, fresh, busy = _calibrate(dict(zip(keys, cfgs)), cache, say, budget_s or CALIBRATION_BUDGET_S)
    out = []
    for cfg, key in zip(cfgs, keys):
        step_s, cached = steps[key], key in cache and key not in fresh and key not in scaled
        iterations = int(cfg.schedule.iterations)
        # train.loop evaluates every eval_every iterations before the last, and finish() once at the end
        every = int(cfg.trainer.eval_every)
        evaluations = ((iterations - 1) // every if every else 0) + 1
        out.append(Estimate(iterations * step_s + _eval_seconds(cfg, step_s, evaluations), step_s, cached))
        out[-1].scaled_from = scaled.get(key, "")
    if fresh and not busy:
        write_cached(CACHE, {**cache, **{k: steps[k] for k in fresh}})
    return out


def _with_threads(cfg: DictConfig, threads) -> DictConfig:
    if threads is not None and cfg.trainer.threads == "auto":
        cfg = cfg.copy()
        cfg.trainer.threads = threads
    return cfg


def _calibrate(nets: dict[str, DictConfig], cache: dict, say, budget_s: float):
    """{key: step seconds} for every distinct net, and which were {key: scaled from}, freshly timed, and why the CPU
    is busy (or None). Nets are timed smallest first; once the budget is spent, or a net's predicted timing would
    overrun it, its step is its family's nearest timed step times the ratio of MACs."""
    import time

    steps = {k: cache[k] for k in nets if _valid(cache.get(k))}
    todo = [k for k in nets if k not in steps]
    size = {k: macs(nets[k]) for k in nets if todo}  # one forward pass of one image each: cheap
    todo.sort(key=size.get)
    fresh, scaled, busy, started = [], {}, None, time.perf_counter()
    for key in todo:
        cfg = nets[key]
        device = pick_device(str(cfg.trainer.device), None)
        timed = [k for k in steps if k in size and k not in scaled and _family(k) == _family(key)]
        nearest = min(timed, key=lambda k: abs(size[k] - size[key]), default=None)
        predicted = steps[nearest] * size[key] / size[nearest] if nearest else 0.0
        predicted *= 2 if predicted > SLOW_STEP_S else 8  # step_seconds: 2 warm-up and 6 timed steps, or 1 and 1
        if nearest and time.perf_counter() - started + predicted > budget_s:
            steps[key], scaled[key] = steps[nearest] * size[key] / size[nearest], str(nets[nearest].run_name)
            say(f"{cfg.run_name}: {steps[key]:.2f} s per iteration, not timed: {scaled[key]}'s x "
                f"{size[key] / size[nearest]:.1f} (MACs)")
            continue
        if not fresh and device.type == "cpu" and (busy := busy_cpu()):
            say(f"the machine is busy ({busy}): the calibrations below may read slow; they are used for this "
                "estimate and not kept")
        say(f"calibrating {cfg.run_name} on {device} (a few training steps)")
        steps[key] = step_seconds(cfg, device)
        fresh.append(key)
        say(f"  {steps[key]:.2f} s per iteration")
    return steps, scaled, fresh, busy


def duration(seconds: float) -> str:
    """12 s, 3.4 min, 2.1 h, 1.5 days."""
    for unit, size in (("days", 86400), ("h", 3600), ("min", 60)):
        if seconds >= 1.5 * size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"
