"""Sweeps through the real CLI and Hydra's real launchers, on digits at smoke size."""

import re

import pytest

from helpers import TINY, summary, sweep_jobs

GRID = ["model.depth=8,14", "model.shortcut=none,A"]
NAMES = {"plain-d8-wd0.0001-s0", "resA-d8-wd0.0001-s0", "plain-d14-wd0.0001-s0", "resA-d14-wd0.0001-s0"}
TINY_SWEEP = TINY + ["name=grid"]


def sweep_dir(tmp_path):
    return tmp_path / "runs" / "grid"


def run_names(tmp_path):
    return {re.match(r".*?-s\d+", p.name)[0] for p in sweep_dir(tmp_path).iterdir() if p.is_dir() and not p.name.startswith(".")}


def test_dry_run_lists_exactly_the_grid(cli, tmp_path):
    result = cli("sweep", *GRID, "seed=0,1", "name=grid", "--dry-run", "--no-estimate")  # estimates: below
    assert result.exit_code == 0, result.output
    assert "8 runs (dry run" in result.output
    for name in NAMES:
        assert name in result.output and name.replace("-s0", "-s1") in result.output
    assert not (tmp_path / "runs").exists()


def test_another_sweeper_is_refused_in_one_line(cli, tmp_path):
    result = cli("sweep", "model.depth=8", "seed=0,1", "hydra/sweeper=basic", *TINY_SWEEP)
    assert result.exit_code == 2 and "not BasicSweeper; leave hydra/sweeper out" in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()


def test_a_bad_value_anywhere_in_the_grid_stops_before_training(cli, tmp_path):
    result = cli("sweep", "model.depth=20,21", *TINY_SWEEP)
    assert result.exit_code == 2 and "model.depth=21 is not of the form 6n+2" in result.output
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]],
                         ids=["basic", "joblib"])
def test_sweep_trains_every_point_then_skips_them(cli, tmp_path, launcher):
    result = cli("sweep", *GRID, *TINY_SWEEP, *launcher)
    assert result.exit_code == 0, result.output
    assert run_names(tmp_path) == NAMES
    for run in sweep_dir(tmp_path).iterdir():
        if (run / "config.yaml").exists():
            assert summary(run)["status"] == "finished"
    assert "sweep results" in result.output and "sweep: 4/4 done, 0 running" in result.output
    again = cli("sweep", *GRID, *TINY_SWEEP, *launcher)
    assert again.exit_code == 0 and "4 already done, 0 to train" in again.output


def test_a_partly_finished_sweep_launches_only_its_unfinished_runs(cli, tmp_path):
    """On a cluster a launched finished run would wait in the queue only to say it is finished (test_slurm: the
    same on a real SLURM)."""
    import shutil

    launcher = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"]

    assert cli("sweep", *GRID, *TINY_SWEEP, *launcher).exit_code == 0
    gone = next(p for p in sweep_dir(tmp_path).iterdir() if p.name.startswith("resA-d14"))
    shutil.rmtree(gone)
    # Hydra rewrites a launched job's .hydra/ files before the job looks at its run
    written = {p: p.stat().st_mtime_ns for p in sweep_dir(tmp_path).glob("*/.hydra/hydra.yaml")}
    again = cli("sweep", *GRID, *TINY_SWEEP, *launcher)
    assert again.exit_code == 0, again.output
    assert "3 already done, 1 to train" in again.output
    assert len(written) == 3 and {p: p.stat().st_mtime_ns for p in written} == written  # none launched again
    assert summary(gone)["status"] == "finished" and run_names(tmp_path) == NAMES


def test_submitit_local_launcher(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = cli("sweep", "model.depth=8", "model.shortcut=none,A", *TINY_SWEEP,
                 "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=5")
    assert result.exit_code == 0, result.output
    assert run_names(tmp_path) == {"plain-d8-wd0.0001-s0", "resA-d8-wd0.0001-s0"}
    assert all(summary(p)["status"] == "finished" for p in sweep_dir(tmp_path).iterdir() if p.name.startswith(("plain", "res")))


def test_a_slurm_warning_signal_as_long_as_the_time_limit_is_refused_before_anything_is_submitted(cli, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    result = cli("sweep", "model.depth=8", "seed=0,1", *TINY_SWEEP, "hydra/launcher=submitit_slurm",
                 "hydra.launcher.timeout_min=1", "--dry-run", "--no-estimate")  # submitit's signal_delay_s=120
    assert result.exit_code == 2, result.output
    assert "signal_delay_s=120" in result.output and "lower signal_delay_s" in " ".join(result.output.split())
    assert not (tmp_path / "runs").exists()


def test_a_diverging_run_is_recorded_and_the_sweep_goes_on(cli, tmp_path):
    result = cli("sweep", "model.depth=8", "optim.lr=0.1,1e12", "model.shortcut=none", *TINY_SWEEP)
    assert result.exit_code == 0, result.output
    runs = {p.name: summary(p) for p in sweep_dir(tmp_path).iterdir() if (p / "summary.json").exists()}
    statuses = sorted(s["status"] for s in runs.values())
    assert statuses == ["diverged", "finished"]
    diverged = next(s for s in runs.values() if s["status"] == "diverged")
    assert 1 <= diverged["diverged_at"] <= 6
    assert "diverged @" in result.output


@pytest.mark.parametrize("grid", [
    ["experiment=quick"],
    ["experiment=identity_variants"],
    ["model=resnet,mlp", "model.depth=8,14", "optim.lr=0.1,0.05", "hydra/launcher=joblib",
     "hydra.launcher.n_jobs=2", "trainer.threads=1"],
    ["model.depth=8,14", "model={depth:20}", "~optim.lr", "++trainer.threads=1"],
], ids=["quick", "variants", "groups-values-hydra", "order-sensitive"])
def test_planned_configs_equal_hydras_own_composition(grid):
    """The planner composes each set of group choices once; every job must still equal a full composition."""
    from omegaconf import OmegaConf

    from depthstudy import config

    jobs = sweep_jobs(grid)
    for job, fast in zip(jobs, config.compose_jobs(jobs)):
        full = config.compose(job, with_hydra=True)
        assert OmegaConf.to_container(fast) == OmegaConf.to_container(full), job
        assert fast.hydra.sweep.subdir == full.hydra.sweep.subdir


def test_a_failed_run_makes_the_sweep_exit_1_naming_it_after_the_others_finish(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("DEPTHSTUDY_DATA", str(tmp_path / "no-data"))  # CIFAR-10 is missing: that run fails
    result = cli("sweep", "model.depth=8", "data=cifar10,digits", *TINY_SWEEP)
    assert result.exit_code == 1, result.output
    runs = {p.name: summary(p) for p in sweep_dir(tmp_path).iterdir() if (p / "summary.json").exists()}
    assert sorted(s["status"] for s in runs.values()) == ["failed", "finished"]  # the other run still trained
    assert "1 of 2 runs did not finish" in result.output and "failed (DataError: cifar10 not found" in result.output


@pytest.mark.parametrize("grid", [["seed=0,abc"], ["data.val_size=100,1797"], ["trainer.device=cpu,cuda"],
                                  ["optim.lr=0.1,inf"], ["data.split_seed=0,true"]])
def test_a_bad_grid_point_stops_the_sweep_before_any_training_with_one_line(cli, tmp_path, grid):
    import torch

    if "trainer.device=cpu,cuda" in grid and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli("sweep", "model.depth=8", *grid, *TINY_SWEEP)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "runs").exists()


def test_a_sweep_over_a_directory_of_another_experiment_is_refused_before_training(cli, tmp_path):
    assert cli("sweep", "model.depth=8", "seed=0", *TINY_SWEEP, "hydra.sweep.subdir=fixed").exit_code == 0
    result = cli("sweep", "model.depth=8", "seed=0", *TINY_SWEEP, "hydra.sweep.subdir=fixed", "optim.lr=0.05")
    assert result.exit_code == 2 and "holds a run with a different config (optim.lr: 0.1 -> 0.05)" in result.output


def test_a_running_run_whose_process_died_shows_as_crashed(cli, tmp_path):
    import json
    import subprocess
    import sys

    assert cli("sweep", "model.depth=8", "seed=0", *TINY_SWEEP).exit_code == 0
    (run,) = [p for p in sweep_dir(tmp_path).iterdir() if p.is_dir() and not p.name.startswith(".")]
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer exists
    (run / ".lock").write_text(f"{dead.pid}@{__import__('socket').gethostname()}")
    (run / "summary.json").write_text(json.dumps({"status": "running", "iterations": 3}))
    result = cli("sweep", "model.depth=8", "seed=0", *TINY_SWEEP, "--dry-run")
    assert "crashed" in result.output


def test_dry_run_estimates_each_run_from_a_calibration_and_caches_it(cli, tmp_path, monkeypatch):
    import json

    from depthstudy.estimate import duration, estimate_runs
    from depthstudy.config import compose, without_hydra

    from depthstudy import estimate

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(estimate, "busy_cpu", lambda: "load average 3.0 on 2 cores")
    said = []
    estimate_runs([without_hydra(compose([*TINY, "model.depth=8"]))], said.append)
    assert "the machine is busy (load average 3.0 on 2 cores)" in said[0]
    assert not (tmp_path / "cache" / "depthstudy" / "step_times.json").exists()  # a busy machine's timings not kept
    monkeypatch.setattr(estimate, "busy_cpu", lambda: None)  # as on a quiet machine, whatever this one's load
    result = cli("sweep", *GRID, *TINY_SWEEP, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "est. time" in result.output and "estimated:" in result.output and "calibration just now" in result.output
    assert result.output.count("calibrating") == 4  # one per distinct net
    # a run's start-up: two real one-iteration runs in a child process, once per machine, data set and device
    assert result.output.count("measuring a run's start-up") == 1
    assert re.search(r"\d+\.\d s of start-up per run and \d+\.\d s of imports per process", " ".join(result.output.split()))
    cache = json.loads((tmp_path / "cache" / "depthstudy" / "step_times.json").read_text())
    startup = [v for k, v in cache.items() if '"startup": "digits"' in k]
    assert len(cache) == 5 and len(startup) == 1 and all(t >= 0 for t in startup[0])
    assert all(v > 0 for k, v in cache.items() if "startup" not in k)
    again = cli("sweep", *GRID, *TINY_SWEEP, "--dry-run")
    assert "calibrating" not in again.output and "measuring" not in again.output
    assert "cached calibration" in again.output
    # the arithmetic: iterations x step time + evaluations x held-out images at a third of a trained image's cost
    cfg = without_hydra(compose([*TINY, "model.depth=8", "trainer.eval_every=2"]))
    (estimate,) = estimate_runs([cfg])
    held_out = cfg.data.val_size + cfg.data.test_size
    expected = 6 * estimate.step_s + 3 * held_out * estimate.step_s / 32 / 3  # evaluations at 2, 4 and the end (6)
    assert estimate.cached and estimate.seconds == pytest.approx(expected)
    assert [duration(s) for s in (12, 200, 7200, 200000)] == ["12 s", "3.3 min", "2.0 h", "2.3 days"]


def test_a_sweep_runs_log_typed_hparams_and_a_layout(cli, tmp_path):
    """(What TensorBoard makes of the sweep's HPARAMS columns: tests/test_tensorboard.py.)"""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.custom_scalar import layout_pb2
    from tensorboard.plugins.hparams import api_pb2, plugin_data_pb2

    assert cli("sweep", *GRID, *TINY_SWEEP).exit_code == 0
    run = next(p for p in sweep_dir(tmp_path).iterdir() if p.name.startswith("resA-d14"))
    acc = EventAccumulator(str(run))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["trainer.channels_last"].WhichOneof("kind") == "bool_value"  # not 1.0000
    assert start.hparams["model.depth"].string_value.strip() == "14"
    end = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_end_info"]).session_end_info
    assert end.status == api_pb2.Status.Value("STATUS_SUCCESS")
    layout = layout_pb2.Layout()
    layout.ParseFromString(acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0])
    assert layout.category[0].title.startswith("Figure 6") and layout.category[-1].closed
