"""A run's checkpoint (torch's format): written atomically, loaded with weights_only=True.
What it holds is train.RunState's to say; where it lives is depthstudy.rundir's."""

from __future__ import annotations

from pathlib import Path

import torch

from depthstudy.errors import DepthstudyError
from depthstudy.rundir import CHECKPOINT_FILE, atomic_write_bytes, disk_problem

CHECKPOINT = CHECKPOINT_FILE


class CheckpointError(DepthstudyError):
    pass


def save(run_dir: Path, state: dict) -> None:
    """Atomically; a failed write (a full disk shows as torch's "enforce fail" RuntimeError) keeps the previous
    checkpoint and ends in a CheckpointError that says what to do."""
    path = run_dir / CHECKPOINT
    had = path.exists()
    try:
        atomic_write_bytes(path, lambda f: torch.save(state, f))
    except (OSError, RuntimeError) as e:
        reason, advice = disk_problem(e, run_dir) or (str(e).splitlines()[0], "fix the cause")
        kept = (f"the previous checkpoint is kept: {advice} and run the same command to resume" if had else
                f"it had none yet: {advice} and run the same command to start it again")
        raise CheckpointError(f"could not save the checkpoint {path}: {reason}; {kept}") from None


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
