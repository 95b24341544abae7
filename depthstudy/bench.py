"""`depthstudy bench`: training throughput of depthstudy's own path vs a reference loop written the common way.

Ours is what train.py does per iteration: uint8 images held on the device, batched crop/flip/normalise
(TrainStream), a channels_last model, fused SGD from make_optimizer, losses and errors accumulated on the device,
and on CUDA, as train's default, the forward and backward as CUDA graphs (--no-cuda-graphs: eager).
The reference is the textbook loop: torchvision's CIFAR10 with PIL transforms, a DataLoader with one
worker per core, an fp32 NCHW model, torch.optim.SGD. Both train the same architecture on the same images
in the same process; their measurements alternate so that machine noise hits both alike.

Throughput is also put against a physical limit: this machine's measured matmul rate, against which the
training FLOP/s (3 x forward FLOPs per image) says how much of the hardware the training path uses.
"""

from __future__ import annotations

import itertools
import json
import os
import pickle
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from depthstudy import rundir
from depthstudy.config import CONFIG_DIR
from depthstudy.data import Data, TrainStream, default_root, normalization, split_of
from depthstudy.errors import DepthstudyError, UsageError
from depthstudy.models import CifarResNet, count_macs, count_params
from depthstudy.device import (autocast_for, compile_mode, compiled, configure_device, cpu_threads, device_name,
                               fresh_compiler, memory_format, pick_device, time_steps)
from depthstudy.optim import make_update
from depthstudy.schema import PRECISIONS
from depthstudy.train import LossAndErrors, train_step

DEFAULT_MODELS = "resnet20,resnet56,plain56,resnet110"
BATCH_SIZE, NUM_CLASSES, IMAGE_SHAPE = 128, 10, (3, 32, 32)
# The usual per-channel CIFAR-10 statistics, as the common training scripts hard-code them.
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SYNTHETIC_PER_FILE = 1024  # 5 x 1024 training images: 40 batches per epoch, and both loaders cycle


# --- models ---

@dataclass(frozen=True)
class ModelSpec:
    name: str
    depth: int
    shortcut: str  # "A" (residual, parameter-free shortcuts) or "none" (plain)

    def build(self) -> CifarResNet:
        return CifarResNet(self.depth, self.shortcut, IMAGE_SHAPE[0], NUM_CLASSES)


def parse_models(text: str) -> list[ModelSpec]:
    """'resnet20,plain56' -> specs; any 6n+2 depth works, resnet = shortcut A, plain = no shortcut."""
    specs = []
    for name in (n.strip().lower() for n in text.split(",")):
        m = re.fullmatch(r"(resnet|plain)(\d+)", name)
        if not m:
            raise UsageError(f"--models: {name!r} is not a model; write resnetN or plainN with N = 6n+2, "
                             f"e.g. --models {DEFAULT_MODELS}")
        spec = ModelSpec(name, int(m.group(2)), "A" if m.group(1) == "resnet" else "none")
        spec.build()  # refuses a bad depth now, with the model's own message, before any timing
        specs.append(spec)
    if not specs:
        raise UsageError(f"--models is empty; e.g. --models {DEFAULT_MODELS}")
    return specs


# --- data: real CIFAR-10 if it is there, else random images in CIFAR-10's on-disk format ---

def _cifar_classes():
    from torchvision.datasets import CIFAR10

    class UncheckedCIFAR10(CIFAR10):
        """torchvision's CIFAR10 for the synthetic copy: random images cannot match the real md5s,
        so only that check is skipped; the files are parsed exactly as for the real data set."""

        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / f).is_file() for f, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return CIFAR10, UncheckedCIFAR10


def synthetic_root() -> Path:
    """The synthetic copy's cache: the user cache, not data.root, which may be a shared read-only folder."""
    return rundir.cache_root() / "bench-cifar10"


def write_synthetic_cifar(root: Path, per_file: int = SYNTHETIC_PER_FILE, seed: int = 0) -> Path:
    """Random uint8 images as CIFAR-10's real files (pickled dicts), written once and then reused."""
    from torchvision.datasets import CIFAR10

    folder = root / CIFAR10.base_folder
    marker, stamp = folder / "depthstudy-synthetic", f"per_file={per_file} seed={seed}\n"
    if marker.is_file() and marker.read_text() == stamp:
        return root
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def dump(filename: str, entry: dict) -> None:
        tmp = folder / f".{filename}.{os.getpid()}"
        with open(tmp, "wb") as f:
            pickle.dump(entry, f, protocol=2)
        os.replace(tmp, folder / filename)  # atomic: a concurrent or interrupted run never sees half a file

    for filename, _ in CIFAR10.train_list + CIFAR10.test_list:
        dump(filename, {"batch_label": f"synthetic {filename}",
                        "data": rng.integers(0, 256, (per_file, 3 * 32 * 32), dtype=np.uint8),
                        "labels": rng.integers(0, NUM_CLASSES, per_file).tolist()})
    dump(CIFAR10.meta["filename"], {CIFAR10.meta["key"]: CIFAR_CLASSES})
    marker.write_text(stamp)  # last: its presence means every file above is complete
    return root


def training_set(data_root: Path | None, say) -> tuple[object, str, Path]:
    """torchvision's CIFAR-10 training set (transforms for the reference), its kind and its root.

    Real CIFAR-10 if torchvision's own integrity check passes under data_root, else the synthetic copy.
    """
    from torchvision import transforms

    CIFAR10, UncheckedCIFAR10 = _cifar_classes()
    transform = transforms.Compose([
        transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
        transforms.ToTensor(), transforms.Normalize(CIFAR_MEAN, CIFAR_STD),
    ])
    root = Path(data_root).expanduser() if data_root else default_root()
    if (root / CIFAR10.base_folder).is_dir():
        try:
            return CIFAR10(str(root), train=True, transform=transform), "cifar10", root
        except RuntimeError as e:  # torchvision: missing or corrupted (md5) files
            say(f"CIFAR-10 under {root} is not usable ({e}); benchmarking on random images instead")
    root = write_synthetic_cifar(synthetic_root())
    return UncheckedCIFAR10(str(root), train=True, transform=transform), "synthetic", root


def as_data(dataset) -> Data:
    """The same images as depthstudy's Data: uint8 NCHW, labels, the paper's per-pixel mean."""
    train = split_of(dataset)
    return Data("cifar10", train, None, None, NUM_CLASSES, *normalization(train.images, "pixel_mean"))


# --- the two training paths; each returns step(), one training iteration ---

def trainer_default(key: str):
    """A setting `depthstudy train` runs with by default (configs/trainer/default.yaml): ours runs as train does."""
    return OmegaConf.load(CONFIG_DIR / "trainer" / "default.yaml")[key]


def ours_step(spec: ModelSpec, data: Data, device: torch.device, precision: str, mode: str,
              compile_optimizer: bool = False):
    """One iteration of train.py's loop: its batch stream and its train_step()."""
    channels_last = trainer_default("channels_last")
    model = spec.build().to(device, memory_format=memory_format(channels_last))
    forward = compiled(LossAndErrors(model), mode, device)
    optim_cfg = OmegaConf.load(CONFIG_DIR / "optim" / "sgd.yaml")  # He 2015's SGD
    trainer = OmegaConf.create({"fused_optimizer": trainer_default("fused_optimizer"),
                                "compile_optimizer": compile_optimizer})
    _, optimizer = make_update(model, optim_cfg, trainer, lambda s: None, mode == "cuda_graphs")
    stream = TrainStream(data, BATCH_SIZE, seed=0, augment=True, pad=4, channels_last=channels_last, pad_fill="mean")
    autocast = autocast_for(device, precision)
    window = torch.zeros(3, device=device)
    counter = itertools.count()
    model.train()

    def step() -> None:
        x, y = stream.batch(next(counter))
        train_step(forward, optimizer, x, y, autocast, window)

    return step


def reference_step(spec: ModelSpec, batches, device: torch.device):
    """One iteration of the common loop: next batch from the DataLoader, to the device, fp32 NCHW model."""
    model = spec.build().to(device)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    model.train()

    def step() -> None:
        images, labels = next(batches)
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        loss = criterion(model(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return step


def reference_batches(dataset, device: torch.device):
    """Endless batches from one DataLoader shared by every model's reference (its workers persist)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(dataset, batch_size=BATCH_SIZE, shuffle=True, drop_last=True,
                        num_workers=len(os.sched_getaffinity(0)), persistent_workers=True,
                        pin_memory=device.type == "cuda")
    while True:
        yield from loader


# --- timing ---

MATMUL_N = 2048  # the peak's matmul size, unless one would take over MATMUL_MAX_S (e.g. emulated bf16 on a CPU)
MATMUL_MAX_S = 0.5


def matmul_size(device: torch.device, dtype: torch.dtype) -> int:
    """The n of the peak's n x n matmuls: 2048, or the largest power of two (at least 256) whose matmul a 512 probe
    says takes under MATMUL_MAX_S, so that a dtype this device emulates (1 GFLOP/s) does not take minutes."""
    probe = 512
    a = torch.randn(probe, probe, device=device).to(dtype)
    a @ a
    (t,) = time_steps(lambda: a @ a, 1, device)
    n = MATMUL_N
    while n > 256 and t * (n / probe) ** 3 > MATMUL_MAX_S:
        n //= 2
    return n


def matmul_rates(device: torch.device, dtype: torch.dtype, reps: int, n: int = MATMUL_N) -> list[float]:
    """FLOP/s of reps n x n @ n x n matmuls (2 n^3 FLOP each), after one warm-up."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    # cuDNN convolutions may use TF32 by default while fp32 matmuls may not: the peak that fp32 training is
    # held against is the one its convolutions can reach.
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32
    try:
        a @ b
        return [2 * n**3 / t for t in time_steps(lambda: a @ b, reps, device)]
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32


def _summary(times: list[float], train_flop_per_image: float) -> dict:
    median = statistics.median(times)  # the median: one step slowed by another process does not move it
    ips = BATCH_SIZE / median
    return {"step_s": [round(t, 5) for t in times], "median_step_s": median, "min_step_s": min(times),
            "max_step_s": max(times), "images_per_s": ips, "gflop_per_s": ips * train_flop_per_image / 1e9}


def bench_model(spec: ModelSpec, data: Data, batches, device: torch.device, steps: int, warmup: int,
                rounds: int, precision: str, mode: str, compile_optimizer: bool = False) -> dict:
    """Warm the paths up, then time them in alternating rounds; one result row. With a precision other than fp32,
    ours in fp32 is timed too (same compile mode), so that a precision that does not pay says so."""
    if mode != "off" or compile_optimizer:
        fresh_compiler()  # this model's paths compile afresh (the earlier models' are done with)
    probe = spec.build()
    macs, params = count_macs(probe, IMAGE_SHAPE), count_params(probe)
    train_flop = 3 * 2 * macs  # forward: 2 FLOP per MAC; backward: about twice the forward
    paths = {"ours": ours_step(spec, data, device, precision, mode, compile_optimizer),
             "reference": reference_step(spec, batches, device)}
    if precision != "fp32":
        paths["ours_fp32"] = ours_step(spec, data, device, "fp32", mode, compile_optimizer)
    for step in paths.values():
        time_steps(step, warmup, device)  # first steps: allocator, kernel choice, momentum buffers, loader workers
    times = {name: [] for name in paths}
    for r in range(rounds):
        # Alternate the order, so that no path always runs right after the same other one.
        for name in (list(paths) if r % 2 == 0 else list(paths)[::-1]):
            times[name] += time_steps(paths[name], steps, device)
    ours, ref = _summary(times["ours"], train_flop), _summary(times["reference"], train_flop)
    row = {"model": spec.name, "depth": spec.depth, "shortcut": spec.shortcut,
           "params": params,
           "forward_macs_per_image": macs, "train_flop_per_image": train_flop,
           "ours": ours, "reference": ref, "ratio": ours["images_per_s"] / ref["images_per_s"]}
    if "ours_fp32" in times:
        row["ours_fp32"] = _summary(times["ours_fp32"], train_flop)
        row["precision_speedup"] = ours["images_per_s"] / row["ours_fp32"]["images_per_s"]
    return row


def print_results(console, out: dict) -> None:
    """The table, then one line on the peak, the device and how busy the machine was."""
    from rich.table import Table

    s = out["settings"]
    table = Table(title=f"Training throughput, batch {s['batch_size']}, {s['data']} data "
                        f"(ours: {s['precision']}{'' if s['compile'] == 'off' else ', compile: ' + s['compile']}"
                        f"{', compiled update' if s.get('compile_optimizer') else ''}, "
                        f"{'channels_last' if s['channels_last'] else 'NCHW'}, data on device; "
                        "reference: fp32 NCHW, DataLoader)")
    against_fp32 = s["precision"] != "fp32"
    for col in ("model", "ours img/s", "reference img/s", "ours / reference", "ours GFLOP/s", "% of matmul peak",
                *([f"ours {s['precision']} / fp32"] if against_fp32 else [])):
        table.add_column(col, justify="left" if col == "model" else "right")
    for row in out["models"]:
        table.add_row(row["model"], f"{row['ours']['images_per_s']:.0f}", f"{row['reference']['images_per_s']:.0f}",
                      f"{row['ratio']:.2f}x", f"{row['ours']['gflop_per_s']:.1f}",
                      f"{100 * row['ours_fraction_of_peak']:.1f}%",
                      *([f"{row['precision_speedup']:.2f}x"] if against_fp32 else []))
    console.print(table)
    sizes = out.get("matmul_n", {})  # absent from JSON written before sizes were chosen: 2048 then
    peaks = ", ".join(f"{k} {v / 1e9:,.0f} GFLOP/s ({sizes.get(k, MATMUL_N)}^3)"
                      for k, v in out["matmul_peak_flop_per_s"].items())
    (start, *_), (end, *_) = out["loadavg_start"], out["loadavg_end"]
    console.print(f"matmul peak (n^3 matmuls, measured): {peaks}; device {s['device']} ({out['device_name']}), "
                  f"{s['threads']} threads, torch {out['torch_version']}; load average {start:.1f} at start, "
                  f"{end:.1f} at end", highlight=False)
    slower = [f"{r['model']} {r['precision_speedup']:.2f}x" for r in out["models"] if r.get("precision_speedup", 1) < 1]
    if slower:  # a speed opt-in that loses speed must say so, model by model
        console.print(f"warning: {s['precision']} is slower than fp32 here for {', '.join(slower)} (ours, "
                      f"{s['precision']} images/s / fp32 images/s, same compile mode): train those in fp32",
                      style="yellow")
    peak = out["matmul_peak_flop_per_s"]
    if "bf16" in peak and peak["bf16"] < peak["fp32"]:
        # No bf16 units (e.g. AVX2-only CPUs): autocast emulates bf16 and runs slower than fp32.
        console.print(f"warning: bf16 matmuls run at {peak['bf16'] / 1e9:,.1f} GFLOP/s here, slower than fp32: "
                      "this device has no bf16 hardware, so --precision bf16 cannot pay off on it", style="yellow")
    if s["device"] == "cpu" and start >= 1.0:
        # CPU threads spin at barriers: a core taken by another process can slow each step several times over.
        console.print(f"warning: the CPU was busy in the minute before the benchmark (load average {start:.1f}, "
                      f"{len(os.sched_getaffinity(0))} cores); if that work went on, absolute numbers are "
                      "unreliable (the interleaved ratios less so)", style="yellow")


# --- the command ---

def run_bench(models: str = DEFAULT_MODELS, steps: int = 10, warmup: int = 2, rounds: int = 1,
              precision: str = "fp32", compile_model: bool = False, cuda_graphs: bool | None = None, device: str = "auto",
              data_root: Path | None = None, json_path: Path | None = None, console=None,
              compile_optimizer: bool = False) -> dict:
    """Benchmark every model, print the table, write the JSON; returns what the JSON holds."""
    from rich.console import Console

    console = console or Console()
    say = lambda s: console.print(s, style="dim", highlight=False)  # noqa: E731
    specs = parse_models(models)
    dev, mode, json_path = _check_bench_args(steps, warmup, rounds, precision, device, compile_model, cuda_graphs,
                                             json_path)
    threads = cpu_threads("auto")
    configure_device(dev, precision, "auto")  # as train.py does; process-wide, so the reference gets it too
    torch.manual_seed(0)
    load_start = os.getloadavg()

    dataset, data_kind, root = training_set(data_root, say)
    data = as_data(dataset).to(dev)
    batches = reference_batches(dataset, dev)  # its workers start on the first batch, in a warm-up
    say(f"{data_kind} data ({len(dataset):,} images under {root}) on {dev} ({device_name(dev)}), {threads} threads; "
        f"{len(specs)} model(s) x {rounds} round(s) x {steps} timed steps per path, {warmup} warm-up steps")

    # The peak is sampled before every model and at the end, so that noise hits it as it hits training.
    dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if precision == "bf16" else {})}
    peak_n = {p: matmul_size(dev, dtype) for p, dtype in dtypes.items()}
    peak_samples = {p: [] for p in dtypes}

    def sample_peak() -> None:
        for p, dtype in dtypes.items():
            peak_samples[p] += matmul_rates(dev, dtype, reps=3, n=peak_n[p])

    results = []
    for spec in specs:
        sample_peak()
        row = bench_model(spec, data, batches, dev, steps, warmup, rounds, precision, mode, compile_optimizer)
        results.append(row)
        say(f"{spec.name}: ours {row['ours']['images_per_s']:.0f} img/s, "
            f"reference {row['reference']['images_per_s']:.0f} img/s")
    sample_peak()
    batches.close()  # shuts the DataLoader's workers down now, not whenever the collector gets to it
    peak = {p: statistics.median(v) for p, v in peak_samples.items()}
    for row in results:
        row["ours_fraction_of_peak"] = row["ours"]["gflop_per_s"] * 1e9 / peak["bf16" if precision == "bf16" else "fp32"]

    out = {
        "settings": {"models": [s.name for s in specs], "steps": steps, "warmup": warmup, "rounds": rounds,
                     "batch_size": BATCH_SIZE, "precision": precision, "compile": mode,
                     "compile_optimizer": compile_optimizer, **{k: trainer_default(k) for k in ("channels_last", "fused_optimizer")}, "device": str(dev), "threads": threads,
                     "cuda_tf32": dev.type == "cuda" and torch.backends.cudnn.allow_tf32,
                     "reference_num_workers": len(os.sched_getaffinity(0)), "data": data_kind,
                     "data_root": str(root), "images": len(dataset)},
        "matmul_peak_flop_per_s": peak, "matmul_samples_flop_per_s": peak_samples, "matmul_n": peak_n,
        "device_name": device_name(dev), "torch_version": torch.__version__,
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(),
        "models": results,
    }
    print_results(console, out)
    _write_json(json_path, out, say)
    return out


def _check_bench_args(steps: int, warmup: int, rounds: int, precision: str, device: str, compile_model: bool,
                      cuda_graphs: bool | None, json_path: Path | None) -> tuple[torch.device, str, Path | None]:
    """(the device, the compile mode, the JSON path): every option checked before minutes of measuring.
    cuda_graphs None: as train's default (trainer.cuda_graphs=auto: on for CUDA), so that bench times what runs."""
    if steps < 1 or warmup < 0 or rounds < 1:
        raise UsageError(f"--steps ({steps}) and --rounds ({rounds}) must be >= 1 and --warmup ({warmup}) >= 0")
    if precision not in PRECISIONS:
        raise UsageError(f"--precision {precision!r} is unknown; choose one of: {', '.join(PRECISIONS)}")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise UsageError(f"--device {device!r} is unknown; choose auto, cpu, cuda or cuda:N")
    if json_path is not None:
        json_path = Path(json_path)
        if json_path.is_dir():
            raise UsageError(f"--json {json_path} is a directory; give a file name, e.g. --json bench.json")
        rundir.check_writable(json_path.parent, "give --json a file in a directory that can be written")
    dev = pick_device(device, None, "--device")
    if precision == "tf32" and dev.type != "cuda":  # a ratio to fp32 would be noise presented as advice
        raise UsageError(f"--precision tf32 is a CUDA mode (TF32 convolutions and matmuls): on {dev} it computes "
                         "exactly as fp32; use fp32 or bf16 here, or --device cuda")
    mode = compile_mode(compile_model, "auto" if cuda_graphs is None else cuda_graphs, dev)
    if mode == "cuda_graphs" and dev.type != "cuda":
        raise UsageError(f"--cuda-graphs needs a CUDA device, and this bench runs on {dev}; add --device cuda")
    return dev, mode, json_path


def _write_json(json_path: Path | None, out: dict, say) -> None:
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(out, indent=2))
        say(f"wrote {json_path}")


# --- several runs at once on one device (bench --concurrent) ---

def parse_concurrency(text: str) -> list[int]:
    """'2,4' -> [1, 2, 4]: the numbers of concurrent runs to time; one run is always the baseline."""
    try:
        ks = {int(k) for k in text.split(",") if k.strip()}
    except ValueError:
        ks = set()
    if not ks or min(ks) < 1:
        raise UsageError(f"--concurrent {text!r}: give numbers of runs at once, e.g. --concurrent 1,2,4")
    return sorted(ks | {1})


def _concurrent_worker(spec: ModelSpec, data_root, device: str, precision: str, mode: str, threads: int, share: int,
                       steps: int, warmup: int, barrier, results, index: int) -> None:
    """One of k training processes: build, warm up (compiling, if any), wait for the others, then time."""
    try:
        dev = torch.device(device)
        configure_device(dev, precision, threads, share)
        dataset, _, _ = training_set(data_root, say=lambda s: None)
        step = ours_step(spec, as_data(dataset).to(dev), dev, precision, mode)
        time_steps(step, warmup, dev)
        barrier.wait(timeout=900)
        start = time.monotonic()  # system-wide on Linux: comparable between the processes
        times = time_steps(step, steps, dev)
        results.put((index, start, time.monotonic(), times, None))
    except Exception as e:  # noqa: BLE001 -- reported by the parent, with the others released
        barrier.abort()
        results.put((index, None, None, None, f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"))


def time_concurrent(spec: ModelSpec, k: int, data_root, dev: torch.device, precision: str, mode: str, steps: int,
                    warmup: int) -> dict:
    """k processes train `spec` on `dev` at once (each with 1/k of the CPU cores, or of the GPU's memory)."""
    import multiprocessing
    import queue

    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    barrier, results = ctx.Barrier(k), ctx.Queue()
    threads = max(1, len(os.sched_getaffinity(0)) // k)
    procs = [ctx.Process(target=_concurrent_worker, daemon=True,
                         args=(spec, data_root, str(dev), precision, mode, threads, k, steps, warmup, barrier, results, i))
             for i in range(k)]
    for p in procs:
        p.start()
    got = []
    while len(got) < k:
        try:
            got.append(results.get(timeout=1))
        except queue.Empty:
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                barrier.abort()
                raise DepthstudyError(f"bench --concurrent {k}: a training process died (exit code {dead[0].exitcode})")
    for p in procs:
        p.join()
    errors = [g[4] for g in got if g[4]]
    if errors:
        raise DepthstudyError(f"bench --concurrent {k}: {spec.name} failed in a training process ({errors[0]})")
    wall = max(g[2] for g in got) - min(g[1] for g in got)
    each = [BATCH_SIZE / statistics.median(g[3]) for g in got]
    return {"runs": k, "threads_each": threads if dev.type == "cpu" else None, "wall_s": wall,
            "aggregate_images_per_s": k * steps * BATCH_SIZE / wall, "per_run_images_per_s": each}


def run_concurrent_bench(models: str, concurrency: str, steps: int = 10, warmup: int = 2, precision: str = "fp32",
                         compile_model: bool = False, cuda_graphs: bool | None = None, device: str = "auto",
                         data_root: Path | None = None, json_path: Path | None = None, console=None) -> dict:
    """Aggregate images/s of k concurrent training processes on one device against one; on a GPU the result is
    kept for trainer.jobs_per_gpu=auto (depthstudy.packing)."""
    from rich.console import Console
    from rich.table import Table

    from depthstudy import packing

    console = console or Console()
    say = lambda s: console.print(s, style="dim", highlight=False)  # noqa: E731
    ks, specs = parse_concurrency(concurrency), parse_models(models)
    dev, mode, json_path = _check_bench_args(steps, warmup, 1, precision, device, compile_model, cuda_graphs, json_path)
    _, data_kind, root = training_set(data_root, say)  # the synthetic copy is written once, here, not by k processes
    say(f"{data_kind} data under {root} on {dev} ({device_name(dev)}); {', '.join(map(str, ks))} runs at once, "
        f"{steps} timed steps each after {warmup} warm-up step{'' if warmup == 1 else 's'}")
    rows = []
    for spec in specs:
        measured = {k: time_concurrent(spec, k, data_root, dev, precision, mode, steps, warmup) for k in ks}
        one = measured[1]["aggregate_images_per_s"]
        table = Table(title=f"{spec.name}: k runs at once on {dev}, batch {BATCH_SIZE}, "
                            f"{precision}, compile: {mode}")
        for col in ("runs at once", "aggregate img/s", "each run img/s", "vs one run"):
            table.add_column(col, justify="right")
        for k, m in measured.items():
            table.add_row(str(k), f"{m['aggregate_images_per_s']:,.0f}", f"{statistics.median(m['per_run_images_per_s']):,.0f}",
                          f"{m['aggregate_images_per_s'] / one:.2f}x")
        console.print(table)
        aggregate = {k: m["aggregate_images_per_s"] for k, m in measured.items()}
        rows.append({"model": spec.name, "depth": spec.depth, "shortcut": spec.shortcut,
                     "concurrent": list(measured.values()), "best_runs_at_once": packing.best_k(aggregate)})
        if dev.type == "cuda":
            packing.record(packing.setting_key(device_name(dev), precision, mode), spec.name, spec.depth, aggregate)
            say(f"kept for trainer.jobs_per_gpu=auto: {packing.best_k(aggregate)} runs at once on each "
                f"{device_name(dev)} for nets near {spec.name}")
    out = {"settings": {"models": [s.name for s in specs], "concurrency": ks, "steps": steps, "warmup": warmup,
                        "batch_size": BATCH_SIZE, "precision": precision, "compile": mode, "device": str(dev),
                        "data": data_kind, "data_root": str(root)},
           "device_name": device_name(dev), "torch_version": torch.__version__, "models": rows}
    _write_json(json_path, out, say)
    return out
