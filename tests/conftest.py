"""Fixtures: the real CLI through Typer's CliRunner, CUDA tests skipped without CUDA. Helpers: tests/helpers.py."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from depthstudy.cli import app

# The tests' own user cache (calibrations, synthetic CIFAR): never the user's, shared by one test session.
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="depthstudy-test-cache-")


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


@pytest.fixture
def skip_md5(monkeypatch):
    """Tiny CIFAR files cannot match the real md5s: bypass only that check, keep torchvision's parsing."""
    from torchvision.datasets import cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
