"""depthstudy report: runs on disk -> tables (report.md, runs.csv, curves.csv, the terminal) and figures.

This module writes the tables and runs the command. Reading and grouping runs is depthstudy.runs;
drawing is depthstudy.figures, imported inside make_report (so importing this module
loads neither torch nor matplotlib).
"""

from __future__ import annotations

import csv
from pathlib import Path

from depthstudy.errors import DepthstudyError, UsageError
from depthstudy.rundir import atomic_write_text, flatten, inert_keys
from depthstudy.runs import (NOT_CONFIG, STATUS_IN_MEANS, TABLE_AXES, TIDY_COLUMNS, Group, Run, all_keys, forced,
                             group_runs, load_runs, run_record, tidy, tidy_rows, unplaced, varying_keys)

# He 2015 Table 6: CIFAR-10 test error (%) of option-A ResNets trained with the paper's recipe.
# ResNet-110: the mean of 5 runs (6.61 +- 0.16; the best run was 6.43), since we compare seed means.
PAPER_TABLE6 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.61, 1202: 7.93}


# --- tables ---

def _pm(mean, std, n) -> str:
    """mean ± std over seeds; one seed: its value alone (no "± 0.00")."""
    return "" if mean is None else f"{mean:.2f}" if n == 1 else f"{mean:.2f} \u00b1 {std:.2f}"


def _paper_recipe() -> dict:
    """experiment=he2015's resolved config, flattened (a Hydra composition: make_report composes it once)."""
    from omegaconf import OmegaConf

    from depthstudy.config import compose

    return flatten(OmegaConf.to_container(compose(["experiment=he2015", "model.shortcut=A"]), resolve=True))


# The trainer's one switch that changes the numbers (the others change speed or memory layout only).
NUMERIC_TRAINER_KEYS = ("trainer.precision",)


def _defines_recipe(key: str) -> bool:
    """Whether a config key is part of the paper's recipe: every setting of the study, not the bookkeeping."""
    return key not in NOT_CONFIG and (not key.startswith("trainer.") or key in NUMERIC_TRAINER_KEYS)


def _paper_number(g: Group, recipe: dict) -> float | None:
    """Table 6's number, only for runs whose config is experiment=he2015 with option A (any depth and seed):
    trained on all 50k images, as the paper's reported models were (not the 45k/5k schedule-selection split)."""
    config = g.runs[0].config
    inert = inert_keys(config) & inert_keys({**recipe, "model.depth": g.depth})
    same = all(config.get(k) == v for k, v in recipe.items() if _defines_recipe(k) and k != "model.depth"
               and k not in inert)
    return PAPER_TABLE6.get(g.depth) if same else None


def summary_rows(groups: list[Group], extra_keys: list[str], paper: dict) -> tuple[list[str], list[list[str]]]:
    """paper: id(group) -> Table 6's number or None (_paper_number)."""
    header = ["family", "depth", *[k.split(".")[-1] for k in extra_keys], "runs", "train err %", "val err %",
              "test err %"]
    with_paper = any(v is not None for v in paper.values())
    if with_paper:
        header += ["paper test %", "gap"]
    rows = []
    for g in groups:
        counts = g.counts()
        n_ok = len(g.ok_runs())
        runs = f"{n_ok}/{len(g.runs)}" + "".join(f" {k} {v}" for k, v in counts.items() if k not in STATUS_IN_MEANS)
        row = [g.family, str(g.depth), *[str(v) for v in g.extra], runs,
               *[_pm(*g.stat(s)) for s in ("train", "val", "test")]]
        if with_paper:
            number, (test, _, _) = paper[id(g)], g.stat("test")
            row += ["" if number is None else f"{number:.2f}",
                    "" if number is None or test is None else f"{test - number:+.2f}"]
        rows.append(row)
    return header, rows


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


def _provenance(runs: list[Run], recipe: dict, command: str) -> list[str]:
    """report.md's opening: the command, the version, what the figures' numbers come from, and every setting in
    which these runs depart from the paper's CIFAR-10 recipe (experiment=he2015)."""
    from depthstudy.runs import study_context

    departures = []
    for key, paper_value in sorted(recipe.items()):
        if not _defines_recipe(key) or key in ("model.depth", "model.shortcut"):  # the study's own axes
            continue
        ours = sorted({str(r.config[key]) for r in runs if key in r.config and key not in inert_keys(r.config)})
        if ours and ours != [str(paper_value)]:
            departures.append(f"`{key}`: {' / '.join(ours)} (paper: {paper_value})")
    lines = [f"Made by `{command}`. Runs: {study_context(runs)}.", ""]
    resumed = [f"{r.name} at {change}" for r in runs for change in forced(r.summary)]
    if resumed:  # trainer.force_resume: part of these runs trained with another config
        lines += ["Resumed with another config (trainer.force_resume): " + "; ".join(resumed) + ".", ""]
    if departures:
        lines += ["Settings that differ from the paper's CIFAR-10 recipe (`experiment=he2015`): " + "; ".join(departures)
                  + ".", ""]
    else:
        lines += ["Every setting follows the paper's CIFAR-10 recipe (`experiment=he2015`).", ""]
    return lines


def write_markdown(path: Path, root: Path, header, rows, figures: list[Path], problems: list[str],
                   provenance: list[str] = (), section: list[str] = ()) -> None:
    lines = [f"# Depth study report: `{root}`", "", *provenance, *section]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "Errors are the last logged point of each curve, in %, mean \u00b1 std over seeds. "
              "Training error is depthstudy's measure: the % misclassified over the last log window of (augmented) "
              "training mini-batches, in train mode; the paper does not say how its training curves were computed."]
    if "paper test %" in header:
        lines += ["", "paper test %: He 2015 Table 6, one run per depth, except ResNet-110: the mean of 5 runs "
                  "(6.61 \u00b1 0.16; its best run, 6.43, is the table's headline). gap: the mean over our seeds "
                  "minus that number, so compare a single seed's spread with it, not only the mean."]
    if problems:
        lines += ["", "## Runs not in the means", ""] + [f"- {p}" for p in problems]
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
        rec["paper_test_error"] = paper[id(g)]
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
    recipe = _paper_recipe()
    paper = {id(g): _paper_number(g, recipe) for g in groups}  # Table 6's number where the runs follow its recipe
    paper_points = sorted({(g.depth, n) for g in groups if (n := paper[id(g)]) is not None})
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
    write_markdown(out / "report.md", root, header, rows, files, problems,
                   _provenance(runs, recipe, command or f"depthstudy report {root}"), section)
    write_csvs(out, runs, [*TABLE_AXES, *extra_keys])
    write_table(out, table_records(groups, extra_keys, paper))

    from rich.table import Table

    table = Table(title=f"{len(runs)} runs under {root}")
    for h in header:
        table.add_column(h, justify="left" if h in ("family", "runs") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
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
