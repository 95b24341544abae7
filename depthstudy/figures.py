"""The report's figures: one function per figure, each drawing groups of runs and saving it in every format.

Importing this module loads matplotlib (Agg: files only, no display).
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
import matplotlib.ticker  # noqa: E402

from depthstudy import events  # noqa: E402
from depthstudy.runs import Group, Run, study_context  # noqa: E402

FAMILY_STYLE = {"plain": dict(color="#444444", marker="o"), "residual (A)": dict(color="#c0392b", marker="s"),
                "residual (B)": dict(color="#2471a3", marker="^"), "residual (C)": dict(color="#1e8449", marker="D")}


def _depth_colours(depths: list[int]) -> dict[int, tuple]:
    """One colour per depth, the same in every figure: deeper is darker."""
    cmap = matplotlib.colormaps["viridis"]
    ds = sorted(set(depths))
    return {d: cmap(0.85 - 0.75 * i / max(len(ds) - 1, 1)) for i, d in enumerate(ds)}


def _family_style(family: str, i: int) -> dict:
    return FAMILY_STYLE.get(family, dict(color=matplotlib.colormaps["tab10"](i % 10), marker="v"))


def _label(head: str, extra: tuple, keys: list[str] | None = None) -> str:
    """A series' legend label: head, then ", value" per extra value, or ", key=value" (last part of the
    key's name) when keys are given."""
    if keys is None:
        return head + "".join(f", {v}" for v in extra)
    return head + "".join(f", {k.split('.')[-1]}={v}" for k, v in zip(keys, extra))


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
    families = list(dict.fromkeys(g.family for g in groups))
    colours = _depth_colours([g.depth for g in groups])
    split = _eval_split([r for g in groups for r in g.runs])
    fig, axes = plt.subplots(1, len(families), figsize=(5.2 * len(families), 4.2), sharey=True, squeeze=False, layout="constrained")
    top = 0.0
    for ax, family in zip(axes[0], families):
        for g in (g for g in groups if g.family == family):
            runs = g.ok_runs()  # the runs the table averages: no diverged, failed or damaged ones
            label = _label(f"{g.depth} layers", g.extra)
            for tag, style in ((events.TRAIN_ERROR, dict(ls="--", lw=1.0)), (events.ERROR_TAGS[split], dict(lw=2.2, marker="o", ms=3.5))):
                steps, values = _mean_curve(runs, tag)
                if steps:
                    ax.plot(steps, values, color=colours[g.depth], label=label if tag != events.TRAIN_ERROR else None, **style)
                    top = max(top, max(values))
        ax.set_title(family)
        ax.set_xlabel("iterations")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a family whose runs are all left out has no curve to name
            ax.legend(fontsize=8, title=f"dashed: training, bold: {split}", title_fontsize=8)
    axes[0][0].set_ylabel("error (%)")
    axes[0][0].set_ylim(0, min(100, top * 1.05 + 1))
    fig.suptitle("Error during training (mean over seeds; dots: evaluations; diverged, failed and damaged runs left out)")
    _caption(fig, [r for g in groups for r in g.runs])
    return _save(fig, out, "curves", formats)


def _depth_axes(ax, groups: list[Group], split: str, extra_keys: list[str]) -> None:
    """One series per family (and extra values): the median over seeds as a line, every seed as a dot."""
    series = list(dict.fromkeys((g.family, g.extra) for g in groups))
    depths = sorted({g.depth for g in groups})
    jitter = 0.012 * (depths[-1] - depths[0] or 10)  # seeds side by side, not on top of each other
    for i, (family, extra) in enumerate(series):
        mine = [g for g in groups if (g.family, g.extra) == (family, extra) and g.finals(split)]
        if not mine:
            continue
        style = _family_style(family, i) if not extra else dict(marker="os^Dv"[i % 5])
        (line,) = ax.plot([g.depth for g in mine], [g.median(split) for g in mine], lw=1.8, ms=7,
                          label=_label(family, extra, extra_keys), **style)
        for g in mine:
            values = g.finals(split)
            offsets = [(k - (len(values) - 1) / 2) * jitter for k in range(len(values))]
            ax.scatter([g.depth + o for o in offsets], values, s=14, color=line.get_color(), alpha=0.55,
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


def plot_depth(groups: list[Group], out: Path, formats: list[str], extra_keys: list[str],
               yscale: str = "auto") -> list[Path]:
    """The headline: final training (and held-out) error vs depth, plain vs residual, each seed and the median."""
    split = _eval_split([r for g in groups for r in g.runs])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=False, layout="constrained")
    for ax, which in zip(axes, ("train", split)):
        _depth_axes(ax, groups, which, extra_keys)
        ax.set_title(f"final {'training' if which == 'train' else which} error")
        scale = depth_yscale(groups, which, yscale)
        ax.set_ylabel("error (%)" + (", log scale above 1%" if scale == "symlog" else ""))
        if scale == "symlog":
            ax.set_yscale("symlog", linthresh=1.0, linscale=0.5)
            ax.set_ylim(0, 100)  # errors are percentages: the whole range, so no point sits on the frame
            ax.set_yticks([0, 0.5, 1, 2, 5, 10, 20, 50, 100])
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda y, _: f"{y:g}"))
    _from_zero(axes)
    axes[0].legend(fontsize=8)
    fig.suptitle("Error vs depth (line: median over seeds; dots: each seed)")
    _caption(fig, [r for g in groups for r in g.runs])
    return _save(fig, out, "depth", formats)


def _caption(fig, runs: list[Run]) -> None:
    """The context that must travel with a figure pasted elsewhere: data set, budget, seeds, version."""
    fig.supxlabel(study_context(runs), fontsize=7.5, color="#555555")


def plot_depth_by(groups: list[Group], key: str, out: Path, formats: list[str], extra_keys: list[str]) -> list[Path]:
    """The depth plot faceted by one more key: one column per value, training and held-out rows."""
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
    _from_zero(axes.flat)
    axes[0][0].legend(fontsize=8)
    _caption(fig, [r for g in groups for r in g.runs])
    return _save(fig, out, f"depth_by_{key.replace('.', '_')}", formats)


def _final_indexed(runs: list[Run], prefix: str) -> list[float]:
    """Mean over runs of the last value of each indexed tag (layer or block order)."""
    per_run = [[pts[-1][1] for _, pts in events.indexed(r.curves, prefix)] for r in runs]
    per_run = [v for v in per_run if v]
    if not per_run or len({len(v) for v in per_run}) != 1:
        return []
    return [statistics.fmean(col) for col in zip(*per_run)]


def plot_responses(groups: list[Group], out: Path, formats: list[str], extra_keys: list[str]) -> list[Path]:
    """He 2015 Figure 7: std of each 3x3 layer's response, in layer order and sorted by magnitude."""
    colours = _depth_colours([g.depth for g in groups])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, layout="constrained")
    drawn = False
    for i, g in enumerate(groups):
        stds = _final_indexed(g.ok_runs(), events.RESPONSE_PREFIX)
        if not stds:
            continue
        # One colour per depth; where another key varies too, one colour per group.
        colour = colours[g.depth] if not extra_keys else matplotlib.colormaps["tab10"](i % 10)
        style = dict(color=colour, ls="--" if g.family == "plain" else "-", lw=1.4,
                     label=_label(f"{g.family}-{g.depth}", g.extra, extra_keys))
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
    _caption(fig, [r for g in groups for r in g.runs])
    return _save(fig, out, "responses", formats)


def plot_blocks(groups: list[Group], out: Path, formats: list[str], extra_keys: list[str]) -> list[Path]:
    """How close each block is to the identity at the end: ||F(x)||/||x|| and the last BN's gamma norm."""
    quantities = [("branch_ratio", "||F(x)|| / ||x||  (0 = identity block)"), ("gamma_norm", "||gamma|| of the branch's last BN")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), layout="constrained")
    colours = _depth_colours([g.depth for g in groups])
    drawn = False
    for i, g in enumerate(g for g in groups if g.family != "plain"):
        # One colour per depth, as in every figure; where another key varies too, one colour per group.
        colour = colours[g.depth] if not extra_keys else matplotlib.colormaps["tab10"](i % 10)
        for ax, (q, _) in zip(axes, quantities):
            values = _final_indexed(g.ok_runs(), f"{events.BLOCK_PREFIX}{q}/")
            if values:
                ax.plot(range(1, len(values) + 1), values, marker=".", lw=1.2,
                        label=_label(f"{g.family}-{g.depth}", g.extra, extra_keys), color=colour)
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
    _caption(fig, [r for g in groups for r in g.runs])
    return _save(fig, out, "blocks", formats)
