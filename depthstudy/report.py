"""depthstudy report: runs on disk -> tables (report.md, runs.csv, curves.csv, the terminal) and figures.

This module writes the tables and runs the command. Reading and grouping runs is depthstudy.runs;
drawing is depthstudy.figures, imported inside make_report (so importing this module
loads neither torch nor matplotlib).
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

from depthstudy import events, stats
from depthstudy.errors import DepthstudyError, UsageError
from depthstudy.papers import closest_recipe, defines_recipe, reference
from depthstudy.rundir import atomic_write_text, inert_keys
from depthstudy.runs import (NOT_CONFIG, STATUS_IN_MEANS, TABLE_AXES, TIDY_COLUMNS, Group, Run, all_keys, forced,
                             group_runs, load_runs, run_record, tidy, tidy_rows, unplaced, varying_keys)

# --- tables ---

def _median_cell(g: Group, split: str) -> str:
    """The median over seeds, the one summary of every table and figure (the spread: the paired section)."""
    median = g.median(split)
    return "" if median is None else f"{median:.2f}"


def summary_rows(groups: list[Group], extra_keys: list[str], paper: dict) -> tuple[list[str], list[list[str]]]:
    """paper: id(group) -> its papers.Reference (the paper's number, and its table) or None."""
    header = ["family", "depth", *[k.split(".")[-1] for k in extra_keys], "runs", "train err %", "val err %",
              "test err %"]
    with_paper = any(v is not None for v in paper.values())
    if with_paper:
        header += ["paper test %", "gap", "paper"]
    rows = []
    for g in groups:
        counts = g.counts()
        n_ok = len(g.ok_runs())
        runs = f"{n_ok}/{len(g.runs)}" + "".join(f" {k} {v}" for k, v in counts.items() if k not in STATUS_IN_MEANS)
        row = [g.family, str(g.depth), *[str(v) for v in g.extra], runs,
               *[_median_cell(g, s) for s in ("train", "val", "test")]]
        if with_paper:
            ref, test = paper[id(g)], g.median("test")
            row += ["" if ref is None else f"{ref.number:.2f}",
                    "" if ref is None or test is None else f"{test - ref.number:+.2f}",
                    "" if ref is None else ref.table.label]
        rows.append(row)
    return header, rows


# --- paired by seed: the comparisons the study's conclusions rest on ---

def _by_seed(g: Group, split: str) -> dict:
    return {r.config.get("seed"): r.final(split) for r in g.ok_runs()}


def _plain_twin(g: Group, groups: list[Group]) -> Group | None:
    """The plain group a residual group is compared with: the same architecture, depth and other settings."""
    family = g.family.split("residual")[0] + "plain"
    return next((p for p in groups if (p.family, p.depth, p.extra) == (family, g.depth, g.extra)), None)


def _paired_cells(a: Group, b: Group) -> list[str]:
    """a - b per seed on the training and the held-out split: median [interval] and the seeds above 0."""
    cells = []
    for split in ("train", _held_out(a)):
        p = stats.paired(_by_seed(a, split), _by_seed(b, split))
        cells.append("" if p is None else f"{p.median:+.2f} [{p.low:+.2f}, {p.high:+.2f}] ({p.above}/{p.n} > 0)")
    return cells


def _held_out(g: Group) -> str:
    return "test" if any(r.final("test") is not None for r in g.ok_runs()) else "val"


def _coverages(pairs: list[tuple[Group, Group]]) -> str:
    seeds = sorted({len(set(_by_seed(a, "train")) & set(_by_seed(b, "train"))) for a, b in pairs} - {0})
    return ", ".join(f"{stats.median_interval([0.0] * n)[2]:.0%} with {n} seed{'s' * (n != 1)}" for n in seeds)


def paired_section(groups: list[Group], extra_keys: list[str]) -> list[str]:
    """report.md's paired comparisons: each residual net's plain twin minus it, and each family's deepest net minus its
    shallowest, seed by seed, with the exact sign-test interval for the median difference."""
    twins = [(p, g) for g in groups if "residual" in g.family and (p := _plain_twin(g, groups)) is not None]
    ends = []
    for (family, extra) in dict.fromkeys((g.family, g.extra) for g in groups):
        same = sorted((g for g in groups if (g.family, g.extra) == (family, extra)), key=lambda g: g.depth)
        if len(same) > 1:
            ends.append((same[-1], same[0]))
    if not twins and not ends:
        return []
    extra = [k.split(".")[-1] for k in extra_keys]
    split = _held_out(groups[0]) if groups else "test"
    lines = ["## Paired by seed", "",
             f"Each cell: the median over seeds of a per-seed difference in final error (points), its interval for the "
             f"median difference from the exact sign test (order statistics: coverage {_coverages(twins + ends)}; "
             f"not 95%: few seeds cannot give more), and how many seeds' differences are above 0. Only seeds "
             f"that both nets finished count.", ""]
    if twins:
        lines += _paired_table("Plain minus its residual twin (same depth, same seed):", ["depth", *extra, "residual"],
                               [([g.depth, *g.extra, g.family], p, g) for p, g in twins], split)
    if ends:
        lines += _paired_table("Deepest minus shallowest net of each family (same seed):", ["family", *extra, "depths"],
                               [([a.family, *a.extra, f"{a.depth} - {b.depth}"], a, b) for a, b in ends], split)
    return lines + _resolution([r for g in groups for r in g.ok_runs()])


def _paired_table(title: str, keys: list[str], rows: list[tuple[list, Group, Group]], split: str) -> list[str]:
    """A markdown table: each row's key cells, then a - b (_paired_cells)."""
    lines = [title, "", "| " + " | ".join([*keys, "train", split]) + " |", "|---" * (len(keys) + 2) + "|"]
    lines += ["| " + " | ".join([*map(str, cells), *_paired_cells(a, b)]) + " |" for cells, a, b in rows]
    return lines + [""]


def _resolution(runs: list[Run]) -> list[str]:
    """What one image is worth on each held-out split these runs were evaluated on."""
    sizes = sorted({(name, n) for r in runs for name, n in (r.summary.get("split_sizes") or {}).items()
                    if name != "train" and isinstance(n, int) and n > 0})
    if not sizes:
        return []
    return ["Resolution: " + "; ".join(f"one {name} image of {n} = {stats.resolution(n):.2f} points"
                                       for name, n in sizes) + ".", ""]


def _last_fifth_change(run: Run) -> float | None:
    """How far the training curve moved over the last fifth of the run: its last log window minus the first window
    at or after 80% of the iterations (points; near 0: flat, converged or stuck)."""
    points = run.curves.get(events.TRAIN_ERROR) or []
    if len(points) < 2:
        return None
    start = next(v for step, v in points if step >= 0.8 * points[-1][0])
    return points[-1][1] - start


def convergence_lines(groups: list[Group]) -> list[str]:
    """report.md's check that the final errors are converged ones: each group's change over the last fifth."""
    cells = []
    for g in groups:
        changes = [c for r in g.ok_runs() if (c := _last_fifth_change(r)) is not None]
        if changes:
            cells.append(f"{g.family} {g.depth}{''.join(f' {v}' for v in g.extra)}: "
                         f"{statistics.median(changes):+.1f} ({min(changes):+.1f} to {max(changes):+.1f})")
    return ["Training curve over the last fifth of the run (last log window minus the first window at 80% of the "
            "iterations, points; median over seeds, then the seeds' range): " + "; ".join(cells) + ". Near 0: flat "
            "(converged, or stuck where the error is high).", ""] if cells else []


def _window_note(groups: list[Group]) -> list[str]:
    """Runs from before the training-split measure: their training error is their last log window."""
    older = [r for g in groups for r in g.ok_runs() if not r.measured_train_split]
    return [f"{len(older)} run{'s' * (len(older) != 1)} predate the training-split measure: their training error is "
            "their last log window of training mini-batches (train mode).", ""] if older else []


def _problem_lines(runs: list[Run]) -> list[str]:
    lines = []
    for r in runs:
        if r.problem:
            lines.append(f"{r.name}: {r.problem} (not averaged)")
        elif r.copy_of:
            lines.append(f"{r.name}: the same configuration and seed as {r.copy_of}, which is counted (a copy: not "
                         "averaged twice)")
        elif r.status == "diverged":
            lines.append(f"{r.name}: diverged at iteration {r.summary.get('diverged_at')} (not averaged)")
        elif r.status not in STATUS_IN_MEANS:
            total = r.summary.get("total_iterations")
            lines.append(f"{r.name}: {r.status} at iteration {r.summary.get('iterations')}"
                         f"{f' of {total}' if total is not None else ''} (not averaged)")
    return lines


def _provenance(runs: list[Run], command: str) -> list[str]:
    """report.md's opening: the command, the version, what the figures' numbers come from, and every setting in
    which these runs depart from the paper recipe they are closest to (experiment=he2015 or he2016)."""
    from depthstudy.runs import study_context

    name, preset, recipe, axes = closest_recipe([r.config for r in runs if r.config])
    departures = []
    for key, paper_value in sorted(recipe.items()):
        if not defines_recipe(key) or key in axes:  # the study's own axes
            continue
        ours = sorted({str(r.config[key]) for r in runs if key in r.config and key not in inert_keys(r.config)})
        if ours and ours != [str(paper_value)]:
            departures.append(f"`{key}`: {' / '.join(ours)} (paper: {paper_value})")
    lines = [f"Made by `{command}`. Runs: {study_context(runs)}.", ""]
    resumed = [f"{r.name} at {change}" for r in runs for change in forced(r.summary)]
    if resumed:  # trainer.force_resume: part of these runs trained with another config
        lines += ["Resumed with another config (trainer.force_resume): " + "; ".join(resumed) + ".", ""]
    if departures:
        lines += [f"Settings that differ from {name} (`experiment={preset}`): " + "; ".join(departures) + ".", ""]
    else:
        lines += [f"Every setting follows {name} (`experiment={preset}`).", ""]
    return lines


def write_markdown(path: Path, root: Path, header, rows, figures: list[Path], problems: list[str],
                   provenance: list[str] = (), section: list[str] = (), paired: list[str] = (),
                   notes: list[str] = ()) -> None:
    """notes: the footnotes of the paper tables the runs are set beside (papers.Table.note)."""
    lines = [f"# Depth study report: `{root}`", "", *provenance, *section]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "Errors are final errors in %, the median over seeds (the figures draw the same median). Val and "
              "test: the final weights on the split in eval mode. Train: the final weights over the whole training "
              "split in eval mode, without augmentation (summary.json's train_error_measure), so it does not depend "
              "on the logging cadence; the training curves are the log windows of training mini-batches (augmented "
              "where data.augment is on) in train mode. The paper does not say how its training curves were computed."]
    for note in notes:
        lines += ["", f"paper test %: {note}"]
    lines += ["", *paired] if paired else []
    if problems:
        lines += ["", "## Runs not in the medians", ""] + [f"- {p}" for p in problems]
    if not section:  # a section shows its own figures where it discusses them
        from depthstudy.figures import figure_link  # matplotlib: loaded by now (make_report drew the figures)

        formats: dict[str, list[str]] = {}
        for p in figures:
            formats.setdefault(p.stem, []).append(p.suffix.lstrip("."))
        lines += [""] + [figure_link(stem, fmts) for stem, fmts in formats.items()]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _write_csv(path: Path, header: list, rows) -> None:
    """A CSV file, written whole or not at all (rundir.atomic_write_text)."""
    import io

    text = io.StringIO()
    w = csv.writer(text)
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, text.getvalue())


def _write_records(path: Path, records: list[dict]) -> None:
    """A CSV of records (dicts), every key a column in first-seen order."""
    columns = list(dict.fromkeys(k for rec in records for k in rec))
    _write_csv(path, columns, ([_cell(rec.get(k)) for k in columns] for rec in records))


def write_csvs(out: Path, runs: list[Run], axes: list[str]) -> None:
    """runs.csv: one row per run (runs.run_record: every config key, finals, params, time, speed, status);
    curves.csv: the tidy table, one row per logged point, with the sweep's axes (join on `run` for the rest)."""
    _write_records(out / "runs.csv", [run_record(r) for r in runs])
    _write_csv(out / "curves.csv", ["run", *axes, *TIDY_COLUMNS], tidy_rows(runs, axes))


def _cell(value):
    """A CSV cell: lists as JSON lists ([0.5, 0.75]), None as empty."""
    import json

    return json.dumps(value) if isinstance(value, (list, tuple)) else value


def table_records(groups: list[Group], extra_keys: list[str], paper: dict) -> list[dict]:
    """The per-configuration table as data (table.csv, table.json): per split, the seeds' mean, std, median, n;
    paper as for summary_rows."""
    records = []
    for g in groups:
        rec = {"family": g.family, "depth": g.depth, **dict(zip(extra_keys, g.extra)), "runs": len(g.runs),
               "averaged": len(g.ok_runs())}
        for split in ("train", "val", "test"):
            mean, std, n = g.stat(split)
            rec.update({f"{split}_error_mean": tidy(mean), f"{split}_error_std": tidy(std) if n > 1 else None,
                        f"{split}_error_median": tidy(g.median(split)), f"{split}_n": n})
        ref = paper[id(g)]
        rec.update({"paper_test_error": ref.number if ref else None, "paper_table": ref.table.name if ref else None,
                    "paper_statistic": ref.table.statistic if ref else None})
        records.append(rec)
    return records


def write_table(out: Path, records: list[dict]) -> None:
    import json

    _write_records(out / "table.csv", records)
    atomic_write_text(out / "table.json", json.dumps(records, indent=1) + "\n")


FIGURE_LIST = ".figures.json"  # in a report directory: the figure files the last report wrote


def _remove_stale_figures(out: Path, written: list[Path]) -> list[Path]:
    """The figures the previous report in `out` wrote (its FIGURE_LIST) that this one did not (another format, or a
    figure these runs no longer have): beside the new ones they would pass for its results. Files no report
    wrote are left alone. Then this report's list."""
    import json

    try:
        earlier = json.loads((out / FIGURE_LIST).read_text())
    except (OSError, ValueError):
        earlier = []
    names = {p.name for p in written}
    stale = [out / name for name in earlier if isinstance(name, str) and "/" not in name and name not in names
             and (out / name).is_file()]
    for p in stale:
        p.unlink()
    atomic_write_text(out / FIGURE_LIST, json.dumps(sorted(names)) + "\n")
    return stale


# --- the command ---

def _terminal_table(runs: list[Run], root: Path, header: list[str], rows: list[list[str]], out: Path):
    """The summary table for the terminal, fitted to its width: a row is named by its family, depth and the keys
    that vary (kept whole); on a narrow terminal the other columns go, least useful first."""
    from rich.table import Table

    from depthstudy.tables import Fitted, count

    table = Table(title=f"{count(len(runs), 'run')} under {root}")
    for h in header:
        table.add_column(h, justify="left" if h in ("family", "runs") else "right")
    for row in rows:
        table.add_row(*row)
    return Fitted(table, header[:header.index("runs")], ("paper", "gap", "val err %", "paper test %", "runs", "train err %"),
                  f"{out / 'report.md'} has every column")


def make_report(root: Path, out: Path | None, by: list[str], formats: list[str], console, yscale: str = "auto",
                style: str = "default", command: str | None = None) -> dict:
    """Read every run below root and write figures, report.md, runs.csv, curves.csv and table.csv/json to out."""
    from depthstudy import figures, lecture  # loads matplotlib (Agg backend)

    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if not formats:
        raise UsageError("--format is empty; choose one or more of png, svg, pdf, e.g. --format png,svg")
    if bad:
        raise UsageError(f"--format {','.join(bad)} is not supported; choose from png, svg, pdf")
    if yscale not in figures.YSCALES:
        raise UsageError(f"--yscale {yscale} is unknown; choose auto, linear or symlog")
    if style not in figures.STYLES:
        raise UsageError(f"--style {style} is unknown; choose {', '.join(figures.STYLES)}")
    runs = load_runs(root)
    readable = [r for r in runs if not r.problem and not r.copy_of]
    extra_keys = varying_keys(runs)
    for key in by:
        if key not in all_keys(runs):
            raise UsageError(f"--by {key}: no such config key in these runs (e.g. optim.weight_decay, model.block)")
        if key == "seed":
            console.print("[yellow]--by seed: each point is the median over the seeds, each seed a dot; no facets[/]")
        elif key in NOT_CONFIG:
            console.print(f"[yellow]--by {key}: bookkeeping, not a setting of the study; no facets to draw[/]")
        elif key in TABLE_AXES:
            console.print(f"[yellow]--by {key}: already an axis of the depth plot (one series per family)[/]")
        elif key not in extra_keys:
            console.print(f"[yellow]--by {key}: every run has the same value; no facets to draw[/]")
    out = out or root / "report"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file there, or a place that cannot be written
        raise UsageError(f"--out {out}: cannot make the report directory there ({e.strerror}); give a directory "
                         "that can be written, e.g. --out report") from None
    groups = group_runs(runs, extra_keys)
    files = []
    paper = {id(g): reference(g.runs[0].config) for g in groups}  # where the runs follow a paper table's recipe
    paper_points = sorted({(g.depth, r.number, r.table.label) for g in groups if (r := paper[id(g)]) is not None})
    section: list[str] = []
    if readable and lecture.is_lecture(readable):  # experiment=lecture: a figure per claim instead of the study's
        with figures.styled(style):
            section, files = lecture.lecture_section(readable, out, formats)
        atomic_write_text(out / "lecture.md", "\n".join(section) + "\n")
    elif readable:
        with figures.styled(style):
            lost = unplaced(runs)  # no config, no group: each caption counts them as left out
            files += figures.plot_curves(groups, out, formats, lost)
            files += figures.plot_depth(groups, out, formats, extra_keys, yscale, paper_points, unplaced=lost)
            for key in by:
                if key in extra_keys:
                    files += figures.plot_depth_by(groups, key, out, formats, extra_keys, lost)
            files += figures.plot_responses(groups, out, formats, extra_keys, lost)
            files += figures.plot_blocks(groups, out, formats, extra_keys, lost)
    stale = _remove_stale_figures(out, files)
    header, rows = summary_rows(groups, extra_keys, paper)
    problems = _problem_lines(runs)
    paired = [] if section else paired_section(groups, extra_keys) + convergence_lines(groups) + _window_note(groups)
    notes = list(dict.fromkeys(r.table.note for r in paper.values() if r is not None))
    write_markdown(out / "report.md", root, header, rows, files, problems,
                   _provenance(runs, command or f"depthstudy report {root}"), section, paired, notes)
    write_csvs(out, runs, [*TABLE_AXES, *extra_keys])
    write_table(out, table_records(groups, extra_keys, paper))

    console.print(_terminal_table(runs, root, header, rows, out))
    for p in problems:
        console.print(f"[yellow]{p}[/]")
    console.print(f"report: {out / 'report.md'} ({len(files)} figure files"
                  + (f"; {len(stale)} left by an earlier report removed" if stale else "") + ")")
    if not readable:
        raise DepthstudyError(f"none of the {len(runs)} runs under {root} can be used: each is damaged (see above)")
    if not any(g.ok_runs() for g in groups) and not lecture.is_lecture(readable):
        raise DepthstudyError(f"none of the {len(runs)} runs under {root} finished (see above): the report has no "
                              "number to show")
    return {"runs": runs, "groups": groups, "figures": files, "out": out}
