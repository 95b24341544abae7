"""What TensorBoard itself shows of a sweep: read with its own multiplexer and HParams backend, as `tensorboard
--logdir` does (the python reader, TensorBoard's fallback when its Rust data server is absent)."""

from __future__ import annotations

import pytest

from helpers import TINY

GRID = ["model.depth=8,14", "model.shortcut=none,A"]


def tensorboard_on(logdir):
    """(the run names TensorBoard lists, its HParams experiment, its sessions' hparams) for logdir."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.hparams import backend_context, metadata

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(logdir))
    mux.Reload()
    provider = data_provider.MultiplexerDataProvider(mux, str(logdir))
    hparams = backend_context.Context(base_plugin.TBContext(logdir=str(logdir), data_provider=provider))
    ctx = context.RequestContext()
    experiment = hparams.experiment_from_metadata(ctx, "", True, hparams.hparams_metadata(ctx, ""),
                                                  hparams.hparams_from_data_provider(ctx, "", None))
    starts = [metadata.parse_session_start_info_plugin_data(tags[metadata.SESSION_START_INFO_TAG])
              for tags in hparams.hparams_metadata(ctx, "").values() if metadata.SESSION_START_INFO_TAG in tags]
    return sorted(mux.Runs()), experiment, starts


def test_tensorboard_shows_a_sweep_without_a_dot_run_with_its_columns_and_whole_numbers(cli, tmp_path):
    from tensorboard.plugins.hparams import api_pb2

    from depthstudy.events import STUDY_EVENT_FILE, read_scalars
    from depthstudy.runs import find_run_dirs

    assert cli("sweep", *GRID, *TINY, "name=grid").exit_code == 0
    sweep = tmp_path / "runs" / "grid"
    runs, experiment, groups = tensorboard_on(sweep)
    assert "." not in runs and len(runs) == 4  # the experiment is in each run's directory, not at the top
    columns = {h.name: (api_pb2.DataType.Name(h.type), [v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind"))
                                                         for v in h.domain_discrete.values])
               for h in experiment.hparam_infos}
    # depth and seed as strings: the table prints "8", not "8.0000"; right-aligned so "14" sorts after " 8"
    assert columns == {"model.depth": ("DATA_TYPE_STRING", ["     8", "    14"]),
                       "model.shortcut": ("DATA_TYPE_STRING", ["A", "none"]),
                       "optim.weight_decay": ("DATA_TYPE_FLOAT64", [0.0001]), "seed": ("DATA_TYPE_STRING", ["     0"])}
    # the training error of the final weights over the whole split (summary.json's), not the last log window's
    assert [m.name.tag for m in experiment.metric_infos] == ["train/error_final", "val/error", "test/error"]
    # every run is a session with the experiment's types (sorted as TensorBoard sorts: the numeric order)
    assert sorted(g.hparams["model.depth"].string_value for g in groups) == ["     8", "     8", "    14", "    14"]
    assert all(g.hparams["seed"].string_value == "     0" for g in groups)
    assert all(g.hparams["trainer.channels_last"].WhichOneof("kind") == "bool_value" for g in groups)  # not 1.0000
    # depthstudy's own readers: the extra file is neither a run's curves nor a superseded event file
    found = find_run_dirs(sweep)
    assert len(found) == 4 and all((run / STUDY_EVENT_FILE).exists() for run in found)
    curves = read_scalars(found[0])
    assert curves["train/error"] and not any(tag.startswith("_hparams_") for tag in curves)
    import json

    final = json.loads((found[0] / "summary.json").read_text())
    assert curves["train/error_final"] == [(final["iterations"], pytest.approx(final["train_error"]))]
    assert cli("report", str(sweep)).exit_code == 0


def test_a_sweep_moves_an_older_top_level_experiment_into_its_run_directories(tmp_path):
    """Sweep directories written before: their top-level `.study` file is replaced by the run directories' copies
    when the sweep is run again, and until then depthstudy's readers skip it as before."""
    from depthstudy.config import compose, without_hydra
    from depthstudy.events import STUDY_EVENT_FILE, write_study_experiment
    from depthstudy.runs import find_run_dirs
    from omegaconf import OmegaConf

    sweep = tmp_path / "grid"
    sweep.mkdir()
    older = sweep / "events.out.tfevents.1796589456.vm.5792.0.study"
    older.write_bytes(b"")
    assert find_run_dirs(sweep) == []
    cfg = OmegaConf.to_container(without_hydra(compose(["model.depth=20"])), resolve=True)
    written = write_study_experiment(sweep, [sweep / "a", sweep / "b"], [cfg, {**cfg, "seed": 1}])
    assert not older.exists() and written == [sweep / "a" / STUDY_EVENT_FILE, sweep / "b" / STUDY_EVENT_FILE]
    assert find_run_dirs(sweep) == []  # a directory with only the experiment is not a run
    runs, experiment, _ = tensorboard_on(sweep)
    assert runs == ["a", "b"]
    assert {h.name for h in experiment.hparam_infos} >= {"model.depth", "seed"}
