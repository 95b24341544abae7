"""Several runs per GPU: how many jobs of a joblib sweep share each GPU (trainer.jobs_per_gpu), and which GPU
each job takes (gpu_slot).

Small nets at batch 128 leave a GPU mostly idle (launch-bound), so a sweep can run k of them on each GPU at
once. k is a measurement, not a guess: `depthstudy bench --concurrent 1,2,4` times k concurrent training
processes on this GPU against one and records the aggregate images/s here (in the user cache, per GPU model,
torch version, precision and compile mode); `trainer.jobs_per_gpu=auto` takes the k that measured fastest, or
1 where nothing was measured. Torch is imported only where the machine has an NVIDIA device.
"""

from __future__ import annotations

import fcntl
import json
import os
from contextlib import contextmanager
from pathlib import Path

from depthstudy.rundir import read_cached, write_cached

CACHE = "concurrency.json"  # in the user cache
MIN_GAIN = 1.1  # a k whose aggregate is not at least 10% above one run's is not worth sharing a GPU for
MAX_SLOTS = 64  # runs of one sweep at once on one GPU, at most


def visible_gpus() -> int:
    """NVIDIA GPUs this process may use: 0 without importing torch on a machine without NVIDIA devices; where there
    are some, torch counts the ones CUDA_VISIBLE_DEVICES leaves this process."""
    if not (list(Path("/dev").glob("nvidia[0-9]*")) or Path("/dev/dxg").exists()):  # Linux; WSL's GPU device
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def gpu_name() -> str:
    """The name bench --concurrent records its measurements under, for the GPU a sweep's jobs start on."""
    import torch

    from depthstudy.device import device_name

    return device_name(torch.device("cuda", 0))


def setting_key(device_name: str, precision: str, compile_mode: str) -> str:
    import torch

    return json.dumps({"device": device_name, "torch": torch.__version__, "precision": precision,
                       "compile": compile_mode}, sort_keys=True)


def record(key: str, model: str, depth: int, aggregate: dict[int, float]) -> None:
    """Keep a bench --concurrent measurement: aggregate images/s by number of concurrent runs."""
    cache = read_cached(CACHE)
    cache.setdefault(key, {})[model] = {"depth": depth, "aggregate_images_per_s": {str(k): v for k, v in aggregate.items()}}
    write_cached(CACHE, cache)


def best_k(aggregate: dict[int, float]) -> int:
    """The number of concurrent runs with the highest aggregate images/s, if it gains at least MIN_GAIN over one."""
    one = aggregate.get(1)
    k = max(aggregate, key=aggregate.get)
    return k if one and aggregate[k] >= MIN_GAIN * one else 1


def measured_k(key: str, depth: int) -> tuple[int, str, float] | None:
    """(k, what it comes from, k runs' aggregate images/s over one run's) from the measurement of the benchmarked
    net nearest in depth, or None."""
    models = read_cached(CACHE).get(key) or {}
    if not models:
        return None
    model, entry = min(models.items(), key=lambda item: abs(item[1]["depth"] - depth))
    aggregate = {int(k): v for k, v in entry["aggregate_images_per_s"].items()}
    k = best_k(aggregate)
    gain = aggregate[k] / aggregate[1]
    return k, f"bench --concurrent, {model}: {k} at once {gain:.2f}x one run's images/s", gain


def decide(setting, precision: str, compile_mode: str, depths: list[int]) -> tuple[int, str, float | None]:
    """(jobs per GPU, why, their measured gain over one run or None) for a sweep's runs: trainer.jobs_per_gpu if it
    is a number, else what bench measured on this GPU model for the benchmarked net nearest the sweep's median
    depth, else 1."""
    if setting != "auto":
        return int(setting), "trainer.jobs_per_gpu", None
    name = gpu_name()
    depth = sorted(depths)[len(depths) // 2]
    found = measured_k(setting_key(name, precision, compile_mode), depth)
    flags = {"cuda_graphs": "", "default": " --compile --no-cuda-graphs", "off": " --no-cuda-graphs"}[compile_mode]
    return found or (1, f"nothing measured on {name} with {precision}, {compile_mode} yet: "
                        f"`depthstudy bench --concurrent 1,2,4 --precision {precision}{flags}` measures it", None)


@contextmanager
def gpu_slot(job_num: int | None, device: str):
    """The GPU a sweep's job takes with trainer.device=auto (device.pick_device's `gpu`). In a joblib sweep on several
    GPUs: the one that runs the fewest of this sweep's jobs right now, held by a lock file while the job runs
    (job_num % GPUs would pile jobs on one GPU when their lengths differ: ResNet-110 beside ResNet-20). Other
    launchers: job_num (pick_device takes it modulo the GPUs); a single run: None."""
    from depthstudy.interrupt import SWEEP_PID_ENV, sweep_temp_dir

    sweep = os.environ.get(SWEEP_PID_ENV, "")
    gpus = visible_gpus() if job_num is not None and sweep and device == "auto" else 0
    held = _claim(sweep_temp_dir(sweep) / "gpus", gpus) if gpus > 1 else None
    if held is None:
        yield job_num
        return
    gpu, lock = held
    try:
        yield gpu
    finally:
        lock.close()  # releases the lock


def _claim(folder: Path, gpus: int):
    """(GPU index, the open lock file) of the first free slot, slot 0 of every GPU first; None if all are taken."""
    folder.mkdir(parents=True, exist_ok=True)
    for slot in range(MAX_SLOTS):
        for gpu in range(gpus):
            lock = open(folder / f"gpu{gpu}-slot{slot}.lock", "a")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # per open file: exclusive between processes
                return gpu, lock
            except BlockingIOError:
                lock.close()
    return None
