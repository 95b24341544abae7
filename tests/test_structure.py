"""The house rules the architecture rests on: layers without import cycles, run listing and reporting
without torch, functions that fit on a screen."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).parents[1] / "depthstudy"


def imports_of(path: Path) -> set[str]:
    """depthstudy modules a module imports, at module level or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("depthstudy"):
            if node.module == "depthstudy":
                found |= {alias.name for alias in node.names}
            else:
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("depthstudy.")}
    return found - {path.stem}


def test_no_import_cycle_even_through_deferred_imports():
    graph = {p.stem: imports_of(p) for p in PACKAGE.glob("*.py")}
    done, on_path = set(), []

    def visit(module):
        if module in on_path:
            raise AssertionError("import cycle: " + " -> ".join(on_path[on_path.index(module):] + [module]))
        if module in done or module not in graph:
            return
        on_path.append(module)
        for dep in sorted(graph[module]):
            visit(dep)
        on_path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_reading_runs_and_planning_sweeps_do_not_import_torch(tmp_path):
    code = ("import sys, depthstudy.report, depthstudy.sweep, depthstudy.runs, depthstudy.rundir, depthstudy.config; "
            "loaded = [m for m in ('torch', 'matplotlib') if m in sys.modules]; assert not loaded, loaded")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # and calling them: plan a sweep (no estimate), list and load the runs a directory holds
    run = tmp_path / "runs" / "other" / "plain-d20-wd0.0001-s0"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text("model: {depth: 20, shortcut: none}\nseed: 0\n")
    (run / "summary.json").write_text('{"status": "finished", "iterations": 1}')
    code = (f"import sys; from pathlib import Path; from depthstudy import runs, sweep; root = Path({str(tmp_path)!r}); "
            f"assert len(sweep.plan(['experiment=quick', 'out_dir=' + str(root / 'runs')])) == 12; "
            "assert len(runs.list_runs(root)) == 1 and len(runs.load_runs(root)) == 1; "
            "assert 'torch' not in sys.modules, 'torch'")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_no_function_is_longer_than_80_lines():
    long = []
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 80:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
