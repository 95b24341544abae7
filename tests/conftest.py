"""Shared test helpers: the real CLI through Typer's CliRunner, tiny budgets, CIFAR files on disk."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from depthstudy.cli import app

# Smoke-size runs: a handful of iterations on digits, one thread, no progress output.
TINY = ["schedule.iterations=6", "schedule.milestones=[4]", "optim.batch_size=32", "trainer.log_every=2",
        "trainer.eval_every=3", "trainer.ckpt_every=3", "trainer.progress=none", "trainer.threads=1"]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def cli(tmp_path, monkeypatch):
    """Run `depthstudy ARGS` in a fresh working directory; returns the CliRunner result."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(app, list(args), catch_exceptions=False)

    return run


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def write_cifar(root: Path, n: int = 24, name: str = "cifar10", seed: int = 0) -> Path:
    """Tiny CIFAR files in the real on-disk format (pickled dicts of uint8 rows), as torchvision reads them."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    folder = root / cls.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    classes = 10 if name == "cifar10" else 100
    label_key = "labels" if name == "cifar10" else "fine_labels"
    for filename, _ in cls.train_list + cls.test_list:
        entry = {"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
                 label_key: rng.integers(0, classes, n).tolist()}
        with open(folder / filename, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / cls.meta["filename"], "wb") as f:
        pickle.dump({cls.meta["key"]: [f"class{i}" for i in range(classes)]}, f, protocol=2)
    return folder


@pytest.fixture
def skip_md5(monkeypatch):
    """Tiny CIFAR files cannot match the real md5s: bypass only that check, keep torchvision's parsing."""
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
