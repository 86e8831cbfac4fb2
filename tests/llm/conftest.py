"""Fixtures for the LLM-client tests: a fault-injecting proxy in front of the session's real llama.cpp server
(``llama_server``, tests/conftest.py), and small helpers. No mocks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for p in (str(HERE), str(REPO)):  # fault_proxy + moloch_exp importable under any import mode
    if p not in sys.path:
        sys.path.insert(0, p)

from fault_proxy import FaultProxy  # noqa: E402

from moloch_exp.llm import Ledger, LLMClient, ResponseCache  # noqa: E402


@pytest.fixture
def proxy(llama_server):
    with FaultProxy(llama_server.base_url) as p:
        yield p


@pytest.fixture
def make_client(proxy, tmp_path):
    """Build an LLMClient against the proxy with fast retry settings; kwargs override."""

    def make(**kw) -> LLMClient:
        args = dict(
            base_url=proxy.base_url,
            model="smollm2",
            structured_output="llamacpp",
            timeout_s=20,
            max_retries=3,
            backoff_initial_s=0.05,
            backoff_max_s=0.2,
            concurrency=2,
            cache=ResponseCache(tmp_path / "cache.sqlite"),
            ledger=Ledger(),
            progress=False,
        )
        args.update(kw)
        return LLMClient(**args)

    return make
