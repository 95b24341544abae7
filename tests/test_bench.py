"""`depthstudy bench`: through the real CLI on one small model, and the synthetic CIFAR files it writes."""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from helpers import write_cifar
from depthstudy import bench
from depthstudy.data import load_data

QUICK = ["bench", "--models", "resnet8", "--steps", "2", "--warmup", "1", "--rounds", "1"]


@pytest.fixture
def no_cifar(tmp_path, monkeypatch):
    """No real CIFAR-10 anywhere, and the synthetic copy goes to this test's own cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("DEPTHSTUDY_DATA", str(tmp_path / "no-data"))
    return tmp_path


def test_bench_json_has_both_paths_and_their_ratio(cli, no_cifar):
    result = cli(*QUICK, "--json", "out/bench.json")
    assert result.exit_code == 0, result.output
    assert "resnet8" in result.output and "% of matmul peak" in result.output
    out = json.loads((no_cifar / "out" / "bench.json").read_text())
    assert out["settings"]["data"] == "synthetic" and out["settings"]["models"] == ["resnet8"]
    (row,) = out["models"]
    ours, ref = row["ours"]["images_per_s"], row["reference"]["images_per_s"]
    assert ours > 0 and ref > 0
    assert row["ratio"] == pytest.approx(ours / ref)
    assert len(row["ours"]["step_s"]) == len(row["reference"]["step_s"]) == 2
    assert row["forward_macs_per_image"] == row["train_flop_per_image"] // 6 > 0
    assert out["matmul_peak_flop_per_s"]["fp32"] > 0 and 0 < row["ours_fraction_of_peak"]


def test_synthetic_cifar_reads_through_torchvision_and_depthstudy(no_cifar, skip_md5):
    root = bench.write_synthetic_cifar(bench.synthetic_root(), per_file=256)
    assert bench.write_synthetic_cifar(bench.synthetic_root(), per_file=256) == root  # cached: written once

    _, Unchecked = bench._cifar_classes()
    ds = Unchecked(str(root), train=True)
    assert ds.data.shape == (5 * 256, 32, 32, 3) and ds.data.dtype == np.uint8
    assert len(ds.classes) == 10 and set(ds.targets) <= set(range(10))
    image, label = ds[0]  # PIL image, as the reference's transforms expect
    assert image.size == (32, 32) and 0 <= label < 10

    # depthstudy's own loader (md5 check swapped out by skip_md5) reads the very same images.
    cfg = OmegaConf.create({"name": "cifar10", "root": str(root), "download": False, "val_size": 0,
                            "split_seed": 0, "normalize": "pixel_mean"})
    d = load_data(cfg)
    ours = bench.as_data(ds)
    assert d.train.images.shape == ours.train.images.shape == (5 * 256, 3, 32, 32)
    assert torch.equal(d.train.images.sort(0).values, ours.train.images.sort(0).values)  # load_data shuffles
    assert len(d.test) == 256


def test_real_cifar_is_used_when_torchvision_accepts_it(no_cifar, monkeypatch):
    from torchvision.datasets import cifar

    root = no_cifar / "real"
    write_cifar(root, n=16)  # tiny files: torchvision's md5 check rejects them
    said = []
    ds, kind, where = bench.training_set(root, said.append)
    assert kind == "synthetic" and where == bench.synthetic_root() and "not usable" in said[0]
    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: True)  # now they pass as real
    ds, kind, where = bench.training_set(root, said.append)
    assert kind == "cifar10" and where == root and len(ds) == 5 * 16


def test_bad_model_name_is_a_usage_error(cli, no_cifar):
    result = cli("bench", "--models", "resnet21")
    assert result.exit_code == 2 and "6n+2" in result.output
    result = cli("bench", "--models", "vgg16")
    assert result.exit_code == 2 and "resnetN or plainN" in result.output
    result = cli("bench", "--device", "gpu")
    assert result.exit_code == 2 and "choose auto, cpu, cuda" in result.output
    result = cli("bench", "--device", "cpu", "--precision", "tf32")
    assert result.exit_code == 2 and "on cpu it computes exactly as fp32" in result.output


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_one_line(cli, no_cifar):
    result = cli(*QUICK, "--device", "cuda")
    assert result.exit_code == 2 and "--device cuda but CUDA is not available here; use --device cpu or auto" in (
        result.output)  # the option the user gave, not trainer.device


@pytest.mark.cuda
def test_bench_on_cuda_bf16(cli, no_cifar):
    result = cli(*QUICK, "--device", "cuda", "--precision", "bf16", "--json", "cuda.json")
    assert result.exit_code == 0, result.output
    out = json.loads((no_cifar / "cuda.json").read_text())
    assert out["settings"]["device"].startswith("cuda") and set(out["matmul_peak_flop_per_s"]) == {"fp32", "bf16"}
    (row,) = out["models"]
    assert row["ours"]["images_per_s"] > 0 and row["reference"]["images_per_s"] > 0


def test_cuda_graphs_on_cpu_is_one_line(cli, no_cifar):
    result = cli(*QUICK, "--device", "cpu", "--cuda-graphs")
    assert result.exit_code == 2 and "--cuda-graphs needs a CUDA device" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.cuda
def test_bench_on_cuda_with_cuda_graphs(cli, no_cifar):
    result = cli(*QUICK, "--device", "cuda", "--cuda-graphs", "--json", "graphs.json")
    assert result.exit_code == 0, result.output
    out = json.loads((no_cifar / "graphs.json").read_text())
    assert out["settings"]["compile"] == "cuda_graphs" and out["models"][0]["ours"]["images_per_s"] > 0


def test_a_json_path_that_cannot_be_written_is_refused_before_measuring(cli, no_cifar):
    (no_cifar / "a-dir").mkdir()
    result = cli(*QUICK, "--json", str(no_cifar / "a-dir"))
    assert result.exit_code == 2 and "is a directory" in result.output
    result = cli(*QUICK, "--json", "/proc/depthstudy/bench.json")
    assert result.exit_code == 2 and "cannot write under /proc/depthstudy" in result.output
    assert "img/s" not in result.output  # nothing was measured


@pytest.mark.slow  # 20 s of CI: k real training processes
def test_concurrent_runs_are_timed_against_one(cli, no_cifar):
    """bench --concurrent: k real training processes at once, aggregate images/s against one run's."""
    result = cli("bench", "--concurrent", "2", "--models", "resnet8", "--steps", "2", "--warmup", "1",
                 "--device", "cpu", "--json", "c.json")
    assert result.exit_code == 0, result.output
    assert "runs at once" in result.output and "vs one run" in result.output
    (row,) = json.loads((no_cifar / "c.json").read_text())["models"]
    one, two = row["concurrent"]
    assert (one["runs"], two["runs"]) == (1, 2)  # one run is always the baseline
    assert len(one["per_run_images_per_s"]) == 1 and len(two["per_run_images_per_s"]) == 2
    assert two["threads_each"] == max(1, one["threads_each"] // 2)  # the cores are shared out
    assert two["aggregate_images_per_s"] == pytest.approx(2 * 2 * bench.BATCH_SIZE / two["wall_s"])
    assert row["best_runs_at_once"] in (1, 2)


@pytest.mark.parametrize("value", ["0", "two", ""])
def test_a_bad_concurrency_is_one_line(cli, no_cifar, value):
    result = cli("bench", "--concurrent", value, "--models", "resnet8")
    assert result.exit_code == 2 and "--concurrent" in result.output and "e.g. --concurrent 1,2,4" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.cuda
def test_concurrent_runs_on_cuda_are_kept_for_jobs_per_gpu(cli, no_cifar):
    from depthstudy import packing

    result = cli("bench", "--concurrent", "2", "--models", "resnet8", "--steps", "5", "--device", "cuda")
    assert result.exit_code == 0, result.output
    assert "kept for trainer.jobs_per_gpu=auto" in result.output
    key = packing.setting_key(torch.cuda.get_device_name(0), "fp32", "off")
    assert packing.measured_k(key, 8)[0] in (1, 2)


@pytest.mark.slow  # 10-20 s of CI: emulated bf16 on this CPU
def test_a_precision_that_does_not_pay_says_so(cli, no_cifar):
    """bf16 on this CPU is emulated: slower than fp32, and bench must say so rather than report it as an option."""
    result = cli(*QUICK, "--precision", "bf16", "--device", "cpu", "--json", "bf16.json")
    assert result.exit_code == 0, result.output
    out = json.loads((no_cifar / "bf16.json").read_text())
    (row,) = out["models"]
    assert row["precision_speedup"] == pytest.approx(row["ours"]["images_per_s"] / row["ours_fp32"]["images_per_s"])
    text = " ".join(result.output.split())
    assert "ours bf16 / fp32" in text
    peak = out["matmul_peak_flop_per_s"]
    if peak["bf16"] < 1e10:  # a 2048^3 matmul would take over a second: the peak is timed on smaller ones
        assert out["matmul_n"]["bf16"] < 2048 and f"({out['matmul_n']['bf16']}^3)" in text
    if peak["bf16"] < peak["fp32"]:  # no bf16 hardware: autocast emulates it
        assert row["precision_speedup"] < 1 and "warning: bf16 is slower than fp32 here for resnet8" in text


def test_a_slower_precision_is_named_model_by_model():
    """The warning itself, whatever this machine's bf16 units: a slower model is named, a faster one is not."""
    from rich.console import Console

    timing = {"images_per_s": 100.0, "gflop_per_s": 1.0}
    row = {"model": "", "ours": timing, "reference": timing, "ours_fp32": timing, "ratio": 1.0,
           "ours_fraction_of_peak": 0.1}
    out = {"settings": {"precision": "bf16", "device": "cpu", "threads": 2, "batch_size": 128, "data": "synthetic",
                        "compile": "off", "channels_last": True}, "device_name": "cpu",
           "torch_version": torch.__version__, "loadavg_start": [0.0, 0.0, 0.0], "loadavg_end": [0.0, 0.0, 0.0],
           "matmul_peak_flop_per_s": {"fp32": 5e10, "bf16": 1e9}, "matmul_n": {"fp32": 2048, "bf16": 512},
           "models": [dict(row, model="resnet56", precision_speedup=0.61), dict(row, model="resnet20", precision_speedup=1.4)]}
    console = Console(record=True, width=300)
    bench.print_results(console, out)
    printed = console.export_text()
    assert "warning: bf16 is slower than fp32 here for resnet56 0.61x" in printed and "resnet20 1.40x" not in printed
    assert "bf16 1 GFLOP/s (512^3)" in printed and "no bf16 hardware" in printed
