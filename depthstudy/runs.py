"""Load the runs under a directory and group them by configuration. No torch or matplotlib here.

Each run directory is read on its own terms: config.yaml for what it is, its TensorBoard event
files (TensorBoard's own reader, every point) for what it measured, summary.json (if any) for
its status. Final errors are the last point of each curve, so runs from any writer that uses the
tag names in depthstudy.events are read the same way.
"""

from __future__ import annotations

import math
import os
import re
import statistics
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

from depthstudy import events
from depthstudy.cluster import last_job_id
from depthstudy.errors import UsageError
from depthstudy.rundir import (CHECKPOINT_FILE, CONFIG_FILE, LOCK_FILE, NAMING_KEYS, RETRAIN, REWRITE, RUNTIME_KEYS,
                               SUMMARY_FILE, ConfigUnreadable, flatten, inert_keys, lock_holder, read_config,
                               read_summary)
from depthstudy import rundir

# Keys that never define a configuration (seeds are averaged over; the rest is bookkeeping).
NOT_CONFIG = set(RUNTIME_KEYS) | set(NAMING_KEYS) | {"seed"}
SUMMARY_LOST = f"{SUMMARY_FILE} unreadable; {REWRITE}"
STATUS_IN_MEANS = ("finished", "external")  # diverged, failed, running runs are shown, never averaged


@dataclass
class Run:
    path: Path
    config: dict  # flattened: {"model.depth": 20, ...}
    status: str
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    wall_times: dict[str, list[float]] = field(default_factory=dict)  # per tag, the unix time of each point
    lists: dict[str, list] = field(default_factory=dict)  # the list-valued config keys as lists (config has strings)
    summary: dict = field(default_factory=dict)
    problem: str = ""  # why its curves could not be read
    copy_of: Path | None = None  # the directory holding the same configuration and seed that is used instead

    @property
    def name(self) -> str:
        return self.path.name

    def final(self, split: str) -> float | None:
        """The run's final error on a split. Training: the final weights over the whole training split in eval
        mode (summary.json's train_error where train_error_measure says so: runs since that measure existed), else
        the last log window of the training curve (older runs, and runs that did not finish)."""
        if split == "train" and self.measured_train_split:
            return self.summary["train_error"]
        points = self.curves.get(events.ERROR_TAGS[split])
        return points[-1][1] if points else None

    @property
    def iterations(self) -> int | None:
        """Iterations trained: summary.json's, else (another writer's run has none) where its training curve ends."""
        steps = self.curves.get(events.TRAIN_ERROR)
        return self.summary.get("iterations", steps[-1][0] if steps else None)

    @property
    def measured_train_split(self) -> bool:
        return bool(self.summary.get("train_error_measure")) and isinstance(self.summary.get("train_error"),
                                                                              (int, float))

    @property
    def family(self) -> str:
        shortcut = self.config.get("model.shortcut")
        arch = self.config.get("model.arch", "cifar_resnet")
        base = "plain" if shortcut == "none" else f"residual ({shortcut})"
        return base if arch == "cifar_resnet" else f"{arch} {base}"

    @property
    def depth(self) -> int:
        return int(self.config.get("model.depth", 0))


def find_run_dirs(root: Path) -> list[Path]:
    """Every directory below root (root included) that holds a run: a summary.json (a run that failed before its
    first event is still a run to show), or event files beside a config.yaml or the marks of a depthstudy run
    (a run whose config.yaml was lost, a damaged one); not another tool's TensorBoard directory. Symbolic links to
    directories are followed (as a sweep, which opens its run directories by name, does), each directory once."""
    found, seen = [], set()
    for top, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(top)
        if real in seen or ".hydra" in Path(top).parts:  # a link back up, or to a directory already read
            dirs[:] = []
            continue
        seen.add(real)
        d = Path(top)
        logged = any(fnmatch(f, events.EVENT_FILES) and not f.endswith(".study") for f in files)
        ours = any((d / mark).exists() for mark in (CONFIG_FILE, ".hydra", LOCK_FILE, CHECKPOINT_FILE))
        if SUMMARY_FILE in files or (logged and ours):
            found.append(d)
    return sorted(found, key=_natural)


def _natural(path: Path) -> list:
    """Numbers in a path compared as numbers: plain-d8 before plain-d14."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", str(path))]


# What a run's config.yaml must say for the run to be placed in a group (anything else: the file is incomplete).
PLACING_KEYS = {"model.depth": int, "model.shortcut": str, "seed": int}


def read_run_config(path: Path) -> tuple[dict, dict, list[str]]:
    """(flattened config, its list-valued keys as lists, problems): a config.yaml that is missing, unreadable or
    lacks what places the run in a group (PLACING_KEYS) gives ({}, {}, [why, and what to do])."""
    try:
        config = read_config(path)
    except FileNotFoundError:
        return {}, {}, [f"no {CONFIG_FILE}: what the run is cannot be known; {RETRAIN}"]
    except ConfigUnreadable as e:
        return {}, {}, [f"{CONFIG_FILE} unreadable ({e.why}): {RETRAIN}"]
    lists = {k: v for k, v in flatten(config, lists_as_str=False).items() if isinstance(v, list)}
    config = flatten(config)
    wrong = [k for k, kind in PLACING_KEYS.items() if not _is(config.get(k), kind)]
    if wrong:  # a torn file that still parses, or another writer's: a group of depth 0 would be made up
        return {}, {}, [f"{CONFIG_FILE} lacks {' and '.join(wrong)} (or gives another type): incomplete; {RETRAIN}"]
    return config, lists, []


def read_run(path: Path) -> Run:
    """A run as its files say; what cannot be read or does not agree becomes the run's `problem` (the run is
    then shown and named, never averaged)."""
    config, lists, problems = read_run_config(path)
    summary = read_summary(path)
    status, why = run_status(path, summary, config or None)
    if status == "damaged":
        problems.append(why)
    run = Run(path, config, status, summary=summary or {}, lists=lists)
    try:
        run.curves, run.wall_times = events.read_scalars(path, with_wall_times=True)
    except Exception as e:  # a truncated or corrupted event file: report it, keep going
        problems.append(f"event file unreadable: {e}; its curves are lost: {RETRAIN}")
    if not problems:
        problems += disagreements(run) or gaps(run)
    run.problem = "; ".join(problems)
    return run


def gaps(run: Run) -> list[str]:
    """Where the training curve lost points: it starts late, or jumps over many log windows (an event file
    truncated or deleted, its run resumed from a later checkpoint). A point may lie up to twice the larger
    spacing of its neighbours (and of the largest trainer.log_every the run used: summary.json's log_every_used)
    from the previous one: a log_every changed on resume is not a gap."""
    steps = [step for step, _ in run.curves.get(events.TRAIN_ERROR, [])]
    cadences = [run.config.get("trainer.log_every"), *(run.summary.get("log_every_used") or [])]  # changed on resume
    every = max([c for c in cadences if _is(c, int) and c > 0], default=1)
    if len(steps) < 2:
        return []
    diffs = [b - a for a, b in zip(steps, steps[1:])]
    if steps[0] > 2 * max(every, diffs[0]):
        return [f"its training curve starts at iteration {steps[0]}: the points before it are lost (event files "
                f"deleted or truncated); {RETRAIN}"]
    for i, d in enumerate(diffs):
        if d > 2 * max(every, diffs[i - 1] if i else 0, diffs[i + 1] if i + 1 < len(diffs) else 0):
            return [f"its training curve has no points between iterations {steps[i]} and {steps[i + 1]} (event "
                    f"files truncated or deleted); {RETRAIN}"]
    return []


def _is(value, kind: type) -> bool:
    return isinstance(value, kind) and not isinstance(value, bool)


def disagreements(run: Run) -> list[str]:
    """Where a finished run's curves and its summary.json disagree (an event file damaged in a way its
    checksums cannot show, or curves from another run): the last step and the final errors must match."""
    s = run.summary
    if not s:  # no summary.json (another writer's run, or it was lost): its curves must reach the planned end
        total = run.config.get("schedule.iterations")
        steps = [step for step, _ in run.curves.get(events.TRAIN_ERROR, [])]
        if isinstance(total, int) and steps and steps[-1] < total:
            return [f"no {SUMMARY_FILE}, and the event files end at iteration {steps[-1]} of {total}: an unfinished "
                    "run; run its sweep again to finish it"]
        return []
    if s.get("status") != "finished":  # a diverged run stops at the log point whose loss is not finite, before
        return []                       # logging it: its curves end a window early (or before they begin)
    steps = [step for step, _ in run.curves.get(events.TRAIN_ERROR, [])]
    if not steps and s.get("iterations"):
        return [f"no training curve in its event files (summary.json says {s['iterations']} iterations): they were "
                f"deleted or belong elsewhere; {RETRAIN}"]
    out = []
    if steps and s.get("iterations") is not None and steps[-1] != s["iterations"]:
        out.append(f"event files end at iteration {steps[-1]}, summary.json says {s['iterations']}")
    for split in ("train", "val", "test"):
        logged, recorded = run.final(split), s.get(f"{split}_error")
        if logged is not None and recorded is not None and not math.isclose(logged, recorded, rel_tol=1e-5, abs_tol=1e-4):
            out.append(f"final {split} error {logged:.4g} in the event files, {recorded:.4g} in summary.json")
    return out


def load_runs(root: Path) -> list[Run]:
    if not root.exists():
        raise UsageError(f"{root} does not exist; give the directory a sweep wrote to, e.g. runs/quick")
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    paths = find_run_dirs(root)
    if not paths:
        raise UsageError(f"no runs under {root} (a run directory holds summary.json, or event files beside config.yaml); "
                         "make some with `depthstudy sweep experiment=quick`")
    if len(paths) < 8:
        runs = [read_run(p) for p in paths]
    else:
        # Parsing event files is CPU-bound Python: spread many runs over the cores.
        with ProcessPoolExecutor() as pool:
            runs = list(pool.map(read_run, paths, chunksize=4))
    found = copies([(r.path, r.config) for r in runs if r.config and r.status in STATUS_IN_MEANS and not r.problem])
    for r in runs:
        r.copy_of = found.get(r.path)
    return runs


def point_of(config: dict) -> tuple:
    """What a run computes, its seed included, from its flattened config: runs with the same point are one result."""
    inert = inert_keys(config)
    return tuple(sorted((k, str(v)) for k, v in config.items() if (k == "seed" or k not in NOT_CONFIG) and k not in inert))


def copies(runs: list[tuple[Path, dict]]) -> dict[Path, Path]:
    """Of (run directory, flattened config) in path order: each directory that holds the same point (point_of) as
    one before it (a copied directory, or sweeps that share configurations) -> that first one, the one counted."""
    first, out = {}, {}
    for path, config in runs:
        out[path] = first.setdefault(point_of(config), path)
    return {path: used for path, used in out.items() if used != path}


def forced(summary: dict) -> list[str]:
    """Where a forced resume (trainer.force_resume) continued the run with another config: "iteration N: changes"."""
    return [f"iteration {h.get('from_iteration')}: {'; '.join(map(str, h['config_changes']))}"
            for h in summary.get("history") or [] if isinstance(h, dict) and h.get("config_changes")
            and isinstance(h.get("from_iteration"), int) and h["from_iteration"] > 0]


# --- the tidy table and the per-configuration statistics ---

def tidy(value):
    """A number as a table shows it: float32 noise rounded away (91.33333587646484 -> 91.333336)."""
    return float(f"{value:.8g}") if isinstance(value, float) and math.isfinite(value) else value


def run_record(run: Run) -> dict:
    """One run as one flat row: name, family, status, every config key (lists stay lists), the final
    errors and losses (Run.final: the training split in eval mode where measured, else the last logged point),
    and what the summary measured (parameters, time, speed)."""
    s = run.summary
    finals = {f"{split}_{what}": tidy(run.curves[tags[split]][-1][1]) if run.curves.get(tags[split]) else None
              for what, tags in (("error", events.ERROR_TAGS), ("loss", events.LOSS_TAGS)) for split in tags}
    if run.measured_train_split:
        finals.update(train_error=tidy(s["train_error"]), train_loss=tidy(s.get("train_loss")),
                      train_window_error=tidy(s.get("train_window_error")))
    return {"run": run.name, "path": str(run.path), "family": run.family, "status": state(run),
            **{k: tidy(v) for k, v in sorted({**run.config, **run.lists}.items())}, **finals,
            "params": s.get("params"), "wall_time_s": s.get("wall_time_s"), "images_per_s": s.get("train_images_per_s"),
            "diverged_at": s.get("diverged_at"), "problem": run.problem or None}


def split_tag(tag: str) -> tuple[str, int | None]:
    """(quantity, index): z_instruments/responses/std/0007 -> (z_instruments/responses/std, 7); train/error ->
    (train/error, None)."""
    head, _, last = tag.rpartition("/")
    return (head, int(last)) if head and last.isdigit() else (tag, None)


def tidy_rows(runs: list[Run], keys: list[str]):
    """(run, *config values, tag, quantity, index, step, value, wall_time): one row per logged point."""
    for r in runs:
        for tag, points in r.curves.items():
            quantity, index = split_tag(tag)
            walls = r.wall_times.get(tag) or [None] * len(points)
            for (step, value), wall in zip(points, walls):
                yield (r.name, *[r.config.get(k) for k in keys], tag, quantity, index, step, tidy(value),
                       None if wall is None else round(wall, 3))


TIDY_COLUMNS = ("tag", "quantity", "index", "step", "value", "wall_time")


def varying_keys(runs: list[Run]) -> list[str]:
    """Config keys whose value differs between runs (the sweep's axes), seed excluded."""
    values = defaultdict(set)
    for r in runs:
        for k, v in r.config.items():
            values[k].add(str(v))
    skip = NOT_CONFIG | set(TABLE_AXES)
    shared = all_keys(runs)
    return sorted(k for k, v in values.items() if len(v) > 1 and k not in skip and k in shared)


TABLE_AXES = ["model.arch", "model.depth", "model.shortcut", "seed"]  # every study's axes, in tables and CSVs


def all_keys(runs: list[Run]) -> set[str]:
    """The config keys every run with a readable config has."""
    configs = [set(r.config) for r in runs if r.config]
    return set.intersection(*configs) if configs else set()


@dataclass
class Group:
    """Runs that differ only in their seed."""
    family: str
    depth: int
    extra: tuple  # values of the other varying keys, in varying_keys order
    runs: list[Run]

    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.status in STATUS_IN_MEANS and not r.problem and not r.copy_of]

    def finals(self, split: str) -> list[float]:
        """Each averaged run's final error on a split (one value per seed)."""
        return [v for v in (r.final(split) for r in self.ok_runs()) if v is not None and math.isfinite(v)]

    def median(self, split: str) -> float | None:
        values = self.finals(split)
        return statistics.median(values) if values else None

    def stat(self, split: str) -> tuple[float | None, float | None, int]:
        values = self.finals(split)
        if not values:
            return None, None, 0
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)

    def counts(self) -> dict[str, int]:
        out = defaultdict(int)
        for r in self.runs:
            out[state(r)] += 1
        return dict(out)


def state(run: Run) -> str:
    """What reports call a run: "damaged" where its files cannot be read or disagree (run.problem says how), "copy"
    where another directory holds the same configuration and seed (run.copy_of, the one counted), else its status
    (finished, diverged, failed, ...). `depthstudy runs` says the same of a damaged config.yaml or summary.json; it
    reads no event files, so damage there only `report` finds."""
    return "damaged" if run.problem else "copy" if run.copy_of else run.status


def unplaced(runs: list[Run]) -> list[Run]:
    """The runs group_runs puts in no group: their config.yaml is missing, unreadable or incomplete, so nothing says
    what they are."""
    return [r for r in runs if not r.config]


def group_runs(runs: list[Run], extra_keys: list[str]) -> list[Group]:
    """The runs by configuration; a run whose config.yaml is unreadable belongs to none (its problem names it)."""
    groups = defaultdict(list)
    for r in (r for r in runs if r.config):  # the rest: unplaced(runs)
        groups[(r.family, r.depth, tuple(r.config.get(k) for k in extra_keys))].append(r)
    value = lambda x: (0, x, "") if _is(x, (int, float)) else (1, 0, str(x))  # noqa: E731  numbers as numbers: 20 < 150
    order = lambda key: (not key[0].startswith("plain"), key[0], [value(x) for x in key[2]], key[1])  # noqa: E731
    return [Group(f, d, e, groups[(f, d, e)]) for f, d, e in sorted(groups, key=order)]


def study_context(runs: list[Run], seeds: str | None = None) -> str:
    """What a figure's numbers come from, in one line: data set, budget, batch, seeds, depthstudy version.
    seeds: what to say instead of the number of distinct seeds (e.g. "2-3 seeds per point")."""
    from depthstudy import __version__

    def values(key: str) -> str:
        found = sorted({str(r.config.get(key)) for r in runs if r.config.get(key) is not None})
        return "/".join(found) if found else "?"

    if seeds is None:
        n = len({r.config.get("seed") for r in runs})
        seeds = f"{n} seed{'s' if n != 1 else ''}"
    return (f"{values('data.name')}, {values('schedule.iterations')} iterations, batch {values('optim.batch_size')}, "
            f"{seeds}; depthstudy {__version__}")


def list_runs(root: Path) -> list[dict]:
    """One row per run below root, from config.yaml and summary.json only (fast: no event files, no torch):
    name, path, status (a run whose process died is "crashed"), pid, iterations, total, final errors, time, copy_of
    (the directory counted instead of this one, as report counts), forced (a forced resume's changes)."""
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory of runs; e.g. depthstudy runs runs/quick")
    rows, configs = [], []
    for path in find_run_dirs(root):
        summary = read_summary(path)
        config, _, config_problems = read_run_config(path)  # cheap: one small YAML file
        status, error = run_status(path, summary, config or None)
        summary = summary or {}
        if config_problems:
            status, error = "damaged", config_problems[0]
        elif status in STATUS_IN_MEANS:
            configs.append((path, config))
        rows.append({"run": path.name, "path": str(path), "status": status,
                     "pid": lock_holder(path)[0] if summary.get("status") == "running" else None,
                     "iterations": summary.get("iterations"), "total_iterations": summary.get("total_iterations"),
                     **{f"{s}_error": summary.get(f"{s}_error") for s in ("train", "val", "test")},
                     "wall_time_s": summary.get("wall_time_s"), "error": error, "forced": forced(summary),
                     "cluster_job": last_job_id(summary), "cluster_jobs": summary.get("cluster_jobs") or [],
                     "config": config})  # flattened (model.depth, model.shortcut, seed...): scripts need not parse names
    found = copies(configs)
    for row in rows:
        row["copy_of"] = str(found[Path(row["path"])]) if Path(row["path"]) in found else None
    return rows


def run_status(path: Path, summary: dict | None, config: dict | None = None) -> tuple[str, str | None]:
    """(status, why) of a run being read (rundir.run_status; summary from read_summary, config: flattened, None to
    read it): without a summary.json "external", another writer's run read as its event files are."""
    status, why = rundir.run_status(path, summary, config)
    if status == "new":
        return "external", f"no {SUMMARY_FILE}: its event files are read as they are (depthstudy report checks them)"
    return status, (why or SUMMARY_LOST) if status == "damaged" else why


# --- choosing and ordering the rows of `depthstudy runs` (--where, --sort) ---

def row_value(row: dict, key: str):
    """A list_runs row's value for a key: its own column (test_error, status, ...), else its config's (model.depth)."""
    return row[key] if key in row and key != "config" else (row.get("config") or {}).get(key)


def row_keys(rows: list[dict]) -> list[str]:
    """Every key --where and --sort accept: the rows' columns, then the config keys any row has."""
    columns = [k for k in rows[0] if k != "config"] if rows else []
    return columns + sorted({k for r in rows for k in r.get("config") or {}} - set(columns))


def _known(key: str, keys: list[str], flag: str) -> str:
    import difflib

    if key not in keys:
        close = difflib.get_close_matches(key, keys, n=1)
        raise UsageError(f"{flag} {key}: no run has that key" + (f"; did you mean {close[0]}?" if close else "")
                         + " (`depthstudy runs DIR --json` shows every key)")
    return key


def parse_where(condition: str) -> tuple[str, bool, str]:
    """(key, wanted equal, value) of KEY=VALUE or KEY!=VALUE."""
    negated = "!=" in condition.split("=", 1)[0] + "="  # the first = is the operator's: a value may hold = itself
    key, _, value = condition.partition("!=" if negated else "=")
    if not key or "=" not in condition:
        raise UsageError(f"--where {condition}: a condition is KEY=VALUE or KEY!=VALUE, e.g. --where model.depth=56")
    return key, not negated, value


def matches(value, wanted: str) -> bool:
    """A row's value against the text of a --where: numbers as numbers (56 matches "56", 0.0001 matches "1e-4"),
    true/false and null as YAML writes them, any other text exactly."""
    if value is None:
        return wanted.lower() in ("null", "none")
    if isinstance(value, bool):
        return wanted.lower() == str(value).lower()
    if isinstance(value, (int, float)):
        try:
            return float(wanted) == value
        except ValueError:
            return False
    return str(value) == wanted


def _sortable(value) -> tuple:
    """Numbers as numbers (20 before 150), text in natural order (plain-d8 before plain-d14), numbers first."""
    return (0, value, []) if _is(value, (int, float)) else (1, 0, _natural(str(value)))


def select_runs(rows: list[dict], where: list[str], sort: str | None) -> list[dict]:
    """The rows for which every --where holds, ordered by --sort KEY (-KEY: descending); runs without a value for
    the key come last either way. An unknown key or a condition without = is a UsageError."""
    if not rows:  # no keys to check against, nothing to choose from
        return rows
    keys = row_keys(rows)
    conditions = [parse_where(c) for c in where]
    for key, _, _ in conditions:
        _known(key, keys, "--where")
    chosen = [r for r in rows if all(matches(row_value(r, k), v) == equal for k, equal, v in conditions)]
    if not sort:
        return chosen
    key = _known(sort.removeprefix("-"), keys, "--sort")
    present = [r for r in chosen if row_value(r, key) is not None]
    ordered = sorted(present, key=lambda r: _sortable(row_value(r, key)), reverse=sort.startswith("-"))
    return ordered + [r for r in chosen if row_value(r, key) is None]


# --- two runs side by side (`depthstudy diff`) ---

# The final numbers compared, as run_record and summary.json name them.
DIFF_RESULTS = ("status", "iterations", "train_error", "val_error", "test_error", "train_loss", "test_loss",
                "wall_time_s", "params")


def compared_run(path: Path) -> Run:
    """A run to compare, read as report reads it; a path that is not a run directory, or a damaged run (its files
    unreadable or disagreeing: nothing it says can be trusted), is a UsageError."""
    if not (path / CONFIG_FILE).is_file():
        raise UsageError(f"{path} is not a run directory (no {CONFIG_FILE}); `depthstudy runs DIR` lists the runs")
    run = read_run(path)
    if run.problem:
        raise UsageError(f"{path} is damaged: {run.problem}")
    return run


def diff_runs(path_a: Path, path_b: Path) -> dict:
    """{"a", "b": the paths; "config": [{"key", "a", "b"}] for each config key whose values differ (a key one
    config.yaml lacks has no "a" or "b"); "runtime": the runtime and naming keys that differ; "results": {"a", "b":
    DIFF_RESULTS of each}}. Runtime keys (trainer.progress, data.root...) and names (run_name) are kept apart: they
    change nothing a run computes (config_hash leaves them out too), so listing them with the settings would hide
    the difference that matters among ones that do not."""
    runs = [compared_run(path_a), compared_run(path_b)]
    configs = [{**r.config, **r.lists} for r in runs]
    differ = sorted(k for k in configs[0].keys() | configs[1].keys()
                    if k not in configs[0] or k not in configs[1] or configs[0][k] != configs[1][k])
    aside = set(RUNTIME_KEYS) | set(NAMING_KEYS)
    entries = [{"key": k, **{side: c[k] for side, c in zip("ab", configs) if k in c}} for k in differ]
    results = {}
    for side, run in zip("ab", runs):
        record = {**run_record(run), "iterations": run.iterations}
        results[side] = {k: record.get(k) for k in DIFF_RESULTS}
    return {"a": str(path_a), "b": str(path_b), "config": [e for e in entries if e["key"] not in aside],
            "runtime": [k for k in differ if k in aside], "results": results}
