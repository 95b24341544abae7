"""The lecture's argument for residual nets as five measured claims (experiment=lecture): a figure per claim, and
the report section that states each claim in one sentence, shows what the runs measured, and gives a verdict
that can fail. Runs belong to a claim by their `part` (depth, weight_decay, weight_decay_bn, grow_base, grow).

Every verdict is a rule on per-seed numbers (the small pure functions under "verdict rules", each tested on a
constructed counterexample): arms are paired by seed (two arms with the same seed), and what is printed is the
median difference with the exact order-statistic interval of stats.paired (its coverage stated: 75% for 3
seeds) and the seeds. A rule needs MIN_SEEDS seeds, and holds only where every seed agrees. A run that
diverged is a finding: it is shown, and counts as worse than any run that finished.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from depthstudy import events, figures, stats  # matplotlib: report imports this module only to draw
from depthstudy.rundir import CHECKPOINT_FILE
from depthstudy.runs import Run, group_runs

PARTS = ("depth", "weight_decay", "weight_decay_bn", "grow_base", "grow")
MIN_SEEDS = 3  # fewer seeds than this: no verdict (with 3, the interval [min, max] covers the median 75%)
DEPTH_MARGIN = 2.0  # points of training error: "trains worse" means worse by more than this on every seed, "does
#   not" means less; a reader of the lecture's curves (tens of points apart) would not call 2 points degradation
GROW_MARGIN = 0.0  # log of the loss ratio, grown over not grown: on no seed may the grown net end with a higher
#   final training loss than the same net trained on without growing ("never hurts": no slack granted)
IDENTITY_STEPS, IDENTITY_LR, IDENTITY_BATCH = 500, 0.1, 64  # claim 2's fit: SGD steps, rate, activations per step
IDENTITY_SEEDS = (0, 1, 2)


def is_lecture(runs: list[Run]) -> bool:
    return any(r.config.get("part") in PARTS for r in runs)


def _part(runs: list[Run], part: str) -> list[Run]:
    return [r for r in runs if r.config.get("part") == part and not r.problem]


def _final_blocks(run: Run, quantity: str) -> list[float]:
    """The last logged value of a per-block instrument, block by block (nan for a block without one, e.g. the
    change ratio of a plain block whose width changes)."""
    found = dict((i, pts[-1][1]) for i, pts in events.indexed(run.curves, f"{events.BLOCK_PREFIX}{quantity}/"))
    return [found.get(i, math.nan) for i in range(max(found) + 1)] if found else []


def _block_mean(run: Run, quantity: str) -> float:
    """The mean over the blocks that have the instrument (nan: none has)."""
    values = [v for v in _final_blocks(run, quantity) if math.isfinite(v)]
    return statistics.fmean(values) if values else math.nan


def _median(values) -> float | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.median(values) if values else None


def _fmt(v: float | None, digits: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def train_error(run: Run) -> float:
    """The final training error (%, Run.final); a run that diverged: +inf (worse than any that finished)."""
    if run.status == "diverged":
        return math.inf
    value = run.final("train")
    return math.nan if value is None else value


def train_loss(run: Run) -> float:
    """The final training loss, measured as Run.final measures the error (the final weights over the training
    split where the run measured that, else the last log window's mean cross-entropy); diverged: +inf."""
    if run.status == "diverged":
        return math.inf
    if run.measured_train_split and isinstance(run.summary.get("train_loss"), (int, float)):
        return run.summary["train_loss"]
    points = run.curves.get(events.TRAIN_LOSS)
    return points[-1][1] if points else math.nan


def train_measure(runs: list[Run]) -> str:
    """What the final training numbers of these runs measure, in words."""
    measured = {r.measured_train_split for r in runs if r.status == "finished"}
    if measured == {True}:
        sizes = {(r.summary.get("split_sizes") or {}).get("train") for r in runs if r.status == "finished"}
        n = sizes.pop() if len(sizes) == 1 else None
        return "the final weights over the whole training split, eval mode" + (
            f"; one training image of {n} is {stats.resolution(n):.2f} points" if isinstance(n, int) and n > 0 else "")
    return "the last log window of training mini-batches" + (" (for the runs from before the training split was "
                                                             "measured)" if True in measured else "")


def seeds_of(runs: list[Run], value) -> dict[int, float]:
    """seed -> value(run), one run per seed (the first found)."""
    out: dict[int, float] = {}
    for r in runs:
        out.setdefault(int(r.config.get("seed", 0)), value(r))
    return out


def arm(run: Run) -> str:
    """What a claim-1 arm is: the net and its initialisation (a plain net has no branch to start at zero)."""
    init = run.config.get("model.branch_init", "default")
    start = {"default": "He init", "zero_gamma": "zero init (each block starts as the identity)",
             "skipinit": "SkipInit (alpha = 0)"}.get(init, init)
    return f"{run.family}, {'He init' if 'plain' in run.family else start}"


def recipe(run: Run) -> str:
    """The budget and the recipe a verdict was measured under."""
    c = {k: "?" if v is None else f"{v:g}" if isinstance(v, float) else v for k, v in run.config.items()}
    get = lambda key: c.get(key, "?")  # noqa: E731  (a run from before a key existed)
    return (f"lr {get('optim.lr')}, {get('schedule.iterations')} iterations of batch {get('optim.batch_size')}, "
            f"weight decay {get('optim.weight_decay')}, normalisation {c.get('model.norm', 'bn')}")


# --- verdict rules: pure functions of per-seed numbers, each tested on a counterexample ---

@dataclass(frozen=True)
class Verdict:
    agrees: bool | None  # None: no verdict (too few seeds, an arm missing)
    text: str  # what was measured: medians, intervals, seeds

    def line(self) -> str:
        return {True: "Agrees", False: "**Disagrees**", None: "No verdict"}[self.agrees] + ": " + self.text


@dataclass(frozen=True)
class Gap:
    """a - b per seed over the seeds both arms have; a run that diverged (+inf) is worse than any that finished, so
    its difference is +inf (a diverged) or -inf (b diverged), and two diverged runs are no comparison."""
    diffs: dict  # seed -> a - b
    paired: stats.Paired | None  # over the seeds where both finished

    def every(self, test) -> bool:
        return len(self.diffs) >= MIN_SEEDS and all(test(d) for d in self.diffs.values())

    def describe(self, unit: str = " points", names: tuple[str, str] = ("the first arm", "the second")) -> str:
        """The paired statistics, then where one arm diverged (names: the two arms, a's first)."""
        text = self.paired.describe(unit) if self.paired else "no seed where both finished"
        for name, sign in zip(names, (1, -1)):
            seeds = [s for s, d in self.diffs.items() if d == sign * math.inf]
            if seeds:
                text += f"; {name} diverged on seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}"
        return text


def gap(a: dict, b: dict) -> Gap:
    diffs = {}
    for s in sorted(a.keys() & b.keys()):
        x, y = a[s], b[s]
        if x is None or y is None or math.isnan(x) or math.isnan(y) or (math.isinf(x) and math.isinf(y)):
            continue
        diffs[s] = x - y
    finite = {s: d for s, d in diffs.items() if math.isfinite(d)}
    return Gap(diffs, stats.paired(finite, dict.fromkeys(finite, 0.0)))


def _too_few(*gaps: Gap) -> Verdict | None:
    n = min(len(g.diffs) for g in gaps)
    return Verdict(None, f"{n} seed{'s' * (n != 1)} to compare; the rule needs {MIN_SEEDS}") if n < MIN_SEEDS else None


def best_shallower(by_depth: dict[int, dict], depth: int) -> dict[int, float]:
    """seed -> the lowest final value over the depths below `depth` that finished for that seed."""
    out: dict[int, float] = {}
    for d, values in by_depth.items():
        if d < depth:
            for s, v in values.items():
                if math.isfinite(v):
                    out[s] = min(out.get(s, math.inf), v)
    return out


def depth_rule(plain_deep: dict, plain_ref: dict, res_deep: dict, res_ref: dict,
               margin: float = DEPTH_MARGIN) -> Verdict:
    """Claim 1 for a plain and a residual arm under one recipe (training error per seed at the deepest depth, and
    at the best shallower depth): agrees when, on every seed, the deepest plain net is worse than its best
    shallower depth by more than `margin` points, and the deepest residual net is worse than its own by less."""
    plain, res = gap(plain_deep, plain_ref), gap(res_deep, res_ref)
    few = _too_few(plain, res)
    if few:
        return few
    degrades, holds = plain.every(lambda d: d > margin), res.every(lambda d: d < margin)
    why = [] if degrades else [f"the plain net did not lose more than {margin:g} points on every seed"]
    why += [] if holds else [f"the residual net did not stay within {margin:g} points on every seed"]
    return Verdict(degrades and holds, "deepest minus best shallower depth, plain: "
                   f"{plain.describe(names=('the deepest', 'a shallower one'))}; residual: "
                   f"{res.describe(names=('the deepest', 'a shallower one'))}" + "".join(f" ({w})" for w in why))


def _on_every_seed(g: Gap, test, what: str, failed: str, names: tuple[str, str] = ("the first arm", "the second")
                   ) -> Verdict:
    """Agrees when `test` holds for the difference on every seed (MIN_SEEDS at least); `what` names the
    difference, `failed` says what a disagreement means."""
    few = _too_few(g)
    if few:
        return few
    agrees = g.every(test)
    return Verdict(agrees, f"{what}: {g.describe(unit='', names=names)}" + ("" if agrees else f" ({failed})"))


def _log_fall(off: dict, on: dict) -> dict:
    """seed -> log(off / on): above 0 where the value fell from `off` to `on`."""
    return {s: math.log(off[s] / on[s]) for s in off.keys() & on.keys()
            if off[s] > 0 and on[s] > 0 and math.isfinite(off[s] / on[s])}


def identity_rule(residual: dict, plain: dict) -> Verdict:
    """Claim 2, learned: agrees when on every seed the residual block ends closer to the identity than the plain
    block trained from the same init on the same batches (distance ||block(a) - a|| / ||a|| on held-out a)."""
    return _on_every_seed(gap(plain, residual), lambda d: d > 0, "plain minus residual distance from the identity",
                          "the residual block was not closer on every seed")


def weight_decay_rule(res_off: dict, res_on: dict, plain_off: dict, plain_on: dict) -> Verdict:
    """Claim 3, residual-specific: per seed, the mean branch ratio ||F(a)|| / ||a|| without and with weight decay.
    Agrees when on every seed decay shrinks the residual branches relative to their input (log fall > 0) and by
    a larger factor than it shrinks the plain net's layers (their ||F(a)|| / ||a||, paired by seed)."""
    res, plain = _log_fall(res_off, res_on), _log_fall(plain_off, plain_on)
    shrinks, specific = gap(res, dict.fromkeys(res, 0.0)), gap(res, plain)
    few = _too_few(shrinks, specific)
    if few:
        return few
    ok_shrink, ok_specific = shrinks.every(lambda d: d > 0), specific.every(lambda d: d > 0)
    why = ("" if ok_shrink else " (the residual ratio did not fall on every seed)") + \
        ("" if ok_specific else " (the plain net's ratio fell as much or more on some seed)")
    return Verdict(ok_shrink and ok_specific,
                   f"log of the residual ratio's fall (e^x: the factor): {shrinks.describe(unit='')}; minus the plain "
                   f"net's log fall: {specific.describe(unit='')}{why}")


def shrink_rule(off: dict, on: dict) -> Verdict:
    """Claim 3 with BatchNorm (no plain twin there): agrees when on every seed decay shrinks the mean branch ratio
    ||F(a)|| / ||a|| (log fall > 0)."""
    fall = _log_fall(off, on)
    return _on_every_seed(gap(fall, dict.fromkeys(fall, 0.0)), lambda d: d > 0,
                          "log of the branch ratio's fall (e^x: the factor)", "it did not fall on every seed")


def _log_gap(a: dict, b: dict) -> Gap:
    """a / b per seed, as log(a) - log(b)."""
    log = lambda v: {s: math.log(x) if x > 0 else -math.inf for s, x in v.items()}  # noqa: E731
    return gap(log(a), log(b))


def grow_rule(grown: dict, control: dict, margin: float = GROW_MARGIN) -> Verdict:
    """Claim 4: agrees when, on every seed, the grown net's final training loss is at most a factor e^margin above
    the net trained on without growing (the same seed, base and budget)."""
    return _on_every_seed(_log_gap(grown, control), lambda d: d <= margin,
                          "log of the final training loss, grown over not grown (e^x: the ratio; below 0: the grown "
                          "net ends lower)", f"it is above {margin:g} on some seed", ("the grown net", "the net not grown"))


# --- the claims: each returns (markdown lines, figure paths) ---

def _depth_table(mine: list[Run]) -> dict[str, dict[str, dict[int, dict[int, float]]]]:
    """recipe -> arm -> depth -> seed -> final training error (+inf: diverged)."""
    table: dict = {}
    for r in mine:
        cell = table.setdefault(recipe(r), {}).setdefault(arm(r), {}).setdefault(r.depth, {})
        cell.setdefault(int(r.config.get("seed", 0)), train_error(r))
    return dict(sorted(table.items(), key=lambda item: -len(item[1])))  # the recipe with the most arms first


def _cell(values: dict[int, float]) -> str:
    finite = [v for v in values.values() if math.isfinite(v)]
    diverged = sum(math.isinf(v) for v in values.values())
    text = f"{statistics.median(finite):.2f}" if finite else ""
    if diverged:
        text += f"{' + ' if text else ''}diverged ({diverged} of {len(values)})"
    return text or "n/a"


def _depth_verdicts(arms: dict[str, dict[int, dict]]) -> list[str]:
    """One verdict per residual arm against the plain arm of the same recipe (He init for both: matched), and what
    they say together about the shortcut and the zero init."""
    plain = next((a for a in arms if "plain" in a), None)
    residual = [a for a in arms if "residual" in a]
    if plain is None or not residual:
        return ["No verdict: this recipe has no plain or no residual arm."]
    deepest = max(set(arms[plain]) & set.intersection(*(set(arms[a]) for a in residual)), default=None)
    if deepest is None or deepest == min(arms[plain]):
        return ["No verdict: no depth below the deepest that every arm has."]
    out, by_init = [], {}
    for a in residual:
        v = depth_rule(arms[plain][deepest], best_shallower(arms[plain], deepest), arms[a][deepest],
                       best_shallower(arms[a], deepest))
        matched = "He init" in a
        by_init.setdefault(matched, []).append(v.agrees)
        shortcut = gap(arms[plain][deepest], arms[a][deepest])
        pairing = "matched initialisation: the shortcut alone" if matched else "different initialisations"
        out.append(f"- {a} against {plain} ({pairing}), "
                   f"depth {deepest}: {v.line()}. At depth {deepest}, plain minus residual (same seed): "
                   f"{shortcut.describe(names=('the plain net', 'the residual net'))}.")
    word = {True: "agrees", False: "disagrees", None: "gives no verdict"}
    together = {m: None if None in v else all(v) for m, v in by_init.items()}
    names = {True: "with the shortcut alone (He init for both)",
             False: "with residual blocks that start as the identity (zero init)"}
    summary = [f"{names[m]} the claim {word[together[m]]}" for m in (True, False) if m in together]
    return [f"Under this recipe, {' and '.join(summary)}.", "", *out]


def claim_depth(runs: list[Run], out: Path, formats: list[str]) -> tuple[list[str], list[Path]]:
    mine = [r for r in _part(runs, "depth") if r.status in ("finished", "diverged")]
    lines = ["## 1. Deeper plain nets train worse; residual nets do not", ""]
    if not mine:
        return lines + ["No runs of part=depth.", ""], []
    table = _depth_table(mine)
    lines += ["MLPs without normalisation; arms paired by seed. Residual nets from He init (the plain nets' own) "
              "separate what the shortcut does from what a zero init does (every block starts as the identity). "
              f"Median final training error (%; {train_measure(mine)}) over seeds; 'diverged': the loss became nan or "
              "inf and training "
              f"stopped. Verdict rule: on every seed ({MIN_SEEDS} at least) the deepest plain net more than "
              f"{DEPTH_MARGIN:g} points worse than its best shallower depth, the deepest residual net less.", ""]
    for rec, arms in table.items():
        depths = sorted({d for by_depth in arms.values() for d in by_depth})
        seeds = sorted({s for by_depth in arms.values() for v in by_depth.values() for s in v})
        lines += [f"**{rec}**, seeds {', '.join(map(str, seeds))}:", "",
                  "| arm | " + " | ".join(f"depth {d}" for d in depths) + " |", "|---" * (len(depths) + 1) + "|"]
        lines += [f"| {a} | " + " | ".join(_cell(by_depth.get(d, {})) for d in depths) + " |"
                  for a, by_depth in arms.items()]
        lines += ["", *_depth_verdicts(arms), ""]
    files = _plot_depth(table, mine, out, formats)
    return lines + [figures.figure_link("lecture_1_depth", formats, "claim 1"), ""], files


ARM_STYLE = {("plain", "He"): dict(color="#444444", marker="o", ls="-"),
             ("residual (A)", "He"): dict(color="#c0392b", marker="s", ls="-"),
             ("residual (A)", "zero"): dict(color="#E69F00", marker="D", ls="--"),
             ("residual (B)", "zero"): dict(color="#0072B2", marker="^", ls=":")}


def _arm_style(a: str, i: int) -> dict:
    family = a.split(",")[0].removeprefix("mlp ")
    key = (family, "zero" if "zero init" in a else "He")
    return ARM_STYLE.get(key, dict(color=figures.family_style(family, i)["color"], marker="v", ls="-."))


def _plot_depth(table: dict, mine: list[Run], out: Path, formats: list[str]) -> list[Path]:
    """One panel per recipe: the median over seeds per arm and depth, each seed a dot; a seed that diverged is an X
    on the top edge."""
    fig, axes = figures.new_figure(1, len(table), 5.5 * len(table), 4.4, squeeze=False, sharey="row")
    for ax, (rec, arms) in zip(axes[0], table.items()):
        for i, (a, by_depth) in enumerate(arms.items()):
            st = _arm_style(a, i)
            depths = sorted(by_depth)
            med = [_median(by_depth[d].values()) for d in depths]
            ax.plot([d for d, m in zip(depths, med) if m is not None], [m for m in med if m is not None], ls=st["ls"],
                    color=st["color"], marker=st["marker"], ms=5, label=a.split(" (each")[0].removeprefix("mlp "))
            for d in depths:
                diverged = sum(math.isinf(v) for v in by_depth[d].values())
                if diverged:  # drawn on the top edge, outside the data
                    ax.plot(d, 1.0, "X", color=st["color"], ms=9, transform=ax.get_xaxis_transform(), clip_on=False)
                    ax.annotate(f"diverged ({diverged} of {len(by_depth[d])} seeds)", (d, 1.0), xytext=(-8, -10),
                                xycoords=ax.get_xaxis_transform(), textcoords="offset points", ha="right",
                                fontsize="x-small", color=st["color"])
                ax.plot([d] * (len(by_depth[d]) - diverged), [v for v in by_depth[d].values() if math.isfinite(v)],
                        ".", color=st["color"], alpha=0.5, ms=4)
        ax.set_title(rec.replace(", weight decay", "\nweight decay"), fontsize="small")
        ax.set_xlabel("depth (layers with weights)")
        figures.percent_symlog(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="x-small", loc="center left")
    axes[0][0].set_ylabel("final training error (%, log above 1%)\nX on the top edge: diverged")
    fig.suptitle("Claim 1: final training error vs depth, MLPs without normalisation (line: median over seeds, dots: "
                 "seeds)")
    figures.caption(fig, mine)
    return figures.save(fig, out, "lecture_1_depth", formats)


def claim_identity(runs: list[Run], out: Path, formats: list[str]) -> tuple[list[str], list[Path]]:
    lines = ["## 2. The identity is easy for a residual block", ""]
    built, built_files = _identity_construction(runs, out, formats)
    learned, learned_files = _identity_learning(runs, out, formats)
    return lines + built + learned, built_files + learned_files


def _identity_construction(runs: list[Run], out: Path, formats: list[str]) -> tuple[list[str], list[Path]]:
    lines = ["**A construction check** (it verifies the code, not learning): with ReLU, a[l+2] = g(W[l+2] a[l+1] + "
             "b[l+2] + a[l]) equals a[l] when W[l+2] = 0 and b[l+2] = 0, since a[l] >= 0. Measured at the end of "
             "training on held-out digits: each block's output with its last layer zeroed, against what its shortcut "
             "passes on (||a[l+2] - a[l]|| / ||a[l]||; a plain block against its input).", ""]
    mine = [r for r in _part(runs, "depth") if r.status == "finished" and _final_blocks(r, "zeroed_change")]
    if not mine:
        return lines + ["No block measurements found (runs from before the zeroed_change instrument).", ""], []
    families = {r.family for r in mine}
    common = sorted(set.intersection(*({r.depth for r in mine if r.family == f} for f in families)))
    if not common:
        return lines + ["No depth at which every family has a finished run.", ""], []
    depth = common[len(common) // 2]  # a middle depth that every family has
    fig, ax = figures.new_figure(1, 1, 7.5, 3.8)
    rows, shown = [], []
    for i, family in enumerate(sorted(families)):
        run = min((r for r in mine if r.family == family and r.depth == depth), key=lambda r: r.config.get("seed", 0))
        shown.append(run)
        values = _final_blocks(run, "zeroed_change")
        style = figures.family_style(family, i)
        ax.plot(range(1, len(values) + 1), values, label=f"{family}-{depth}", lw=1.5, ms=6, **style)
        finite = [v for v in values if math.isfinite(v)]  # nan: a plain block whose width changes
        rows.append((family, min(finite), max(finite), sum(v == 0.0 for v in finite), len(values)))
    figures.integer_blocks(ax)
    ax.set_ylabel("||block(a) - s|| / ||s||, last layer zeroed")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    fig.suptitle("Claim 2, construction check: with W[l+2] = 0 and b[l+2] = 0 a residual block is the identity,\n"
                 "a plain pair outputs 0 (this checks the code, not learning)")
    figures.caption(fig, shown, note="one run per family, its lowest seed")
    files = figures.save(fig, out, "lecture_2_identity", formats)
    lines += [f"| family (depth {depth}) | smallest | largest | blocks exactly 0 | blocks |", "|---|---|---|---|---|"]
    lines += [f"| {f} | {lo:.3g} | {hi:.3g} | {zeros} | {n} |" for f, lo, hi, zeros, n in rows]
    a_rows = [row for row in rows if row[0].endswith("(A)")]
    plain_rows = [row for row in rows if "plain" in row[0]]
    exact = bool(a_rows) and all(lo == hi == 0.0 for f, lo, hi, _, _ in a_rows)
    plain_one = bool(plain_rows) and all(lo == hi == 1.0 for f, lo, hi, _, _ in plain_rows)
    lines += ["", ("Construction check passed: every zero-padding (A) residual block returns exactly what its shortcut "
                   "passes on (0 to the last bit), and every plain pair returns 0 (deviation 1). " if exact and plain_one
                   else "**Construction check failed:** an A block was not exactly the identity, a plain pair was not "
                        "0, or one of the two families has no run; see the table. ")
              + "Where the width changes and the shortcut is a learned projection W_s (B), zeroing W[l+2] gives "
                "g(W_s a[l]), not W_s a[l]: the ReLU cuts the projection's negative part, so that block is not exactly "
                "the identity of its shortcut (the table's B row).", "",
              figures.figure_link("lecture_2_identity", formats, "claim 2, construction check"), ""]
    return lines, files


def identity_source(runs: list[Run]) -> Run | None:
    """The trained net whose activations claim 2's fit uses: a finished residual (A) MLP of part=depth with a
    checkpoint, the shallowest beyond one block, the lowest seed (zero init first)."""
    found = [r for r in _part(runs, "depth") if r.status == "finished" and r.config.get("model.shortcut") == "A"
             and r.depth > 4 and (r.path / CHECKPOINT_FILE).exists()]
    key = lambda r: (r.config.get("model.branch_init") != "zero_gamma", r.depth, r.config.get("seed", 0))  # noqa: E731
    return min(found, key=key, default=None)


def identity_curves(source: Run, seeds=IDENTITY_SEEDS) -> tuple[int, dict[int, dict[str, list]]]:
    """(width, seed -> {residual, plain} -> [(step, distance from the identity)]): claim 2's fit on the input of
    the source run's first block, its training split to fit, its validation split held out."""
    from depthstudy.diagnostics import block_input, identity_learning
    from depthstudy.trained import load_trained

    trained = load_trained(source.path, device="cpu")
    data = trained.data
    held = data.val if data.val is not None else data.test
    fit_a = block_input(trained.model, data.normalize(data.train.images), 0)
    held_a = block_input(trained.model, data.normalize(held.images), 0)
    at = sorted({0, *range(0, IDENTITY_STEPS + 1, max(1, IDENTITY_STEPS // 25)), IDENTITY_STEPS})
    return fit_a.shape[1], {s: identity_learning(fit_a, held_a, s, IDENTITY_STEPS, IDENTITY_LR, IDENTITY_BATCH, at)
                            for s in seeds}


def _identity_learning(runs: list[Run], out: Path, formats: list[str]) -> tuple[list[str], list[Path]]:
    lines = ["**Learning the identity** (measured here, in the report, in a few seconds on the CPU): from He init, "
             "a residual block (identity shortcut) and a plain block of the same width, built from the same seed "
             "(the same weights: the shortcut is the only difference), trained by SGD (momentum 0.9, lr "
             f"{IDENTITY_LR:g}, batch {IDENTITY_BATCH}, {IDENTITY_STEPS} steps, mean squared error) on the same "
             "batches to output their input a: the input of the first block of a trained lecture net on the "
             "training digits; the distance ||block(a) - a|| / ||a|| measured on the validation digits.", ""]
    source = identity_source(runs)
    if source is None:
        return lines + ["No verdict: no finished residual (A) run of part=depth with its checkpoint.", ""], []
    width, curves = identity_curves(source)
    at_end = {kind: {s: c[kind][-1][1] for s, c in curves.items()} for kind in ("residual", "plain")}
    verdict = identity_rule(at_end["residual"], at_end["plain"])
    fig, ax = figures.new_figure(1, 1, 7.5, 3.8)
    for kind, colour in (("residual", "#c0392b"), ("plain", "#444444")):
        for i, (s, c) in enumerate(sorted(curves.items())):
            ax.plot([p for p, _ in c[kind]], [v for _, v in c[kind]], color=colour, lw=1.2, alpha=0.8,
                    label=f"{kind} block ({len(curves)} seeds)" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("SGD steps fitting f(a) = a")
    ax.set_ylabel("||block(a) - a|| / ||a||, held out")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize="small")
    fig.suptitle(f"Claim 2, learned: fitting the identity from He init, {width} units, a trained net's activations")
    figures.caption(fig, [source], note=f"activations of that run ({source.name}); the fit: {IDENTITY_STEPS} SGD "
                    f"steps, lr {IDENTITY_LR:g}, batch {IDENTITY_BATCH}, seeds {', '.join(map(str, sorted(curves)))}")
    files = figures.save(fig, out, "lecture_2_learning", formats)
    lines += [f"Activations: {source.name} ({arm(source)}, depth {source.depth}), block 1's input, {width} units. "
              f"Distance from the identity after {IDENTITY_STEPS} steps, median over seeds "
              f"{', '.join(map(str, sorted(curves)))}: residual {_fmt(_median(at_end['residual'].values()), 3)}, plain "
              f"{_fmt(_median(at_end['plain'].values()), 3)}; at init: residual "
              f"{_fmt(_median(c['residual'][0][1] for c in curves.values()), 3)}, plain "
              f"{_fmt(_median(c['plain'][0][1] for c in curves.values()), 3)}.", "",
              verdict.line() + ".", "", figures.figure_link("lecture_2_learning", formats, "claim 2, learned"), ""]
    return lines, files


def _by_decay(runs: list[Run], quantity) -> dict[float, dict[int, float]]:
    """weight decay -> seed -> quantity(run)."""
    out: dict = {}
    for r in runs:
        by_seed = out.setdefault(float(r.config.get("optim.weight_decay", 0)), {})
        by_seed.setdefault(int(r.config.get("seed", 0)), quantity(r))
    return dict(sorted(out.items()))


def claim_weight_decay(runs: list[Run], out: Path, formats: list[str]) -> tuple[list[str], list[Path]]:
    lines = ["## 3. Weight decay pushes residual blocks towards the identity", "",
             "The measure: per block, the branch ratio ||F(a)|| / ||a||, what the block adds to its shortcut relative "
             "to its input a on held-out digits (0: the identity). A ratio, so a net whose activations all shrink "
             "together does not count as moving to the identity. For a plain block F is its whole pre-activation "
             "output, so the same ratio is its gain: decay shrinks every weight, and the question is whether the "
             "residual blocks move further than the plain net's layers do.", ""]
    done = lambda part: [r for r in _part(runs, part)  # noqa: E731
                         if r.status == "finished" and _final_blocks(r, "branch_ratio")]
    mlp_lines, mlp_files = _weight_decay_mlp(done("weight_decay"), out, formats)
    bn_lines, bn_files = _weight_decay_bn(done("weight_decay_bn"), out, formats)
    if not mlp_files and not bn_files:
        return lines + ["No runs of part=weight_decay.", ""], []
    return lines + mlp_lines + bn_lines, mlp_files + bn_files


WD_PALETTE = ["#56B4E9", "#009E73", "#E69F00", "#D55E00", "#000000"]


def _wd_colours(runs: list[Run]) -> dict:
    wds = sorted({float(r.config.get("optim.weight_decay")) for r in runs})
    return {wd: WD_PALETTE[i % len(WD_PALETTE)] for i, wd in enumerate(wds)}


def _wd_panel(ax, runs: list[Run], quantity: str, colours) -> None:
    """Per weight decay, the median over seeds of each block's final value."""
    for wd, of in _by_decay(runs, lambda r: r).items():
        per_block = [_final_blocks(r, quantity) for r in of.values()]
        n = max(len(b) for b in per_block)
        values = [_median([b[i] for b in per_block if i < len(b)]) for i in range(n)]
        ax.plot(range(1, n + 1), [math.nan if v is None else v for v in values], marker="o", ms=4, color=colours[wd],
                label=f"wd {wd:g}")
    ax.grid(alpha=0.3)
    figures.integer_blocks(ax)


def _weight_decay_mlp(mine: list[Run], out: Path, formats: list[str]) -> tuple[list[str], list[Path]]:
    """The MLP without normalisation: per block the branch ratio and ||W[l+2]||, residual against plain."""
    if not mine:
        return [], []
    families = sorted({r.family for r in mine}, key=lambda f: "plain" in f)  # residual first
    colours = _wd_colours(mine)
    fig, axes = figures.new_figure(2, len(families), 5 * len(families), 6.4, squeeze=False, sharey="row")
    for col, family in enumerate(families):
        of = [r for r in mine if r.family == family]
        _wd_panel(axes[0][col], of, "branch_ratio", colours)
        _wd_panel(axes[1][col], of, "last_weight_norm", colours)
        axes[0][col].set_title(family)
        axes[1][col].set_xlabel("block")
    axes[0][0].set_ylabel("||F(a)|| / ||a|| (median over seeds)")
    axes[1][0].set_ylabel("||W[l+2]||")
    axes[0][-1].legend(fontsize="small")
    fig.suptitle("Claim 3: weight decay and each block's branch relative to its input (MLP, no normalisation, He init)")
    figures.caption(fig, mine)
    files = figures.save(fig, out, "lecture_3_weight_decay", formats)
    lines = ["MLP without normalisation (where the lecture's argument holds literally), He init, "
             f"{recipe(mine[0]).split(', weight')[0]}. "
             "Medians over seeds of the mean over blocks:", "",
             "| family | weight decay | seeds | branch ratio | ||a[l+2] - s|| / ||s|| | ||W[l+2]|| | train err % |",
             "|---|---|---|---|---|---|---|"]
    ratios, errors = {}, {}
    for family in families:
        of = [r for r in mine if r.family == family]
        ratios[family] = _by_decay(of, lambda r: _block_mean(r, "branch_ratio"))
        errors[family] = _by_decay(of, lambda r: r.final("train"))
        for wd, by_seed in ratios[family].items():
            at = [r for r in of if float(r.config.get("optim.weight_decay")) == wd]
            lines.append(f"| {family} | {wd:g} | {len(by_seed)} | {_fmt(_median(by_seed.values()))} | "
                         f"{_fmt(_median(_block_mean(r, 'change_ratio') for r in at))} | "
                         f"{_fmt(_median(_block_mean(r, 'last_weight_norm') for r in at))} | "
                         f"{_fmt(_median(r.final('train') for r in at))} |")
    lines += ["", *_weight_decay_verdicts(ratios, errors), "",
              figures.figure_link("lecture_3_weight_decay", formats, "claim 3"), ""]
    return lines, files


def _weight_decay_verdicts(ratios: dict[str, dict[float, dict]], errors: dict[str, dict[float, dict]]) -> list[str]:
    res = next((f for f in ratios if "residual" in f), None)
    plain = next((f for f in ratios if "plain" in f), None)
    if res is None or plain is None or len(ratios[res]) < 2:
        return ["No verdict: the residual and the plain net at two weight decays or more are needed."]
    off = min(ratios[res])
    out = ["Verdict rule: on every seed the residual branch ratio falls from weight decay "
           f"{off:g}, and by a larger factor than the plain net's (paired by seed); one verdict per weight decay:", ""]
    for wd in [w for w in ratios[res] if w != off and w in ratios[plain] and off in ratios[plain]]:
        v = weight_decay_rule(ratios[res][off], ratios[res][wd], ratios[plain][off], ratios[plain][wd])
        out.append(f"- weight decay {off:g} -> {wd:g} (median training error there: residual "
                   f"{_fmt(_median(errors[res][wd].values()))}%, plain {_fmt(_median(errors[plain][wd].values()))}%): "
                   f"{v.line()}.")
    return out


def _weight_decay_bn(bn: list[Run], out: Path, formats: list[str]) -> tuple[list[str], list[Path]]:
    """ResNet with BatchNorm: per block the RMS of the last BN's gamma and the branch ratio."""
    if not bn:
        return [], []
    colours = _wd_colours(bn)
    fig, axes = figures.new_figure(1, 2, 10, 3.8)
    _wd_panel(axes[0], bn, "gamma_rms", colours)
    _wd_panel(axes[1], bn, "branch_ratio", colours)
    axes[0].set_ylabel("RMS gamma of the branch's last BN")
    axes[1].set_ylabel("||F(a)|| / ||a||")
    axes[0].legend(fontsize="small")
    fig.suptitle(f"Claim 3 with BatchNorm: ResNet-{bn[0].depth}, the last BN's gamma and the branch ratio per block "
                 "(median over seeds)")
    figures.caption(fig, bn)
    files = figures.save(fig, out, "lecture_3_bn", formats)
    gamma = _by_decay(bn, lambda r: _block_mean(r, "gamma_rms"))
    ratio = _by_decay(bn, lambda r: _block_mean(r, "branch_ratio"))
    errors = _by_decay(bn, lambda r: r.final("train"))
    rows = [f"| {wd:g} | {len(ratio[wd])} | {_fmt(_median(gamma[wd].values()))} | {_fmt(_median(ratio[wd].values()))} | "
            f"{_fmt(_median(errors[wd].values()))} |" for wd in ratio]
    lines = [f"With BatchNorm the argument is not literal: a BN after W[l+2] undoes any scale of W[l+2], so decay on "
             "the conv weights mostly changes the effective learning rate (van Laarhoven 2017); what decay can shrink "
             f"is the branch's last BN gamma. ResNet-{bn[0].depth} on digits, He init, "
             f"{recipe(bn[0]).split(', weight')[0]}, "
             "medians over seeds of the mean over blocks:", "",
             "| weight decay | seeds | RMS gamma | branch ratio | train err % |", "|---|---|---|---|---|", *rows, ""]
    lines += _bn_framing(gamma, ratio)
    return lines + ["", figures.figure_link("lecture_3_bn", formats, "claim 3, BN"), ""], files


def _bn_framing(gamma: dict, ratio: dict) -> list[str]:
    """What the BN numbers say, in words chosen by the numbers: gamma's fall against the branch ratio's."""
    if len(ratio) < 2:
        return ["One weight decay only: nothing to compare."]
    off, on = min(ratio), max(ratio)
    g0, g1 = _median(gamma[off].values()), _median(gamma[on].values())
    r0, r1 = _median(ratio[off].values()), _median(ratio[on].values())
    if None in (g0, g1, r0, r1) or min(g1, r1) <= 0:
        return ["No verdict: a median is missing or zero."]
    gf, rf = g0 / g1, r0 / r1
    scale = (f"RMS gamma falls by a factor {gf:.2f} from weight decay {off:g} to {on:g}, the branch relative to its "
             f"input by {rf:.2f}: ||F(a)|| and ||a|| fall together, so by this measure decay moves the blocks towards "
             f"the identity by a factor {rf:.2f}, not {gf:.2f}.")
    return [scale, "", shrink_rule(ratio[off], ratio[on]).line() + " (rule: the branch ratio falls on every seed)."]


GROW_PALETTE = {"zero": "#D55E00", "default": "#0072B2", "plain": "#009E73", "plain_identity": "#CC79A7",
                "control": "#888888"}


def _grow_kind(run: Run) -> str:
    g = run.summary["grown_from"]
    return "control" if not g.get("inserted_blocks") else str(g.get("grow_init"))


def _grow_label(kind: str, base: int, depth: int) -> str:
    return f"depth {base}, trained on (no blocks inserted)" if kind == "control" else f"depth {depth}, inserted: {kind}"


def claim_grow(runs: list[Run], out: Path, formats: list[str]) -> tuple[list[str], list[Path]]:
    lines = ["## 4. Adding a residual block to a trained net does not hurt", ""]
    bases = [r for r in _part(runs, "grow_base") if r.status == "finished"]
    grown = [r for r in _part(runs, "grow") if r.summary.get("grown_from") and r.status in ("finished", "diverged")]
    if not bases or not grown:
        return lines + ["No runs of part=grow_base and part=grow.", ""], []
    kinds: dict[str, list[Run]] = {}
    for r in sorted(grown, key=lambda r: (r.depth, _grow_kind(r))):
        kinds.setdefault(_grow_kind(r), []).append(r)
    offset = bases[0].iterations or 0
    files = _plot_grow(bases, kinds, offset, out, formats)
    base_err = seeds_of(bases, lambda r: r.final("train"))
    lines += [f"Residual MLPs of depth {bases[0].depth}, {arm(bases[0]).split(', ', 1)[1]}, trained for {offset} "
              "iterations (not to the end: training error "
              f"{_fmt(min(base_err.values()))}-{_fmt(max(base_err.values()))}% over seeds "
              f"{', '.join(map(str, sorted(base_err)))}), then each grown (model.init_from) and trained on "
              f"({recipe(grown[0])}); one grown net per base and seed. Medians over seeds: training error (%, eval mode, "
              "every training image) right before and right after the insertion, the largest change of any logit "
              f"(the largest over seeds), and the final training loss and error ({train_measure(grown)}):",
              "", "| run | seeds | before | after | largest logit change | final train loss | final train err % |",
              "|---|---|---|---|---|---|---|"]
    for kind, of in kinds.items():
        g = [r.summary["grown_from"] for r in of]
        change = [x.get("max_logit_change") for x in g if x.get("max_logit_change") is not None]
        lines.append(f"| {_grow_label(kind, bases[0].depth, of[0].depth)} | {len(of)} | "
                     f"{_fmt(_median(x.get('train_error_before') for x in g))} | "
                     f"{_fmt(_median(x.get('train_error_after') for x in g))} | {_fmt(max(change, default=None), 3)} | "
                     f"{_fmt(_median(train_loss(r) for r in of), 4)} | {_fmt(_median(train_error(r) for r in of))} |")
    return lines + ["", *_grow_verdicts(kinds), "", figures.figure_link("lecture_4_grow", formats, "claim 4"), ""], files


def _grow_verdicts(kinds: dict[str, list[Run]]) -> list[str]:
    loss = {k: seeds_of(of, train_loss) for k, of in kinds.items()}
    text = []
    exact = [k for k in ("zero", "plain_identity") if k in kinds]
    if exact:
        changes = [r.summary["grown_from"].get("max_logit_change") for k in exact for r in kinds[k]]
        text.append(f"Construction check: with {' and '.join(exact)} insertions the grown net starts as the trained "
                    "one: largest logit change " + ("0 exactly on every seed." if all(c == 0.0 for c in changes) else
                                                    "**not 0**: " + ", ".join(_fmt(c, 3) for c in changes) + "."))
    if "zero" in loss and "control" in loss:
        text.append("The claim (blocks inserted at zero, then trained on, against the same net trained on without "
                    "growing, paired by seed): " + grow_rule(loss["zero"], loss["control"]).line() + ".")
    else:
        text.append("No verdict: no zero insertion or no net trained on without growing.")
    if "plain" in loss and "zero" in loss:
        after = _median(r.summary["grown_from"].get("train_error_after") for r in kinds["plain"])
        text.append(f"The lecture adds that plain layers find even the identity hard to learn. Measured: randomly "
                    f"initialised plain layers first break the trained function (training error right after insertion: "
                    f"median {_fmt(after)}%); at the end, the log of the final training loss, plain over zero "
                    "insertion (above "
                    f"0: the plain insertion ends worse): {_log_gap(loss['plain'], loss['zero']).describe(unit='')}.")
    return text


def _plot_grow(bases: list[Run], kinds: dict[str, list[Run]], offset: int, out: Path, formats: list[str]) -> list[Path]:
    fig, ax = figures.new_figure(1, 1, 8, 4)
    steps, med, low, high = figures.seed_curve(bases, events.TRAIN_LOSS)
    ax.plot(steps, med, color="#444444", lw=1.8, label=f"trained net, depth {bases[0].depth}")
    ax.fill_between(steps, low, high, color="#444444", alpha=0.12, lw=0)
    for kind, of in kinds.items():
        steps, med, low, high = figures.seed_curve(of, events.TRAIN_LOSS)
        colour = GROW_PALETTE.get(kind)
        x = [offset + s for s in steps]
        ax.plot(x, med, color=colour, lw=1.4, ls="--" if kind == "control" else "-",
                label=_grow_label(kind, bases[0].depth, of[0].depth))
        ax.fill_between(x, low, high, color=colour, alpha=0.12, lw=0)
    ax.axvline(offset, color="#888888", ls=":", lw=0.9)
    ax.annotate("blocks inserted", (offset, 1), xycoords=("data", "axes fraction"), xytext=(-3, -12), ha="right",
                textcoords="offset points", fontsize="x-small", color="#666666")  # left of the line: the grown
    # nets' curves start at its top right
    ax.set_xlabel("iterations: the trained net's, then the grown net's\n(line: median over seeds, band: their range)")
    ax.set_ylabel("training loss (last log window)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3, which="both")
    figures.side_legend(fig, ax.get_legend_handles_labels()[0])
    fig.suptitle("Claim 4: growing a partly trained MLP by inserting blocks")
    figures.caption(fig, [*bases, *(r for of in kinds.values() for r in of)])
    return figures.save(fig, out, "lecture_4_grow", formats)


def claim_projection(runs: list[Run], out: Path, formats: list[str]) -> tuple[list[str], list[Path]]:
    lines = ["## 5. W_s where the width changes: a learned projection or fixed zero padding", ""]
    mine = [r for r in _part(runs, "depth") if r.config.get("model.shortcut") in ("A", "B") and r.status == "finished"]
    b_recipes = {(recipe(r), r.config.get("model.branch_init")) for r in mine if r.config.get("model.shortcut") == "B"}
    mine = [r for r in mine if (recipe(r), r.config.get("model.branch_init")) in b_recipes]  # A's twins of B only
    if not {r.config.get("model.shortcut") for r in mine} >= {"A", "B"}:
        return lines + ["No A and B runs of part=depth with the same recipe and initialisation.", ""], []
    groups = group_runs(mine, [])
    deepest = max(g.depth for g in groups)
    fig, axes = figures.new_figure(1, 2, 11, 4)
    figures.depth_axes(axes[0], groups, "train", [])
    axes[0].set_title("final training error (median over seeds)")
    axes[0].set_ylabel("error (%)")
    axes[0].legend(fontsize="small")
    for i, g in enumerate(g for g in groups if g.depth == deepest):
        steps, median, low, high = figures.seed_curve(g.ok_runs(), events.TRAIN_ERROR)
        style = figures.family_style(g.family, i)
        axes[1].plot(steps, median, color=style["color"], label=f"{g.family}-{deepest}")
        axes[1].fill_between(steps, low, high, color=style["color"], alpha=0.15, lw=0)
    axes[1].set_title(f"training error during training, depth {deepest} (median, seed range)")
    axes[1].set_xlabel("iterations")
    axes[1].legend(fontsize="small")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("Claim 5: the shortcut where the width changes 128 -> 256: zero padding (A) vs projection W_s (B)")
    figures.caption(fig, mine)
    files = figures.save(fig, out, "lecture_5_projection", formats)
    table = {(g.family, g.depth): g for g in groups}
    test_images = mine[0].config.get("data.test_size")
    lines += [f"{arm(mine[0]).split(', ', 1)[1]}, {recipe(mine[0])}; medians over seeds"
              + (f" (one test image is {stats.resolution(int(test_images)):.2f} points of test error)"
                 if test_images else "") + ":", "",
              "| depth | A: train err % | B: train err % | A: test err % | B: test err % | B's extra parameters |",
              "|---|---|---|---|---|---|"]
    for d in sorted({g.depth for g in groups}):
        a, b = table.get(("mlp residual (A)", d)), table.get(("mlp residual (B)", d))
        if a and b:
            params = [next((r.summary["params"] for r in g.runs if r.summary.get("params")), None) for g in (a, b)]
            extra = f"{params[1] - params[0]:,}" if None not in params else "n/a"
            lines.append(f"| {d} | {_fmt(a.median('train'))} | {_fmt(b.median('train'))} | {_fmt(a.median('test'))} | "
                         f"{_fmt(b.median('test'))} | {extra} |")
    lines += ["", "The lecture gives both as options and claims no winner; so this is a measurement, not a test: medians "
              "over seeds, on the same nets and budget.", "",
              figures.figure_link("lecture_5_projection", formats, "claim 5"), ""]
    return lines, files


def lecture_section(runs: list[Run], out: Path, formats: list[str]) -> tuple[list[str], list[Path]]:
    """The report's lecture section (markdown lines) and its figures, one or two per claim."""
    lines = ["# The lecture, measured", "",
             "Each claim of the lecture's argument for residual nets, with what these runs measured (experiment=lecture). "
             "Small nets on digits for a few hundred iterations: the measurements speak for this scale. Each verdict "
             f"is a rule on per-seed numbers, arms paired by seed; it needs {MIN_SEEDS} seeds and holds only where "
             "every seed agrees. Intervals: the exact order-statistic interval for the median paired difference "
             "(the one the sign test inverts), with its coverage (75% for 3 seeds: [min, max]).", ""]
    files: list[Path] = []
    for claim in (claim_depth, claim_identity, claim_weight_decay, claim_grow, claim_projection):
        text, made = claim(runs, out, formats)
        lines += text
        files += made
    return lines, files
