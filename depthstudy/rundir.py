"""A run directory: its format and its lifecycle. No torch here, so listing and reading runs starts fast.

    <run>/config.yaml           the resolved config (what the run is)
    <run>/summary.json          status and final numbers (what happened); rewritten atomically
    <run>/checkpoint.pt         what resuming needs (depthstudy.checkpoint writes and reads it)
    <run>/events.out.tfevents.* TensorBoard curves (depthstudy.events)
    <run>/.lock                 held by the one process that trains the run (flock: freed even by kill -9)
    <run>/error.txt             the traceback of a run that failed on a bug, in a sweep

Lifecycle: lock -> refuse a different config -> config.yaml -> summary "running" -> ... -> summary
"finished" | "diverged" (final: a rerun leaves it alone) | "interrupted" | "failed".
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import socket
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from depthstudy.errors import DepthstudyError, UsageError

CONFIG_FILE, SUMMARY_FILE, LOCK_FILE, CHECKPOINT_FILE, ERROR_FILE = (
    "config.yaml", "summary.json", ".lock", "checkpoint.pt", "error.txt")
FINAL_STATUSES = ("finished", "diverged")  # a rerun leaves these alone

# Keys that say where or how a run is executed or logged, not what it computes: they stay out of
# run directory names, and a run may be resumed with different values for them.
RUNTIME_KEYS = ("out_dir", "data.root", "data.download", "trainer.device", "trainer.threads",
                "trainer.progress", "trainer.force_resume", "trainer.fused_optimizer", "trainer.cuda_graphs",
                "trainer.jobs_per_gpu", "trainer.compile_optimizer",
                "trainer.log_every", "trainer.eval_every", "trainer.ckpt_every", "trainer.eval_batch_size",
                "trainer.diagnostics_every", "grids")


class RunBusyError(DepthstudyError):
    """Another process holds the run directory (nothing of it may be touched)."""


# --- atomic writes: a crash at any moment leaves the old file or the new one, never a torn one ---

def atomic_write_bytes(path: Path, write) -> None:
    """Write through `write(file)` to a temp file beside `path`, fsync, then rename over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: Path, obj) -> None:
    """Strict JSON: a non-finite number (a diverged run's loss) is written as null, never as bare NaN."""
    atomic_write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n")


def _finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# --- the user cache: calibrations and measurements kept between commands (losing one costs a re-measure) ---

def cache_root() -> Path:
    """depthstudy's folder in the user cache ($XDG_CACHE_HOME, else ~/.cache)."""
    return Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "depthstudy"


def read_cached(name: str) -> dict:
    """A JSON file of the user cache; {} if it is not there or not readable."""
    try:
        return json.loads((cache_root() / name).read_text())
    except (OSError, ValueError):
        return {}


def write_cached(name: str, obj: dict) -> None:
    """Atomically (concurrent sweeps and benches share the cache); a read-only cache is not an error."""
    try:
        (cache_root()).mkdir(parents=True, exist_ok=True)
        atomic_write_json(cache_root() / name, obj)
    except OSError:
        pass


# --- the lock ---

@contextmanager
def run_lock(run_dir: Path, probe: bool = False):
    """One process per run directory. flock is released by the kernel even after kill -9.
    probe: only check that nobody holds it (the lock file's content is left as it is)."""
    with open(run_dir / LOCK_FILE, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise RunBusyError(f"run directory {run_dir} is in use by another depthstudy process "
                               f"(pid {f.read().strip() or '?'}); wait for it to finish or stop it") from None
        if not probe:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}@{socket.gethostname()}")
            f.flush()
        yield


def check_not_busy(run_dir: Path) -> None:
    """RunBusyError if a process holds the run's lock now (a momentary probe, released at once)."""
    if (run_dir / LOCK_FILE).exists():
        with run_lock(run_dir, probe=True):
            pass


def check_writable(path: Path, instead: str = "choose another out_dir= or name=") -> None:
    """Make the directory `path` (as its run will) and write a file in it, or a UsageError that names the path
    and the reason, and says what to do (`instead`). Checked before anything trains, so an impossible location
    fails in one line."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except FileExistsError:
        raise UsageError(f"cannot write under {path}: a file is in the way, not a directory; {instead}") from None
    except NotADirectoryError:
        raise UsageError(f"cannot write under {path}: part of it is a file, not a directory; {instead}") from None
    except OSError as e:
        raise UsageError(f"cannot write under {path}: {e.strerror or e}; {instead}") from None


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Temp files of an atomic write interrupted by a kill (.checkpoint.pt.*.tmp and the like)."""
    stale = [p for p in run_dir.glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def lock_holder(run_dir: Path) -> tuple[str, str]:
    """(pid, host) of the process that last locked this run, as its lock file says; ("", "") if there is none."""
    try:
        pid, _, host = (run_dir / LOCK_FILE).read_text().strip().partition("@")
    except (OSError, ValueError):
        return "", ""
    return pid, host


def holder_is_gone(run_dir: Path) -> bool:
    """True when the process that last locked this run is known to be dead: it ran on this machine and
    its pid no longer exists. (Reads the lock file only: probing the lock could make a starting run fail.)"""
    try:
        pid, host = lock_holder(run_dir)
        if (host and host != socket.gethostname()) or not pid.isdigit():
            return False  # another machine's process (a cluster job): cannot tell from here
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


def status_of(run_dir: Path, summary: dict | None) -> str:
    """The run's status as summary.json (read_summary) says; "new" where there is none, "damaged" where it is there
    but unreadable (rerunning the run's command rewrites it), "crashed" for a "running" run whose process died."""
    if summary is None:
        return "damaged" if (run_dir / SUMMARY_FILE).exists() else "new"
    status = summary.get("status", "new")
    if status == "running" and holder_is_gone(run_dir):
        return "crashed"
    return status


# --- summary.json ---

# summary.json's fields that readers compute with, and the types they must have (None: not measured).
SUMMARY_TYPES = {"status": (str,), "iterations": (int,), "total_iterations": (int,), "train_error": (int, float),
                 "train_error_measure": (str,), "train_window_error": (int, float),
                 "val_error": (int, float), "test_error": (int, float), "wall_time_s": (int, float)}


def read_summary(run_dir: Path) -> dict | None:
    """summary.json, or None if it is missing or unreadable (not JSON, not an object, or a field of SUMMARY_TYPES
    of another type: a hand-edited or foreign file is not turned into a number)."""
    try:
        summary = json.loads((run_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):  # missing, binary, torn, not JSON
        return None
    if not isinstance(summary, dict) or summary.get("status") is None:  # every summary depthstudy writes has one
        return None
    for key, types in SUMMARY_TYPES.items():
        value = summary.get(key)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            return None
    return summary


def write_summary(run_dir: Path, summary: dict) -> None:
    atomic_write_json(run_dir / SUMMARY_FILE, summary)


def record_failure(run_dir: Path, error: Exception, traceback_text: str | None = None) -> dict:
    """Mark a run failed (a sweep goes on); keeps what the run had already measured."""
    summary = read_summary(run_dir) or {}
    summary.update(status="failed", error=f"{type(error).__name__}: {error}", run_name=run_dir.name)
    if getattr(error, "iterations", None) is not None:
        summary["iterations"] = error.iterations
    try:
        if (run_dir / CONFIG_FILE).exists():
            write_summary(run_dir, summary)
        if traceback_text is not None:
            (run_dir / ERROR_FILE).write_text(traceback_text)
    except OSError as e:  # e.g. the disk that made the run fail is still full: say so, keep the first error
        print(f"warning: could not record the failure in {run_dir}: {e.strerror or e}", file=sys.stderr)
    return summary


# --- config.yaml: what the run is ---

def flatten(d: dict, prefix: str = "", lists_as_str: bool = True) -> dict:
    """{"model": {"depth": 20}} -> {"model.depth": 20}; lists become strings (hashable, comparable) unless
    lists_as_str=False."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}.", lists_as_str))
        else:
            out[f"{prefix}{k}"] = str(v) if lists_as_str and isinstance(v, (list, tuple)) else v
    return out


# What to do with a run whose files say too little to continue it, in every message that finds one.
RETRAIN = "move its directory away and run its command (or sweep) again to train it afresh"


class ConfigUnreadable(DepthstudyError):
    """A config.yaml that cannot be read; `why` in a word or two (UnicodeDecodeError, empty, not a mapping)."""

    def __init__(self, path: Path, why: str):
        self.why = why
        super().__init__(f"{path} is unreadable ({why}): what the run is cannot be known; {RETRAIN}")


def read_config(run_dir: Path) -> dict:
    """The run's resolved config, as saved (nested dicts). A damaged file (torn YAML, empty, not a mapping) raises
    ConfigUnreadable, which names it and says what to do; a missing one, FileNotFoundError."""
    from omegaconf import OmegaConf

    path = run_dir / CONFIG_FILE
    try:
        config = OmegaConf.to_container(OmegaConf.load(path))
        if not isinstance(config, dict):
            raise ValueError("not a mapping")
        if not config:
            raise ValueError("empty")
    except FileNotFoundError:
        raise
    except Exception as e:  # YAML scanner and parser errors, OmegaConf errors, a list or a scalar
        raise ConfigUnreadable(path, str(e) if str(e) in ("empty", "not a mapping") else type(e).__name__) from e
    return config


def write_config(run_dir: Path, config: dict) -> None:
    from omegaconf import OmegaConf

    atomic_write_text(run_dir / CONFIG_FILE, OmegaConf.to_yaml(config))


def read_source_run(path: Path, setting: str) -> dict:
    """The config of the trained run another run starts from (`setting`, e.g. model.init_from=...): a UsageError
    in one line where there is none, or it cannot be read."""
    if not (path / CHECKPOINT_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        raise UsageError(f"{setting}: no trained run there (no {CHECKPOINT_FILE} and {CONFIG_FILE}); give the "
                         "directory of a trained run, e.g. runs/default/resA-d20-wd0.0001-s0")
    try:
        cfg = read_config(path)
    except ConfigUnreadable as e:  # damaged YAML: the source is not a run we can read
        raise UsageError(f"{setting}: its {CONFIG_FILE} is unreadable ({e.why})") from None
    return cfg


def inert_keys(flat: dict) -> set[str]:
    """The keys of a flattened config that cannot change its run: the warm-up's, where it does not apply (no
    min_depth, or a net shallower than it), and the crop's padding where nothing is augmented."""
    inert = set()
    min_depth, depth = flat.get("schedule.warmup.min_depth"), flat.get("model.depth")
    if min_depth is None or (isinstance(depth, int) and isinstance(min_depth, int) and depth < min_depth):
        inert |= {k for k in flat if k.startswith("schedule.warmup.")}
    if flat.get("data.augment") is False:
        inert |= {"data.pad", "data.pad_fill"}
    return inert


def config_changes(saved: dict, new: dict, defaults=None) -> list[str]:
    """What differs between two resolved configs, ignoring keys that do not change the experiment (RUNTIME_KEYS,
    and inert_keys in both).

    defaults: a function returning the flattened default config. A key the saved config lacks was added to
    depthstudy after that run was made, and the run ran as the key's default (new keys default to the old
    behaviour): at its default it is no change."""
    a, b = flatten(saved), flatten(new)
    unrecorded = [k for k in b.keys() - a.keys() if k not in RUNTIME_KEYS]
    if unrecorded and defaults is not None:
        default = defaults()
        a.update({k: b[k] for k in unrecorded if k in default and default[k] == b[k]})
    inert = inert_keys(a) & inert_keys(b)  # e.g. a ResNet-20 whose warm-up cap changed: the same run
    keys = sorted(k for k in a.keys() | b.keys() if k not in RUNTIME_KEYS and k not in inert and a.get(k) != b.get(k))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys]


def check_same_experiment(run_dir: Path, config: dict, force: bool, defaults=None) -> None:
    """Refuse to continue a run directory that holds a different experiment (unless forced); defaults as for
    config_changes."""
    if not (run_dir / CONFIG_FILE).exists():
        # A run that trained (a checkpoint) or ended, whose config was lost: continuing it could mix two experiments.
        # (A run that failed before its config was written trained nothing: it starts afresh.)
        trained = (run_dir / CHECKPOINT_FILE).exists() or (read_summary(run_dir) or {}).get("status") in FINAL_STATUSES
        if trained:
            raise UsageError(f"{run_dir} holds a trained run but no {CONFIG_FILE}: what it is cannot be known; "
                             f"{RETRAIN}")
        return
    changes = config_changes(read_config(run_dir), config, defaults)
    model = [ch for ch in changes if ch.startswith("model.")]
    if model and force and (run_dir / CHECKPOINT_FILE).exists():  # the weights cannot be loaded into another net
        raise UsageError(f"{run_dir} holds a run of another model ({'; '.join(model[:4])}): its checkpoint cannot "
                         "continue this one, even with trainer.force_resume=true; choose another name= or out_dir=")
    if changes and not force:
        raise UsageError(f"{run_dir} holds a run with a different config ({'; '.join(changes[:4])}); "
                         "choose another name= or out_dir=, or pass trainer.force_resume=true to continue it anyway")
