"""The report's figures: one function per figure, each drawing groups of runs and saving it in every format.

Importing this module loads matplotlib (Agg: files only, no display).
"""

from __future__ import annotations

import contextlib
import math
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import matplotlib.patches  # noqa: E402
import matplotlib.ticker  # noqa: E402

from depthstudy import events  # noqa: E402
from depthstudy.runs import STATUS_IN_MEANS, Group, Run, state, study_context  # noqa: E402
from depthstudy.schema import milestone_iterations  # noqa: E402

FAMILY_STYLE = {"plain": dict(color="#444444", marker="o"), "residual (A)": dict(color="#c0392b", marker="s"),
                "residual (B)": dict(color="#2471a3", marker="^"), "residual (C)": dict(color="#1e8449", marker="D")}


# Okabe & Ito's colour-blind-safe palette (its yellow left out: too light on white), in depth order: neighbouring
# depths get clearly different hues (viridis' dark end made 44/56/110 hard to tell apart). Blue, orange, green
# first: the quick study's three depths (sky blue and bluish green, once 32 and 56, read alike).
DEPTH_PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000"]


def _depth_colours(depths: list[int]) -> dict[int, str]:
    """One colour per depth, the same in every figure of a report."""
    ds = sorted(set(depths))
    return {d: DEPTH_PALETTE[i % len(DEPTH_PALETTE)] if len(ds) <= len(DEPTH_PALETTE)
            else matplotlib.colors.to_hex(matplotlib.colormaps["turbo"](0.05 + 0.9 * i / (len(ds) - 1)))
            for i, d in enumerate(ds)}


# --style: sizes and fonts. paper: one 3.5-inch column per panel, small fonts; slide: a 16:9 figure (it fills a
# slide) 40% wider, fonts 1.6-1.8x and lines and markers 1.8x the default's: projected, the text must still read once
# the figure is shrunk to the slide's width, so fonts grow faster than the figure (axis labels a little less: the
# lecture's long ones must stay within their plot). Each style: (size factor, rcParams, height / width or None to
# keep the figure's own, factor for the lines and markers the figure code draws at a fixed size: thick()).
STYLES = {
    "default": (1.0, {}, None, 1.0),
    "paper": (0.64, {"font.size": 7, "axes.titlesize": 7.5, "axes.labelsize": 7, "legend.fontsize": 6,
                     "xtick.labelsize": 6.5, "ytick.labelsize": 6.5, "lines.linewidth": 1.0, "lines.markersize": 4,
                     "figure.titlesize": 8, "pdf.fonttype": 42}, None, 1.0),
    "slide": (1.4, {"font.size": 18, "axes.titlesize": 20, "axes.labelsize": 16.5, "legend.fontsize": 15,
                    "xtick.labelsize": 16, "ytick.labelsize": 16, "lines.linewidth": 3.0, "lines.markersize": 10,
                    "axes.linewidth": 1.5, "xtick.major.width": 1.5, "ytick.major.width": 1.5,
                    "figure.titlesize": 23}, 9 / 16, 1.8),
}
_STYLE = [STYLES["default"]]  # the current style (set by styled())


@contextlib.contextmanager
def styled(name: str):
    """A context in which every figure is drawn in a style (rcParams, and a size factor for figsize)."""
    _STYLE[0] = STYLES[name]
    try:
        with matplotlib.rc_context(STYLES[name][1]):
            yield
    finally:
        _STYLE[0] = STYLES["default"]


def thick(width: float) -> float:
    """A line width or marker size given in the figure code, in the current style (slide: thicker)."""
    return width * _STYLE[0][3]


def side_legend(fig, handles: list, fontsize: str = "x-small") -> None:
    """A figure's legend beside its panels, centred on them: never over the data, nor squeezed into the corner
    beside the title (constrained layout gives a legend above or below the panels the title's or the caption's
    room, not its own, so they overlap)."""
    fig.legend(handles=handles, loc="outside right center", fontsize=fontsize)


def thick_area(area: float) -> float:
    """A scatter marker's area (points squared), grown as thick() grows its side."""
    return area * _STYLE[0][3] ** 2


def new_figure(nrows: int, ncols: int, width: float, height: float, **kwargs):
    """plt.subplots at the style's size (size()), constrained layout: every figure starts here."""
    return plt.subplots(nrows, ncols, figsize=size(width, height), layout="constrained", **kwargs)


def integer_blocks(ax) -> None:
    """A block-index x axis: whole numbers only."""
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_xlabel("block")


def size(width: float, height: float) -> tuple[float, float]:
    scale, _, aspect, _ = _STYLE[0]
    return width * scale, width * scale * aspect if aspect else height * scale


def family_style(family: str, i: int) -> dict:
    """plain / residual (A, B, C) look the same in every figure, for the CIFAR nets and the MLP alike."""
    base = family.split(" ", 1)[1] if family.startswith("mlp ") else family
    return FAMILY_STYLE.get(base, dict(color=matplotlib.colormaps["tab10"](i % 10), marker="v"))


def _label(head: str, extra: tuple, keys: list[str] | None = None) -> str:
    """A series' legend label: head, then ", value" per extra value, or ", key=value" (last part of the
    key's name) when keys are given."""
    if keys is None:
        return head + "".join(f", {v}" for v in extra)
    return head + "".join(f", {k.split('.')[-1]}={v}" for k, v in zip(keys, extra))


def _eval_split(runs: list[Run]) -> str:
    """The held-out curve to draw: test where runs have it, else validation."""
    return "test" if any(r.curves.get(events.TEST_ERROR) for r in runs) else "val"


def seed_curve(runs: list[Run], tag: str) -> tuple[list[int], list[float], list[float], list[float]]:
    """(steps, median, min, max) over the runs at each logged step: the line and the seeds' spread."""
    by_step = defaultdict(list)
    for r in runs:
        for step, value in r.curves.get(tag, []):
            if math.isfinite(value):
                by_step[step].append(value)
    steps = sorted(by_step)
    return (steps, [statistics.median(by_step[s]) for s in steps], [min(by_step[s]) for s in steps],
            [max(by_step[s]) for s in steps])


def _lr_drops(runs: list[Run]) -> list[int]:
    """The iterations where the learning rate drops, from the runs' configs (when they all agree)."""
    drops = {tuple(milestone_iterations(r.lists.get("schedule.milestones", []), int(r.config["schedule.iterations"])))
             for r in runs if "schedule.iterations" in r.config}
    return list(drops.pop()) if len(drops) == 1 else []


def save(fig, out: Path, stem: str, formats: list[str]) -> list[Path]:
    """The figure in each format, each file written whole or not at all (a full disk leaves no 0-byte PNG)."""
    from depthstudy.rundir import atomic_write_bytes

    paths = []
    for fmt in formats:
        path = out / f"{stem}.{fmt}"
        with matplotlib.rc_context({"svg.fonttype": "none"}):  # SVG text stays text: editable, searchable
            atomic_write_bytes(path, lambda f: fig.savefig(f, format=fmt, dpi=150, bbox_inches="tight"))
        paths.append(path)

    plt.close(fig)
    return paths


def plot_curves(groups: list[Group], out: Path, formats: list[str], unplaced: list[Run] = ()) -> list[Path]:
    """Figure-6 style: error vs iterations, one panel per family; training dashed, held-out bold; the line is
    the median over seeds, the band their range; dotted verticals: learning-rate drops."""
    from matplotlib.lines import Line2D

    families = list(dict.fromkeys(g.family for g in groups))
    colours = _depth_colours([g.depth for g in groups])
    all_runs = [r for g in groups for r in g.runs]
    split = _eval_split(all_runs)
    drops = _lr_drops([r for g in groups for r in g.ok_runs()])
    fig, axes = new_figure(1, len(families), 4.6 * len(families) + 1.6, 4.2, sharey=True, squeeze=False)
    top, labels, last, counts = 0.0, {}, 0, []
    for ax, family in zip(axes[0], families):
        for g in (g for g in groups if g.family == family):
            runs = g.ok_runs()  # the runs the table averages: no diverged, failed or damaged ones
            if any(r.curves.get(events.TRAIN_ERROR) or r.curves.get(events.ERROR_TAGS[split]) for r in runs):
                counts.append(len(runs))
            for tag, style in ((events.TRAIN_ERROR, dict(ls="--", lw=thick(1.0))),
                               (events.ERROR_TAGS[split], dict(lw=thick(2.0)))):
                steps, median, low, high = seed_curve(runs, tag)
                if not steps:
                    continue
                held_out = tag != events.TRAIN_ERROR
                few = held_out and len(steps) <= 30  # a handful of evaluations: show each as a dot
                ax.plot(steps, median, color=colours[g.depth], marker="o" if few else None, ms=thick(3.5), **style)
                if len(runs) > 1:
                    ax.fill_between(steps, low, high, color=colours[g.depth], alpha=0.15 if held_out else 0.08, lw=0)
                top, last = max(top, max(high)), max(last, steps[-1])
                labels.setdefault(_label(f"{g.depth} layers", g.extra), colours[g.depth])
        for x in (x for x in drops if x <= last):  # drops the logged steps reach (not a stretched axis)
            ax.axvline(x, color="#888888", ls=":", lw=thick(0.9), zorder=0)
            ax.annotate("lr \u00f710", (x, 1), xycoords=("data", "axes fraction"), xytext=(2, -3),
                        textcoords="offset points", va="top", fontsize="small", color="#555555")
        ax.set_title(family)
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("error (%)")
    axes[0][0].set_ylim(0, min(100, top * 1.05 + 1))
    # One legend beside the panels (side_legend). Colour = depth, line style = which error.
    handles = [Line2D([], [], color=c, lw=thick(2), label=label) for label, c in labels.items()]
    handles += [Line2D([], [], color="#333333", ls="--", lw=thick(1), label="training"),
                Line2D([], [], color="#333333", lw=thick(2), label=split)]
    if len(all_runs) > len(groups):
        handles.append(matplotlib.patches.Patch(color="#333333", alpha=0.15, label="range over seeds"))
    side_legend(fig, handles, fontsize="small")
    fig.suptitle("Error during training (median over seeds)")
    study_caption(fig, groups, unplaced, counts, "curve")
    return save(fig, out, "curves", formats)


def depth_axes(ax, groups: list[Group], split: str, extra_keys: list[str]) -> None:
    """One series per family (and extra values): the median over seeds as a line, every seed as a dot."""
    series = list(dict.fromkeys((g.family, g.extra) for g in groups))
    depths = sorted({g.depth for g in groups})
    jitter = 0.012 * (depths[-1] - depths[0] or 10)  # seeds side by side, not on top of each other
    for i, (family, extra) in enumerate(series):
        mine = [g for g in groups if (g.family, g.extra) == (family, extra) and g.finals(split)]
        if not mine:
            continue
        style = family_style(family, i) if not extra else dict(marker="os^Dv"[i % 5])
        (line,) = ax.plot([g.depth for g in mine], [g.median(split) for g in mine], lw=thick(1.8), ms=thick(7),
                          label=_label(family, extra, extra_keys), **style)
        for g in mine:
            values = g.finals(split)
            offsets = [(k - (len(values) - 1) / 2) * jitter for k in range(len(values))]
            ax.scatter([g.depth + o for o in offsets], values, s=thick_area(14), color=line.get_color(), alpha=0.55,
                       marker=style.get("marker", "o"), linewidths=0, zorder=3)
    ax.set_xlabel("depth (layers)")
    ax.set_xticks(depths)
    ax.grid(alpha=0.3)


def _from_zero(axes) -> None:
    """y from 0, once every panel is drawn: axes that share y take the top from all their data (set per
    panel while drawing, the first panel's top would cut off the others')."""
    for ax in axes:
        ax.set_ylim(bottom=0)


YSCALES = ("auto", "linear", "symlog")


def depth_yscale(groups: list[Group], split: str, asked: str) -> str:
    """linear, or symlog (linear below 1%, logarithmic above) when the medians span orders of magnitude, so
    that residual nets at 0.5% are not flattened against plain nets at 90% ("auto")."""
    if asked != "auto":
        return asked
    medians = [m for g in groups if (m := g.median(split)) is not None]
    positive = [m for m in medians if m > 0]
    return "symlog" if positive and max(medians) / max(min(positive), 0.1) > 30 else "linear"


def percent_symlog(ax) -> None:
    """An error axis in %, linear below 1% and logarithmic above, ticked in plain numbers (0, 0.5, 1, 2, 5, ...)."""
    ax.set_yscale("symlog", linthresh=1.0, linscale=0.5)
    ax.set_ylim(0, 100)  # errors are percentages: the whole range, so no point sits on the frame
    ax.set_yticks([0, 0.5, 1, 2, 5, 10, 20, 50, 100])
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}"))


def plot_depth(groups: list[Group], out: Path, formats: list[str], extra_keys: list[str],
               yscale: str = "auto", paper: list[tuple[int, float, str]] | None = None, stem: str = "depth",
               title: str = "Error vs depth (line: median over seeds; dots: each seed)",
               unplaced: list[Run] = ()) -> list[Path]:
    """The headline: final training (and held-out) error vs depth, plain vs residual, each seed and the median.
    paper: (depth, test error, table) reference points (depthstudy.papers) for runs that follow that table's recipe."""
    split = _eval_split([r for g in groups for r in g.runs])
    fig, axes = new_figure(1, 2, 11, 4.2, sharey=False)
    for ax, which in zip(axes, ("train", split)):
        depth_axes(ax, groups, which, extra_keys)
        if paper and which == "test":
            _paper_markers(ax, paper)
        ax.set_title(f"final {which} error" if which != "train" else "final training error" + _train_measure(groups))
        scale = depth_yscale(groups, which, yscale)
        ax.set_ylabel("error (%)" + (", log scale above 1%" if scale == "symlog" else ""))
        if scale == "symlog":
            percent_symlog(ax)
    _from_zero(axes)
    if axes[0].get_legend_handles_labels()[0]:  # no run finished: nothing to name
        axes[0].legend(fontsize="small")
    if paper:
        tables = len({t for _, _, t in paper})
        axes[1].legend(handles=axes[1].get_legend_handles_labels()[0][-tables:], fontsize="small", loc="upper left")
    fig.suptitle(title)
    depth_caption(fig, groups, ("train", split), unplaced)
    return save(fig, out, stem, formats)


PAPER_MARKERS = ("*", "P", "X", "D")


def _paper_markers(ax, paper: list[tuple[int, float, str]]) -> None:
    """One open marker per paper table, at its numbers (several units at one depth share it: the table says which)."""
    for marker, table in zip(PAPER_MARKERS * 2, sorted({t for _, _, t in paper})):
        points = sorted((d, n) for d, n, t in paper if t == table)
        label = ("He 2015 Table 6 (ResNet, A)" + (", 110: mean of 5" if any(d == 110 for d, _ in points) else "")
                 if table == "He 2015 Table 6" else table)
        ax.scatter(*zip(*points), marker=marker, s=thick_area(90 if marker == "*" else 50), facecolor="white",
                   edgecolor="black", lw=thick(1.0), zorder=4, label=label)


def _train_measure(groups: list[Group]) -> str:
    """What a depth plot's training error is: the final weights over the training split (runs.Run.final), the last
    log window for runs from before that measure."""
    measured = {r.measured_train_split for g in groups for r in g.ok_runs()}
    return {frozenset({True}): "\n(final weights, whole training split, eval mode)",
            frozenset({False}): "\n(last log window of training batches)"}.get(frozenset(measured),
                                                                                "\n(training split; older runs: last window)")


def caption(fig, runs: list[Run], note: str = "", seeds: str | None = None) -> None:
    """The context that must travel with a figure pasted elsewhere: data set, budget, seeds, version.
    seeds: what to say instead of the number of distinct seeds (seeds_per_point)."""
    fig.supxlabel(study_context(runs, seeds) + (f"; {note}" if note else ""), fontsize="x-small", color="#555555")


def seeds_per_point(runs: list[Run], counts: list[int], what: str = "point") -> str | None:
    """How many seeds each drawn point (or curve) stands for, when that is not simply every seed of the runs:
    "2-3 seeds per point" where runs were left out of some points; None where every point has them all."""
    counts = sorted(set(counts))
    seeds = len({r.config.get("seed") for r in runs})
    if not counts or counts == [seeds]:
        return None
    n = f"{counts[0]}-{counts[-1]}" if len(counts) > 1 else f"{counts[0]}"
    return f"{n} seed{'s' if counts[-1] != 1 else ''} per {what}"


def left_out(runs: list[Run]) -> str:
    """The runs a figure does not draw, counted by why (runs.state): "5 damaged runs left out", "1 diverged,
    2 damaged runs left out"; "" where none was."""
    why = defaultdict(int)
    for r in runs:
        if state(r) not in STATUS_IN_MEANS:
            why[state(r)] += 1
    total = sum(why.values())
    order = sorted(why, key=lambda k: (k == "damaged", k))  # damaged last: "1 diverged, 5 damaged runs"
    return f"{', '.join(f'{why[k]} {k}' for k in order)} run{'s' if total != 1 else ''} left out" if total else ""


def study_caption(fig, groups: list[Group], unplaced: list[Run], counts: list[int], what: str = "point") -> None:
    """A study figure's caption. It speaks for every run of its groups and of none (config.yaml unreadable:
    runs.unplaced): the seeds each drawn point or curve averages where that varies (counts), and the runs left out."""
    runs = [r for g in groups for r in g.runs] + list(unplaced)
    caption(fig, runs, left_out(runs), seeds_per_point(runs, counts, what))


def depth_caption(fig, groups: list[Group], splits, unplaced: list[Run] = ()) -> None:
    """A depth plot's caption: the seeds each point averages (one count per group and split drawn)."""
    study_caption(fig, groups, unplaced, [len(v) for g in groups for s in splits if (v := g.finals(s))])


def plot_depth_by(groups: list[Group], key: str, out: Path, formats: list[str], extra_keys: list[str],
                  unplaced: list[Run] = ()) -> list[Path]:
    """The depth plot faceted by one more key: one column per value, training and held-out rows."""
    idx = extra_keys.index(key)
    values = list(dict.fromkeys(g.extra[idx] for g in groups))
    rest = [k for k in extra_keys if k != key]
    split = _eval_split([r for g in groups for r in g.runs])
    fig, axes = new_figure(2, len(values), 4.2 * len(values), 7, sharey="row", squeeze=False)
    for col, value in enumerate(values):
        sub = [Group(g.family, g.depth, g.extra[:idx] + g.extra[idx + 1:], g.runs) for g in groups if g.extra[idx] == value]
        for row, which in enumerate(("train", split)):
            depth_axes(axes[row][col], sub, which, rest)
            axes[row][col].set_title(f"{key.split('.')[-1]} = {value}: {'training' if which == 'train' else which}")
    for row in range(2):
        axes[row][0].set_ylabel("final error (%)")
    _from_zero(axes.flat)
    axes[0][0].legend(fontsize=8)
    depth_caption(fig, groups, ("train", split), unplaced)
    return save(fig, out, f"depth_by_{key.replace('.', '_')}", formats)


def _with_indexed(runs: list[Run], prefix: str) -> int:
    """How many of the runs logged an indexed tag under prefix (the runs _final_indexed averages)."""
    return sum(1 for r in runs if events.indexed(r.curves, prefix))


def _final_indexed(runs: list[Run], prefix: str) -> list[float]:
    """Mean over runs of the last value of each indexed tag (layer or block order)."""
    per_run = [[pts[-1][1] for _, pts in events.indexed(r.curves, prefix)] for r in runs]
    per_run = [v for v in per_run if v]
    if not per_run or len({len(v) for v in per_run}) != 1:
        return []
    return [statistics.fmean(col) for col in zip(*per_run)]


def log_ticks(ax) -> None:
    """A log y axis labelled in plain numbers, more labels per decade the fewer decades it spans (matplotlib's
    default labels only the powers of ten: a range under two decades showed two labels, as 6x10^0): every 1-9
    within a factor 3, 1 2 3 5 within two decades, 1 2 5 within five, the powers of ten beyond. Call once the
    axis' limits are set: the ticks depend on the range."""
    low, high = ax.get_ylim()
    decades = math.log10(high / low)
    subs = (tuple(range(1, 10)) if decades <= math.log10(3) else (1, 2, 3, 5) if decades <= 2
            else (1, 2, 5) if decades <= 5 else (1,))
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=[float(k) for k in subs], numticks=15))
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(base=10, subs=tuple(range(1, 10)), numticks=15))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def plot_responses(groups: list[Group], out: Path, formats: list[str], extra_keys: list[str],
                   unplaced: list[Run] = ()) -> list[Path]:
    """He 2015 Figure 7: std of each 3x3 layer's response, in layer order and sorted by magnitude. A net whose
    responses run orders of magnitude above the others (a plain net that diverged) is clipped at the top and
    named, so the trained nets' curves stay readable."""
    colours = _depth_colours([g.depth for g in groups])
    fig, axes = new_figure(1, 2, 11, 4.2, sharey=True)
    series = []
    for i, g in enumerate(groups):
        stds = _final_indexed(g.ok_runs(), events.RESPONSE_PREFIX)
        if stds:
            # One colour per depth; where another key varies too, one colour per group.
            colour = colours[g.depth] if not extra_keys else matplotlib.colormaps["tab10"](i % 10)
            series.append((g, stds, dict(color=colour, ls="--" if g.family == "plain" else "-", lw=thick(1.4),
                                         label=_label(f"{g.family}-{g.depth}", g.extra, extra_keys))))
    if not series:
        plt.close(fig)
        return []
    for _, stds, style in series:
        axes[0].plot(range(1, len(stds) + 1), stds, **style)
        axes[1].plot(range(1, len(stds) + 1), sorted(stds, reverse=True), **style)
    for ax in axes:
        ax.set_yscale("log")  # a net that failed to train can respond 1000x more than one that did
    peaks = sorted(max(stds) for _, stds, _ in series)
    typical = peaks[len(peaks) // 2]
    clipped = [style["label"] for _, stds, style in series if max(stds) > 100 * typical]
    if clipped:
        lowest = min(min(v for v in stds if v > 0) for _, stds, _ in series if any(v > 0 for v in stds))
        for ax in axes:
            ax.set_ylim(lowest / 1.5, 100 * typical)
        axes[0].annotate(f"clipped at {100 * typical:.3g}: {', '.join(clipped)} (up to {peaks[-1]:.2g})",
                         (0.01, 0.98), xycoords="axes fraction", va="top", fontsize="x-small", color="#a00000")
    axes[0].set_xlabel("layer index (original order)")
    axes[1].set_xlabel("layer index (sorted by magnitude)")
    axes[0].set_ylabel("std of layer response (log scale)")
    log_ticks(axes[0])  # the panels share y: one axis' ticks serve both
    for ax in axes:
        ax.grid(alpha=0.3, which="major")
        ax.grid(alpha=0.12, which="minor")
    side_legend(fig, axes[0].get_legend_handles_labels()[0])
    fig.suptitle("Layer responses on held-out data (He 2015 Fig. 7; dashed: plain, solid: residual)")
    study_caption(fig, groups, unplaced, [_with_indexed(g.ok_runs(), events.RESPONSE_PREFIX) for g, _, _ in series],
                  "curve")
    return save(fig, out, "responses", formats)


def _stage_starts(run: Run) -> list[int]:
    """Block numbers (from 1) where a new stage (a change of width) begins, for the CIFAR nets; [] otherwise."""
    if run.config.get("model.arch", "cifar_resnet") != "cifar_resnet":
        return []
    bottleneck = run.config.get("model.bottleneck") or run.config.get("model.block") == "bottleneck"
    per_stage = (run.depth - 2) // (9 if bottleneck else 6)
    return [per_stage + 1, 2 * per_stage + 1] if per_stage else []


def plot_blocks(groups: list[Group], out: Path, formats: list[str], extra_keys: list[str],
                unplaced: list[Run] = ()) -> list[Path]:
    """How close each block is to the identity at the end: ||F(x)||/||x||, and the RMS of the branch's last BN
    gamma (||gamma|| / sqrt(C): about 1 for an untouched BN whatever the width, towards 0 for an identity block)."""
    residual = [g for g in groups if g.family != "plain"]
    old_runs = any(f"{events.BLOCK_PREFIX}gamma_norm/0000" in r.curves and f"{events.BLOCK_PREFIX}gamma_rms/0000"
                   not in r.curves for g in residual for r in g.ok_runs())
    gamma = ("gamma_norm", "||gamma||  (runs from before gamma_rms was logged)") if old_runs else (
        "gamma_rms", "RMS gamma = ||gamma|| / sqrt(C)")
    quantities = [("branch_ratio", "||F(x)|| / ||x||", "branch vs input (0 = identity block)"),
                  (gamma[0], gamma[1], "last BN of each branch")]
    fig, axes = new_figure(1, 2, 12, 4.2)
    colours = _depth_colours([g.depth for g in groups])
    drawn, counts = False, []
    for i, g in enumerate(residual):
        # One colour per depth, as in every figure; where another key varies too, one colour per group.
        colour = colours[g.depth] if not extra_keys else matplotlib.colormaps["tab10"](i % 10)
        for ax, (q, _, _) in zip(axes, quantities):
            values = _final_indexed(g.ok_runs(), f"{events.BLOCK_PREFIX}{q}/")
            if values:
                ax.plot(range(1, len(values) + 1), values, marker=".", lw=thick(1.2),
                        label=_label(f"{g.family}-{g.depth}", g.extra, extra_keys), color=colour)
                drawn = True
                counts.append(_with_indexed(g.ok_runs(), f"{events.BLOCK_PREFIX}{q}/"))
                # A stage's first block marked on the line itself (an open diamond), not a full-height dotted line
                # per depth: four depths drew eight verticals that crossed every curve, each matched to its
                # line by colour alone; the mark sits on its own line, so it needs no matching.
                starts = [b for b in _stage_starts(g.ok_runs()[0]) if b <= len(values)]
                ax.plot(starts, [values[b - 1] for b in starts], ls="none", marker="D", ms=thick(7), mew=thick(1.3),
                        mfc="white", mec=colour, zorder=3, label="_stage")
    if not drawn:
        plt.close(fig)
        return []
    for ax, (_, ylabel, title) in zip(axes, quantities):
        ax.set_title(title)
        integer_blocks(ax)
        ax.set_xlabel("block (\u25c7: first block of a stage, twice the channels)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.05)  # from 0, and no point on the frame
    side_legend(fig, axes[0].get_legend_handles_labels()[0])
    fig.suptitle("Residual blocks at the end of training")
    study_caption(fig, groups, unplaced, counts, "curve")
    return save(fig, out, "blocks", formats)


def figure_link(stem: str, formats, alt: str | None = None) -> str:
    """Markdown for a figure written in these formats: an image where markdown can show one (PNG, else SVG), else a
    link to the PDF (--format pdf)."""
    alt = alt or stem
    shown = next((f for f in ("png", "svg") if f in formats), None)
    if shown:
        return f"![{alt}]({stem}.{shown})"
    return f"[{alt} (PDF)]({stem}.pdf)" if "pdf" in formats else ""
