"""A run's trained net, read back from its directory: evaluate it (`depthstudy eval`) without touching the run.

Nothing here writes into the run directory: its logs, summary and checkpoint stay as training left them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from depthstudy import checkpoint, rundir
from depthstudy.data import Data, load_data
from depthstudy.device import autocast_for, configure_device, pick_device
from depthstudy.errors import UsageError
from depthstudy.models import build_model


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
    saved = checkpoint.load(run_dir)
    if saved is None:
        raise UsageError(f"{run_dir} has no {rundir.CHECKPOINT_FILE}: the run never reached its first checkpoint")
    cfg = OmegaConf.create(rundir.read_config(run_dir))
    if data_root is not None:
        cfg.data.root = str(data_root)
    dev = pick_device(device, None)
    configure_device(dev, str(cfg.trainer.precision), cfg.trainer.threads)
    data = load_data(cfg.data).to(dev)
    model = build_model(cfg.model, data.shape, data.num_classes)
    if cfg.model.get("init_from"):  # a grown net: its inserted plain blocks have no shortcut (as in train.build)
        from depthstudy.grow import grow_from_run

        grow_from_run(cfg.model, model, data, dev, fresh=False, batch_size=int(cfg.trainer.eval_batch_size),
                      recorded=(rundir.read_summary(run_dir) or {}).get("grown_from"))
    model = model.to(dev)
    model.load_state_dict(saved["model"])
    return Trained(cfg, data, model, int(saved["step"]), dev)


def evaluate_run(run_dir: Path, splits: list[str], device: str = "auto", data_root: Path | None = None) -> dict:
    """{"run", "iterations", "total_iterations", "<split>_error", "<split>_loss", ...} for each split asked for
    that the run has; the train split is measured in eval mode over all its images (no augmentation)."""
    from depthstudy.train import evaluate

    unknown = [s for s in splits if s not in ("train", "val", "test")]
    if unknown:
        raise UsageError(f"unknown split {unknown[0]!r}: choose from train, val, test")
    trained = load_trained(run_dir, device, data_root)
    result = {"run": str(run_dir), "iterations": trained.step, "total_iterations": int(trained.cfg.schedule.iterations)}
    autocast = autocast_for(trained.device, str(trained.cfg.trainer.precision))
    batch = int(trained.cfg.trainer.eval_batch_size)
    for name in splits:
        split = getattr(trained.data, name)
        if split is None:
            result[f"{name}_error"] = result[f"{name}_loss"] = None  # e.g. no val split (data.val_size=0)
            continue
        result[f"{name}_error"], result[f"{name}_loss"] = evaluate(trained.model, trained.data, split, batch, False, autocast)
    return result
