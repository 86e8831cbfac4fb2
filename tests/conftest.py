"""Shared test fixtures: paths, Hydra composition, the shared paper data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from compose_helper import SHARED_DATA


@pytest.fixture(scope="session")
def paper_dir() -> Path:
    d = SHARED_DATA / "molochs_bargain"
    if not d.is_dir():
        pytest.fail(f"the shared paper data is expected at {d} (set MOLOCH_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def team_shard_dir() -> Path:
    d = SHARED_DATA / "team_shard"
    if not d.is_dir():
        pytest.fail(f"the shared team_shard data is expected at {d} (set MOLOCH_SHARED_DATA)")
    return d


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One cache for the session: converted models are built once for all tests."""
    return Path(os.environ.get("MOLOCH_TEST_CACHE", tmp_path_factory.mktemp("moloch_cache")))
