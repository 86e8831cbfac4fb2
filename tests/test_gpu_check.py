"""scripts/gpu_check.sh on a machine without a CUDA device: one clear line and exit code 3, no traceback;
a wheelhouse without torch is named in one line. (The check itself runs on a GPU node: README, "Clusters".)"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from compose_helper import REPO

pytestmark = pytest.mark.e2e


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/gpu_check.sh", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHON": sys.executable})


def test_without_a_cuda_device_it_stops_with_one_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: the check would run")
    p = gpu_check("model=tiny")
    assert p.returncode == 3
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in p.stderr
    assert lines[0].startswith(f"gpu_check: no CUDA device: torch {torch.__version__}")
    assert lines[0].endswith("run it on a GPU node")


def test_a_wheelhouse_without_torch_is_named(tmp_path):
    (tmp_path / "numpy-2.0.0-cp311-cp311-manylinux_2_28_x86_64.whl").write_bytes(b"")
    p = gpu_check("--wheelhouse", str(tmp_path))
    assert p.returncode == 2
    assert p.stderr.strip() == (f"gpu_check: {tmp_path} holds no torch wheel; make it with: "
                                f"bash scripts/gpu_check.sh --make-wheelhouse {tmp_path}")
