import re

import pytest

from helpers import TINY, only_run, summary, sweep_jobs
from depthstudy import events
from depthstudy.config import compose


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
    assert scalars[events.TRAIN_ERROR][-1][1] == pytest.approx(s["train_window_error"])  # the curve's end
    # the run's speed is its windows' speeds put together (the same training time: no evaluation, no saving)
    speeds = [v for _, v in scalars[events.THROUGHPUT]]
    assert min(speeds) * 0.999 <= s["train_images_per_s"] <= max(speeds) * 1.001


def test_hparams_are_in_the_run_event_file(cli, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cli("train", *TINY)
    acc = EventAccumulator(str(only_run(tmp_path)))
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    # a right-aligned string: TensorBoard's HPARAMS table prints every number with 5 digits (20.000)
    assert start.hparams["model.depth"].string_value == "    20"
    assert start.hparams["optim.lr"].number_value == pytest.approx(0.1)
    assert start.hparams["model.shortcut"].string_value == "A"
    assert [p.name for p in only_run(tmp_path).iterdir() if p.is_dir()] == [".hydra"]  # no stray hparams run


def test_a_finished_run_is_not_trained_again(cli, tmp_path):
    cli("train", *TINY)
    before = (only_run(tmp_path) / "summary.json").read_text()
    result = cli("train", *TINY)
    assert result.exit_code == 0 and "already finished" in result.output
    assert (only_run(tmp_path) / "summary.json").read_text() == before


def test_run_names_are_readable_glob_safe_and_distinct(cli, tmp_path):
    args = [*TINY, "model.depth=8", "model.shortcut=none", "optim.weight_decay=5e-4", "seed=2", "optim.lr=0.05"]
    cli("train", *args)
    run = only_run(tmp_path)
    assert re.fullmatch(r"plain-d8-wd0\.0005-s2-batchsize32-lr0\.05-iterations6-[0-9a-f]{6}", run.name)
    assert list((tmp_path / "runs" / "default").glob("plain-d8-*")) == [run]  # no quoting, glob works
    overrides = (run / ".hydra" / "overrides.yaml").read_text()  # the exact overrides stay inside the run
    assert "schedule.milestones=[4]" in overrides and "optim.lr=0.05" in overrides
    cli("train", *args[:-1], "optim.lr=0.051")  # another value, another directory
    assert len([p for p in (tmp_path / "runs" / "default").iterdir()]) == 2


def test_weight_decay_scope_is_reported_and_applied(cli, tmp_path):
    result = cli("train", *TINY, "optim.wd_scope=weights", "trainer.progress=lines")
    # 19 conv + 1 linear weights decayed; 19 BN (gamma, beta) pairs and the FC bias: 1,376 + 10 params not.
    assert "on 20 tensors (268,048 params); none on 39 tensors (1,386 params)" in result.output


@pytest.mark.parametrize("fused", [False, True], ids=["loop", "fused"])
def test_caffe_momentum_rescales_the_buffer_at_an_lr_drop(fused):
    import torch

    from depthstudy.optim import set_lr

    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.1, momentum=0.9, fused=fused or None)
    p.grad = torch.ones(1)
    opt.step()  # buffer = g = 1; Caffe's V = lr * g = 0.1
    set_lr(opt, 0.01, caffe_momentum=True)
    assert opt.state[p]["momentum_buffer"].item() == pytest.approx(10.0)  # V / new lr: Caffe's V carries over
    opt.step()  # the fused kernel reads the rescaled buffer: v = 0.9 * 10 + 1, p -= 0.01 * v
    assert p.item() == pytest.approx(-0.1 - 0.01 * 10.0)


def test_warmup_applies_from_min_depth():
    from depthstudy.optim import Schedule

    s = compose(["experiment=he2015"]).schedule
    assert Schedule(s, 0.1, 110).warmup and not Schedule(s, 0.1, 56).warmup
    sched = Schedule(s, 0.1, 110)
    assert sched.lr_at(0, warming=True) == 0.01
    assert [sched.lr_at(i, False) for i in (0, 31999, 32000, 48000)] == pytest.approx([0.1, 0.1, 0.01, 0.001])


def test_warmup_is_a_bounded_prefix_that_never_suppresses_a_milestone():
    from depthstudy.optim import Schedule

    def end_of_warmup(schedule, batch_error):
        return next(done for done in range(1, 100_000) if schedule.end_warmup_if_due(done, batch_error))

    paper = compose(["experiment=he2015"]).schedule
    assert paper.warmup.max_iterations is None  # the paper's rule alone, by default
    stuck, learning = Schedule(paper, 0.1, 110), Schedule(paper, 0.1, 110)
    assert end_of_warmup(stuck, 95.0) == 32000 and stuck.warmup_ended_by == "cap"  # bounded by the first milestone
    assert end_of_warmup(learning, 50.0) == 10 and learning.warmup_ended_by == "error"  # the first full window
    capped = compose(["experiment=he2015", "schedule.warmup.max_iterations=400"]).schedule  # the opt-in cap
    assert end_of_warmup(Schedule(capped, 0.1, 110), 95.0) == 400
    assert end_of_warmup(Schedule(capped, 0.1, 110), 50.0) == 10

    early = compose(["experiment=he2015", "schedule.milestones=[300,500]"]).schedule
    sched = Schedule(early, 0.1, 110)
    assert end_of_warmup(sched, 95.0) == 300  # the first milestone ends it
    assert not sched.warming and sched.lr_at(300, sched.warming) == pytest.approx(0.01)  # and the drop applies

    fixed = compose(["experiment=he2015", "schedule.warmup.until_train_error=null", "schedule.warmup.max_iterations=400"])
    assert end_of_warmup(Schedule(fixed.schedule, 0.1, 110), 0.0) == 400  # no error rule: exactly max_iterations


def test_quick_study_gives_every_net_the_same_schedule():
    from depthstudy import config
    from depthstudy.optim import Schedule

    jobs = sweep_jobs(["experiment=quick"])
    assert len(jobs) == 12
    schedules = set()
    for cfg in config.compose_jobs(jobs):
        s = Schedule(cfg.schedule, cfg.optim.lr, int(cfg.model.depth))
        assert not s.warmup, cfg.model.depth  # no net of the grid gets a warm-up the others do not
        schedules.add((cfg.schedule.iterations, tuple(cfg.schedule.milestones), cfg.optim.lr, cfg.optim.batch_size))
    assert len(schedules) == 1


def test_paper_presets_train_on_all_50k_images_and_he2015_val_holds_5k_out():
    for preset in ("he2015", "he2015_fig6", "he2015_table6"):
        assert compose([f"experiment={preset}"]).data.val_size == 0, preset
    assert compose(["experiment=he2015_val"]).data.val_size == 5000


def test_identity_variants_share_one_fixed_warmup():
    w = compose(["experiment=identity_variants"]).schedule.warmup
    assert w.until_train_error is None and w.max_iterations == 400 and w.min_depth <= 110


def test_paper_preset_is_the_exact_recipe():
    cfg = compose(["experiment=he2015"])
    assert cfg.data.name == "cifar10" and cfg.data.val_size == 0 and cfg.data.augment and cfg.data.pad == 4
    assert cfg.data.normalize == "pixel_mean"
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.optim.weight_decay, cfg.optim.batch_size) == (0.1, 0.9, 1e-4, 128)
    assert (cfg.schedule.iterations, list(cfg.schedule.milestones)) == (64000, [32000, 48000])
    assert cfg.trainer.precision == "fp32"


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
    assert len(result.output.strip().splitlines()) == 1


def test_cuda_graphs_on_cpu_are_refused_in_one_line(cli):
    result = cli("train", "trainer.device=cpu", "trainer.cuda_graphs=true", "trainer.progress=none")
    assert result.exit_code == 2 and "CUDA graphs need a CUDA device" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_cuda_graphs_auto_means_on_for_cuda_only_and_bad_values_are_refused(cli):
    import torch

    from depthstudy.device import compile_mode

    assert compose([]).trainer.cuda_graphs == "auto"
    assert compile_mode(False, "auto", torch.device("cuda", 0)) == "cuda_graphs"
    assert compile_mode(False, "auto", torch.device("cpu")) == "off"
    assert compile_mode(True, "auto", torch.device("cpu")) == "default"
    assert compile_mode(False, False, torch.device("cuda", 0)) == "off"
    result = cli("train", "trainer.cuda_graphs=sometimes")
    assert result.exit_code == 2 and "trainer.cuda_graphs='sometimes': choose auto, true or false" in result.output


def test_a_compiler_failure_falls_back_to_eager_in_one_line():
    import torch

    from depthstudy.device import WithFallback

    said, model = [], torch.nn.Linear(3, 2)

    def broken(x):
        raise RuntimeError("capture failed:\n  cudaErrorStreamCaptureUnsupported")

    forward = WithFallback(broken, model, said.append, "CUDA graphs")
    x = torch.ones(4, 3)
    assert torch.equal(forward(x), model(x)) and torch.equal(forward(x), model(x))
    assert said == ["CUDA graphs failed (RuntimeError: capture failed: cudaErrorStreamCaptureUnsupported); "
                    "training eagerly instead"]
    late = WithFallback(model, model, said.append, "torch.compile", tries=0)  # past its first calls: errors are real
    with pytest.raises(RuntimeError):
        late(torch.ones(4, 5))


def test_a_failed_compiled_call_leaves_the_batchnorm_statistics_as_they_were():
    """The failed call's forward ran (and updated the running statistics) before its backward failed: the eager
    retry must be the same iteration, not a second update of the running averages."""
    import torch

    from depthstudy.device import WithFallback

    net, x = torch.nn.BatchNorm1d(3), torch.randn(8, 3)
    reference = torch.nn.BatchNorm1d(3)
    reference(x)

    def forward_then_fail(inputs):
        net(inputs)
        raise RuntimeError("backward compile failed")

    WithFallback(forward_then_fail, net, lambda line: None, "torch.compile", model=net)(x)
    assert torch.equal(net.running_mean, reference.running_mean) and int(net.num_batches_tracked) == 1


def test_compiled_but_skipped_cuda_graphs_are_said_once():
    import torch

    from depthstudy.device import WithFallback

    said, calls = [], []
    check = lambda: "CUDA graphs: inductor skipped 1 of this run's graphs" if len(calls) == 2 else None  # noqa: E731
    forward = WithFallback(calls.append, calls.append, said.append, "CUDA graphs", tries=2, check=check)
    for i in range(4):
        forward(torch.ones(1))
    assert said == ["CUDA graphs: inductor skipped 1 of this run's graphs"]  # checked once, after the first calls


@pytest.mark.cuda
def test_cuda_graphs_run_gives_the_eager_loss_curve(cli, tmp_path):
    args = ["model.depth=8", "schedule.iterations=12", "schedule.milestones=[8]", "trainer.device=cuda", "trainer.log_every=1",
            "trainer.progress=none"]
    assert cli("train", *args, "name=eager", "trainer.cuda_graphs=false").exit_code == 0
    result = cli("train", *args, "name=graphs")  # trainer.cuda_graphs=auto: on for CUDA
    assert result.exit_code == 0, result.output
    from torch._dynamo.utils import counters

    assert counters["inductor"]["cudagraph_skips"] == 0  # inductor falls back to no graphs silently
    eager, graphs = (events.read_scalars(only_run(tmp_path, n))[events.TRAIN_LOSS] for n in ("eager", "graphs"))
    assert [v for _, v in graphs] == pytest.approx([v for _, v in eager], rel=1e-3)


def test_the_compiled_part_of_an_iteration_is_one_graph_with_the_loss_and_the_counting():
    """What CUDA graphs replay whole: the net, its loss and the error count, with no graph break (a .item() or a
    Python branch on a tensor would split it and leave the rest to run kernel by kernel)."""
    import torch

    from depthstudy.models import CifarResNet
    from depthstudy.train import LossAndErrors

    forward = LossAndErrors(CifarResNet(8, "A", 3, 10))
    x, y = torch.randn(64, 3, 32, 32), torch.arange(64) % 10
    explained = torch._dynamo.explain(forward)(x, y)
    assert (explained.graph_count, explained.graph_break_count) == (1, 0)
    ops = str(explained.graphs[0].graph)
    assert "cross_entropy" in ops and "argmax" in ops
    loss, counts = forward(x, y)
    logits = forward.model(x)  # train mode: the same batch statistics, the same logits
    assert counts.shape == (3,) and counts[2] == 1
    assert counts[0] == loss == torch.nn.functional.cross_entropy(logits, y)
    assert counts[1] == (logits.argmax(1) != y).sum()  # misclassified, not correct (an untrained net: ~90%)


@pytest.mark.slow
def test_a_compiled_iteration_gives_the_eager_loss_and_error_curve(cli, tmp_path):
    """trainer.compile=true: torch.compile takes the net with its loss and error counting (train.LossAndErrors), the
    part CUDA graphs replay on a GPU; on this CPU the same compiled graph must give eager's losses and errors."""
    from torch._dynamo.utils import counters

    args = ["model.depth=8", "schedule.iterations=8", "schedule.milestones=[4]", "trainer.log_every=1",
            "trainer.progress=none"]
    assert cli("train", *args, "name=eager").exit_code == 0
    counters.clear()
    result = cli("train", *args, "name=compiled", "trainer.compile=true")
    assert result.exit_code == 0 and "eagerly instead" not in result.output, result.output
    assert counters["stats"]["unique_graphs"] == 1  # one graph: net, loss and counting, no break between them
    eager, compiled = (events.read_scalars(only_run(tmp_path, n)) for n in ("eager", "compiled"))
    for tag in (events.TRAIN_LOSS, events.TRAIN_ERROR):
        assert len(compiled[tag]) == 8
        assert [v for _, v in compiled[tag]] == pytest.approx([v for _, v in eager[tag]], rel=1e-4, abs=1e-6), tag
    # Compiling is timed apart: the first 3 iterations (WithFallback's tries) count neither in images/s nor in
    # the summary's training speed; the summary says how long they took.
    assert [step for step, _ in compiled[events.THROUGHPUT]] == [4, 5, 6, 7, 8]
    assert len(eager[events.THROUGHPUT]) == 8
    s, e = summary(only_run(tmp_path, "compiled")), summary(only_run(tmp_path, "eager"))
    assert s["compile_time_s"] > 0 and e["compile_time_s"] is None
    assert s["compile_time_s"] < s["wall_time_s"] and s["train_images_per_s"] > 0


def test_a_compiled_update_has_its_momentum_buffers_before_the_first_step():
    """Made in the first compiled step, they would live in the CUDA graphs' pool and be freed at the next
    iteration; made up front as zeros, the first steps are those of PyTorch's SGD, bit for bit."""
    import torch

    from depthstudy.optim import CompiledUpdate, make_optimizer

    cfg = compose([])
    nets = [torch.nn.Linear(3, 2) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    plain = make_optimizer(nets[0], cfg.optim, say=lambda s: None)
    ahead = make_optimizer(nets[1], cfg.optim, say=lambda s: None, lr_as_tensor=True)
    CompiledUpdate(ahead, cuda_graphs=False)  # its buffers; its step is not called here (no compile)
    assert all(torch.equal(ahead.state[p]["momentum_buffer"], torch.zeros_like(p)) for p in nets[1].parameters())
    x = torch.randn(4, 3)
    for _ in range(3):
        for net, opt in zip(nets, (plain, ahead)):
            opt.zero_grad()
            net(x).square().sum().backward()
            opt.step()
    assert all(torch.equal(a, b) for a, b in zip(nets[0].parameters(), nets[1].parameters()))


@pytest.mark.slow
def test_runs_in_one_process_each_compile_their_own_net(cli):
    """A joblib worker trains run after run: torch.compile would stop compiling after 8 nets (here: 1) and train
    the next ones eagerly without a word; each run starts the compiler afresh."""
    import torch
    from torch._dynamo.utils import counters

    counters.clear()
    with torch._dynamo.config.patch(recompile_limit=1):  # (monkeypatch's undo deletes a dynamo config entry)
        for depth in (4, 6):
            result = cli("train", "model=mlp", f"model.depth={depth}", *TINY, f"name=mlp{depth}", "trainer.compile=true")
            assert result.exit_code == 0 and "eagerly instead" not in result.output, result.output
    assert counters["stats"]["unique_graphs"] == 2  # the second net compiled too


@pytest.mark.slow
def test_a_compiled_update_gives_the_eager_loss_curve_across_an_lr_drop(cli, tmp_path):
    """trainer.compile_optimizer: torch.compile builds the SGD update (inductor, on this CPU ~40 s to compile); it must
    match PyTorch's foreach SGD, and the lr drop at iteration 4 must reach it as a new value of its lr tensor, not
    a recompile (a recompile at a milestone, past WithFallback's first calls, would be a run-ending failure)."""
    from torch._dynamo.utils import counters

    args = ["model.depth=8", "schedule.iterations=8", "trainer.log_every=1", "trainer.progress=none",
            "trainer.fused_optimizer=false"]
    assert cli("train", *args, "schedule.milestones=[4]", "name=eager").exit_code == 0
    graphs = {}
    for milestones in ("[4]", "[]"):
        counters.clear()
        result = cli("train", *args, f"schedule.milestones={milestones}", f"name=compiled{len(milestones)}",
                     "trainer.compile_optimizer=true")
        assert result.exit_code == 0 and "eagerly instead" not in result.output, result.output
        graphs[milestones] = counters["stats"]["unique_graphs"]
    assert graphs["[4]"] == graphs["[]"] > 0  # the lr drop compiled nothing new
    eager, compiled = (events.read_scalars(only_run(tmp_path, n))[events.TRAIN_LOSS] for n in ("eager", "compiled3"))
    assert len(compiled) == 8 and [v for _, v in compiled] == pytest.approx([v for _, v in eager], rel=1e-4)


@pytest.mark.cuda
def test_a_compiled_update_under_cuda_graphs_gives_the_eager_loss_curve(cli, tmp_path):
    args = ["model.depth=8", "schedule.iterations=12", "schedule.milestones=[8]", "trainer.device=cuda",
            "trainer.log_every=1", "trainer.progress=none", "trainer.fused_optimizer=false"]
    assert cli("train", *args, "name=eager", "trainer.cuda_graphs=false").exit_code == 0
    result = cli("train", *args, "name=step", "trainer.compile_optimizer=true")
    assert result.exit_code == 0 and "eagerly instead" not in result.output, result.output
    eager, step = (events.read_scalars(only_run(tmp_path, n))[events.TRAIN_LOSS] for n in ("eager", "step"))
    assert [v for _, v in step] == pytest.approx([v for _, v in eager], rel=1e-3)


@pytest.mark.cuda
def test_cuda_run_keeps_data_on_the_gpu_and_finishes(cli, tmp_path):
    result = cli("train", "model.depth=8", "schedule.iterations=20", "schedule.milestones=[0.5]", "trainer.device=cuda",
                 "trainer.progress=none",
                 "trainer.precision=bf16")
    assert result.exit_code == 0, result.output
    s = summary(only_run(tmp_path))
    assert s["status"] == "finished" and s["device"].startswith("cuda")


def test_each_job_takes_its_share_of_cpu_threads(monkeypatch):
    from depthstudy.device import cpu_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert cpu_threads(3) == 3
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "4")
    assert cpu_threads("auto") == 4
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what joblib's workers get: cores // n_jobs
    assert cpu_threads("auto") == 1


def test_final_training_error_does_not_depend_on_the_logging_cadence(cli, tmp_path):
    finals = []
    for log_every in (2, 3):
        args = [*TINY, "model.depth=8", f"trainer.log_every={log_every}", f"name=log{log_every}"]
        assert cli("train", *args).exit_code == 0
        finals.append(summary(only_run(tmp_path, f"log{log_every}")))
    assert finals[0]["train_error"] == finals[1]["train_error"]
    assert finals[0]["train_error_measure"] == "final weights, whole training split, eval mode, no augmentation"
    assert finals[0]["train_window_error"] != finals[1]["train_window_error"]  # 2 batches vs 3: the windows differ


def test_val_and_test_errors_are_those_of_a_separate_eval_mode_pass(cli, tmp_path):
    """Oracle: the final weights, BN in eval mode (running statistics), each split in one NCHW batch."""
    import torch
    import torch.nn.functional as F

    from depthstudy.data import load_data
    from depthstudy.models import build_model

    args = [*TINY, "model.depth=8"]
    assert cli("train", *args).exit_code == 0
    run = only_run(tmp_path)
    s = summary(run)
    cfg = compose(args)
    data = load_data(cfg.data)
    model = build_model(cfg.model, data.shape, data.num_classes)
    model.load_state_dict(torch.load(run / "checkpoint.pt", weights_only=True)["model"])
    model.eval()
    for name in ("train", "val", "test"):  # train: the whole training split, not augmented
        split = getattr(data, name)
        with torch.no_grad():
            logits = model((split.images.float() - data.mean) * data.scale)
        assert s[f"{name}_error"] == pytest.approx(100.0 * (logits.argmax(1) != split.labels).sum().item() / len(split))
        assert s[f"{name}_loss"] == pytest.approx(F.cross_entropy(logits, split.labels).item(), rel=1e-4)


@pytest.mark.parametrize("scope", ["all", "weights"])
def test_weight_decay_reaches_exactly_the_chosen_parameters_in_the_optimizer(scope):
    import torch
    from omegaconf import OmegaConf

    from depthstudy.models import CifarResNet
    from depthstudy.optim import make_optimizer

    model = CifarResNet(8, "A", 1, 10)
    o = OmegaConf.create({"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "wd_scope": scope})
    opt = make_optimizer(model, o, say=lambda s: None)
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 1e-4 for p in g["params"]}
    undecayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    every = {id(p) for p in model.parameters()}
    weights = {id(m.weight) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))}
    assert decayed | undecayed == every and not decayed & undecayed
    assert decayed == (every if scope == "all" else weights)


def curves(tmp_path, name):
    return events.read_scalars(only_run(tmp_path, name))


WARMUP = ["model.depth=8", "schedule.iterations=40", "schedule.milestones=[]", "optim.batch_size=32", "optim.lr=0.1",
          "schedule.warmup.min_depth=8", "schedule.warmup.lr=0.01", "schedule.warmup.max_iterations=30",
          "trainer.log_every=1", "trainer.eval_every=0", "trainer.threads=1", "trainer.progress=none"]


def test_warmup_ends_after_the_first_10_batch_window_strictly_below_the_threshold(cli, tmp_path):
    """He 2015's ResNet-110 rule through real runs: lr 0.01 until the mean training error of the last 10
    mini-batches is below the threshold (or max_iterations pass), then 0.1. The lr logged at step s is
    the one iteration s used."""
    def lr_switch(name):  # the last step trained at the warm-up lr, checking every step follows the rule
        lrs = [v for _, v in curves(tmp_path, name)[events.LR]]
        end = sum(1 for v in lrs if v == pytest.approx(0.01))
        assert lrs == pytest.approx([0.01] * end + [0.1] * (40 - end)), name
        return end

    assert cli("train", *WARMUP, "schedule.warmup.until_train_error=0", "name=never").exit_code == 0
    assert lr_switch("never") == 30  # no window is below 0%: max_iterations ends it
    assert summary(only_run(tmp_path, "never"))["warmup_ended_by"] == "cap"
    errors = [v for _, v in curves(tmp_path, "never")[events.TRAIN_ERROR]]  # % of each batch (log_every=1)
    windows = {k: sum(errors[k - 10:k]) / 10 for k in range(10, 31)}  # as the loop computes them
    # The lowest mean of the windows before the last: no window before the last is strictly below it, so the
    # rule cannot end the warm-up before max_iterations does (a rule using <= would end it at that window).
    low = min(w for k, w in windows.items() if k < 30)
    high = max(windows.values())
    assert high > low  # the net learns during warm-up, or this test could not tell a wrong rule

    assert cli("train", *WARMUP, f"schedule.warmup.until_train_error={low!r}", "name=at").exit_code == 0
    assert lr_switch("at") == 30
    middle = (low + high) / 2
    assert cli("train", *WARMUP, f"schedule.warmup.until_train_error={middle!r}", "name=middle").exit_code == 0
    assert lr_switch("middle") == min(k for k, w in windows.items() if w < middle)
    assert summary(only_run(tmp_path, "middle"))["warmup_ended_by"] == "error"  # the paper's rule ended it


def test_caffe_momentum_reaches_the_training_loop(cli, tmp_path):
    """Oracle: Caffe's update v = m*v + lr*(g + wd*w), w -= v, written out by hand. After the lr drop the
    two momentum forms part by far more than our run and the hand-written loop do."""
    import torch
    import torch.nn.functional as F

    from depthstudy.data import TrainStream, load_data
    from depthstudy.models import build_model

    args = ["model.depth=8", "schedule.iterations=12", "schedule.milestones=[6]", "optim.batch_size=64", "optim.lr=0.05",
            "trainer.log_every=1", "trainer.threads=1", "trainer.progress=none", "seed=3"]
    losses = {}
    for form in ("caffe", "pytorch"):
        assert cli("train", *args, f"optim.momentum_form={form}", f"name={form}").exit_code == 0
        losses[form] = [v for _, v in curves(tmp_path, form)[events.TRAIN_LOSS]]

    cfg = compose(args)
    torch.manual_seed(3)
    data = load_data(cfg.data)
    model = build_model(cfg.model, data.shape, data.num_classes)
    params = list(model.parameters())
    velocity = [torch.zeros_like(p) for p in params]
    stream = TrainStream(data, 64, seed=3, augment=False, channels_last=False)
    reference = []
    for step in range(12):
        lr = 0.05 if step < 6 else 0.005
        x, y = stream.batch(step)
        loss = F.cross_entropy(model(x), y)
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p, v in zip(params, velocity):
                v.mul_(0.9).add_(p.grad + 1e-4 * p, alpha=lr)
                p.sub_(v)
        reference.append(loss.item())

    def gap(curve):  # largest relative difference after the drop
        return max(abs(a - b) / abs(b) for a, b in zip(curve[7:], reference[7:]))

    assert gap(losses["caffe"]) < 1e-3
    assert gap(losses["pytorch"]) > 10 * max(gap(losses["caffe"]), 1e-4)


def test_summary_json_follows_each_checkpoint(cli, tmp_path, monkeypatch):
    """A crashed or live run is shown at its last checkpoint (what a resume starts from), not at iteration 0."""
    from depthstudy import rundir

    written, write = [], rundir.write_summary
    monkeypatch.setattr(rundir, "write_summary", lambda d, s: (written.append((s["status"], s["iterations"])), write(d, s)))
    assert cli("train", *TINY, "model.depth=8").exit_code == 0  # 6 iterations, a checkpoint every 3
    assert written == [("running", 0), ("running", 3), ("finished", 6)]
    assert summary(only_run(tmp_path))["log_every_used"] == [2]  # what runs.gaps reads a resumed run's curves by


def test_resume_drops_events_the_crashed_process_wrote_after_its_checkpoint(cli, tmp_path, monkeypatch):
    """Deterministic purge_step check: a run stopped right after its checkpoint at iteration 3, then events
    for iterations 5-6 appended to its event file, as a process that went on and died would have left them;
    the resumed run's curves hold each step once, with the resumed values."""
    import signal
    import time

    import torch
    from torch.utils.tensorboard import SummaryWriter

    from depthstudy.interrupt import STOP_FILE_ENV

    run = tmp_path / "run"
    args = [*TINY, "model.depth=8", "trainer.log_every=1", f"hydra.run.dir={run}"]
    # The sweep's stop file, named so that it appears with the first checkpoint (iteration 3, ckpt_every=3):
    # the loop sees it at the end of iteration 4 and stops there, saving a checkpoint at 4.
    monkeypatch.setenv(STOP_FILE_ENV, str(run / "checkpoint.pt"))
    handler = signal.getsignal(signal.SIGINT)
    try:
        cli("train", *args)
    finally:
        signal.signal(signal.SIGINT, handler)  # a job in a sweep worker ignores Ctrl-C; this test process must not
    monkeypatch.delenv(STOP_FILE_ENV)
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 4 and summary(run)["status"] == "interrupted"

    (original,) = run.glob("events.out.tfevents.*")
    ghost_dir = tmp_path / "ghost"
    w = SummaryWriter(str(ghost_dir))
    for step in (5, 6):
        w.add_scalar(events.TRAIN_LOSS, 999.0, step)
    w.close()
    ghost = next(ghost_dir.glob("events.out.tfevents.*")).read_bytes()
    first_record = 8 + 4 + int.from_bytes(ghost[:8], "little") + 4  # the file-version header of the ghost file
    with open(original, "ab") as f:
        f.write(ghost[first_record:])
    assert [s for s, _ in events.read_scalars(run)[events.TRAIN_LOSS]] == [1, 2, 3, 4, 5, 6]

    time.sleep(1.1)  # event files sort by their second-resolution timestamp: the resumed file comes later
    assert cli("train", *args).exit_code == 0
    steps_values = events.read_scalars(run)[events.TRAIN_LOSS]
    assert [s for s, _ in steps_values] == [1, 2, 3, 4, 5, 6]
    assert 999.0 not in [v for _, v in steps_values]


def test_the_progress_bar_draws_at_80_columns_with_the_numbers_whole(capsys):
    """The bar (a terminal's default) keeps M/N and the metrics; a long run name gives way."""
    import io

    from rich.console import Console

    from depthstudy.progress import RunProgress

    console = Console(file=io.StringIO(), width=80, force_terminal=True)
    p = RunProgress("bar", "resA-d110-wd0.0001-s0,optim.batch_size=32,schedule.iterations=6400", 6400, 0, console)
    for done in (1, 2, 3):
        p.advance(done)
    p.update(3200, 0.512, 12.5, 1234.0, 0.1)
    p._bar.refresh()
    p.close()
    last = console.file.getvalue().replace("\r", "\n").splitlines()[-2:]
    assert any("3200/6400" in line and "err 12.5%" in line for line in last), last


def test_a_long_line_on_a_terminal_breaks_between_words_before_and_after_the_bar():
    """The run's last lines come after its bar is closed: they too break at a space, never inside a number."""
    import io

    from rich.console import Console

    from depthstudy.progress import RunProgress

    console = Console(file=io.StringIO(), width=80, force_terminal=True)
    name = "resA-d8-wd0.0001-s0-iterations40-milestones_20-95eee5"
    p = RunProgress("bar", name, 40, 0, console)
    p.print(f"{name} it 40: error % val 2.67 test 2.02 [kept as written]")
    p.close()
    p.print(f"{name}: finished, error % train 0.83 val 2.67 test 2.02")
    import re

    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", console.file.getvalue())  # the terminal's control codes
    lines = text.replace("\r", "\n").splitlines()
    words = [w for line in lines for w in line.split()]
    assert all(len(line.rstrip()) <= 80 for line in lines)
    assert "0.83" in words and "2.02" in words and "[kept" in words  # whole numbers; brackets are not markup


def test_a_checkpoints_optimizer_state_keeps_how_this_run_updates():
    """The checkpoint gives the momentum buffers and the lr; fused / foreach and a tensor lr stay this run's."""
    import torch
    from omegaconf import OmegaConf

    from depthstudy.optim import load_state, make_optimizer, set_lr

    o = OmegaConf.create({"wd_scope": "all", "weight_decay": 1e-4, "lr": 0.1, "momentum": 0.9})
    model = torch.nn.Linear(3, 2)
    old = make_optimizer(model, o, say=lambda s: None, fused=True)
    model(torch.ones(4, 3)).sum().backward()
    old.step()
    set_lr(old, 0.01, caffe_momentum=False)
    new = make_optimizer(model, o, say=lambda s: None, fused=False, lr_as_tensor=True)
    lr = new.param_groups[0]["lr"]
    load_state(new, old.state_dict())
    group = new.param_groups[0]
    assert group["lr"] is lr and float(lr) == pytest.approx(0.01)  # the same tensor, the checkpoint's value
    assert not group["fused"]
    assert torch.equal(new.state[model.weight]["momentum_buffer"], old.state[model.weight]["momentum_buffer"])
