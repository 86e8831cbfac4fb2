"""Fixtures for the LLM-client tests: one real llama.cpp server (SmolLM2 GGUF) per session,
a fault-injecting proxy in front of it, and small helpers. No mocks."""

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
from llm_test_helpers import small_request  # noqa: E402

from moloch_exp.llm import Ledger, LLMClient, ManagedServer, ResponseCache  # noqa: E402


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    log = tmp_path_factory.mktemp("llama_server") / "server.log"
    # threads=1: the test process shares the 2 cores; llama.cpp threads stall badly when a core is busy
    with ManagedServer(kind="llamacpp", n_ctx=2048, threads=1, model_name="smollm2", log_path=str(log)) as srv:
        # warm up (the first request pages the model in), so no test's timeout includes it
        LLMClient(srv.base_url, "smollm2", timeout_s=120, progress=False).chat_many([small_request(-1)], desc="warm-up")
        yield srv


@pytest.fixture(scope="module")
def llm():
    """SmolLM2 in-process (llama-cpp-python's ``Llama``), one per test module."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from moloch_exp.llm import smollm2_gguf_path

    model = llama_cpp.Llama(smollm2_gguf_path(), n_ctx=1024, n_threads=1, verbose=False)
    yield model
    model.close()


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
