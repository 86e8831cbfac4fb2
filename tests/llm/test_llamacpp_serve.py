"""The pooled grammar pass (moloch_exp/llm/llamacpp_serve.py) samples exactly what llama-cpp-python's stock
full-vocabulary pass samples, uses both of its paths, and stays out of the way where it cannot be exact.
Real SmolLM2 GGUF in-process, the project's own vote schema; the managed server runs it by default."""

from __future__ import annotations

import pytest

from moloch_exp.audience.ballots import ANSWER_FORMAT, vote_schema
from moloch_exp.llm import ManagedServer, smollm2_gguf_path
from moloch_exp.llm import llamacpp_serve

llama_cpp = pytest.importorskip("llama_cpp")

BALLOT = [
    {"role": "system", "content": "You are role-playing this person. A retired nurse who cooks for her grandchildren."},
    {"role": "user", "content": "You see two products and will buy one.\n\n## A\nA 1.5 l stainless-steel kettle with a "
                                "keep-warm base.\n\n## B\nA 1 l plastic travel kettle that folds flat.\n\n"
                                + ANSWER_FORMAT.format(labels="A, B")},
]
FORMAT = {"type": "json_object", "schema": vote_schema(["A", "B"], 80)}


@pytest.fixture(scope="module")
def llm():
    model = llama_cpp.Llama(smollm2_gguf_path(), n_ctx=1024, n_threads=1, verbose=False)
    yield model
    model.close()


@pytest.fixture
def pooled():
    assert llamacpp_serve.install(pool=256)
    llamacpp_serve.steps.clear()
    yield llamacpp_serve.steps
    llamacpp_serve.uninstall()


def answers(llm, seeds, **kw) -> list[str]:
    return [llm.create_chat_completion(BALLOT, response_format=FORMAT, max_tokens=40, seed=s, **kw)
            ["choices"][0]["message"]["content"] for s in seeds]


@pytest.mark.parametrize("temperature", [0.7, 0.0], ids=["sampled", "greedy"])
def test_pooled_grammar_samples_the_stock_tokens(llm, temperature, request):
    seeds = range(4) if temperature else range(1)
    stock = answers(llm, seeds, temperature=temperature)
    pooled = request.getfixturevalue("pooled")
    fast = answers(llm, seeds, temperature=temperature)
    assert fast == stock  # token for token
    # both paths ran: pooled inside the free-text thought, full at JSON delimiters (few legal tokens)
    assert pooled["pooled"] > 0 and pooled["full"] > 0, dict(pooled)
    assert all(a.startswith("{") for a in fast), fast  # the grammar still holds


def test_settings_it_cannot_answer_exactly_keep_the_full_pass(llm, pooled):
    # top_k above the pool: the pool cannot prove which tokens top-k keeps, so no PoolGrammar is built
    answers(llm, [0], temperature=0.7, top_k=1000)
    # mirostat replaces top-k entirely
    answers(llm, [0], temperature=0.7, mirostat_mode=2)
    assert pooled["pooled"] == pooled["full"] == 0


def test_other_llama_cpp_versions_run_stock(monkeypatch):
    monkeypatch.setattr(llama_cpp, "__version__", "0.0.0")
    stock = llama_cpp.llama.Llama._init_sampler
    assert llamacpp_serve.install() is False
    assert llama_cpp.llama.Llama._init_sampler is stock


def test_managed_server_runs_the_pooled_pass_unless_told_not_to(tmp_path):
    cmd = ManagedServer(log_path=str(tmp_path / "a.log")).command(1234)
    assert cmd[1:5] == ["-m", "moloch_exp.llm.llamacpp_serve", "--grammar_pool", str(llamacpp_serve.DEFAULT_POOL)]
    assert cmd[5:7] == ["--model_thread", "1"]
    stock = ManagedServer(grammar_pool=0, model_thread=False, log_path=str(tmp_path / "b.log")).command(1234)
    assert stock[4] == "0" and stock[5:7] == ["--model_thread", "0"]
    # a real start: the server says which pass and which thread it uses
    with ManagedServer(n_ctx=512, threads=1, log_path=str(tmp_path / "s.log")) as srv:
        assert srv.base_url
    log = (tmp_path / "s.log").read_text()
    assert "grammar sampling: exact top-512 pool" in log and "model calls: one dedicated thread" in log
    assert "found in sys.modules" not in log  # runpy's warning: the module would run with two copies of its state


def test_model_calls_run_on_one_long_lived_thread(monkeypatch):
    import asyncio
    import threading

    from llama_cpp.server import app

    for name in ("run_in_threadpool", "iterate_in_threadpool"):
        monkeypatch.setattr(app, name, getattr(app, name))  # restored after the test
    executor = llamacpp_serve.pin_model_calls()
    assert executor is not None

    def failing():
        raise ValueError("from the model thread")

    def chunks():
        for _ in range(3):
            yield threading.get_ident()

    async def calls():
        # concurrent requests, as the server makes them: each would take a free pool thread on the stock server
        idents = await asyncio.gather(*(app.run_in_threadpool(threading.get_ident) for _ in range(8)))
        streamed = [i async for i in app.iterate_in_threadpool(chunks())]
        with pytest.raises(ValueError, match="from the model thread"):
            await app.run_in_threadpool(failing)
        return idents, streamed

    idents, streamed = asyncio.run(calls())
    assert len(set(idents)) == 1 and idents[0] != threading.get_ident()
    assert streamed == [idents[0]] * 3  # every chunk of a streamed answer on the same thread
    assert asyncio.run(calls())[0][0] == idents[0]  # and the next event loop's calls too
    executor.shutdown()
