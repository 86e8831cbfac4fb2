"""Unit tests of the server-free parts: request normalisation, cache keys and storage,
ledger and budget arithmetic, rate limiters, JSON answer parsing."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import pickle
import sqlite3
import time

import pytest

from moloch_exp.llm import (
    Budget,
    BudgetExceeded,
    ChatRequest,
    Ledger,
    Limits,
    ResponseCache,
    TokenBucket,
    cache_key,
    parse_json_answer,
    response_format_for,
)

MSGS = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]


def test_chat_request_accepts_dicts_and_pairs():
    a = ChatRequest(messages=MSGS, max_tokens=5)
    b = ChatRequest(messages=(("system", "s"), ("user", "u")), max_tokens=5)
    assert a.messages == b.messages == (("system", "s"), ("user", "u"))
    assert a.messages_as_dicts() == MSGS
    with pytest.raises(ValueError, match="role"):
        ChatRequest(messages=[{"content": "x"}], max_tokens=5)
    with pytest.raises(ValueError, match="max_tokens"):
        ChatRequest(messages=MSGS, max_tokens=0)


def test_cache_key_covers_answer_fields_only():
    base = ChatRequest(messages=MSGS, max_tokens=5, seed=1, purpose="vote")
    k = cache_key("m", base)
    assert k == cache_key("m", ChatRequest(messages=MSGS, max_tokens=5, seed=1, purpose="judge:x"))  # label only
    for other in (
        ChatRequest(messages=MSGS, max_tokens=6, seed=1),
        ChatRequest(messages=MSGS, max_tokens=5, seed=2),
        ChatRequest(messages=MSGS, max_tokens=5, seed=1, temperature=0.7),
        ChatRequest(messages=MSGS, max_tokens=5, seed=1, top_p=0.9),
        ChatRequest(messages=MSGS, max_tokens=5, seed=1, top_logprobs=3),
        ChatRequest(messages=MSGS, max_tokens=5, seed=1, json_schema={"type": "object"}),
        ChatRequest(messages=MSGS[:1], max_tokens=5, seed=1),
    ):
        assert cache_key("m", other) != k
    assert cache_key("other-model", base) != k
    # schema key order does not matter
    s1 = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    s2 = {"properties": {"b": {"type": "integer"}, "a": {"type": "string"}}, "type": "object"}
    assert cache_key("m", ChatRequest(MSGS, 5, json_schema=s1)) == cache_key("m", ChatRequest(MSGS, 5, json_schema=s2))


def _writer(path: str, start: int, n: int) -> None:
    c = ResponseCache(path)
    for i in range(start, start + n):
        c.put(f"k{i}", {"text": f"v{i}"})


def test_cache_roundtrip_and_many_processes(tmp_path):
    path = tmp_path / "c.sqlite"
    c = ResponseCache(path)
    assert c.get("nope") is None
    c.put("a", {"text": "x", "prompt_tokens": 1})
    assert c.get("a") == {"text": "x", "prompt_tokens": 1}
    procs = [mp.get_context("spawn").Process(target=_writer, args=(str(path), 100 * j, 50)) for j in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert len(c) == 1 + 4 * 50
    assert c.get("k349") == {"text": "v349"}
    assert c.get("k0") == {"text": "v0"}
    c2 = pickle.loads(pickle.dumps(c))
    assert c2.get("a")["text"] == "x"
    jm = sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0]  # WAL is a property of the file
    assert jm.lower() == "wal"


def test_ledger_counts_usd_merge():
    prices = {"gpt-x": {"prompt_per_1m": 2.0, "completion_per_1m": 8.0}}
    led = Ledger(prices=prices)
    led.record_call("gpt-x", 1_000_000, 500_000)
    led.record_cache_hit("gpt-x")
    led.record_call("free-local", 10, 10)
    led.record_failure("free-local")
    d = led.to_dict()
    assert d["calls"] == 2 and d["cache_hits"] == 1 and d["failures"] == 1
    assert d["prompt_tokens"] == 1_000_010 and d["completion_tokens"] == 500_010
    assert d["per_model"]["gpt-x"]["usd"] == pytest.approx(2.0 + 4.0)
    assert d["per_model"]["free-local"]["usd"] is None  # no price anywhere: unpriced, never $0
    assert d["usd"] is None and d["unpriced"] == ["free-local"]
    other = Ledger(prices=prices)
    other.merge(d).merge(d)
    assert other.to_dict()["calls"] == 4 and other.to_dict()["per_model"]["gpt-x"]["usd"] == pytest.approx(12.0)
    assert pickle.loads(pickle.dumps(led)).to_dict() == d


def test_budget_refuses_before_passing_cap():
    b = Budget(max_usd=1.0)
    b.reserve(0.4)
    b.settle(0.4, 0.3)
    b.reserve(0.4)  # in flight: 0.3 spent + 0.4 reserved
    with pytest.raises(BudgetExceeded, match="max_usd"):
        b.reserve(0.31)
    b.settle(0.4, 0.4)
    assert b.spent_usd == pytest.approx(0.7)
    b.reserve(0.3)  # exactly reaches the cap: allowed
    assert Budget(None).remaining_usd is None
    Budget(None).reserve(1e9)


def test_token_bucket_rate():
    async def main():
        tb = TokenBucket(per_minute=600, burst_s=10)  # 10/s, burst 100
        t = time.monotonic()
        for _ in range(100):
            await tb.acquire(1)
        assert time.monotonic() - t < 0.5  # burst allowance
        t = time.monotonic()
        for _ in range(5):
            await tb.acquire(1)
        return time.monotonic() - t

    assert 0.35 < asyncio.run(main()) < 1.5


def test_limits_concurrency_and_reuse_across_loops():
    lim = Limits(concurrency=2)
    for _ in range(2):  # must work under a fresh event loop each time
        active = peak = 0

        async def job():
            nonlocal active, peak
            async with lim.slot():
                active += 1
                peak = max(peak, active)
                await asyncio.sleep(0.02)
                active -= 1

        async def main():
            await asyncio.gather(*(job() for _ in range(8)))

        asyncio.run(main())
        assert peak == 2


def test_parse_json_answer_is_strict():
    schema = {"type": "object", "properties": {"vote": {"enum": ["A", "B"]}}, "required": ["vote"]}
    assert parse_json_answer(' {"vote": "A"} ', schema) == {"vote": "A"}
    assert parse_json_answer('```json\n{"vote": "B"}\n```', schema) == {"vote": "B"}
    for bad in ('{"vote": "C"}', '{"x": 1}', "vote: A", "", None, '{"vote": "A"'):
        with pytest.raises(ValueError):
            parse_json_answer(bad, schema)


def test_response_format_mapping():
    s = {"type": "object"}
    assert response_format_for("json_schema", s) == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": s, "strict": True},
    }
    assert response_format_for("llamacpp", s) == {"type": "json_schema", "json_schema": {"schema": s}}
    assert response_format_for("none", s) is None
    assert response_format_for("json_schema", None) is None
    with pytest.raises(ValueError):
        response_format_for("grammar", s)


# Cache keys computed on main before the client was split into layers (commit 76b9bf8): every answer
# already in a response cache must be found again, so these literals may never change.
PINNED_KEYS = {
    ("gpt-4o-mini/json_schema", "vote"): "9172f683b38ea273141b0152d6fbeb7d3898b68f5736924f47ae084092952f95",
    ("gpt-4o-mini/json_schema", "free"): "d0494c629c3b93195dbb2f934edf9255cd6284b61a1e854d4befd743fdff89a0",
    ("gpt-4o-mini/json_schema", "logprobs"): "32b86f73a2fdd1c6b7c3cae42929a2a7df74e1c634f3700dda22106ca597809f",
    ("llamacpp", "vote"): "18357b465b418998b9285c6bc3db14d19507a33972f82e2b4d36d5759214b54c",
    ("llamacpp", "free"): "e027dff6cabc4ade45119efa77b6d7bf9d86f873b2fcb4afeceee39710220890",
    ("llamacpp", "logprobs"): "aabbea10d497b854b62a7340160568beec0d7a153c9d417e16ddea3abf52360f",
    ("extra_body", "vote"): "73f4258679b3a82c11cc40079740828337a9d875fb469a800a0b1f8532a49cab",
    ("extra_body", "free"): "62361361a0008329be56758322dc3816f97202e7c861fcda8babcd09b4a49fb3",
    ("extra_body", "logprobs"): "fd889dcf16c02cdf900b2a009f5c2828e08c0b08cdd3d12bd621dd3fc775160b",
}


def test_cache_keys_are_pinned():
    from moloch_exp.llm import LLMClient

    schema = {"type": "object", "properties": {"thought": {"type": "string", "maxLength": 40},
                                               "vote": {"type": "string", "enum": ["A", "B"]}},
              "required": ["thought", "vote"], "additionalProperties": False}
    msgs = [{"role": "system", "content": "You are a shopper. Answer in JSON."},
            {"role": "user", "content": "Product A: a red mug. Product B: a blue lamp. Which do you buy, A or B? ünïcode ✓"}]
    reqs = {
        "vote": ChatRequest(messages=msgs, max_tokens=64, temperature=0.7, seed=3, json_schema=schema, purpose="vote"),
        "free": ChatRequest(messages=msgs[1:], max_tokens=None),
        "logprobs": ChatRequest(messages=msgs[1:], max_tokens=1, top_p=0.9, seed=0, top_logprobs=5),
    }
    url = "http://127.0.0.1:9/v1"  # never called: a key does not depend on where the server is
    clients = {
        "gpt-4o-mini/json_schema": LLMClient(url, "gpt-4o-mini", progress=False),
        "llamacpp": LLMClient(url, "smollm2", structured_output="llamacpp",
                              model_identity="llamacpp:SmolLM2-135M-Instruct-Q8_0.gguf", progress=False),
        "extra_body": LLMClient(url, "gpt-4o", extra_body={"reasoning_effort": "low", "top_k": 5}, progress=False),
    }
    got = {(c, r): clients[c].key_for(reqs[r]) for c, r in PINNED_KEYS}
    assert got == PINNED_KEYS
