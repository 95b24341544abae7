"""depthstudy report: runs on disk -> one tidy table -> figures, report.md and a terminal table.

Each run directory is read on its own terms: config.yaml for what it is, its TensorBoard event
files (TensorBoard's own reader, every point) for what it measured, summary.json (if any) for
its status. Final errors are the last point of each curve, so runs from any writer that uses the
tag names in depthstudy.events are reported the same way.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from depthstudy import events
from depthstudy.config import RUNTIME_KEYS, flatten
from depthstudy.errors import DepthstudyError, UsageError
from depthstudy.train import CONFIG_FILE, read_summary

# He 2015 Table 6: CIFAR-10 test error (%) of option-A ResNets trained with the paper's recipe.
# ResNet-110: the mean of 5 runs (6.61 +- 0.16; the best run was 6.43), since we compare seed means.
PAPER_TABLE6 = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.61, 1202: 7.93}
# Keys that never define a configuration (seeds are averaged over; the rest is bookkeeping).
NOT_CONFIG = set(RUNTIME_KEYS) | {"seed", "name", "run_name", "experiment"}
STATUS_IN_MEANS = ("finished", "external")  # diverged, failed, running runs are shown, never averaged


@dataclass
class Run:
    path: Path
    config: dict  # flattened: {"model.depth": 20, ...}
    status: str
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)
    problem: str = ""  # why its curves could not be read

    @property
    def name(self) -> str:
        return self.path.name

    def final(self, split: str) -> float | None:
        points = self.curves.get(events.ERROR_TAGS[split])
        return points[-1][1] if points else None

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
    """Every directory below root (root included) with a config.yaml and event files or a summary.json
    (a run that failed before its first event is still a run to show)."""
    return sorted(p.parent for p in root.rglob(CONFIG_FILE) if ".hydra" not in p.parts and (
        any(p.parent.glob("events.out.tfevents.*")) or (p.parent / "summary.json").exists()))


def read_run(path: Path) -> Run:
    config = flatten(OmegaConf.to_container(OmegaConf.load(path / CONFIG_FILE)))
    summary = read_summary(path) or {}
    run = Run(path, config, summary.get("status", "external"), summary=summary)
    try:
        run.curves = events.read_scalars(path)
    except Exception as e:  # a truncated or corrupted event file: report it, keep going
        run.problem = f"event file unreadable: {e}"
    return run


def load_runs(root: Path) -> list[Run]:
    if not root.exists():
        raise UsageError(f"{root} does not exist; give the directory a sweep wrote to, e.g. runs/quick")
    if not root.is_dir():
        raise UsageError(f"{root} is not a directory")
    paths = find_run_dirs(root)
    if not paths:
        raise UsageError(f"no runs under {root} (a run directory holds config.yaml and TensorBoard event files); "
                         "make some with `depthstudy sweep experiment=quick`")
    if len(paths) < 8:
        return [read_run(p) for p in paths]
    # Parsing event files is CPU-bound Python: spread many runs over the cores.
    with ProcessPoolExecutor() as pool:
        return list(pool.map(read_run, paths, chunksize=4))


# --- the tidy table and the per-configuration statistics ---

def tidy_rows(runs: list[Run], keys: list[str]):
    """(run, *config values, tag, step, value): one row per logged point."""
    for r in runs:
        for tag, points in r.curves.items():
            for step, value in points:
                yield (r.name, *[r.config.get(k) for k in keys], tag, step, value)


def varying_keys(runs: list[Run]) -> list[str]:
    """Config keys whose value differs between runs (the sweep's axes), seed excluded."""
    values = defaultdict(set)
    for r in runs:
        for k, v in r.config.items():
            values[k].add(str(v))
    skip = NOT_CONFIG | {"model.depth", "model.shortcut", "model.arch"}
    shared = _all_keys(runs)
    return sorted(k for k, v in values.items() if len(v) > 1 and k not in skip and k in shared)


def _all_keys(runs: list[Run]) -> set[str]:
    return set.intersection(*(set(r.config) for r in runs))


@dataclass
class Group:
    """Runs that differ only in their seed."""
    family: str
    depth: int
    extra: tuple  # values of the other varying keys, in varying_keys order
    runs: list[Run]

    def ok_runs(self) -> list[Run]:
        return [r for r in self.runs if r.status in STATUS_IN_MEANS and not r.problem]

    def stat(self, split: str) -> tuple[float | None, float | None, int]:
        values = [v for v in (r.final(split) for r in self.ok_runs()) if v is not None and math.isfinite(v)]
        if not values:
            return None, None, 0
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values)

    def counts(self) -> dict[str, int]:
        out = defaultdict(int)
        for r in self.runs:
            out["unreadable" if r.problem else r.status] += 1
        return dict(out)


def group_runs(runs: list[Run], extra_keys: list[str]) -> list[Group]:
    groups = defaultdict(list)
    for r in runs:
        groups[(r.family, r.depth, tuple(r.config.get(k) for k in extra_keys))].append(r)
    order = lambda key: (not key[0].startswith("plain"), key[0], [str(x) for x in key[2]], key[1])  # noqa: E731
    return [Group(f, d, e, groups[(f, d, e)]) for f, d, e in sorted(groups, key=order)]


# --- figures (one function each) ---

def _depth_colours(depths: list[int]) -> dict[int, tuple]:
    """One colour per depth, the same in every figure: deeper is darker."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    ds = sorted(set(depths))
    return {d: cmap(0.85 - 0.75 * i / max(len(ds) - 1, 1)) for i, d in enumerate(ds)}


FAMILY_STYLE = {"plain": dict(color="#444444", marker="o"), "residual (A)": dict(color="#c0392b", marker="s"),
                "residual (B)": dict(color="#2471a3", marker="^"), "residual (C)": dict(color="#1e8449", marker="D")}


def _family_style(family: str, i: int) -> dict:
    import matplotlib

    return FAMILY_STYLE.get(family, dict(color=matplotlib.colormaps["tab10"](i % 10), marker="v"))


def _eval_split(runs: list[Run]) -> str:
    """The held-out curve to draw: test where runs have it, else validation."""
    return "test" if any(r.curves.get(events.TEST_ERROR) for r in runs) else "val"


def _mean_curve(runs: list[Run], tag: str) -> tuple[list[int], list[float]]:
    by_step = defaultdict(list)
    for r in runs:
        for step, value in r.curves.get(tag, []):
            if math.isfinite(value):
                by_step[step].append(value)
    steps = sorted(by_step)
    return steps, [statistics.fmean(by_step[s]) for s in steps]


def _save(fig, out: Path, stem: str, formats: list[str]) -> list[Path]:
    import matplotlib
    import matplotlib.pyplot as plt

    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        with matplotlib.rc_context({"svg.fonttype": "none"}):  # SVG text stays text: editable, searchable
            fig.savefig(path, dpi=150, bbox_inches="tight")
        paths.append(path)

    plt.close(fig)
    return paths


def plot_curves(groups: list[Group], out: Path, formats: list[str]) -> list[Path]:
    """Figure-6 style: error vs iterations, one panel per family; training dashed, held-out bold."""
    import matplotlib.pyplot as plt

    families = list(dict.fromkeys(g.family for g in groups))
    colours = _depth_colours([g.depth for g in groups])
    split = _eval_split([r for g in groups for r in g.runs])
    fig, axes = plt.subplots(1, len(families), figsize=(5.2 * len(families), 4.2), sharey=True, squeeze=False, layout="constrained")
    top = 0.0
    for ax, family in zip(axes[0], families):
        for g in (g for g in groups if g.family == family):
            runs = [r for r in g.runs if not r.problem]
            label = f"{g.depth} layers" + "".join(f", {v}" for v in g.extra)
            for tag, style in ((events.TRAIN_ERROR, dict(ls="--", lw=1.0)), (events.ERROR_TAGS[split], dict(lw=2.2))):
                steps, values = _mean_curve(runs, tag)
                if steps:
                    ax.plot(steps, values, color=colours[g.depth], label=label if tag != events.TRAIN_ERROR else None, **style)
                    top = max(top, max(values))
        ax.set_title(family)
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title=f"dashed: training, bold: {split}", title_fontsize=8)
    axes[0][0].set_ylabel("error (%)")
    axes[0][0].set_ylim(0, min(100, top * 1.05 + 1))
    fig.suptitle("Error during training (mean over seeds)")
    return _save(fig, out, "curves", formats)


def _depth_axes(ax, groups: list[Group], split: str, extra_keys: list[str]) -> None:
    series = list(dict.fromkeys((g.family, g.extra) for g in groups))
    for i, (family, extra) in enumerate(series):
        pts = [(g.depth, *g.stat(split)[:2]) for g in groups if (g.family, g.extra) == (family, extra)]
        pts = [p for p in pts if p[1] is not None]
        if not pts:
            continue
        style = _family_style(family, i) if not extra else dict(marker="os^Dv"[i % 5])
        label = family + "".join(f", {k.split('.')[-1]}={v}" for k, v in zip(extra_keys, extra))
        ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], capsize=3, lw=1.8,
                    label=label, **style)
    ax.set_xlabel("depth (layers)")
    ax.set_xticks(sorted({g.depth for g in groups}))
    ax.grid(alpha=0.3)
    ax.set_ylim(bottom=0)


def plot_depth(groups: list[Group], out: Path, formats: list[str], extra_keys: list[str]) -> list[Path]:
    """The headline: final training (and held-out) error vs depth, plain vs residual, mean +- std over seeds."""
    import matplotlib.pyplot as plt

    split = _eval_split([r for g in groups for r in g.runs])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False, layout="constrained")
    for ax, which in zip(axes, ("train", split)):
        _depth_axes(ax, groups, which, extra_keys)
        ax.set_title(f"final {'training' if which == 'train' else which} error")
        ax.set_ylabel("error (%)")
    axes[0].legend(fontsize=8)
    seeds = max((len(g.runs) for g in groups), default=0)
    fig.suptitle(f"Error vs depth (mean \u00b1 std over up to {seeds} seeds)")
    return _save(fig, out, "depth", formats)


def plot_depth_by(groups: list[Group], key: str, out: Path, formats: list[str], extra_keys: list[str]) -> list[Path]:
    """The depth plot faceted by one more key: one column per value, training and held-out rows."""
    import matplotlib.pyplot as plt

    idx = extra_keys.index(key)
    values = list(dict.fromkeys(g.extra[idx] for g in groups))
    rest = [k for k in extra_keys if k != key]
    split = _eval_split([r for g in groups for r in g.runs])
    fig, axes = plt.subplots(2, len(values), figsize=(4.2 * len(values), 7), sharey="row", squeeze=False, layout="constrained")
    for col, value in enumerate(values):
        sub = [Group(g.family, g.depth, g.extra[:idx] + g.extra[idx + 1:], g.runs) for g in groups if g.extra[idx] == value]
        for row, which in enumerate(("train", split)):
            _depth_axes(axes[row][col], sub, which, rest)
            axes[row][col].set_title(f"{key.split('.')[-1]} = {value}: {'training' if which == 'train' else which}")
    for row in range(2):
        axes[row][0].set_ylabel("final error (%)")
    axes[0][0].legend(fontsize=8)
    return _save(fig, out, f"depth_by_{key.replace('.', '_')}", formats)


def _final_indexed(runs: list[Run], prefix: str) -> list[float]:
    """Mean over runs of the last value of each indexed tag (layer or block order)."""
    per_run = [[pts[-1][1] for _, pts in events.indexed(r.curves, prefix)] for r in runs]
    per_run = [v for v in per_run if v]
    if not per_run or len({len(v) for v in per_run}) != 1:
        return []
    return [statistics.fmean(col) for col in zip(*per_run)]


def _group_label(g: Group, extra_keys: list[str], with_family: bool = True) -> str:
    label = (f"{g.family}-{g.depth}" if with_family else f"{g.depth} layers")
    return label + "".join(f", {k.split('.')[-1]}={v}" for k, v in zip(extra_keys, g.extra))


def plot_responses(groups: list[Group], out: Path, formats: list[str], extra_keys: list[str]) -> list[Path]:
    """He 2015 Figure 7: std of each 3x3 layer's response, in layer order and sorted by magnitude."""
    import matplotlib
    import matplotlib.pyplot as plt

    colours = _depth_colours([g.depth for g in groups])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, layout="constrained")
    drawn = False
    for i, g in enumerate(groups):
        stds = _final_indexed([r for r in g.runs if not r.problem], events.RESPONSE_PREFIX)
        if not stds:
            continue
        # One colour per depth; where another key varies too, one colour per group.
        colour = colours[g.depth] if not extra_keys else matplotlib.colormaps["tab10"](i % 10)
        style = dict(color=colour, ls="--" if g.family == "plain" else "-", lw=1.4, label=_group_label(g, extra_keys))
        axes[0].plot(range(1, len(stds) + 1), stds, **style)
        axes[1].plot(range(1, len(stds) + 1), sorted(stds, reverse=True), **style)
        drawn = True
    if not drawn:
        plt.close(fig)
        return []
    axes[0].set_xlabel("layer index (original order)")
    axes[1].set_xlabel("layer index (sorted by magnitude)")
    axes[0].set_ylabel("std of layer response (log scale)")
    for ax in axes:
        ax.set_yscale("log")  # a net that failed to train can respond 1000x more than one that did
        ax.grid(alpha=0.3, which="both")
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("Layer responses on held-out data (He 2015 Fig. 7; dashed: plain, solid: residual)")
    return _save(fig, out, "responses", formats)


def plot_blocks(groups: list[Group], out: Path, formats: list[str], extra_keys: list[str]) -> list[Path]:
    """How close each block is to the identity at the end: ||F(x)||/||x|| and the last BN's gamma norm."""
    import matplotlib
    import matplotlib.pyplot as plt

    quantities = [("branch_ratio", "||F(x)|| / ||x||  (0 = identity block)"), ("gamma_norm", "||gamma|| of the branch's last BN")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    colours = _depth_colours([g.depth for g in groups])
    drawn = False
    for i, g in enumerate(g for g in groups if g.family != "plain"):
        # One colour per depth, as in every figure; where another key varies too, one colour per group.
        colour = colours[g.depth] if not extra_keys else matplotlib.colormaps["tab10"](i % 10)
        for ax, (q, _) in zip(axes, quantities):
            values = _final_indexed([r for r in g.runs if not r.problem], f"{events.BLOCK_PREFIX}{q}/")
            if values:
                ax.plot(range(1, len(values) + 1), values, marker=".", lw=1.2, label=_group_label(g, extra_keys),
                        color=colour)
                drawn = True
    if not drawn:
        plt.close(fig)
        return []
    for ax, (_, title) in zip(axes, quantities):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("block")
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=7)
    fig.suptitle("Residual blocks at the end of training")
    return _save(fig, out, "blocks", formats)


# --- tables ---

def _pm(mean, std) -> str:
    return "" if mean is None else f"{mean:.2f} \u00b1 {std:.2f}"


def _paper_recipe() -> dict:
    from depthstudy.config import compose

    return flatten(OmegaConf.to_container(compose(["experiment=he2015", "model.shortcut=A"]), resolve=True))


def _paper_number(g: Group, recipe: dict) -> float | None:
    """Table 6's number, only for runs whose config is experiment=he2015 with option A (any depth and seed;
    trained on 45k with 5k held out, or on all 50k with data.val_size=0)."""
    config = g.runs[0].config
    free = NOT_CONFIG | {"model.depth", "data.val_size"}
    same = all(config.get(k) == v for k, v in recipe.items() if k not in free)
    return PAPER_TABLE6.get(g.depth) if same else None


def summary_rows(groups: list[Group], extra_keys: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["family", "depth", *[k.split(".")[-1] for k in extra_keys], "runs", "train err %", "val err %",
              "test err %"]
    recipe = _paper_recipe()
    paper = {id(g): _paper_number(g, recipe) for g in groups}
    with_paper = any(v is not None for v in paper.values())
    if with_paper:
        header += ["paper test %", "gap"]
    rows = []
    for g in groups:
        counts = g.counts()
        n_ok = len(g.ok_runs())
        runs = f"{n_ok}/{len(g.runs)}" + "".join(f" {k} {v}" for k, v in counts.items() if k not in STATUS_IN_MEANS)
        row = [g.family, str(g.depth), *[str(v) for v in g.extra], runs,
               *[_pm(*g.stat(s)[:2]) for s in ("train", "val", "test")]]
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
            lines.append(f"{r.name}: {r.problem} (skipped)")
        elif r.status == "diverged":
            lines.append(f"{r.name}: diverged at iteration {r.summary.get('diverged_at')} (not averaged)")
        elif r.status not in STATUS_IN_MEANS:
            lines.append(f"{r.name}: {r.status} at iteration {r.summary.get('iterations')} "
                         f"of {r.summary.get('total_iterations')} (not averaged)")
    return lines


def write_markdown(path: Path, root: Path, header, rows, figures: list[Path], problems: list[str]) -> None:
    lines = [f"# Depth study report: `{root}`", ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "Errors are the last logged point of each curve, in %, mean \u00b1 std over seeds. "
              "Training error is measured on the last window of training mini-batches (as in He 2015, Fig. 6)."]
    if problems:
        lines += ["", "## Runs not in the means", ""] + [f"- {p}" for p in problems]
    lines += [""] + [f"![{p.stem}]({p.name})" for p in figures if p.suffix == ".png"]
    path.write_text("\n".join(lines) + "\n")


def write_csvs(out: Path, runs: list[Run], axes: list[str]) -> None:
    """runs.csv: one row per run, every config key; curves.csv: the tidy table, one row per logged point,
    with the sweep's axes (join on `run` with runs.csv for the rest)."""
    keys = sorted(_all_keys(runs))
    with open(out / "runs.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", "status", *keys, "train_error", "val_error", "test_error"])
        for r in runs:
            w.writerow([r.name, r.status, *[r.config.get(k) for k in keys], r.final("train"), r.final("val"),
                        r.final("test")])
    with open(out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["run", *axes, "tag", "step", "value"])
        w.writerows(tidy_rows(runs, axes))


# --- the command ---

def make_report(root: Path, out: Path | None, by: list[str], formats: list[str], console) -> dict:
    """Read every run below root and write figures, report.md, runs.csv and curves.csv to out."""
    import matplotlib

    matplotlib.use("Agg")
    bad = [f for f in formats if f not in ("png", "svg", "pdf")]
    if bad:
        raise UsageError(f"--format {','.join(bad)} is not supported; choose from png, svg, pdf")
    runs = load_runs(root)
    readable = [r for r in runs if not r.problem]
    extra_keys = varying_keys(runs)
    for key in by:
        if key not in _all_keys(runs):
            raise UsageError(f"--by {key}: no such config key in these runs (e.g. optim.weight_decay, model.block)")
        if key in ("model.shortcut", "model.depth", "model.arch"):
            console.print(f"[yellow]--by {key}: already an axis of the depth plot (one series per family)[/]")
        elif key not in extra_keys:
            console.print(f"[yellow]--by {key}: every run has the same value; no facets to draw[/]")
    out = out or root / "report"
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs, extra_keys)
    figures = []
    if readable:
        figures += plot_curves(groups, out, formats)
        figures += plot_depth(groups, out, formats, extra_keys)
        for key in by:
            if key in extra_keys:
                figures += plot_depth_by(groups, key, out, formats, extra_keys)
        figures += plot_responses(groups, out, formats, extra_keys)
        figures += plot_blocks(groups, out, formats, extra_keys)
    header, rows = summary_rows(groups, extra_keys)
    problems = _problem_lines(runs)
    write_markdown(out / "report.md", root, header, rows, figures, problems)
    write_csvs(out, runs, ["model.arch", "model.depth", "model.shortcut", "seed", *extra_keys])

    from rich.table import Table

    table = Table(title=f"{len(runs)} runs under {root}")
    for h in header:
        table.add_column(h, justify="left" if h in ("family", "runs") else "right")
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for p in problems:
        console.print(f"[yellow]{p}[/]")
    console.print(f"report: {out / 'report.md'} ({len(figures)} figure files)")
    if not readable:
        raise DepthstudyError(f"none of the {len(runs)} runs under {root} has readable event files")
    return {"runs": runs, "groups": groups, "figures": figures, "out": out}
