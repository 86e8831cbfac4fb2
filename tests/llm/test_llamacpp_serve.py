"""The pooled grammar pass (moloch_exp/llm/llamacpp_serve.py) samples exactly what llama-cpp-python's stock
full-vocabulary pass samples, uses both of its paths, and stays out of the way where it cannot be exact.
Real SmolLM2 GGUF in-process, the project's own vote schema; the managed server runs it by default."""

from __future__ import annotations

import ctypes
import json

import numpy as np
import pytest

from moloch_exp.prompts.ballots import ANSWER_FORMAT, vote_schema
from moloch_exp.llm import ManagedServer
from moloch_exp.llm import llamacpp_serve

llama_cpp = pytest.importorskip("llama_cpp")

BALLOT = [
    {"role": "system", "content": "You are role-playing this person. A retired nurse who cooks for her grandchildren."},
    {"role": "user", "content": "You see two products and will buy one.\n\n## A\nA 1.5 l stainless-steel kettle with a "
                                "keep-warm base.\n\n## B\nA 1 l plastic travel kettle that folds flat.\n\n"
                                + ANSWER_FORMAT.format(labels="A, B")},
]
FORMAT = {"type": "json_object", "schema": vote_schema(["A", "B"], 80)}


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
    # both paths ran: pooled inside the free-text thought, by bytes at JSON delimiters (few legal tokens)
    assert pooled["pooled"] > 0 and pooled["by_bytes"] > 0, dict(pooled)
    assert all(a.startswith("{") for a in fast), fast  # the grammar still holds


class GrammarWalk:
    """The vote grammar twice: llama.cpp's own sampler and a PoolGrammar, fed the same tokens."""

    def __init__(self, llm, schema: dict) -> None:
        from llama_cpp.llama_grammar import LlamaGrammar

        vocab = llm._model.vocab
        grammar = LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
        self.stock = llama_cpp.llama_sampler_init_grammar(vocab, grammar._grammar.encode(), grammar._root.encode())
        self.ours = llamacpp_serve.PoolGrammar(vocab, grammar._grammar, grammar._root, need=40, pool=256)
        self.n = llama_cpp.llama_vocab_n_tokens(vocab)
        self.arrays = [self.ours._token_array(self.n) for _ in range(2)]

    def compare(self, logits) -> np.ndarray:
        """Both passes on the same logits; asserts they leave the same array and returns the legal tokens."""
        for array, view in self.arrays:
            view["id"], view["logit"], view["p"] = np.arange(self.n), logits, 0.0
            array.size, array.selected, array.sorted = self.n, -1, False
        (stock, stock_view), (ours, ours_view) = self.arrays
        llama_cpp.llama_sampler_apply(self.stock, ctypes.byref(stock))
        self.ours._full_pass(ctypes.pointer(ours), ours_view)
        np.testing.assert_array_equal(ours_view["logit"], stock_view["logit"])
        assert ours_view["id"].tolist() == stock_view["id"].tolist()
        return np.flatnonzero(np.isfinite(stock_view["logit"]))

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self.stock, token)
        self.ours._accept(None, token)

    def reset(self) -> None:
        llama_cpp.llama_sampler_reset(self.stock)
        self.ours._reset(None)

    def close(self) -> None:
        llama_cpp.llama_sampler_free(self.stock)
        self.ours.close()


def test_full_pass_by_bytes_leaves_exactly_the_stock_array(llm):
    """Random walks through the vote grammar, with random logits at every state: structure, strings, the end."""
    walk, rng = GrammarWalk(llm, vote_schema(["A", "B"], 40)), np.random.default_rng(0)
    llamacpp_serve.steps.clear()
    few_legal = ended = 0
    try:
        for _ in range(10):
            walk.reset()
            for _ in range(60):
                logits = rng.standard_normal(walk.n).astype(np.float32)
                legal = walk.compare(logits)
                few_legal += len(legal) <= 4
                # half the time the best legal token (the JSON advances), else any legal one
                token = int(legal[np.argmax(logits[legal])] if rng.random() < 0.5 else rng.choice(legal))
                if walk.ours.vocab.eog[token]:
                    ended += 1
                    break
                walk.accept(token)
    finally:
        walk.close()
    # the fast path ran where it matters (delimiters); the stock pass inside strings; walks reached the end
    assert llamacpp_serve.steps["by_bytes"] >= few_legal >= 50, (few_legal, dict(llamacpp_serve.steps))
    assert llamacpp_serve.steps["full"] > 0 and ended > 0


def test_full_pass_by_bytes_waits_out_a_split_character(llm):
    """A token can end inside a UTF-8 character (byte tokens): the grammar then expects its remaining bytes."""
    walk = GrammarWalk(llm, vote_schema(["A", "B"], 40))
    vb = walk.ours.vocab
    byte_token = {p[0]: t for t, p in enumerate(vb.pieces) if len(p) == 1}
    logits = np.zeros(walk.n, dtype=np.float32)
    try:
        for piece in (b'{"', b"thought", b'":', b' "'):  # into the thought string
            walk.accept(vb.pieces.index(piece))
        walk.compare(logits)
        for byte, pending in ((0xE2, 2), (0x80, 1), (0x99, 0)):  # U+2019, one byte token at a time
            walk.accept(byte_token[byte])
            assert walk.ours._utf8_pending == pending
            llamacpp_serve.steps.clear()
            legal = walk.compare(logits)
            assert llamacpp_serve.steps["by_bytes"] == 0  # mid-character and in-string: the stock pass
            if pending:  # only continuation bytes may follow
                assert all(0x80 <= vb.pieces[t][0] < 0xC0 for t in legal if not vb.eog[t]), len(legal)
        walk.accept(vb.pieces.index(b'"'))  # the string closes: a delimiter, by bytes again
        llamacpp_serve.steps.clear()
        walk.compare(logits)
        assert llamacpp_serve.steps["by_bytes"] == 1
    finally:
        walk.close()


def test_utf8_pending_counts_the_bytes_a_character_still_owes():
    pending = llamacpp_serve.VocabBytes.utf8_pending
    assert pending(0, "é".encode()) == 0 and pending(0, "é".encode()[:1]) == 1
    assert pending(0, "’".encode()[:1]) == 2 and pending(2, "’".encode()[1:2]) == 1 and pending(1, b"\x99") == 0
    assert pending(0, "😀".encode()[:2]) == 2 and pending(0, b"plain") == 0
    # not UTF-8 (a stray continuation byte, a character cut short): unknown for good, so the stock pass
    assert pending(0, b"\x80") == pending(1, b"a") == pending(-1, b"plain") == -1


def test_vocabulary_table_is_built_once_per_vocabulary(llm):
    vocab = llm._model.vocab
    table = llamacpp_serve.vocab_bytes(vocab)
    assert llamacpp_serve.vocab_bytes(vocab) is table
    assert table.pieces[table.probe[ord('"')]] == b'"' and table.first[table.probe[ord("{")]] == ord("{")
    assert table.eog.sum() >= 1 and not table.first_probed[table.eog].any()  # end tokens always reach the grammar
    table.pieces[0] = b"another vocabulary"  # a freed model's address, reused by another model
    assert llamacpp_serve.vocab_bytes(vocab) is not table


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
