"""The Python API as a notebook uses it: import depthstudy, train, load the runs as DataFrames, report."""

import pytest

import depthstudy
from depthstudy import events
from depthstudy.errors import UsageError
from helpers import TINY


@pytest.fixture
def two_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    summaries = [depthstudy.train_run([*TINY, "model.depth=8", f"model.shortcut={s}", "name=api"]) for s in ("none", "A")]
    return tmp_path / "runs" / "api", summaries


def test_train_returns_the_runs_summary(two_runs):
    root, summaries = two_runs
    assert [s["status"] for s in summaries] == ["finished", "finished"]
    assert {s["run_dir"].split("/")[-1].split("-s0")[0] for s in summaries} == {"plain-d8-wd0.0001", "resA-d8-wd0.0001"}
    again = depthstudy.train_run([*TINY, "model.depth=8", "model.shortcut=A", "name=api"])  # finished: not trained again
    assert again == summaries[1]


def test_load_runs_is_one_tidy_row_per_run(two_runs):
    root, summaries = two_runs
    runs = depthstudy.load_runs(root).set_index("family")
    assert sorted(runs.index) == ["plain", "residual (A)"]
    res = runs.loc["residual (A)"]
    assert res["model.depth"] == 8 and res["status"] == "finished" and res["schedule.milestones"] == [4]
    assert res["test_error"] == pytest.approx(summaries[1]["test_error"], rel=1e-6)
    assert res["params"] == summaries[1]["params"] and res["wall_time_s"] == summaries[1]["wall_time_s"]
    for column in ("train_loss", "val_loss", "images_per_s", "diverged_at", "path"):
        assert column in runs.columns


def test_load_curves_is_long_form_with_layer_index(two_runs):
    root, _ = two_runs
    curves = depthstudy.load_curves(root)
    assert {"run", "model.depth", "model.shortcut", "seed", "tag", "quantity", "index", "step", "value",
            "wall_time"} <= set(curves.columns)
    errors = curves[curves.tag == "train/error"]
    assert sorted(errors.step.unique()) == [2, 4, 6] and errors["index"].isna().all()
    responses = curves[curves.quantity == events.RESPONSE_PREFIX.rstrip("/")]
    assert sorted(responses["index"].unique()) == list(range(7))  # depth 8: 7 3x3 layers, numbered from 0
    assert (curves.wall_time > 1.7e9).all()


def test_report_writes_figures_and_bad_input_raises_the_clis_message(two_runs, tmp_path):
    root, _ = two_runs
    result = depthstudy.write_report(root, out=tmp_path / "rep")
    assert (tmp_path / "rep" / "depth.png").exists() and (tmp_path / "rep" / "report.md").exists()
    assert result["figures"]
    with pytest.raises(UsageError, match="model.depth=9 is not of the form 6n\\+2"):
        depthstudy.train_run(["model.depth=9"])
    with pytest.raises(UsageError, match="does not exist"):
        depthstudy.load_runs(tmp_path / "nowhere")


def test_the_readmes_python_example_runs_as_printed(tmp_path, monkeypatch):
    """Its train_run line as printed (100 iterations), then its load_curves columns as the README lists them."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(tmp_path)
    line = next(x for x in block.splitlines() if x.startswith("summary = depthstudy.train_run("))
    namespace = {"depthstudy": depthstudy}
    exec(line.replace("])", ', "trainer.progress=none", "trainer.threads=1"])'), namespace)  # noqa: S102
    assert namespace["summary"]["status"] == "finished" and namespace["summary"]["iterations"] == 100
    listed = re.search(r"columns: (.*?)\n(#.*?)\n", block, re.S)
    columns = [c.strip() for c in (listed.group(1) + listed.group(2).lstrip("# ")).split(",")]
    curves = depthstudy.load_curves(tmp_path / "runs" / "default")
    assert list(curves.columns) == [c for c in columns if not c.startswith("(")]  # one run: no other key varies
