"""Structured output on the real llama.cpp server and parse_many's invalid-answer handling."""

from __future__ import annotations

import asyncio
import json

from llm_test_helpers import VOTE_SCHEMA, small_request, vote_request

from moloch_exp.llm import ChatRequest, json_parser, validate


def test_llamacpp_mode_yields_schema_valid_votes(proxy, make_client):
    client = make_client()
    reqs = [vote_request(i, seed=i, temperature=0.8) for i in range(4)]
    parsed = client.parse_many(reqs, json_parser(VOTE_SCHEMA), desc="votes", invalid_retries=0)
    assert [p.status for p in parsed] == ["ok"] * 4, [(p.raw, p.error) for p in parsed]
    for p in parsed:
        validate(json.loads(p.raw), VOTE_SCHEMA)
        assert p.value["vote"] in ("A", "B") and p.attempts == 1


def test_llamacpp_mode_constrains_to_the_schema(proxy, make_client):
    """An enum the model would never write on its own proves the grammar is applied."""
    schema = {
        "type": "object",
        "properties": {"choice": {"type": "string", "enum": ["zq-left", "zq-right"]}},
        "required": ["choice"],
    }
    req = ChatRequest(
        messages=[{"role": "user", "content": "Which is better, A or B? Reply with one letter."}],
        max_tokens=64,  # llama-server's grammar lets the greedy answer put blank lines between JSON tokens
        json_schema=schema,
    )
    constrained = make_client().parse_many([req], json_parser(schema), desc="grammar", invalid_retries=0)[0]
    assert constrained.status == "ok" and constrained.value["choice"] in ("zq-left", "zq-right")
    free = make_client(structured_output="none").chat_many([req], desc="free")[0]
    assert free.ok and "zq-" not in free.text  # without the grammar the model answers freely


def test_unparseable_answers_are_retried_with_new_seeds_then_invalid(proxy, make_client):
    client = make_client()

    def never(text: str):
        raise ValueError("rejected by test parser")

    [p] = client.parse_many([small_request(7, seed=10)], never, desc="invalid", invalid_retries=2)
    assert p.status == "invalid" and p.value is None
    assert p.attempts == 3 and "rejected by test parser" in p.error and p.raw is not None
    assert proxy.hits == 3  # each retry was a real new call (seed 10, 11, 12)
    seeds = [body["seed"] for body, _ in proxy.delivered]
    assert seeds == [10, 11, 12]
    assert client.ledger.to_dict()["invalid"] == 1

    # re-run: all three asks come from the cache, still reported invalid, never guessed
    again = make_client()
    [p2] = again.parse_many([small_request(7, seed=10)], never, desc="invalid-2", invalid_retries=2)
    assert p2.status == "invalid" and p2.cached and proxy.hits == 3


def test_transport_failure_is_failed_not_invalid(proxy, make_client):
    client = make_client(max_retries=1)
    proxy.push("500", "500")
    [p] = client.parse_many([small_request(8)], json.loads, desc="failed")
    assert p.status == "failed" and "HTTP 500" in p.error and p.value is None


def test_parse_many_repeatable_and_inside_a_running_loop(proxy, make_client):
    client = make_client()
    reqs = [small_request(i, max_tokens=4) for i in range(2)]
    a = client.parse_many(reqs, str.strip, desc="1")
    b = client.parse_many(reqs, str.strip, desc="2")  # a second asyncio.run on the same client
    assert [x.value for x in a] == [x.value for x in b] and all(x.cached for x in b)

    async def inside():  # e.g. a notebook: runs on a helper thread instead of failing
        return client.chat_many(reqs, desc="3")

    assert all(r.cached for r in asyncio.run(inside()))


def test_a_reask_follows_its_request_at_once(proxy, make_client):
    """Requests go out in list order and an invalid answer is re-asked before the next request starts, so
    a send order built for shared prompt prefixes (audience.layout=shared_prefix_first) holds."""
    client = make_client(concurrency=1)
    calls = []

    def first_rejected(text: str):
        calls.append(text)
        if len(calls) == 1:
            raise ValueError("first answer rejected by the test parser")
        return text

    reqs = [small_request(i, seed=100 + 10 * i) for i in range(3)]
    out = client.parse_many(reqs, first_rejected, desc="order", invalid_retries=1)
    assert [p.status for p in out] == ["ok", "ok", "ok"] and out[0].attempts == 2
    # before: 100, 110, 120, 101 (the re-ask queued behind the whole batch)
    assert [body["seed"] for body, _ in proxy.delivered] == [100, 101, 110, 120]
