"""`depthstudy runs --sort/--where` and `depthstudy diff`, through the CLI, on three tiny runs trained once per file."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from helpers import TINY


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory):
    """Three finished tiny runs: depth 8 seed 0, depth 8 seed 1 at another learning rate, depth 14 seed 0."""
    from typer.testing import CliRunner

    from depthstudy.cli import app

    root, here = tmp_path_factory.mktemp("listing"), os.getcwd()
    os.chdir(root)
    try:
        for args in (["model.depth=8", "seed=0"], ["model.depth=8", "seed=1", "optim.lr=0.05"],
                     ["model.depth=14", "seed=0"]):
            assert CliRunner().invoke(app, ["train", *TINY, *args], catch_exceptions=False).exit_code == 0
    finally:
        os.chdir(here)
    return root / "runs" / "default"


@pytest.fixture
def study(tmp_path, trained_once):
    """This test's own copy of the three runs."""
    shutil.copytree(trained_once, tmp_path / "study")
    return tmp_path / "study"


def _rows(cli, *args) -> list[dict]:
    result = cli("runs", *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _one_error_line(result, said: str) -> None:
    assert result.exit_code == 2 and said in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error: ")


def _run(study, depth: int, seed: int):
    (path,) = [p for p in study.iterdir() if f"-d{depth}-" in p.name and f"-s{seed}" in p.name]
    return path


def _cells(line: str) -> list[str]:
    """A table row's cells, stripped; [] for any other line."""
    return [c.strip() for c in line.split("│")[1:-1]] if line.startswith("│") else []


def _terminal(monkeypatch, columns: int) -> None:
    """Tables printed as on a terminal of this width (as tests/test_usability.py does)."""
    from rich.console import Console

    monkeypatch.setattr("depthstudy.cli._console", lambda: Console(width=columns))


def test_sort_compares_numbers_as_numbers_both_ways(cli, study):
    assert [r["config"]["model.depth"] for r in _rows(cli, str(study), "--sort", "model.depth")] == [8, 8, 14]
    assert [r["config"]["model.depth"] for r in _rows(cli, str(study), "--sort=-model.depth")] == [14, 8, 8]
    by_lr = _rows(cli, str(study), "--sort", "-optim.lr")
    assert [r["config"]["optim.lr"] for r in by_lr] == [0.1, 0.1, 0.05]
    result = cli("runs", str(study), "--sort", "-model.depth")  # the table: same order, and the key as a column
    assert result.exit_code == 0, result.output
    names = [line.split()[1] for line in result.output.splitlines() if line.startswith("│")]
    assert "-d14-" in names[0] and "model.depth" in result.output and "by -model.depth" in result.output


def test_sort_puts_runs_without_a_value_last_either_way():
    from depthstudy.runs import select_runs

    rows = [{"run": name, "test_error": error, "config": {}} for name, error in
            (("a", 2.5), ("b", None), ("c", 10), ("d", 0.5))]
    assert [r["run"] for r in select_runs(rows, [], "test_error")] == ["d", "a", "c", "b"]
    assert [r["run"] for r in select_runs(rows, [], "-test_error")] == ["c", "a", "d", "b"]


def test_where_compares_an_int_config_key_and_status(cli, study):
    deep = _rows(cli, str(study), "--where", "model.depth=14")
    assert [r["config"]["model.depth"] for r in deep] == [14]
    shallow = _rows(cli, str(study), "--where", "model.depth!=14", "--where", "status=finished", "--sort", "seed")
    assert [(r["config"]["model.depth"], r["config"]["seed"]) for r in shallow] == [(8, 0), (8, 1)]
    assert [r["config"]["seed"] for r in _rows(cli, str(study), "--where", "optim.lr=5e-2")] == [1]
    result = cli("runs", str(study), "--where", "model.depth=14")
    assert result.exit_code == 0 and "1 of 3 runs" in result.output and "where model.depth=14" in result.output


def test_where_that_matches_nothing_says_so(cli, study):
    result = cli("runs", str(study), "--where", "model.depth=56")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"none of the 3 runs under {study} has model.depth=56"
    assert _rows(cli, str(study), "--where", "model.depth=56") == []


@pytest.mark.parametrize("args,said", [
    (["--sort", "model.dept"], "--sort model.dept: no run has that key; did you mean model.depth?"),
    (["--sort", "-test_eror", "--json"], "did you mean test_error?"),
    (["--where", "modle.depth=8"], "did you mean model.depth?"),
    (["--where", "model.depth"], "--where model.depth: a condition is KEY=VALUE or KEY!=VALUE"),
])
def test_unknown_key_or_condition_is_one_line(cli, study, args, said):
    _one_error_line(cli("runs", str(study), *args), said)


def test_diff_shows_the_keys_that_differ_and_both_runs_numbers(cli, study):
    a, b = _run(study, 8, 0), _run(study, 8, 1)
    result = cli("diff", str(a), str(b))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rows = {cells[0]: cells[1:] for cells in map(_cells, lines) if cells}
    assert rows["optim.lr"] == ["0.1", "0.05"] and rows["seed"] == ["0", "1"], result.output
    assert "model.depth" not in result.output  # the same in both
    summaries = [json.loads((run / "summary.json").read_text()) for run in (a, b)]
    assert rows["test err %"][:2] == [f"{s['test_error']:.2f}" for s in summaries]
    assert "without effect on the results: run_name" in result.output  # bookkeeping, kept apart

    found = json.loads(cli("diff", str(a), str(b), "--json").output)
    assert [e["key"] for e in found["config"]] == ["optim.lr", "seed"]
    assert found["results"]["b"]["test_error"] == pytest.approx(summaries[1]["test_error"], rel=1e-6)  # float32 logs


def test_diff_of_a_run_with_its_copy_says_same_config(cli, study):
    a = _run(study, 14, 0)
    shutil.copytree(a, study.parent / "copy")
    result = cli("diff", str(a), str(study.parent / "copy"))
    assert result.exit_code == 0 and "the same config" in result.output, result.output


def test_diff_refuses_a_path_that_is_not_a_run_and_a_damaged_run(cli, study):
    _one_error_line(cli("diff", str(study), str(_run(study, 8, 0))), "is not a run directory (no config.yaml)")
    _one_error_line(cli("diff", str(_run(study, 8, 0)), "nowhere"), "nowhere is not a run directory")
    damaged = _run(study, 14, 0)
    (damaged / "summary.json").write_text("{not json")
    _one_error_line(cli("diff", str(_run(study, 8, 0)), str(damaged)), f"{damaged} is damaged")


@pytest.mark.parametrize("columns", [80, 200])
def test_diff_fits_the_terminal_with_every_key_whole(cli, study, monkeypatch, columns):
    _terminal(monkeypatch, columns)
    result = cli("diff", str(_run(study, 8, 0)), str(_run(study, 14, 0)))
    assert result.exit_code == 0, result.output
    assert max(map(len, result.output.splitlines())) <= max(columns, len(f"A: {_run(study, 8, 0)}"))
    keys = [cells[0] for cells in map(_cells, result.output.splitlines()) if cells]
    assert {"model.depth", "test err %", "train loss"} <= set(keys), result.output


def test_diff_help_is_not_cut_at_80_columns():
    from typer.testing import CliRunner

    from depthstudy.cli import app

    output = CliRunner().invoke(app, ["diff", "--help"], terminal_width=80, env={"COLUMNS": "80"}).output
    assert "…" not in output and max(map(len, output.splitlines())) <= 80
    assert "depthstudy diff runs/quick/plain-d44-wd0.0001-s{0,1}" in output  # an example whole, as it runs


def test_runs_help_names_what_where_and_sort_take():
    from typer.testing import CliRunner

    from depthstudy.cli import app

    output = " ".join(CliRunner().invoke(app, ["runs", "--help"], terminal_width=80, env={"COLUMNS": "80"}).output.split())
    assert "--where KEY=VALUE" in output and "--sort KEY" in output and "list[str]" not in output
