"""depthstudy from Python (a notebook): train one run, load runs as pandas DataFrames, make the report.

    import depthstudy
    summary = depthstudy.train_run(["model.depth=8", "schedule.iterations=100"])  # the run's summary.json, + run_dir
    runs = depthstudy.load_runs("runs/quick")       # one row per run: config keys, finals, params, time, status
    curves = depthstudy.load_curves("runs/quick")   # long form: one row per logged point
    depthstudy.write_report("runs/quick")                 # figures, report.md, runs.csv, curves.csv in runs/quick/report

Errors are depthstudy.errors.DepthstudyError (UsageError for bad input), with the message the CLI prints.
"""

from __future__ import annotations

from pathlib import Path


def train_run(overrides: list[str] | None = None) -> dict:
    """Train one run, exactly as `depthstudy train OVERRIDES` would (a finished run is not trained again,
    an interrupted one resumes). Returns its summary.json, with "run_dir" added."""
    from depthstudy import rundir
    from depthstudy.launch import train_one

    run_dir = train_one(list(overrides or []))
    return {**(rundir.read_summary(run_dir) or {}), "run_dir": str(run_dir)}


def load_runs(runs_dir: str | Path):
    """A pandas DataFrame, one row per run below runs_dir: run, path, family, status, every config key
    (model.depth, optim.weight_decay, ...; lists stay lists), {train,val,test}_{error,loss} (errors in %; val
    and test: the last evaluation; train: the final weights over the training split in eval mode where the run
    measured it, else the last log window; train_window_error: that window), params, wall_time_s, images_per_s,
    diverged_at, problem (why a run is unreadable)."""
    import pandas as pd

    from depthstudy.runs import load_runs as read, run_record

    return pd.DataFrame([run_record(r) for r in read(Path(runs_dir))])


def load_curves(runs_dir: str | Path, keys: list[str] | None = None):
    """A pandas DataFrame in long form, one row per logged point: run, the config keys asked for (default: the
    study's axes: model.arch, model.depth, model.shortcut, seed and every other key that varies), tag, quantity
    and index (z_instruments/responses/std/0007 -> z_instruments/responses/std, 7), step, value, wall_time (unix seconds)."""
    import pandas as pd

    from depthstudy.runs import TABLE_AXES, TIDY_COLUMNS, load_runs as read, tidy_rows, varying_keys

    runs = read(Path(runs_dir))
    keys = keys if keys is not None else [*TABLE_AXES, *varying_keys(runs)]
    frame = pd.DataFrame(list(tidy_rows(runs, keys)), columns=["run", *keys, *TIDY_COLUMNS])
    return frame.astype({"index": "Int64"})


def write_report(runs_dir: str | Path, out: str | Path | None = None, by: list[str] | None = None,
           formats: tuple[str, ...] = ("png", "svg"), yscale: str = "auto", style: str = "default") -> dict:
    """Write the report as `depthstudy report` does; returns {"out": folder, "figures": [paths], "runs": [...]}."""
    from rich.console import Console

    from depthstudy.report import make_report

    return make_report(Path(runs_dir), Path(out) if out else None, list(by or []), list(formats), Console(quiet=True),
                       yscale, style, f"depthstudy.write_report({str(runs_dir)!r})")
