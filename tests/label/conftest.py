"""Fixtures for the labelling tests: finished cells in run.py's file layout (tests/label/cell_builder.py)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cell_builder import BuiltCell, build_cell  # noqa: E402


@pytest.fixture(scope="session")
def paper_cell(tmp_path_factory, paper_dir) -> BuiltCell:
    """A finished sales cell at the paper's size: 1,024 test anchors, base and rft, ~2,000 judgments."""
    return build_cell(tmp_path_factory.mktemp("paper_cell"), paper_dir, n_test=1024)


@pytest.fixture
def small_cell(tmp_path, paper_dir) -> BuiltCell:
    """A finished sales cell of 60 test anchors per method (one per test, writable)."""
    return build_cell(tmp_path / "cell", paper_dir, n_test=60, rates={"base": 0.2, "rft": 0.4}, seed=3)
