"""Several runs per GPU (trainer.jobs_per_gpu): the decision from bench --concurrent measurements, and a joblib
sweep that honours it, with the GPUs faked (this machine has none; the runs themselves train on the CPU)."""

import pytest
from omegaconf import OmegaConf

from helpers import TINY
from depthstudy import packing

FAKE = "Fake GPU 80GB"


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # no other test's measurements


@pytest.fixture
def two_fake_gpus(monkeypatch):
    monkeypatch.setattr(packing, "visible_gpus", lambda: 2)
    monkeypatch.setattr(packing, "gpu_name", lambda: FAKE)


def test_best_k_needs_a_real_gain():
    assert packing.best_k({1: 100.0, 2: 180.0, 4: 260.0}) == 4
    assert packing.best_k({1: 100.0, 2: 105.0}) == 1  # 5% more is not worth sharing a GPU
    assert packing.best_k({1: 100.0, 2: 190.0, 4: 150.0}) == 2  # past the best, more runs only contend


def test_a_measurement_is_kept_and_the_nearest_net_decides():
    key = packing.setting_key(FAKE, "fp32", "cuda_graphs")
    packing.record(key, "resnet20", 20, {1: 30000.0, 2: 52000.0, 4: 81000.0})
    packing.record(key, "resnet110", 110, {1: 9000.0, 2: 9500.0})
    assert packing.measured_k(key, 32)[0] == 4
    k, why, gain = packing.measured_k(key, 100)
    assert k == 1 and "resnet110" in why and gain == 1.0
    assert packing.measured_k(packing.setting_key(FAKE, "bf16", "cuda_graphs"), 20) is None  # another setting


def test_a_joblib_sweep_runs_k_jobs_on_each_gpu(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(packing, "visible_gpus", lambda: 1)
    monkeypatch.setattr(packing, "gpu_name", lambda: FAKE)
    key = packing.setting_key(FAKE, "fp32", "cuda_graphs")  # trainer.cuda_graphs=auto: on for CUDA
    packing.record(key, "resnet8", 8, {1: 1000.0, 2: 1900.0, 4: 1800.0})
    result = cli("sweep", "model.depth=8", "seed=0,1", *TINY, "name=packed", "hydra/launcher=joblib")
    assert result.exit_code == 0, result.output
    assert "sweep: 2 runs at once on each of 1 GPU (bench --concurrent, resnet8: 2 at once 1.90x" in result.output
    sweep = OmegaConf.load(tmp_path / "runs" / "packed" / "multirun.yaml")
    assert sweep.hydra.launcher.n_jobs == 2  # 2 per GPU x 1 GPU
    runs = [p for p in (tmp_path / "runs" / "packed").iterdir() if (p / "config.yaml").exists()]
    assert len(runs) == 2 and all(OmegaConf.load(p / "config.yaml").trainer.jobs_per_gpu == 2 for p in runs)
    assert not any("jobs_per_gpu" in p.name for p in runs)  # where it runs is not part of the run's name
    # with 2 GPUs the same sweep takes 2 x 2 workers (planned, not run: 4 workers on 2 cores are slow)
    monkeypatch.setattr(packing, "visible_gpus", lambda: 2)
    from depthstudy.sweep import _gpu_jobs, plan

    gpu_plan = _gpu_jobs(plan(["model.depth=8", "seed=0,1,2,3", "hydra/launcher=joblib"]), [])
    assert (gpu_plan.n_jobs, gpu_plan.overrides) == (4, ["trainer.jobs_per_gpu=2"])
    assert "each of 2 GPUs" in gpu_plan.line and gpu_plan.speedup == pytest.approx(2 * 1.9)  # 2 GPUs x the gain


def test_without_a_measurement_one_job_per_gpu_and_the_way_to_measure(cli, two_fake_gpus):
    result = cli("sweep", "model.depth=8", "seed=0,1", "name=unmeasured", "hydra/launcher=joblib", "--dry-run",
                 "--no-estimate")
    assert result.exit_code == 0, result.output
    assert "1 run at once on each of 2 GPUs (nothing measured on Fake GPU 80GB" in result.output
    assert "depthstudy bench --concurrent 1,2,4 --precision fp32` measures it" in " ".join(result.output.split())


def test_given_settings_win(cli, two_fake_gpus):
    result = cli("sweep", "model.depth=8", "seed=0,1", "trainer.jobs_per_gpu=3", "hydra/launcher=joblib", "--dry-run",
                 "--no-estimate")
    assert "3 runs at once on each of 2 GPUs (trainer.jobs_per_gpu)" in result.output
    result = cli("sweep", "model.depth=8", "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=1", "--dry-run",
                 "--no-estimate")
    assert "sweep: 1 run at a time on 2 GPUs (hydra.launcher.n_jobs)" in result.output  # the user's choice
    result = cli("sweep", "model.depth=8", "seed=0,1", "trainer.jobs_per_gpu=0", "--dry-run")
    assert result.exit_code == 2 and "trainer.jobs_per_gpu=0: auto or an integer > 0" in result.output


def test_jobs_of_a_sweep_go_to_the_gpu_running_the_fewest(monkeypatch):
    """Real lock files. job_num % GPUs would send job 3 to GPU 1, busy, while GPU 0 is idle."""
    from contextlib import ExitStack

    from depthstudy.interrupt import SWEEP_PID_ENV

    monkeypatch.setattr(packing, "visible_gpus", lambda: 2)
    monkeypatch.setenv(SWEEP_PID_ENV, f"test-{id(monkeypatch)}")  # as in a joblib worker of a sweep
    with ExitStack() as job0, ExitStack() as job1:
        assert job0.enter_context(packing.gpu_slot(0, "auto")) == 0
        assert job1.enter_context(packing.gpu_slot(1, "auto")) == 1
        with packing.gpu_slot(2, "auto") as both_busy:
            assert both_busy == 0  # GPU 0's second slot
        job0.close()  # job 0 (GPU 0) ends first; job 1 runs on
        with packing.gpu_slot(3, "auto") as job3:
            assert job3 == 0
    with packing.gpu_slot(None, "auto") as single, packing.gpu_slot(7, "cuda:1") as pinned:
        assert (single, pinned) == (None, 7)  # a single run, or a device the user chose: unchanged
    monkeypatch.delenv(SWEEP_PID_ENV)
    with packing.gpu_slot(3, "auto") as basic:
        assert basic == 3  # not a joblib worker (the basic launcher runs one job at a time)


def test_the_estimate_of_a_gpu_sweep_divides_by_the_measured_pace(two_fake_gpus):
    """Run time / (GPUs x the measured gain of k runs at once); not "one after another", not CPU workers."""
    from rich.console import Console

    from depthstudy.estimate import Estimate
    from depthstudy.sweep import GpuPlan, _say_total, plan

    runs = plan(["model.depth=8", "seed=0,1,2,3", "hydra/launcher=joblib"])
    for r in runs:
        r.estimate = Estimate(seconds=600.0, step_s=0.01, cached=True)
    console = Console(record=True, width=200)
    _say_total(runs, console, None, GpuPlan(2, 2, "measured", 1.5, []))
    text = console.export_text()
    assert "estimated: 13.3 min for 4 runs, 2 runs at once on each of 2 GPUs (1.50x one run's pace" in text  # 2400 / 3
    console = Console(record=True, width=200)
    _say_total(runs, console, None, GpuPlan(3, 2, "trainer.jobs_per_gpu", None, []))  # 2400 s / 2 GPUs
    assert "estimated: 20.0 min for 4 runs, 3 runs at once on each of 2 GPUs (their gain on a GPU not measured" in (
        console.export_text())
    # the command line's n_jobs: its runs spread over the GPUs, never more at once than it says (not CPU workers)
    for given, minutes in ((1, "40.0"), (3, "20.0")):
        console = Console(record=True, width=200)
        _say_total(runs, console, None, GpuPlan(2, 2, "hydra.launcher.n_jobs", None, [], given_jobs=given))
        assert f"estimated: {minutes} min for 4 runs, {given} run" in console.export_text()
