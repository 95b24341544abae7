"""The depthstudy command line: train | sweep | config | runs | diff | eval | report | bench. Each command parses, then calls one function."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from depthstudy.errors import DepthstudyError, UsageError


class _OneLineErrors(typer.core.TyperGroup):
    """click's usage errors (no such command, no such option) in the style of every other error: one line on stderr,
    `error: ...`, exit 2, instead of a boxed panel."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        import sys

        try:
            from typer._click.exceptions import ClickException  # typer vendors click since 0.2x
        except ImportError:
            from click.exceptions import ClickException

        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except ClickException as e:
            if e.format_message():  # (no arguments: the help, already printed, says it all)
                typer.secho(f"error: {_click_message(self, e)}", err=True, fg=typer.colors.RED)
            sys.exit(e.exit_code)
        except typer.Abort:
            typer.secho("interrupted", err=True, fg=typer.colors.YELLOW)
            sys.exit(130)
        sys.exit(code if isinstance(code, int) else 0)


def _click_message(group, error) -> str:
    """click's message, with the command it meant (`depthstudy clean`) or where to look."""
    import difflib

    message = error.format_message().rstrip(".")
    ctx = getattr(error, "ctx", None)
    if message.startswith("No such command"):
        name = message.split("'")[1] if "'" in message else ""
        close = difflib.get_close_matches(name, list(group.commands), n=1)
        return (f"No such command '{name}'; " + (f"did you mean `depthstudy {close[0]}`?" if close else
                                                f"the commands: {', '.join(group.commands)}"))
    return message + (f" (`{ctx.command_path} --help` shows the usage)" if ctx is not None else "")


app = typer.Typer(
    cls=_OneLineErrors,
    help="Plain vs residual nets of growing depth (He et al. 2015): train one net, sweep a grid, report figures.\n\n"
         "Start with `depthstudy sweep experiment=quick`, then `depthstudy report runs/quick`.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)


def _complete_override(incomplete: str) -> list[str]:
    from depthstudy.config import complete_override  # Hydra and omegaconf only: no torch while the shell waits

    return complete_override(incomplete)


def _complete_style(incomplete: str) -> list[str]:
    from depthstudy.figures import STYLES

    return [s for s in STYLES if s.startswith(incomplete)]


OVERRIDES = {"allow_extra_args": True, "ignore_unknown_options": True}
Overrides = Annotated[
    Optional[list[str]],
    typer.Argument(help="Hydra overrides, e.g. model.depth=56 model.shortcut=none optim.weight_decay=5e-4 "
                        "data=cifar10 experiment=he2015", show_default=False, metavar="OVERRIDES",
                   autocompletion=_complete_override),
]


Debug = Annotated[bool, typer.Option("--debug", help="Show Python tracebacks instead of one-line errors.")]


def _examples(*examples: tuple[str, str], note: str = "") -> str:
    """A command's help epilog: each example's comment on its own line, then the command whole on the next,
    so that an example copied from an 80-column terminal runs as printed (commands stay under 76 characters)."""
    lines = ["Examples:"] + [part for comment, command in examples for part in (f"  # {comment}", f"  {command}")]
    return "\n\n".join(lines + ([note] if note else []))



def _version(value: bool) -> None:
    if value:
        from depthstudy import __version__

        typer.echo(f"depthstudy {__version__}")
        raise typer.Exit()


@app.callback()
def _app(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                               help="Print the version and exit.")] = False) -> None:
    """Plain vs residual nets of growing depth (He et al. 2015): train one net, sweep a grid, report figures.

    Start with `depthstudy sweep experiment=quick` then `depthstudy report runs/quick`.
    """


def _console():
    """Rich console for tables: the terminal's width, or 160 columns in logs and pipes (no truncated cells)."""
    import sys

    from rich.console import Console

    from depthstudy.progress import BestEffort

    out = BestEffort(sys.stdout) if sys.stdout is not None else None  # a closed pipe ends no command halfway
    console = Console(file=out)
    if not console.is_terminal:
        console = Console(file=out, width=160)
    return console


def _fail(error: BaseException, debug: bool) -> None:
    """One line on stderr and the error's exit code (2: bad input, 1: runtime failure); --debug adds the traceback."""
    if debug:
        import traceback

        traceback.print_exception(error)
    if isinstance(error, DepthstudyError):
        message, code = str(error), error.exit_code
    else:
        message, code = f"{type(error).__name__}: {error} (run again with --debug for the traceback)", 1
    try:
        typer.secho(f"error: {message}", err=True, fg=typer.colors.RED)
    except OSError:  # stderr is closed too: the exit code says it
        pass
    raise typer.Exit(code)


_CONFIG = "`depthstudy config OVERRIDES` prints the config they compose"
_SWEEP = "`depthstudy sweep OVERRIDES` trains the grid (comma lists sweep)"
_PRESET = "a preset is chosen by experiment=NAME (`depthstudy config --groups` lists them)"
HYDRA_FLAGS = {"--cfg": _CONFIG, "-c": _CONFIG, "--info": _CONFIG, "-i": _CONFIG, "--resolve": _CONFIG,
               "--package": _CONFIG, "-p": _CONFIG, "--multirun": _SWEEP, "-m": _SWEEP,
               "--run": "`depthstudy train OVERRIDES` trains one run", "-r": "`depthstudy train OVERRIDES` trains one run",
               "--config-name": _PRESET, "-cn": _PRESET, "--config-path": _PRESET, "-cp": _PRESET,
               "--config-dir": _PRESET, "-cd": _PRESET, "--hydra-help": "`depthstudy COMMAND --help` shows the usage",
               "--shell-completion": "`depthstudy --install-completion` installs completion",
               "-sc": "`depthstudy --install-completion` installs completion"}


def _overrides(ctx: typer.Context, overrides: list[str] | None) -> list[str]:
    """The command's overrides; a mistyped option (ignore_unknown_options passes it on as one) refused in one line."""
    import difflib

    for arg in overrides or []:
        flag = arg.split("=")[0]
        if flag in HYDRA_FLAGS:  # a Hydra app's flag: depthstudy has a command for it
            hint = HYDRA_FLAGS[flag]
            if hint.startswith(f"`depthstudy {ctx.info_name} "):
                hint = f"`depthstudy {ctx.info_name}` does that already; drop {flag}"
            raise UsageError(f"{flag} is Hydra's flag, not one of `depthstudy {ctx.info_name}`: {hint}")
        if arg.startswith("-"):
            names = [n for p in ctx.command.params for n in p.opts if n.startswith("--")]
            close = difflib.get_close_matches(arg.split("=")[0], names, n=1)
            raise UsageError(f"{arg} is not an option of `depthstudy {ctx.info_name}`; "
                             + (f"did you mean {close[0]}?" if close else f"its options: {', '.join(names)}"))
    return list(overrides or [])


def _guard(fn, debug: bool):
    try:
        return fn()
    except BrokenPipeError:  # `depthstudy config | head -1`: the reader has what it wanted; nothing to say
        import sys

        from depthstudy.progress import silence

        silence(sys.stdout)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.secho("interrupted", err=True, fg=typer.colors.YELLOW)
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as e:  # everything a user can meet ends in one line, unless --debug
        _fail(e, debug)


@app.command(context_settings=OVERRIDES, epilog=_examples(
    ("ResNet-20 on digits, about 30 s on a CPU", "depthstudy train"),
    ("plain-56", "depthstudy train model.depth=56 model.shortcut=none"),
    ("the paper, on CIFAR-10", "depthstudy train experiment=he2015 model.depth=110 data.download=true"),
    note="Running the same command again resumes an interrupted run and skips a finished one."))
def train(ctx: typer.Context, overrides: Overrides = None, debug: Debug = False) -> None:
    """Train one plain or residual net; logs, config, checkpoint and summary go to its run directory."""
    from depthstudy.launch import train_one

    _guard(lambda: train_one(_overrides(ctx, overrides)), debug)


@app.command(context_settings=OVERRIDES, epilog=_examples(
    ("the offline quick study (digits)", "depthstudy sweep experiment=quick"),
    ("a grid of your own", "depthstudy sweep model.depth=20,32,44,56 model.shortcut=none,A seed=0,1,2"),
    ("its time on this machine, before training", "depthstudy sweep experiment=he2015_fig6 --dry-run"),
    ("on a cluster", "depthstudy sweep experiment=he2015_fig6 hydra/launcher=submitit_slurm"),
    note="Re-running a sweep skips finished runs and resumes interrupted ones."))
def sweep(
    ctx: typer.Context,
    overrides: Overrides = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs (and which are done) and estimate their time on this machine, without training.")] = False,
    estimate: Annotated[bool, typer.Option("--estimate/--no-estimate", help="With --dry-run: time a few training steps of each net to estimate the sweep (cached per machine).")] = True,
    debug: Debug = False,
) -> None:
    """Train a grid of runs (Hydra multirun: comma lists sweep, any Hydra launcher runs them)."""
    from depthstudy.sweep import run_sweep

    _guard(lambda: run_sweep(_overrides(ctx, overrides), dry_run, _console(), estimate), debug)


@app.command(context_settings=OVERRIDES, epilog=_examples(
    ("the config that command would train", "depthstudy config experiment=he2015 model.depth=110"),
    ("every config group and its options", "depthstudy config --groups")))
def config(
    ctx: typer.Context,
    overrides: Overrides = None,
    groups: Annotated[bool, typer.Option("--groups", help="List the config groups and their options.")] = False,
    debug: Debug = False,
) -> None:
    """Print the composed, checked config that `depthstudy train OVERRIDES` would run, without training."""
    from depthstudy import config as configs

    def go():
        if groups:
            if overrides:
                raise UsageError(f"--groups lists every config group and takes no overrides (got {' '.join(overrides)}); "
                                 "drop --groups to see the config they compose")
            for group, options in configs.config_groups().items():
                typer.echo(f"{group}: {', '.join(options)}")
            return
        from omegaconf import OmegaConf

        _, cfg = configs.load_checked(_overrides(ctx, overrides))
        typer.echo(OmegaConf.to_yaml(configs.without_hydra(cfg), resolve=True), nl=False)
        # run_name is the readable part; other overrides add a slug and hash to the directory (still valid YAML)
        typer.echo(f"# run directory: {cfg.hydra.run.dir}")

    _guard(go, debug)


def _echo_json(obj) -> None:
    """--json of every command: strict JSON (a diverged run's NaN as null), in the order the command built it."""
    import json

    from depthstudy.rundir import finite

    typer.echo(json.dumps(finite(obj), indent=2, allow_nan=False))


RUNS_DROPPED = ("time s", "val err %", "iterations", "train err %", "test err %")  # at a narrow terminal, in order
RUNS_SHOWN = {"run", "status", "iterations", "total_iterations", "train_error", "val_error", "test_error", "wall_time_s"}


@app.command(epilog=_examples(
    ("the nets of depth 44, lowest test error first", "depthstudy runs runs/quick --where model.depth=44 --sort test_error"),
    ("the residual nets of seed 0", "depthstudy runs runs/quick --where model.shortcut!=none --where seed=0"),
    ("the slowest runs first, as JSON", "depthstudy runs runs/quick --sort -wall_time_s --json"),
    note="KEY: any key of a --json row: test_error, status, wall_time_s, ... or a config key (model.depth, seed, "
         "optim.lr, ...). Numbers compare as numbers (model.depth=56, optim.weight_decay=1e-4)."))
def runs(
    runs_dir: Annotated[Path, typer.Argument(help="A directory of runs (a sweep's, or runs/ for all).")] = Path("runs"),
    where: Annotated[Optional[list[str]], typer.Option("--where", metavar="KEY=VALUE", help="Only the runs where KEY=VALUE (or KEY!=VALUE) "
                                                       "holds; repeatable: all must hold.", show_default=False)] = None,
    sort: Annotated[Optional[str], typer.Option("--sort", metavar="KEY", help="Order by KEY, -KEY for descending; runs without a "
                                                "value come last.", show_default=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per run, for scripts.")] = False,
    debug: Debug = False,
) -> None:
    """List the runs below a directory: status (crashed: its process died), iterations, final errors, time.

    Fast: reads config.yaml and summary.json only; damage in event files shows in `depthstudy report`."""
    from depthstudy.runs import list_runs, select_runs

    def go():
        found = list_runs(runs_dir)
        rows = select_runs(found, where or [], sort)
        if json_out:
            _echo_json(rows)
            return
        if not found:
            typer.echo(f"no runs under {runs_dir} (a run directory holds summary.json or event files); "
                       "e.g. depthstudy runs runs/quick")
            return
        if not rows:
            typer.echo(f"none of the {len(found)} runs under {runs_dir} has {' and '.join(where)}")
            return
        _console().print(_runs_table(rows, runs_dir, len(found), where or [], sort))
        for r in rows:  # why a run failed or cannot be read, and what to do; what report counts instead of a copy
            if r["error"] and r["status"] in ("failed", "damaged"):
                _console().print(f"[yellow]{r['run']}: {r['error']}[/]", highlight=False)
            if r["copy_of"]:
                _console().print(f"[yellow]{r['run']}: the same configuration and seed as {r['copy_of']}, which "
                                 "`depthstudy report` counts instead[/]", highlight=False)
            for change in r["forced"]:
                _console().print(f"[yellow]{r['run']}: resumed with another config (trainer.force_resume) at "
                                 f"{change}[/]", highlight=False)

    _guard(go, debug)


def _runs_table(rows: list[dict], runs_dir: Path, total: int, where: list[str], sort: str | None):
    """The runs as a table that fits the terminal; a --sort key the table does not show gets a column of its own
    (the last to go at a narrow terminal: it is what was asked for)."""
    from rich.table import Table

    from depthstudy.runs import row_value
    from depthstudy.tables import Fitted, count

    title = f"{count(len(rows), 'run')} under {runs_dir}" if len(rows) == total else \
        f"{len(rows)} of {count(total, 'run')} under {runs_dir}"
    title += f" where {' and '.join(where)}" if where else ""
    extra = [sort.removeprefix("-")] if sort and sort.removeprefix("-") not in RUNS_SHOWN else []
    table = Table(title=title + (f", by {sort}" if sort else ""))
    for col in ("run", "status", *extra, "iterations", "train err %", "val err %", "test err %", "time s"):
        table.add_column(col, justify="left" if col in ("run", "status") else "right")
    fmt = lambda x: "" if x is None else f"{x:.2f}"  # noqa: E731
    for r in rows:
        status = r["status"] + (f" (pid {r['pid']})" if r["pid"] else "") + (" (copy)" if r["copy_of"] else "")
        status += " (forced)" if r["forced"] else ""
        status += f" (job {r['cluster_job']})" if r["cluster_job"] else ""  # sacct -j <job> says more
        table.add_row(r["run"], status, *["" if row_value(r, k) is None else str(row_value(r, k)) for k in extra],
                      f"{r['iterations'] or 0}/{r['total_iterations'] or '?'}",
                      fmt(r["train_error"]), fmt(r["val_error"]), fmt(r["test_error"]), fmt(r["wall_time_s"]))
    return Fitted(table, drop=RUNS_DROPPED + tuple(extra), more="--json has every column")


@app.command(epilog=_examples(
    ("two seeds of plain-44 (bash expands {0,1})", "depthstudy diff runs/quick/plain-d44-wd0.0001-s{0,1}"),
    ("plain-44 against ResNet-44, in the sweep's directory", "cd runs/quick; depthstudy diff plain-d44-wd0.0001-s0 "
     "resA-d44-wd0.0001-s0")))
def diff(
    run_a: Annotated[Path, typer.Argument(help="A run directory (A).", show_default=False)],
    run_b: Annotated[Path, typer.Argument(help="Another run directory (B).", show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="The differences and numbers as one JSON object, for scripts.")] = False,
    debug: Debug = False,
) -> None:
    """Compare two runs: the config keys whose values differ, then their final numbers side by side."""
    from depthstudy.runs import diff_runs

    def go():
        found = diff_runs(run_a, run_b)
        if json_out:
            _echo_json(found)
            return
        console = _console()
        console.print(f"A: {run_a}\nB: {run_b}", highlight=False)
        for table in _diff_tables(found):
            console.print(table)
        if found["runtime"]:  # shown apart: they change nothing the runs computed (see diff_runs)
            console.print(f"also differ, without effect on the results: {', '.join(found['runtime'])}", highlight=False)

    _guard(go, debug)


DIFF_LABELS = {"status": "status", "iterations": "iterations", "train_error": "train err %", "val_error": "val err %",
               "test_error": "test err %", "train_loss": "train loss", "test_loss": "test loss", "wall_time_s": "time s",
               "params": "params"}


def _diff_tables(found: dict) -> list:
    """diff's two tables, each fitted to the terminal: the config keys that differ (or a line saying none does),
    and the final numbers with B - A."""
    from rich.table import Table

    from depthstudy.tables import Fitted, count

    def shown(entry: dict, side: str) -> str:
        return "(absent)" if side not in entry else "null" if entry[side] is None else str(entry[side])

    out = []
    if found["config"]:
        out.append(f"{count(len(found['config']), 'config key')} differ{'s' if len(found['config']) == 1 else ''}:")
        config = Table()
        for col in ("key", "A", "B"):
            config.add_column(col)
        for entry in found["config"]:
            config.add_row(entry["key"], shown(entry, "a"), shown(entry, "b"))
        out.append(Fitted(config))
    else:
        out.append("the same config: every key that changes what a run computes is equal")
    numbers = Table(title="final numbers")
    for col in ("", "A", "B", "B - A"):
        numbers.add_column(col, justify="left" if not col else "right")
    a, b = found["results"]["a"], found["results"]["b"]
    for key, label in DIFF_LABELS.items():
        precision = "4g" if key.endswith("_loss") else "2f"
        cells = [_number(a[key], precision), _number(b[key], precision)]
        both = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a[key], b[key]))
        numbers.add_row(label, *cells, _number(b[key] - a[key], precision, signed=True) if both else "")
    out.append(Fitted(numbers, keys=("",)))
    return out


def _number(value, precision: str, signed: bool = False) -> str:
    """A value of diff's numbers table: integers whole (iterations, params), errors and times to 2 decimals as
    `runs` shows them, losses to 4 significant digits."""
    if value is None:
        return "-"
    sign = "+" if signed else ""
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:{sign}d}"
    return f"{value:{sign}.{precision}}" if isinstance(value, float) else str(value)


def _eval_line(r: dict, names: list[str]) -> str:
    """A run's errors on one line, or, on a narrow terminal, broken between splits (never inside a number)."""
    from depthstudy.tables import fields

    errors = [f"{n} {r[n + '_error']:.2f}% (loss {r[n + '_loss']:.4f})" if r[n + "_error"] is not None else f"{n} -"
              for n in names]
    console = _console()  # a pipe gets one line per run, whatever its length: scripts read them
    return fields([r["run"], f"[{r['iterations']}/{r['total_iterations']} it]", *errors],
                  console.width if console.is_terminal else 10**6)


@app.command("eval", epilog=_examples(
    ("val and test error of a run's checkpoint", "depthstudy eval runs/quick/resA-d56-wd0.0001-s0"),
    ("all training images too, as JSON", "depthstudy eval runs/quick/resA-d56-wd0.0001-s0 --splits train,test --json")))
def eval_command(
    run_dirs: Annotated[list[Path], typer.Argument(help="Run directories (each holds config.yaml and checkpoint.pt).", metavar="RUN_DIR")],
    splits: Annotated[str, typer.Option("--splits", help="Comma-separated: train, val, test (train: all training images, eval mode, no augmentation).")] = "val,test",
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Where the data set lives now, if not where the run read it.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per run, for scripts.")] = False,
    debug: Debug = False,
) -> None:
    """Evaluate runs' checkpoints (error % and loss per split), without touching their logs or summaries."""
    from depthstudy.trained import evaluate_run

    def go():
        names = [s.strip() for s in splits.split(",") if s.strip()]
        results, failed = [], []
        for d in run_dirs:  # each run on its own: one that cannot be evaluated costs the others nothing
            try:
                r = evaluate_run(d, names, device, data_root)
            except DepthstudyError as e:
                failed.append(e)
                continue
            results.append(r)
            if not json_out:
                typer.echo(_eval_line(r, names))
        if json_out and results:
            _echo_json(results)
        if len(failed) == len(run_dirs):  # nothing evaluated (a bad option fails every run alike): the first reason
            raise failed[0]
        if failed:
            error = DepthstudyError(f"{len(failed)} of {len(run_dirs)} runs not evaluated: "
                                    + "; ".join(str(e) for e in failed))
            error.exit_code = max(e.exit_code for e in failed)
            raise error

    _guard(go, debug)


@app.command()
def report(
    runs_dir: Annotated[Path, typer.Argument(help="A directory of runs (a sweep's, or runs/ for all).")] = Path("runs"),
    out: Annotated[Optional[Path], typer.Option("--out", help="Where to write figures and report.md (default: RUNS_DIR/report).")] = None,
    by: Annotated[Optional[list[str]], typer.Option("--by", help="Also facet the depth plot by this config key (repeatable), e.g. optim.weight_decay.")] = None,
    fmt: Annotated[str, typer.Option("--format", help="Figure formats, comma-separated: png, svg, pdf.")] = "png,svg",
    yscale: Annotated[str, typer.Option("--yscale", help="Depth plot's y axis: auto (symlog when errors span orders "
                                        "of magnitude), linear or symlog (linear below 1%, log above).")] = "auto",
    style: Annotated[str, typer.Option("--style", autocompletion=_complete_style, help="default, paper (one 3.5-inch column per panel, small "
                                       "fonts; use --format pdf) or slide (large fonts, thick lines).")] = "default",
    debug: Debug = False,
) -> None:
    """Figures and tables from the runs' TensorBoard logs: error vs iterations, error vs depth, report.md."""
    import shlex

    from depthstudy.report import make_report

    formats = [f.strip() for f in fmt.split(",") if f.strip()]
    given = [("--out", out), *[("--by", k) for k in by or []], ("--format", fmt if fmt != "png,svg" else None),
             ("--yscale", yscale if yscale != "auto" else None), ("--style", style if style != "default" else None)]
    command = " ".join(["depthstudy report", shlex.quote(str(runs_dir)),
                        *[f"{flag} {shlex.quote(str(value))}" for flag, value in given if value is not None]])
    _guard(lambda: make_report(runs_dir, out, by or [], formats, _console(), yscale, style, command), debug)


@app.command(epilog=_examples(
    ("ResNet-20/56/110 and plain-56, about 3 minutes on 2 CPU cores", "depthstudy bench"),
    ("two models, numbers to a file", "depthstudy bench --models resnet20,plain56 --steps 20 --json bench.json"),
    ("a GPU: CUDA graphs and bf16", "depthstudy bench --device cuda --cuda-graphs --precision bf16 --steps 50"),
    ("runs per GPU: 1, 2 and 4 at once (sets jobs_per_gpu=auto)", "depthstudy bench --concurrent 1,2,4 --models resnet20"),
    note="Uses real CIFAR-10 when torchvision's integrity check passes under --data-root, else random images "
         "written once in CIFAR-10's file format."))
def bench(
    # defaults and keys written so that no word is longer than the help column of an 80-column terminal (26)
    models: Annotated[str, typer.Option("--models", show_default=False, help="Comma-separated resnetN / plainN "
                                        "(N = 6n+2); default: resnet20, resnet56, plain56, resnet110.")] = "resnet20,resnet56,plain56,resnet110",
    steps: Annotated[int, typer.Option("--steps", help="Timed steps per measurement.")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps per model and path before the first measurement.")] = 2,
    rounds: Annotated[int, typer.Option("--rounds", help="Measurements per path and model, ours and reference alternating.")] = 1,
    precision: Annotated[str, typer.Option("--precision", help="fp32, tf32 (CUDA: TF32 convs and matmuls) or bf16 (autocast); as trainer.precision.")] = "fp32",
    compile_model: Annotated[bool, typer.Option("--compile", help="torch.compile our model (ours only; compile time falls in the warm-up).")] = False,
    cuda_graphs: Annotated[Optional[bool], typer.Option("--cuda-graphs/--no-cuda-graphs", help="Our iteration's forward and backward as CUDA graphs (torch.compile mode=reduce-overhead), as trainer.cuda_graphs; default: on for CUDA, off on a CPU, as train runs.", show_default=False)] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu or cuda.")] = "auto",
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Where to look for CIFAR-10 (default: $DEPTHSTUDY_DATA, else ~/.cache/depthstudy).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Also write every number and setting here as JSON.")] = None,
    compile_optimizer: Annotated[bool, typer.Option("--compile-optimizer", help="Ours: the SGD update compiled too, as trainer.compile_optimizer does (under --cuda-graphs, a graph).")] = False,
    concurrent: Annotated[Optional[str], typer.Option("--concurrent", help="Instead: aggregate img/s of k training processes sharing the device against one, e.g. 1,2,4; on a GPU kept for trainer.jobs_per_gpu=auto to use.")] = None,
    debug: Debug = False,
) -> None:
    """Training throughput: depthstudy's training path vs the common DataLoader loop, interleaved, and vs matmul peak; --concurrent: k runs at once vs one."""
    from depthstudy.bench import run_bench, run_concurrent_bench

    if concurrent is not None:
        _guard(lambda: run_concurrent_bench(models, concurrent, steps, warmup, precision, compile_model, cuda_graphs,
                                            device, data_root, json_path, _console()), debug)
        return
    _guard(lambda: run_bench(models, steps, warmup, rounds, precision, compile_model, cuda_graphs, device, data_root,
                             json_path, _console(), compile_optimizer), debug)


def main() -> None:
    app()
