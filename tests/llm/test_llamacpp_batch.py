"""Continuous batching (moloch_exp/llm/llamacpp_batch.py): concurrent requests are decoded together, share
prompt prefixes through the cache, end as the stock server ends them, and fail loudly; the managed server
routes plain chat completions to it and everything else to the stock endpoint. Real SmolLM2 GGUF."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest

from moloch_exp.prompts.ballots import parse_ballot
from moloch_exp.connections import LLMService
from moloch_exp.llm import ManagedServer
from moloch_exp.llm.llamacpp_batch import BatchedCompletions, BatchedLlama, Pending, Slot, context_params
from moloch_exp.llm.llamacpp_serve import vocab_bytes

llama_cpp = pytest.importorskip("llama_cpp")
from test_llamacpp_serve import BALLOT, FORMAT  # noqa: E402


def ballot(voter: int) -> list[dict]:
    """The same products for every voter; the voter's line comes last (a shared-prefix ballot)."""
    return [{"role": "system", "content": "You are role-playing a shopper."},
            {"role": "user", "content": BALLOT[1]["content"] + f"\nWho you are: shopper number {voter}."}]


@pytest.fixture
def batched(llm):
    batcher = BatchedCompletions(llm, parallel=4)
    yield batcher, BatchedLlama(llm, batcher)
    batcher.close()


def chat(llm, target, messages, seed, **kw):
    handler = llm._chat_handlers[llm.chat_format]  # the stock server's handler, as the route calls it
    return handler(llama=target, messages=messages, response_format=FORMAT, seed=seed,
                   **{"max_tokens": 40, "temperature": 0.7, **kw})


def test_concurrent_votes_are_the_stock_servers_decoded_together(llm, batched):
    batcher, target = batched
    stock = [chat(llm, llm, ballot(v), seed=v) for v in range(6)]  # the stock context, one at a time
    with ThreadPoolExecutor(6) as pool:
        out = list(pool.map(lambda v: chat(llm, target, ballot(v), seed=v), range(6)))
    # token for token: prefix copies, prompts admitted in one step, rows beside other rows change nothing
    assert [o["choices"][0]["message"]["content"] for o in out] == [o["choices"][0]["message"]["content"] for o in stock]
    for o, s in zip(out, stock):
        thought, vote = parse_ballot(o["choices"][0]["message"]["content"], ["A", "B"])  # the grammar held
        assert vote in ("A", "B") and o["choices"][0]["finish_reason"] == s["choices"][0]["finish_reason"]
        assert o["usage"] == s["usage"]
    assert batcher.decoded_tokens > 1.5 * batcher.steps  # several sequences per decode, not one after another
    # five voters took the ballot's cells from another sequence instead of evaluating them again
    prompt = out[0]["usage"]["prompt_tokens"]
    assert batcher.shared_tokens >= 5 * (prompt - 15), (batcher.shared_tokens, prompt)


def test_a_sequence_decoded_beside_others_gets_its_own_logits(llm):
    """The cache layout the batch relies on: a sequence copied from another (then cut), and one decoded
    beside sequences with other histories, get exactly the logits of a context that holds only them."""
    nv = llm.n_vocab()

    def open_context(parallel):
        ctx = llama_cpp.llama_init_from_model(llm._model.model, context_params(llm, parallel))
        batch = llama_cpp.llama_batch_init(512, 0, 1)

        def decode(rows):  # rows: (token, position, sequence); logits for every row
            batch.n_tokens = len(rows)
            for i, (tok, pos, seq) in enumerate(rows):
                batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = tok, pos, 1, True
                batch.seq_id[i][0] = seq
            assert llama_cpp.llama_decode(ctx, batch) == 0
            return [np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(ctx, i), shape=(nv,)).copy()
                    for i in range(len(rows))]
        return ctx, batch, decode

    a = llm.tokenize(b"The quick brown fox jumps over the lazy dog, and then it runs into the forest")
    b = llm.tokenize(b"Completely different words about an election and the price of bread")
    ctx, batch, decode = open_context(3)
    ref_ctx, ref_batch, ref_decode = open_context(1)
    try:
        decode([(t, i, 0) for i, t in enumerate(a)])
        memory = llama_cpp.llama_get_memory(ctx)
        llama_cpp.llama_memory_seq_cp(memory, 0, 1, -1, -1)
        llama_cpp.llama_memory_seq_rm(memory, 1, len(a) - 1, -1)  # as a request sharing all but the last token
        tb = int(decode([(t, i, 2) for i, t in enumerate(b)])[-1].argmax())
        ref_decode([(t, i, 0) for i, t in enumerate(a[:-1])])
        x1, = decode([(a[-1], len(a) - 1, 1)])
        ref, = ref_decode([(a[-1], len(a) - 1, 0)])
        assert np.array_equal(x1, ref)
        ta = int(ref.argmax())
        for k in range(24):
            x0, x1, x2 = decode([(ta, len(a) + k, 0), (ta, len(a) + k, 1), (tb, len(b) + k, 2)])
            ref, = ref_decode([(ta, len(a) + k, 0)])
            assert np.array_equal(x0, ref) and np.array_equal(x1, ref), (
                f"step {k}: max |difference| {np.abs(x0 - ref).max()}, {np.abs(x1 - ref).max()}")
            ta, tb = int(ref.argmax()), int(x2.argmax())
    finally:
        for c, bt in ((ctx, batch), (ref_ctx, ref_batch)):
            llama_cpp.llama_batch_free(bt)
            llama_cpp.llama_free(c)


def test_one_at_a_time_answers_repeat_and_end_as_the_stock_server_ends_them(llm, batched):
    batcher, target = batched
    first = [chat(llm, target, ballot(v), seed=v)["choices"][0]["message"]["content"] for v in range(3)]
    again = [chat(llm, target, ballot(v), seed=v)["choices"][0]["message"]["content"] for v in range(3)]
    assert first == again
    cut = chat(llm, target, ballot(0), seed=0, max_tokens=5)
    assert cut["choices"][0]["finish_reason"] == "length" and cut["usage"]["completion_tokens"] == 5
    with pytest.raises(ValueError, match="exceed context window"):
        chat(llm, target, [{"role": "user", "content": "word " * 1100}], seed=0)


def test_end_conditions_follow_the_stock_loop(llm, batched):
    """max_tokens waits out a character split over byte tokens (the stock loop skips its checks meanwhile);
    a stop string cuts the text before it."""
    batcher, _ = batched
    vb = vocab_bytes(llm._model.vocab)
    byte_token = {p[0]: t for t, p in enumerate(vb.pieces) if len(p) == 1}
    prompt = llm.tokenize(b"Say something.")

    def fresh(max_tokens, stop=()):
        req = Pending(prompt=prompt, max_tokens=max_tokens, stop=list(stop), model_name="m",
                      sampler=batcher.sampler(0, temp=0.0, grammar=None))
        return Slot(seq=-1, request=req, fed=len(prompt))  # outside the scheduler's slots: only its end rules

    slot = fresh(max_tokens=3)
    for byte in b"xy":
        batcher._after_sample(slot, byte_token[byte])
    for byte in (0xE2, 0x80):  # the first two bytes of U+2019: at and past max_tokens, still going
        batcher._after_sample(slot, byte_token[byte])
        assert slot.request is not None and slot.next_token == byte_token[byte]
    req = slot.request
    batcher._after_sample(slot, byte_token[0x99])
    out = req.future.result(timeout=5)
    assert out["choices"][0]["text"] == "xy\u2019" and out["choices"][0]["finish_reason"] == "length"
    assert out["usage"]["completion_tokens"] == 5

    slot = fresh(max_tokens=20, stop=[b"ab"])
    req = slot.request
    for piece in (b"x", b"a", b"b"):
        batcher._after_sample(slot, byte_token[piece[0]])
    out = req.future.result(timeout=5)
    assert out["choices"][0]["text"] == "x" and out["choices"][0]["finish_reason"] == "stop"


def test_a_failed_decode_fails_its_request_and_the_rest_go_on(llm, batched):
    """llama.cpp refuses a batch with a token outside the vocabulary: that request gets the error, not a
    text, and the next request is answered as before."""
    batcher, target = batched
    good = chat(llm, target, ballot(0), seed=0)
    bad = llm.tokenize(b"Say something.") + [llm.n_vocab() + 5]
    with pytest.raises(RuntimeError, match="llama_decode returned"):
        target.create_completion(bad, max_tokens=5, temperature=0.0)
    again = chat(llm, target, ballot(0), seed=0)
    assert again["choices"] == good["choices"] and again["usage"] == good["usage"]
    assert all(s.request is None for s in batcher.slots) and batcher.thread.is_alive()


def test_parallel_is_a_server_option_not_an_identity():
    plain = LLMService(model="smollm2", managed="llamacpp")
    batched = LLMService(model="smollm2", managed="llamacpp", server={"n_parallel": 4})
    assert batched.identity() == plain.identity()  # the same answers (above), so the same cache entries
    assert batched.server_key() != plain.server_key()  # but its own server
    cmd = ManagedServer(kind="llamacpp", n_parallel=4).command(8123)
    assert cmd[cmd.index("--parallel") + 1] == "4"
    assert ManagedServer(kind="llamacpp").command(8123)[cmd.index("--parallel") + 1] == "1"
    with pytest.raises(ValueError, match="at least 1"):
        ManagedServer(kind="llamacpp", n_parallel=0)


def test_managed_server_batches_plain_requests_and_serves_the_rest_stock(tmp_path):
    log = tmp_path / "server.log"
    with ManagedServer(kind="llamacpp", n_ctx=1024, threads=1, n_parallel=3, log_path=str(log)) as srv:
        url = srv.base_url + "/chat/completions"
        body = {"model": srv.model_name, "max_tokens": 40, "temperature": 0.7, "response_format": FORMAT}
        with httpx.Client(timeout=300) as http, ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda v: http.post(url, json={**body, "messages": ballot(v), "seed": v}), range(3)))
            for r in answers:
                assert r.status_code == 200, r.text
                assert json.loads(r.json()["choices"][0]["message"]["content"])["vote"] in ("A", "B")
            stock = http.post(url, json={**body, "messages": ballot(0), "seed": 0, "logprobs": True, "top_logprobs": 2})
            assert stock.status_code == 200 and stock.json()["choices"][0]["logprobs"]["content"]
            streamed = http.post(url, json={**body, "messages": ballot(1), "seed": 1, "stream": True})
            assert streamed.status_code == 200 and streamed.text.count("data: ") > 3 and "[DONE]" in streamed.text
            too_long = http.post(url, json={**body, "messages": [{"role": "user", "content": "word " * 1100}], "seed": 0})
            assert too_long.status_code == 400 and "context window" in too_long.text
    text = log.read_text()
    assert text.count("batched request:") == 3 and "up to 3 sequences decoded together" in text
