"""Checkpoints: written atomically (temp file + rename), loaded with weights_only=True."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from depthstudy.errors import DepthstudyError

CHECKPOINT = "checkpoint.pt"


class CheckpointError(DepthstudyError):
    pass


def atomic_write_bytes(path: Path, write) -> None:
    """Write through `write(file)` to a temp file beside `path`, fsync, then rename over it.

    A crash at any moment leaves either the old file or the new one, never a torn one.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def save(run_dir: Path, state: dict) -> None:
    atomic_write_bytes(run_dir / CHECKPOINT, lambda f: torch.save(state, f))


def load(run_dir: Path) -> dict | None:
    """The run's checkpoint, None if it has none, or a CheckpointError that leaves the file in place."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(e).__name__}); it was left untouched: "
            "move it away to start this run from scratch"
        ) from None
