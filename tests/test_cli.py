import pytest

from helpers import TINY


@pytest.mark.parametrize("override,message", [
    ("model.depth=21", "model.depth=21 is not of the form 6n+2"),
    ("model.depth=0", "valid depths are 8, 14, 20"),
    ("model.depth=-8", "not of the form 6n+2"),
    ("model.shortcut=D", "choose one of: none, A, B, C"),
    ("optim.weight_decay=-1e-4", "optim.weight_decay=-0.0001 must be a number >= 0"),
    ("optim.lr=0", "optim.lr=0 must be a number > 0"),
    ("optim.lr=-0.1", "optim.lr=-0.1 must be a number > 0"),
    ("optim.batch_size=0", "optim.batch_size=0 must be an integer > 0"),
    ("data.name=mnist", "data.name='mnist' is not a known data set; choose one of: digits, cifar10, cifar100"),
    ("data=mnist", "data=mnist is not an option of data"),
    ("model.nonsense=3", "model.nonsense is not a config key"),
    ("model.depth=", "model.depth= is not of the form 6n+2"),
    ("model.depth=[20", "override_grammar"),
    ("trainer.fused_optimizer=maybe", "trainer.fused_optimizer='maybe' must be true or false"),
    ("schedule.milestones=[0.5,0.5]", "two at one iteration would divide the learning rate twice"),  # was: lr / 100
    ("out_dir=", "out_dir is empty"),  # was: runs written under /
    ("name=../up", "must be a relative path inside out_dir"),
    ("run_name=../../escape", "run_name='../../escape' must be one directory name"),  # was: written outside out_dir
    ("seed=99999999999999999999", "must be an integer from 0 to 4294967295"),  # was: a failed run directory
])
def test_bad_input_is_one_line_and_exit_code_2(cli, tmp_path, override, message):
    result = cli("train", *TINY, override)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # nothing written


def test_plus_experiment_is_accepted(cli, tmp_path):
    result = cli("sweep", "+experiment=quick", "--dry-run", "--no-estimate")
    assert result.exit_code == 0, result.output


def test_help_lists_the_commands(cli):
    result = cli("--help")
    for command in ("train", "sweep", "config", "runs", "report", "bench"):
        assert command in result.output
    assert "depthstudy sweep experiment=quick" in result.output  # where a newcomer starts
    assert "model.depth=56" in cli("train", "--help").output


@pytest.mark.parametrize("command", ["train", "sweep", "config", "eval", "report", "bench"])
def test_every_example_in_help_survives_an_80_column_terminal(command):
    """Copied from the terminal, each example runs as printed: the command whole on one line."""
    from typer.main import get_command
    from typer.testing import CliRunner

    from depthstudy.cli import app

    epilog = get_command(app).commands[command].epilog or ""
    examples = [line.strip() for line in epilog.split("\n") if line.strip().startswith("depthstudy ")]
    output = CliRunner().invoke(app, [command, "--help"], terminal_width=80, env={"COLUMNS": "80"}).output
    lines = [line.strip(" │") for line in output.splitlines()]
    assert all(len(line) <= 80 for line in output.splitlines())
    for example in examples:
        assert example in lines, f"{example!r} is cut at 80 columns"


@pytest.mark.parametrize("group,options", [
    ("model", ["resnet", "mlp"]), ("data", ["digits", "cifar10", "cifar100"]), ("optim", ["sgd"]),
    ("schedule", ["short", "he2015", "he2016"]), ("trainer", ["default"]),
    ("experiment", ["quick", "lecture", "he2015", "he2015_val", "he2015_fig6", "he2015_table6", "shortcuts", "weight_decay", "mlp_depth",
                    "responses", "identity_variants", "he2015_fig6_right", "he2016", "he2016_units", "he2016_deep",
                    "he2016_cifar100"]),
])
def test_every_config_group_composes_and_validates(group, options):
    from depthstudy.config import load_checked

    for option in options:
        _, cfg = load_checked([f"{group}={option}"])
        assert cfg.model.depth > 0


def test_config_groups_on_disk_are_all_tested():
    from depthstudy.config import CONFIG_DIR as root
    found = {p.parent.name + "/" + p.stem for p in root.glob("*/*.yaml")}
    tested = {"model/resnet", "model/mlp", "data/digits", "data/cifar10", "data/cifar100", "optim/sgd", "schedule/short",
              "schedule/he2015", "trainer/default", "experiment/quick", "experiment/he2015",
              "experiment/he2015_fig6", "experiment/he2015_table6", "experiment/shortcuts", "experiment/weight_decay",
              "experiment/mlp_depth", "experiment/responses", "experiment/identity_variants", "experiment/he2015_val",
              "experiment/lecture", "schedule/he2016", "experiment/he2015_fig6_right", "experiment/he2016",
              "experiment/he2016_units", "experiment/he2016_deep", "experiment/he2016_cifar100"}
    assert found <= tested, f"add {found - tested} to test_every_config_group_composes_and_validates"


def test_python_dash_m_works():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "depthstudy", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "sweep" in out.stdout


def test_every_config_group_is_packaged():
    """`pip install .` ships only the config folders pyproject.toml lists."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).parents[1]
    packages = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    groups = {p.name for p in (root / "configs").iterdir() if p.is_dir() and not p.name.startswith("__")}
    assert {f"depthstudy.configs.{g}" for g in groups} <= set(packages)


def test_config_prints_the_composed_config_without_training(cli, tmp_path):
    result = cli("config", "experiment=he2015", "model.depth=110")
    assert result.exit_code == 0, result.output
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(result.output)
    assert cfg.model.depth == 110 and cfg.data.val_size == 0 and cfg.schedule.warmup.max_iterations is None
    assert not (tmp_path / "runs").exists()
    # the directory `depthstudy train` with the same arguments writes to, slug and hash included
    args = ["model.depth=8", "optim.lr=0.05", "schedule.iterations=6", "schedule.milestones=[4]", "trainer.progress=none"]
    shown = cli("config", *args).output.strip().splitlines()[-1].removeprefix("# run directory: ")
    assert cli("train", *args).exit_code == 0
    assert shown.startswith("runs/default/resA-d8-wd0.0001-s0-lr0.05-") and (tmp_path / shown / "summary.json").exists()
    groups = cli("config", "--groups").output
    assert "experiment: he2015, he2015_fig6, he2015_fig6_right, he2015_table6, he2015_val, he2016," in groups and "model: mlp, resnet" in groups
    ignored = cli("config", "--groups", "model.depth=21")  # was: the overrides silently ignored
    assert ignored.exit_code == 2 and "--groups lists every config group and takes no overrides" in ignored.output
    empty = cli("runs", str(tmp_path / "nothing-here-yet"))
    assert empty.exit_code == 2  # not a directory
    (tmp_path / "empty").mkdir()
    assert "no runs under" in cli("runs", str(tmp_path / "empty")).output  # was: an empty table


def test_version_and_unknown_options_list_every_choice(cli):
    from depthstudy import __version__

    assert cli("--version").output.strip() == f"depthstudy {__version__}"
    result = cli("train", "data=imagenet")
    assert result.exit_code == 2 and "(options: cifar10, cifar100, digits)" in result.output


def test_a_shortened_run_keeps_its_lr_drops_or_is_refused(cli):
    result = cli("train", "schedule.iterations=200")
    assert result.exit_code == 2 and "lie at or beyond schedule.iterations=200" in result.output
    from depthstudy.config import compose
    from depthstudy.optim import Schedule

    s = compose(["schedule.iterations=200", "schedule.milestones=[0.5,0.75]"]).schedule
    assert Schedule(s, 0.1, 20).milestones == [100, 150]


@pytest.mark.parametrize("args, line", [
    (["model.dept=20"], "model.dept is not a config key; did you mean model.depth?"),
    (["+model.dept=20"], "model.dept is not a config key; did you mean model.depth?"),  # Hydra's advice, taken
    (["++trainer.threds=2"], "trainer.threds is not a config key; did you mean trainer.threads?"),
    (["--dryrun"], "--dryrun is not an option of `depthstudy sweep`; did you mean --dry-run?"),
])
def test_a_mistyped_key_or_option_is_one_line_that_names_the_right_one(cli, tmp_path, args, line):
    """Not Hydra's "append it with +" (which trained with a key nothing reads) nor its grammar error."""
    result = cli("sweep", *args, "--no-estimate")
    assert result.exit_code == 2 and line in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()


def test_plus_on_a_key_the_chosen_group_has_is_that_key(cli):
    result = cli("config", "model=mlp", "++model.widths=[64,64]")  # the default model (resnet) has no widths
    assert result.exit_code == 0 and "- 64" in result.output


def test_a_comma_list_given_to_train_points_to_sweep(cli):
    result = cli("train", "model.depth=20,32")
    assert result.exit_code == 2 and "use `depthstudy sweep model.depth=20,32`" in result.output


def test_runs_lists_every_run_with_status_and_finals(cli, tmp_path, monkeypatch):
    import json
    import socket
    import subprocess
    import sys

    from helpers import only_run

    assert cli("train", *TINY).exit_code == 0
    run = only_run(tmp_path)
    rows = json.loads(cli("runs", "runs", "--json").output)
    assert [(r["run"], r["status"], r["iterations"], r["total_iterations"]) for r in rows] == [(run.name, "finished", 6, 6)]
    assert rows[0]["test_error"] == json.loads((run / "summary.json").read_text())["test_error"]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".lock").write_text(f"{dead.pid}@{socket.gethostname()}")
    (run / "summary.json").write_text(json.dumps({"status": "running", "iterations": 3, "total_iterations": 6}))
    monkeypatch.setenv("COLUMNS", "200")  # every column: the run's name is long (at 80, only the status fits beside it)
    table = cli("runs", "runs")
    assert table.exit_code == 0 and "crashed" in table.output and "3/6" in table.output


def test_eval_says_in_one_line_what_it_cannot_do(cli, tmp_path):
    from helpers import only_run

    assert cli("train", *TINY).exit_code == 0
    run = only_run(tmp_path)
    for args, said in ((["--device", "tpu"], "--device tpu is unknown; choose auto, cpu, cuda or cuda:N"),  # was torch's list
                       ([], "checkpoint.pt is unreadable: this run's trained weights are lost"),
                       ([], "it was deleted after the run ended")):  # was: "never reached its first checkpoint"
        if "unreadable" in said:
            (run / "checkpoint.pt").write_bytes(b"torn")
        elif "deleted" in said:
            (run / "checkpoint.pt").unlink()
        result = cli("eval", str(run), *args)
        assert result.exit_code == 2 and said in result.output and len(result.output.strip().splitlines()) == 1, \
            result.output


def test_eval_reproduces_the_runs_final_errors_and_leaves_the_run_untouched(cli, tmp_path):
    import json

    from helpers import only_run, summary

    assert cli("train", *TINY, "data.test_size=200").exit_code == 0
    run = only_run(tmp_path)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    result = cli("eval", str(run), "--splits", "train,val,test", "--json")
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)
    final = summary(run)
    assert (row["iterations"], row["total_iterations"]) == (6, 6)
    assert row["val_error"] == final["val_error"] and row["test_error"] == final["test_error"]
    assert 0 <= row["train_error"] <= 100  # all training images in eval mode: not the summary's running window
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before
    text = cli("eval", str(run))
    assert text.exit_code == 0 and f"test {final['test_error']:.2f}%" in text.output and "[6/6 it]" in text.output
    for args, message in ((["runs"], "is not a run directory"), ([str(run), "--splits", "tset"], "unknown split 'tset'"),
                          ([str(run), "--splits", ""], "--splits is empty")):
        bad = cli("eval", *args)
        assert bad.exit_code == 2 and message in bad.output and len(bad.output.strip().splitlines()) == 1


def test_train_says_what_it_does_first_and_where_the_run_is_last(cli, tmp_path):
    from helpers import only_run

    args = [a for a in TINY if not a.startswith("trainer.progress")] + ["trainer.progress=lines"]
    lines = cli("train", *args).output.strip().splitlines()
    run = only_run(tmp_path)
    assert lines[0] == f"{run.name}: starting (importing torch, loading digits, building the net)"
    assert lines[-2] == f"run directory: {run}"
    assert lines[-1].split() == ["next:", "tensorboard", "--logdir", str(run.parent), "|", "depthstudy", "report",
                                 str(run.parent), "|", "depthstudy", "runs", str(run.parent)]
