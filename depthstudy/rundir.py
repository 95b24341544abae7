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

import errno
import fcntl
import json
import math
import os
import re
import shutil
import socket
import sys
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path

from depthstudy.errors import DepthstudyError, UsageError

CONFIG_FILE, SUMMARY_FILE, LOCK_FILE, CHECKPOINT_FILE, ERROR_FILE = (
    "config.yaml", "summary.json", ".lock", "checkpoint.pt", "error.txt")
LOG_FILE = "train.log"  # every process's progress lines, appended (its console may be gone)
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


# Why a write into a run directory failed, where the cause is the place, not the run: (cause, what to do), by errno.
DISK_ERRORS = {errno.ENOSPC: ("no space left on the device (ENOSPC)", "free some space"),
               errno.EDQUOT: ("disk quota exceeded (EDQUOT)", "free some space"),
               errno.EFBIG: ("a file would exceed this process's file-size limit (EFBIG; see ulimit -f)",
                             "raise the limit (ulimit -f unlimited)"),
               errno.EROFS: ("the file system is read-only (EROFS)", "make it writable")}


def disk_problem(error: BaseException, where: Path | None = None) -> tuple[str, str] | None:
    """(cause, what to do) where `error`, or an error it came from, is one of DISK_ERRORS; torch.save's own writer
    says only "enforce fail": then a nearly full device at `where` is taken as the cause. None otherwise."""
    seen = error
    while seen is not None:
        code = getattr(seen, "errno", None)
        found = re.search(r"\[Errno (\d+)\]", str(seen)) if code is None else None
        code = int(found.group(1)) if found else code
        if code in DISK_ERRORS:
            return DISK_ERRORS[code]
        seen = seen.__cause__ or seen.__context__
    try:
        if where is not None and shutil.disk_usage(where).free < 16 * 2**20:
            return DISK_ERRORS[errno.ENOSPC]
    except OSError:
        pass
    return None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def json_text(obj) -> str:
    """Strict JSON: a non-finite number (a diverged run's loss) is written as null, never as bare NaN."""
    return json.dumps(finite(obj), indent=2, sort_keys=True, allow_nan=False) + "\n"


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json_text(obj))


def finite(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
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
    """One process per run directory. flock is released by the kernel even after kill -9 (which leaves the file: a
    dead run's pid, for `crashed`); a process that ends removes it, so a finished run holds no lock file.
    probe: only check that nobody holds it (the lock file's content is left as it is)."""
    path = run_dir / LOCK_FILE
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # the file may have been removed by its last holder between our open and flock: then it is not the lock
            if not probe and os.fstat(f.fileno()).st_ino != os.stat(path).st_ino:
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            f.seek(0)
            raise RunBusyError(f"run directory {run_dir} is in use by another depthstudy process "
                               f"(pid {f.read().strip() or '?'}); wait for it to finish or stop it") from None
        if not probe:
            f.seek(0)
            f.truncate()
            f.write(f"{os.getpid()}@{socket.gethostname()}")
            f.flush()
        try:
            yield
        finally:
            if not probe:  # before the flock goes with the file's closing: the next holder makes a new file
                with suppress(OSError):
                    path.unlink()


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
    """True when no process holds this run's lock now, as far as this machine can tell: there is no lock file (a
    training process always has one), or this machine's kernel lists no flock on it (/proc/locks) and none at all
    held by the pid it names (a dead run's pid may belong to another process by now). A lock taken on another
    machine (a cluster job): False, this machine cannot see it. (Reads; never probes: that could fail a starting run.)"""
    try:
        info = (run_dir / LOCK_FILE).stat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    pid, host = lock_holder(run_dir)
    if host and host != socket.gethostname():
        return False
    held = _flocks()
    if held is not None:
        if (os.major(info.st_dev), os.minor(info.st_dev), info.st_ino) in held["files"]:
            return False
        if pid not in held["pids"]:
            return True
        # the pid holds a flock on some file that does not look like this one (on an overlay file system the kernel
        # may name the file below it): whether the pid lives decides
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except (OSError, ValueError):
        return False
    return False


def _flocks() -> dict | None:
    """{"files": (device major, minor, inode) of every file with a flock held, "pids": their holders} from
    /proc/locks; None where it cannot be read (not Linux)."""
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    held = {"files": set(), "pids": set()}
    for line in lines:  # "1: FLOCK  ADVISORY  WRITE 6366 fe:00:2827136 0 EOF"; a waiter's line has "->" after "1:"
        parts = line.replace("->", " ").split()
        if len(parts) >= 6 and parts[1] == "FLOCK":
            try:
                major, minor, inode = parts[5].split(":")
                held["files"].add((int(major, 16), int(minor, 16), int(inode)))
            except ValueError:
                continue
            held["pids"].add(parts[4])
    return held


# The statuses depthstudy writes into summary.json; any other is a hand-edited or foreign file.
STATUSES = ("running", "interrupted", "failed", *FINAL_STATUSES)


def run_status(run_dir: Path, summary: dict | None, config: dict | None = None) -> tuple[str, str | None]:
    """(status, why) of a run, as summary.json (read_summary) says and as far as its files agree: "new" where there
    is none; "damaged" (why: the reason, None where summary.json is unreadable) where summary.json cannot be read or
    does not agree with config.yaml (config: the run's config.yaml, read here if not given); "crashed" for a
    "running" run that no process holds; else the summary's status and its error (None)."""
    if summary is None:
        return ("damaged", None) if (run_dir / SUMMARY_FILE).exists() else ("new", None)
    problem = summary_problem(summary) or config_problem(run_dir, summary, config)
    if problem:
        return "damaged", problem
    status = summary["status"]
    if status == "running" and holder_is_gone(run_dir):
        return "crashed", None
    return status, summary.get("error")


def status_of(run_dir: Path, summary: dict | None) -> str:
    """run_status without the reason."""
    return run_status(run_dir, summary)[0]


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


def summary_problem(summary: dict) -> str | None:
    """What makes a readable summary.json one depthstudy did not write: a status it never writes (`finishd`), or a
    number that is not finite (it writes null for those). None if there is nothing."""
    if summary["status"] not in STATUSES:
        return (f"{SUMMARY_FILE} says status {summary['status']!r}, which depthstudy never writes (edited by hand?); "
                f"{REWRITE}")
    bad = [k for k, v in summary.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        return f"{SUMMARY_FILE} says {bad[0]} is {summary[bad[0]]} (depthstudy writes null there): edited by hand?; {REWRITE}"
    return None


def nothing_to_do(run_dir: Path, summary: dict) -> str:
    """What a rerun of an ended run says."""
    return f"{run_dir.name}: already {summary['status']} ({summary.get('iterations')} iterations); nothing to do"


_PROVENANCE: list[dict] = []  # this process's, read once


def provenance() -> dict:
    """What made this process's part of a run: depthstudy's version, its source commit where it runs from a git
    checkout ("+changes": files differ from it), torch's version (from its metadata: no torch import), Python, host,
    and when the process started. Read once per process."""
    if not _PROVENANCE:
        import importlib.metadata
        import platform
        import subprocess
        import time

        from depthstudy import __version__

        try:
            torch_version = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:
            torch_version = None
        _PROVENANCE.append({"depthstudy": __version__, "commit": _source_commit(subprocess), "torch": torch_version,
                            "python": platform.python_version(), "host": socket.gethostname(),
                            "process_started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    return dict(_PROVENANCE[0])


def _source_commit(subprocess) -> str | None:
    """HEAD of the git checkout depthstudy runs from (an installed copy: None)."""
    source = Path(__file__).resolve().parent.parent
    if not (source / ".git").exists():
        return None
    git = ["git", "-C", str(source)]
    try:
        head = subprocess.run(git + ["rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        changed = subprocess.run(git + ["status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                 text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git here: the version says what it can
        return None
    if head.returncode:
        return None
    return head.stdout.strip() + ("+changes" if changed.stdout.strip() else "")


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
            _write_failure(run_dir, summary)
        if traceback_text is not None:
            (run_dir / ERROR_FILE).write_text(traceback_text)
    except OSError as e:  # e.g. a read-only disk: say so (where anyone reads), keep the first error
        with suppress(OSError):
            print(f"warning: could not record the failure in {run_dir}: {e.strerror or e}", file=sys.stderr)
    return summary


def _write_failure(run_dir: Path, summary: dict) -> None:
    """summary.json of a failed run; where an atomic write finds no room (the disk that failed the run is full), the
    old file is rewritten in place: its blocks are freed first, and a failure record is barely larger."""
    try:
        write_summary(run_dir, summary)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not (run_dir / SUMMARY_FILE).exists():
            raise
        text = json_text(summary)
        with open(run_dir / SUMMARY_FILE, "r+") as f:
            f.truncate(0)
            f.write(text)


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
# What to do with a damaged summary.json: training treats it as lost.
REWRITE = "running its command (or sweep) again resumes from the checkpoint and rewrites it"

# Keys that say where a run is filed and what it is called, not what it computes.
NAMING_KEYS = ("name", "run_name", "experiment")


def config_hash(config: dict) -> str:
    """What a run computes, as a short hash of its config (nested, as config.yaml holds it), recorded in summary.json
    so that an edited config.yaml shows. RUNTIME_KEYS and NAMING_KEYS are left out: they may change from one process
    of a run to the next, and editing them (data.root after the data moved) changes nothing the run computed."""
    import hashlib

    flat = {k: v for k, v in flatten(config).items() if k not in RUNTIME_KEYS and k not in NAMING_KEYS}
    return hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:16]


def run_name(arch: str, shortcut: str, depth, weight_decay, seed) -> str:
    """A run's readable name (config.yaml's run_name): plain-d56-wd0.0001-s0, resA-d20-wd0.0001-s1, mlp-plain-..."""
    family = "plain" if shortcut == "none" else f"res{shortcut}"
    prefix = "" if arch == "cifar_resnet" else f"{arch}-"
    wd = f"{weight_decay:g}" if isinstance(weight_decay, (int, float)) else weight_decay
    return f"{prefix}{family}-d{depth}-wd{wd}-s{seed}"


def config_problem(run_dir: Path, summary: dict, config: dict | None = None) -> str | None:
    """Where config.yaml (config: as read_config gives it; read here if None) no longer says what the run trained:
    it differs from summary.json's config_hash, or its settings no longer make its run_name (a run made before
    config_hash existed). None if they agree, or config.yaml is missing or unreadable (that is reported apart)."""
    if config is None:
        try:
            config = read_config(run_dir)
        except (OSError, ConfigUnreadable):
            return None
    if summary.get("config_hash") and summary["config_hash"] != config_hash(config):
        return (f"{CONFIG_FILE} was changed after the run trained (it does not match {SUMMARY_FILE}'s config_hash): "
                f"what the run is cannot be known; put the file back, or {RETRAIN}")
    flat, saved = flatten(config), config.get("run_name")
    if isinstance(saved, str) and re.fullmatch(r"([\w.]+-)?(plain|res\w+)-d\d+-wd.+-s\d+", saved):  # a made name
        made = run_name(flat.get("model.arch", "cifar_resnet"), flat.get("model.shortcut"), flat.get("model.depth"),
                        flat.get("optim.weight_decay"), flat.get("seed"))
        if made != saved:
            return (f"{CONFIG_FILE} says {made} but the run was made as {saved}: the file was edited after the run "
                    f"trained; put it back, or {RETRAIN}")
    return None


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


def source_summary(path: Path) -> dict | None:
    """summary.json of the run another run starts from, its status as run_status says (crashed, damaged)."""
    summary = read_summary(path)
    return summary and {**summary, "status": status_of(path, summary)}


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


def check_same_experiment(run_dir: Path, config: dict, force: bool, defaults=None,
                          instead: str = "choose another name= or out_dir=") -> list[str]:
    """Refuse to continue a run directory that holds a different experiment (unless forced), or whose config.yaml no
    longer says what it trained; defaults as for config_changes; instead: how to choose another directory. Returns
    the changes a forced resume makes."""
    if not (run_dir / CONFIG_FILE).exists():
        # A run that trained (a checkpoint) or ended, whose config was lost: continuing it could mix two experiments.
        # (A run that failed before its config was written trained nothing: it starts afresh.)
        trained = (run_dir / CHECKPOINT_FILE).exists() or (read_summary(run_dir) or {}).get("status") in FINAL_STATUSES
        if trained:
            raise UsageError(f"{run_dir} holds a trained run but no {CONFIG_FILE}: what it is cannot be known; "
                             f"{RETRAIN}")
        return []
    saved, summary = read_config(run_dir), read_summary(run_dir)
    edited = summary and config_problem(run_dir, summary, saved)
    # (a forced resume killed between writing summary.json and config.yaml of this very config left them apart: go on)
    if edited and not (force and summary.get("config_hash") == config_hash(config)):
        raise UsageError(f"{run_dir}: {edited}")
    changes = config_changes(saved, config, defaults)
    model = [ch for ch in changes if ch.startswith("model.")]
    if model and (run_dir / CHECKPOINT_FILE).exists():  # the weights cannot be loaded into another net
        raise UsageError(f"{run_dir} holds a run of another model ({'; '.join(model[:4])}): its checkpoint cannot "
                         f"continue this one{', even with trainer.force_resume=true' if force else ''}; {instead}")
    if changes and not force:
        raise UsageError(f"{run_dir} holds a run with a different config ({'; '.join(changes[:4])}); "
                         f"{instead}, or pass trainer.force_resume=true to continue it anyway")
    return changes
