"""Shell completion of overrides and options (click's completion API, as the shell calls it), and --help's
metavars."""

from __future__ import annotations

from typer import _completion_classes as shell_completion  # typer vendors click; its bash completer
import typer.main
from typer.testing import CliRunner

from depthstudy.cli import app


def complete(args: list[str], incomplete: str) -> list[str]:
    command = typer.main.get_command(app)
    completer = shell_completion.BashComplete(command, {}, "depthstudy", "_DEPTHSTUDY_COMPLETE")
    return [c.value for c in completer.get_completions(args, incomplete)]


def test_overrides_complete_as_hydra_completes_them():
    from depthstudy.config import CONFIG_DIR

    presets = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))
    assert complete(["train"], "experiment=") == [f"experiment={p}" for p in presets]
    assert "model.depth=" in complete(["sweep"], "model.") and all(c.startswith("model.") for c in complete(["train"], "model."))
    assert "data=cifar10" in complete(["train"], "data=")
    assert "experiment=" in complete(["train"], "") and "seed=" in complete(["train"], "se")


def test_report_style_completes_and_help_reads_like_the_rest():
    assert complete(["report", "--style"], "") == ["default", "paper", "slide"][:len(complete(["report", "--style"], ""))]
    assert "paper" in complete(["report", "--style"], "p")
    out = CliRunner().invoke(app, ["eval", "--help"], terminal_width=200).output
    assert "{RUN_DIR}..." in out and "run_dirs" not in out  # Typer's braces: required
    out = CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output
    assert "[OVERRIDES]..." in out
