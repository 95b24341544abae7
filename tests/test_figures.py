"""How the report's figures read: legends off the data, labelled log ticks, a readable blocks figure, a larger slide
style. A study of 7 depths written once for the file (SummaryWriter, as test_report writes its runs), drawn with
figures.save replaced so each test gets the matplotlib figure itself."""

from __future__ import annotations

import pytest
from torch.utils.tensorboard import SummaryWriter

from depthstudy import events, figures
from depthstudy.runs import group_runs, load_runs, varying_keys
from test_report import write_run

DEPTHS = (8, 14, 20, 32, 44, 56, 110)


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Plain and residual (A) nets at 7 depths, one seed: curves, layer responses over a decade (plain: 0.9 to 8,
    residual: about 1) and block diagnostics. Returns (groups, extra_keys)."""
    root = tmp_path_factory.mktemp("figures") / "study"
    for shortcut in ("none", "A"):
        for depth in DEPTHS:
            run = write_run(root, shortcut, depth, 0, depth / 4, depth / 3)
            w = SummaryWriter(str(run))
            for layer in range(depth - 1):
                w.add_scalar(events.response_tag(layer), 0.9 * (8 / 0.9) ** (layer / (depth - 2)) if shortcut == "none"
                             else 1.0 + 0.01 * layer, 30)
            for block in range((depth - 2) // 2 if shortcut == "A" else 0):
                w.add_scalar(events.block_tag("branch_ratio", block), 0.2 + 0.01 * block, 30)
                w.add_scalar(events.block_tag("gamma_rms", block), 0.9, 30)
            w.close()
    runs = load_runs(root)
    keys = varying_keys(runs)
    return group_runs(runs, keys), keys


@pytest.fixture
def drawn(monkeypatch):
    """The figures drawn (each plot_* call's figure, unsaved), drawn once so that every extent is laid out."""
    figs = []
    monkeypatch.setattr(figures, "save", lambda fig, out, stem, formats: figs.append(fig) or [])
    return figs


def _draw(plot, *args, style="default"):
    """The one figure plot(*args) makes, in a style, laid out."""
    with figures.styled(style):
        plot(*args)
        fig = figures.plt.gcf()
        fig.canvas.draw()
    return fig


@pytest.mark.parametrize("n", range(1, len(DEPTHS) + 1))
def test_the_curves_legend_covers_no_panel_and_the_lr_marks_no_title(study, drawn, tmp_path, n):
    groups, _ = study
    fig = _draw(figures.plot_curves, [g for g in groups if g.depth in DEPTHS[:n]], tmp_path, ["png"])
    assert drawn == [fig]
    (legend,) = fig.legends
    box = legend.get_window_extent()
    assert len(legend.get_texts()) == n + 2  # each depth, training, test (one seed: no range)
    for ax in fig.axes:
        assert not box.overlaps(ax.get_window_extent()), ax.get_title()
        assert not box.overlaps(ax.title.get_window_extent())
        for mark in ax.texts:  # "lr ÷10": inside its panel, under the panel's title
            assert not mark.get_window_extent().overlaps(ax.title.get_window_extent())
    assert not box.overlaps(fig._suptitle.get_window_extent())


def _labelled_yticks(ax) -> list[str]:
    low, high = ax.get_ylim()
    return [t.get_text() for t in ax.get_yticklabels() if t.get_text() and low <= t.get_position()[1] <= high]


def test_the_responses_log_axis_labels_at_least_three_ticks_over_a_decade(study, drawn, tmp_path):
    groups, keys = study
    fig = _draw(figures.plot_responses, groups, tmp_path, ["png"], keys)
    ax = fig.axes[0]
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "log" and 8 < high / low < 20  # about a decade: 0.9 to 8
    labels = _labelled_yticks(ax)
    assert len(labels) >= 3 and "1" in labels and "2" in labels and "5" in labels, labels


def test_the_responses_axis_labels_a_narrow_range_too(study, drawn, tmp_path):
    """Residual nets alone: 1.0 to 1.1, less than a factor 3: every tick 1-9 of its decade would be too few, so
    the axis still has labels (at least the one inside the range and its neighbours are plain numbers)."""
    groups, keys = study
    fig = _draw(figures.plot_responses, [g for g in groups if g.family != "plain"], tmp_path, ["png"], keys)
    labels = _labelled_yticks(fig.axes[0])
    assert labels and all("10^" not in t and "times" not in t for t in labels), labels


def test_blocks_draws_one_line_per_family_and_depth_with_its_stages_marked_on_it(study, drawn, tmp_path):
    groups, keys = study
    fig = _draw(figures.plot_blocks, groups, tmp_path, ["png"], keys)
    residual = [g for g in groups if g.family != "plain"]
    for ax in fig.axes:
        lines = ax.get_lines()
        named = [ln for ln in lines if not ln.get_label().startswith("_")]
        assert len(named) == len(residual) and len(lines) <= 2 * len(residual)  # a curve and its stage marks
        for ln in lines:  # no full-height verticals: every point is a block's value
            assert min(ln.get_ydata()) >= 0 and len(set(ln.get_xdata())) == len(ln.get_xdata())
    marks = [ln for ln in fig.axes[0].get_lines() if ln.get_label() == "_stage"]
    assert sorted(len(m.get_xdata()) for m in marks) == [2] * len(DEPTHS)  # two new stages per net


def test_slide_is_at_least_1_3x_the_default_and_paper_is_unchanged(study, drawn, tmp_path):
    groups, keys = study
    figs = {style: _draw(figures.plot_depth, groups, tmp_path, ["png"], keys, style=style)
            for style in ("default", "slide", "paper")}
    (w, h), (sw, sh), (pw, ph) = (figs[s].get_size_inches() for s in ("default", "slide", "paper"))
    assert sw >= 1.3 * w - 1e-9 and sh >= 1.3 * h and abs(sw / sh - 16 / 9) < 1e-6  # a 16:9 slide
    assert (pw, ph) == pytest.approx((0.64 * w, 0.64 * h))
    ax, slide_ax = figs["default"].axes[0], figs["slide"].axes[0]
    assert slide_ax.title.get_fontsize() >= 1.3 * ax.title.get_fontsize()
    assert slide_ax.xaxis.label.get_fontsize() >= 1.3 * ax.xaxis.label.get_fontsize()
    assert slide_ax.get_yticklabels()[0].get_fontsize() >= 1.3 * ax.get_yticklabels()[0].get_fontsize()
    assert slide_ax.get_lines()[0].get_linewidth() >= 1.3 * ax.get_lines()[0].get_linewidth()
    assert slide_ax.get_lines()[0].get_markersize() >= 1.3 * ax.get_lines()[0].get_markersize()
    assert figs["paper"].axes[0].title.get_fontsize() == 7.5
