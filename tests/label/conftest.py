"""Fixtures for the labelling tests: finished cells in run.py's file layout (tests/label/cell_builder.py)."""
from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cell_builder import BuiltCell, build_cell  # noqa: E402
from label_helpers import Server, run_cli  # noqa: E402

from moloch_exp.label.items import LabelSample  # noqa: E402


@pytest.fixture(scope="session")
def paper_cell(tmp_path_factory, paper_dir) -> BuiltCell:
    """A finished sales cell at the paper's size: 1,024 test anchors, base and rft, ~2,000 judgments."""
    return build_cell(tmp_path_factory.mktemp("paper_cell"), paper_dir, n_test=1024)


@pytest.fixture(scope="session")
def small_cell_template(tmp_path_factory, paper_dir) -> BuiltCell:
    return build_cell(tmp_path_factory.mktemp("small_cell"), paper_dir, n_test=60, rates={"base": 0.2, "rft": 0.4},
                      seed=3)


@pytest.fixture
def small_cell(tmp_path, small_cell_template) -> BuiltCell:
    """A finished sales cell of 60 test anchors per method, base and rft (a fresh copy for each test)."""
    shutil.copytree(small_cell_template.dir, tmp_path / "cell")
    return dataclasses.replace(small_cell_template, dir=tmp_path / "cell")


@pytest.fixture(scope="session")
def sampled_template(tmp_path_factory, small_cell_template) -> BuiltCell:
    out = tmp_path_factory.mktemp("sampled") / "cell"
    shutil.copytree(small_cell_template.dir, out)
    p = run_cli("sample", out, "--per-probe", "24", "--seed", "5")
    assert p.returncode == 0, p.stderr
    return dataclasses.replace(small_cell_template, dir=out)


@pytest.fixture
def sampled(tmp_path, sampled_template) -> tuple[BuiltCell, LabelSample]:
    """The small cell with a sample of 24 items drawn (``label sample --per-probe 24 --seed 5``), a fresh copy."""
    shutil.copytree(sampled_template.dir, tmp_path / "cell")
    cell = dataclasses.replace(sampled_template, dir=tmp_path / "cell")
    return cell, LabelSample.load(cell.dir)


@pytest.fixture
def server_factory():
    started: list[Server] = []

    def start(run_dir: Path) -> Server:
        started.append(Server(run_dir))
        return started[-1]

    yield start
    for s in started:
        s.kill()
