import json

import pytest

from conftest import TINY, summary
from depthstudy import events
from depthstudy.config import compose



def only_run(root):
    (run,) = (root / "runs" / "default").iterdir()
    return run


def test_train_writes_config_events_checkpoint_and_summary(cli, tmp_path):
    result = cli("train", *TINY)
    assert result.exit_code == 0, result.output
    run = only_run(tmp_path)
    s = summary(run)
    assert s["status"] == "finished" and s["iterations"] == 6 and s["params"] == 269_434  # 1 channel in
    for key in ("train_error", "val_error", "test_error", "wall_time_s", "train_images_per_s"):
        assert isinstance(s[key], float), key
    assert (run / "config.yaml").is_file() and (run / "checkpoint.pt").is_file()

    scalars = events.read_scalars(run)  # TensorBoard's own reader
    assert [step for step, _ in scalars[events.TRAIN_ERROR]] == [2, 4, 6]
    assert [step for step, _ in scalars[events.VAL_ERROR]] == [3, 6]
    assert [v for _, v in scalars[events.LR]] == pytest.approx([0.1, 0.1, 0.01])
    assert scalars[events.TEST_ERROR][-1][1] == pytest.approx(s["test_error"])
    assert scalars[events.TRAIN_ERROR][-1][1] == pytest.approx(s["train_error"])


def test_hparams_are_in_the_run_event_file(cli, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cli("train", *TINY)
    acc = EventAccumulator(str(only_run(tmp_path)))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model.depth"].number_value == 20
    assert start.hparams["model.shortcut"].string_value == "A"
    assert [p.name for p in only_run(tmp_path).iterdir() if p.is_dir()] == [".hydra"]  # no stray hparams run


def test_a_finished_run_is_not_trained_again(cli, tmp_path):
    cli("train", *TINY)
    before = (only_run(tmp_path) / "summary.json").read_text()
    result = cli("train", *TINY)
    assert result.exit_code == 0 and "already finished" in result.output
    assert (only_run(tmp_path) / "summary.json").read_text() == before


def test_run_names_are_readable_and_distinct(cli, tmp_path):
    cli("train", *TINY, "model.depth=8", "model.shortcut=none", "optim.weight_decay=5e-4", "seed=2", "optim.lr=0.05")
    assert only_run(tmp_path).name.startswith("plain-d8-wd0.0005-s2,optim.batch_size=32,optim.lr=0.05,")


def test_weight_decay_scope_is_reported_and_applied(cli, tmp_path):
    result = cli("train", *TINY, "optim.wd_scope=weights", "trainer.progress=lines")
    # 19 conv + 1 linear weights decayed; 19 BN (gamma, beta) pairs and the FC bias: 1,376 + 10 params not.
    assert "on 20 tensors (268,048 params); none on 39 tensors (1,386 params)" in result.output


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
def test_caffe_momentum_rescales_the_buffer_at_an_lr_drop(fused):
    import torch

    from depthstudy.train import set_lr

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, fused=fused or None)
    p.grad = torch.ones(1)
    opt.step()  # buffer = g = 1; Caffe's V = lr * g = 0.1
    set_lr(opt, 0.01, caffe_momentum=True)
    assert opt.state[p]["momentum_buffer"].item() == pytest.approx(10.0)  # V / new lr: Caffe's V carries over
    opt.step()  # the fused kernel reads the rescaled buffer: v = 0.9 * 10 + 1, p -= 0.01 * v
    assert p.item() == pytest.approx(-0.1 - 0.01 * 10.0)


def test_warmup_applies_from_min_depth():
    from depthstudy.train import Schedule

    s = compose(["experiment=he2015"]).schedule
    assert Schedule(s, 0.1, 110).warmup and not Schedule(s, 0.1, 56).warmup
    sched = Schedule(s, 0.1, 110)
    assert sched.lr_at(0, warming=True) == 0.01
    assert [sched.lr_at(i, False) for i in (0, 31999, 32000, 48000)] == pytest.approx([0.1, 0.1, 0.01, 0.001])


def test_paper_preset_is_the_exact_recipe():
    cfg = compose(["experiment=he2015"])
    assert cfg.data.name == "cifar10" and cfg.data.val_size == 5000 and cfg.data.augment and cfg.data.pad == 4
    assert cfg.data.normalize == "pixel_mean"
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert (cfg.schedule.iterations, list(cfg.schedule.milestones)) == (64000, [32000, 48000])
    assert cfg.trainer.precision == "fp32"


def test_summary_json_is_valid_json_while_running(cli, tmp_path):
    cli("train", *TINY)
    json.loads((only_run(tmp_path) / "summary.json").read_text())


def test_fast_path_gives_the_loss_curve_of_a_plain_eager_loop(cli, tmp_path):
    """channels_last, on-device batches, fused SGD and the bookkeeping in train() change no result beyond float noise.

    (Float noise grows with training at a high learning rate, NCHW against float64 as much as
    channels_last against NCHW: a small lr keeps the comparison tight.)"""
    import torch
    import torch.nn.functional as F

    from depthstudy.data import TrainStream, load_data
    from depthstudy.models import build_model

    args = ["model.depth=8", "schedule.iterations=12", "schedule.milestones=[8]", "optim.batch_size=64", "optim.lr=0.02",
            "trainer.log_every=1", "trainer.threads=1", "trainer.progress=none", "seed=3"]
    assert cli("train", *args).exit_code == 0
    ours = [v for _, v in events.read_scalars(only_run(tmp_path))[events.TRAIN_LOSS]]

    cfg = compose(args)
    torch.manual_seed(3)
    data = load_data(cfg.data)
    model = build_model(cfg.model, data.shape, data.num_classes)  # NCHW, eager
    opt = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, weight_decay=1e-4)
    stream = TrainStream(data, 64, seed=3, augment=False, channels_last=False)
    reference = []
    for step in range(12):
        for group in opt.param_groups:
            group["lr"] = 0.02 if step < 8 else 0.002
        x, y = stream.batch(step)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        reference.append(loss.item())
    assert ours[:2] == pytest.approx(reference[:2], rel=1e-6)  # before float noise compounds
    assert ours == pytest.approx(reference, rel=1e-3)


def test_asking_for_cuda_without_it_is_a_usage_error(cli):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = cli("train", "trainer.device=cuda", "trainer.progress=none")
    assert result.exit_code == 2 and "CUDA is not available here" in result.output


def test_cuda_graphs_on_cpu_are_refused_in_one_line(cli):
    result = cli("train", "trainer.device=cpu", "trainer.cuda_graphs=true", "trainer.progress=none")
    assert result.exit_code == 2 and "CUDA graphs need a CUDA device" in result.output


@pytest.mark.cuda
def test_cuda_graphs_run_gives_the_eager_loss_curve(cli, tmp_path):
    args = ["model.depth=8", "schedule.iterations=12", "trainer.device=cuda", "trainer.log_every=1", "trainer.progress=none"]
    assert cli("train", *args, "name=eager").exit_code == 0
    result = cli("train", *args, "name=graphs", "trainer.cuda_graphs=true")
    assert result.exit_code == 0, result.output
    from torch._dynamo.utils import counters

    assert counters["inductor"]["cudagraph_skips"] == 0  # inductor falls back to no graphs silently
    eager, graphs = (events.read_scalars(next((tmp_path / "runs" / n).iterdir()))[events.TRAIN_LOSS] for n in ("eager", "graphs"))
    assert [v for _, v in graphs] == pytest.approx([v for _, v in eager], rel=1e-3)


@pytest.mark.cuda
def test_cuda_run_keeps_data_on_the_gpu_and_finishes(cli, tmp_path):
    result = cli("train", "model.depth=8", "schedule.iterations=20", "trainer.device=cuda", "trainer.progress=none",
                 "trainer.precision=bf16")
    assert result.exit_code == 0, result.output
    s = summary(only_run(tmp_path))
    assert s["status"] == "finished" and s["device"].startswith("cuda")


def test_each_job_takes_its_share_of_cpu_threads(monkeypatch):
    from depthstudy.train import cpu_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert cpu_threads(3) == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert cpu_threads("auto") == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what joblib's workers get: cores // n_jobs
    assert cpu_threads("auto") == 1
