"""Shared test helpers (imported by tests; fixtures live in conftest.py): tiny budgets, summaries,
CIFAR files in their real on-disk format."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np

# Smoke-size runs: a handful of iterations on digits, one thread, no progress output.
TINY = ["schedule.iterations=6", "schedule.milestones=[4]", "optim.batch_size=32", "trainer.log_every=2",
        "trainer.eval_every=3", "trainer.ckpt_every=3", "trainer.progress=none", "trainer.threads=1"]


def summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def only_run(root: Path, name: str = "default") -> Path:
    """The one run directory under root/runs/<name>."""
    (run,) = [p for p in (root / "runs" / name).iterdir() if p.is_dir() and not p.name.startswith(".")]
    return run


def as_if_made_before(run: Path, *keys: str) -> None:
    """Edit a run's config.yaml as depthstudy wrote it before these keys (e.g. "model.grow_init") existed."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run / "config.yaml")
    for key in keys:
        parent, _, leaf = key.rpartition(".")
        del cfg[parent][leaf]
    OmegaConf.save(cfg, run / "config.yaml")
    summary_file = run / "summary.json"  # and its summary as it was then: no config_hash (newer than any such key)
    if summary_file.exists():
        old = json.loads(summary_file.read_text())
        old.pop("config_hash", None)
        summary_file.write_text(json.dumps(old))


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


def tmpfs(tmp_path: Path, size: str):
    """A fixture's body: a tmpfs of `size` (e.g. "600k") mounted at tmp_path/small, yielded, then unmounted; skips the
    test where it cannot be mounted (needs root)."""
    import subprocess

    import pytest

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def sweep_jobs(overrides: list[str]) -> list[list[str]]:
    """The jobs a sweep launches, each as its list of overrides (every grid's, in order)."""
    from depthstudy import config

    return [job for _, jobs in config.expand_grids(overrides) for job in jobs]
