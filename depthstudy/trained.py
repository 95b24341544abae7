"""A run's trained net, read back from its directory: evaluate it (`depthstudy eval`) without touching the run.

Nothing here writes into the run directory: its logs, summary and checkpoint stay as training left them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from depthstudy import checkpoint, rundir
from depthstudy.data import Data
from depthstudy.device import autocast_for, configure_device, pick_device
from depthstudy.errors import UsageError


@dataclass
class Trained:
    cfg: DictConfig
    data: Data
    model: torch.nn.Module
    step: int  # iterations the checkpoint holds
    device: torch.device


def load_trained(run_dir: Path, device: str = "auto", data_root: Path | None = None) -> Trained:
    """The run's net with its checkpoint's weights, and its data (data_root: where the data set lives now)."""
    run_dir = Path(run_dir)
    if not (run_dir / rundir.CONFIG_FILE).is_file():
        raise UsageError(f"{run_dir} is not a run directory (no {rundir.CONFIG_FILE}); `depthstudy runs DIR` lists runs")
    try:
        saved = checkpoint.load(run_dir)
    except checkpoint.CheckpointError:  # its advice is for training; eval can only say what is missing
        raise UsageError(f"{run_dir / rundir.CHECKPOINT_FILE} is unreadable: this run's trained weights are lost; to "
                         f"evaluate it, {rundir.RETRAIN}") from None
    summary = rundir.read_summary(run_dir) or {}
    edited = summary and rundir.config_problem(run_dir, summary)
    if edited:  # the net config.yaml describes is not the one the checkpoint holds
        raise UsageError(f"{run_dir}: {edited}")
    if saved is None:
        ended = summary.get("status") in rundir.FINAL_STATUSES
        raise UsageError(f"{run_dir} has no {rundir.CHECKPOINT_FILE}: " + (
            "it was deleted after the run ended, so its trained weights are lost" if ended
            else "the run never reached its first checkpoint"))
    cfg = OmegaConf.create(rundir.read_config(run_dir))
    if data_root is not None:
        cfg.data.root = str(data_root)
    from depthstudy.train import build_net

    dev = pick_device(device, None, "--device")
    configure_device(dev, str(cfg.trainer.precision), "auto")  # the run's numerics, this machine's threads
    data, model, _ = build_net(cfg, dev, fresh=False, grown=summary.get("grown_from"))
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as e:  # torch's message lists every tensor: its first line is the news
        raise UsageError(f"{run_dir / rundir.CHECKPOINT_FILE} does not fit the net its {rundir.CONFIG_FILE} describes "
                         f"({str(e).splitlines()[0][:200]}): one of the two is not this run's") from None
    return Trained(cfg, data, model, int(saved["step"]), dev)


def evaluate_run(run_dir: Path, splits: list[str], device: str = "auto", data_root: Path | None = None) -> dict:
    """{"run", "iterations", "total_iterations", "<split>_error", "<split>_loss", ...} for each split asked for
    that the run has; the train split is measured in eval mode over all its images (no augmentation)."""
    from depthstudy.train import evaluate

    unknown = [s for s in splits if s not in ("train", "val", "test")]
    if unknown or not splits:
        raise UsageError(f"unknown split {unknown[0]!r}: choose from train, val, test" if unknown else
                         "--splits is empty: give one or more of train, val, test, e.g. --splits val,test")
    trained = load_trained(run_dir, device, data_root)
    result = {"run": str(run_dir), "iterations": trained.step, "total_iterations": int(trained.cfg.schedule.iterations)}
    autocast = autocast_for(trained.device, str(trained.cfg.trainer.precision))
    batch, channels_last = int(trained.cfg.trainer.eval_batch_size), bool(trained.cfg.trainer.channels_last)
    for name in splits:
        split = getattr(trained.data, name)
        if split is None:
            result[f"{name}_error"] = result[f"{name}_loss"] = None  # e.g. no val split (data.val_size=0)
            continue
        error, loss = evaluate(trained.model, trained.data, split, batch, channels_last, autocast)
        result[f"{name}_error"], result[f"{name}_loss"] = error, loss
    return result
