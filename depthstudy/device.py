"""Where and how a run computes: the device, this job's CPU threads, precision, memory layout and
compilation. train and bench both set themselves up through these functions."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import torch

from depthstudy.errors import UsageError


def pick_device(device: str, gpu: int | None, setting: str = "trainer.device") -> torch.device:
    """gpu: which of the GPUs device=auto takes, for a job of a parallel sweep (packing.gpu_slot); None: the first.
    setting: how the user chose the device (an option's name in a message)."""
    if device == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", (gpu or 0) % torch.cuda.device_count())
    sep = "=" if "." in setting else " "
    if device != "cpu" and not device.startswith("cuda"):  # torch would list its every device type
        raise UsageError(f"{setting}{sep}{device} is unknown; choose auto, cpu, cuda or cuda:N")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError(f"{setting}{sep}{device} but CUDA is not available here; use {setting}{sep}cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:  # cuda:x
        raise UsageError(f"{setting}{sep}{device} is not a device; choose auto, cpu, cuda or cuda:N") from None


def device_name(device: torch.device) -> str:
    """The GPU's or the CPU's model name, as benchmarks and cached measurements record it."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_threads(setting) -> int:
    """This job's share of the CPU: explicit, else what a launcher or SLURM granted, else every core."""
    if setting != "auto":
        return int(setting)
    for var in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return len(os.sched_getaffinity(0))


def configure_device(device: torch.device, precision: str, threads, jobs_per_gpu=1) -> None:
    """Process-wide settings a run depends on: its CPU threads; on CUDA, cuDNN autotuning, whether fp32
    convolutions and matmuls may round through TF32 (only with precision=tf32: the paper is fp32), and, where
    k runs share the GPU (trainer.jobs_per_gpu), at most 1/k of its memory, so one cannot starve the others."""
    if device.type == "cpu":
        torch.set_num_threads(cpu_threads(threads))
        return
    if device.index is not None:  # the current device too: code that names none (CUDA graph trees' synchronize)
        torch.cuda.set_device(device)  # would otherwise open a context on GPU 0 and wait for it
    if isinstance(jobs_per_gpu, int) and jobs_per_gpu > 1:
        torch.cuda.set_per_process_memory_fraction(1 / jobs_per_gpu, device)
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = precision == "tf32"


def synchronize(device: torch.device) -> None:
    """Wait for the device: CUDA runs asynchronously, so a clock read without this does not time the GPU's work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


STEPS_PER_SYNC = 10  # on a GPU: training syncs once per log window, so the host queues steps ahead of the GPU


def time_steps(step, n: int, device: torch.device, block: int | None = None) -> list[float]:
    """Seconds per step for n steps, one entry per block of `block` steps between device syncs (its mean step).
    Default: each step alone on a CPU; STEPS_PER_SYNC on a GPU, since a sync after every step would stop the host
    from launching the next step while the GPU works, which training never does."""
    block = block or (STEPS_PER_SYNC if device.type == "cuda" else 1)
    times, done = [], 0
    synchronize(device)
    while done < n:
        k = min(block, n - done)
        t0 = time.perf_counter()
        for _ in range(k):
            step()
        synchronize(device)
        times.append((time.perf_counter() - t0) / k)
        done += k
    return times


def memory_format(channels_last: bool) -> torch.memory_format:
    """The layout of images and conv weights (trainer.channels_last): the same numbers, another speed."""
    return torch.channels_last if channels_last else torch.contiguous_format


def autocast_for(device: torch.device, precision: str):
    """A context factory: bf16 autocast for precision=bf16, a no-op otherwise."""
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def compile_mode(compile: bool, cuda_graphs, device: torch.device | None = None) -> str:
    """off | default (torch.compile) | cuda_graphs. cuda_graphs="auto": on for CUDA, off elsewhere (measured on an
    H200, ../shared/GPU-MEASURED.md: CUDA graphs 1.67x our eager path for ResNet-20/56 at batch 128, launch-bound nets)."""
    if cuda_graphs == "auto":
        cuda_graphs = device is not None and device.type == "cuda"
    return "cuda_graphs" if cuda_graphs else "default" if compile else "off"


class WithFallback:
    """Call `fast` (a training iteration through the compiled model); if it fails in its first `tries` calls
    (compiling or capturing the forward or the backward), say why in one line and use `eager` from then on. A
    failed call changed nothing: the optimizer steps last, and the buffers of `model` (BatchNorm's running
    statistics, which a forward that ran before the failure updated) are put back, so the eager retry is the
    same iteration. Later failures are real errors and propagate. After the first `tries` calls, `check` (if
    given) may return a line on what compiling did not do without failing (CUDA graphs skipped), said once."""

    def __init__(self, fast, eager, say, what: str, tries: int = 3, check=None, model: torch.nn.Module | None = None):
        self.fast, self.eager, self.say, self.what, self.tries, self.check = fast, eager, say, what, tries, check
        self.buffers = list(model.buffers()) if model is not None else []

    def __call__(self, *args):
        if self.tries <= 0:
            return self.fast(*args)
        self.tries -= 1
        saved = [b.clone() for b in self.buffers]  # the first few calls only: a few small tensors
        try:
            out = self.fast(*args)
        except Exception as e:  # noqa: BLE001 -- any compiler or capture failure: eager is always correct
            with torch.no_grad():
                for b, before in zip(self.buffers, saved):
                    b.copy_(before)
            reason = " ".join(str(e).split())[:160] or type(e).__name__
            self.say(f"{self.what} failed ({type(e).__name__}: {reason}); training eagerly instead")
            self.fast, self.tries = self.eager, 0
            return self.eager(*args)
        if self.tries == 0 and self.check and (line := self.check()):
            self.say(line)
        return out


def graphs_skipped_check():
    """A WithFallback check for CUDA graphs: inductor skips a graph it cannot capture (a CPU tensor, a mutated
    input, dynamic shapes) without an error, and the iteration then runs compiled but kernel by kernel."""
    from torch._dynamo.utils import counters

    before = counters["inductor"]["cudagraph_skips"]

    def check() -> str | None:
        skipped = counters["inductor"]["cudagraph_skips"] - before
        return (f"CUDA graphs: inductor skipped {skipped} of this run's graphs (TORCH_LOGS=perf_hints says why): "
                "those parts run compiled but without graphs, slower") if skipped else None

    return check


def fresh_compiler() -> None:
    """Forget every net torch.compile has compiled in this process, before compiling new ones. All LossAndErrors
    share one forward (and all SGDs one step), and torch.compile keeps at most 8 versions of a function: a process
    that builds net after net (a joblib worker, bench over many models) would train or time the 9th eagerly without
    a word. The earlier nets' CUDA graphs and their memory go too. Compiling is lazy: call it before the first call."""
    torch._dynamo.reset()


def compiled(module: torch.nn.Module, mode: str, device: torch.device):
    """The module (train.LossAndErrors) as the training step calls it: eager ("off"), torch.compile'd ("default"),
    or compiled into CUDA graphs ("cuda_graphs": forward and backward each replay as one graph)."""
    if mode == "off":
        return module
    if mode == "default":
        return torch.compile(module)
    if device.type != "cuda":
        raise UsageError(f"CUDA graphs need a CUDA device, and this run is on {device}; "
                         "use trainer.device=cuda, or leave CUDA graphs off")
    graphed = torch.compile(module, mode="reduce-overhead")

    def forward(*inputs):
        torch.compiler.cudagraph_mark_step_begin()  # a new iteration: the last one's outputs may be overwritten
        return graphed(*inputs)

    return forward
