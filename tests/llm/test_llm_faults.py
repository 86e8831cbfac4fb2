"""Retries through a fault-injecting proxy in front of the real llama.cpp server: every
result arrives exactly once through each fault; failures past the retry budget are
reported with their cause; Retry-After is honoured; other 4xx are not retried."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from llm_test_helpers import small_request

from moloch_exp.llm import EndpointUnreachable, LLMClient

FAULTS = {
    "429_retry_after": ("429", 0.2),
    "500": "500",
    "503": "503",
    "hang_past_timeout": ("hang", 60.0),  # released when the proxy closes
    "truncated_body": "truncate",
    "invalid_json": "invalid_json",
}


def _delivered_text(proxy, req) -> Counter:
    """How many times the upstream's complete answer to ``req`` went back through the proxy."""
    msgs = req.messages_as_dicts()
    return Counter(json.loads(body)["choices"][0]["message"]["content"] for r, body in proxy.delivered if r["messages"] == msgs)


@pytest.mark.parametrize("fault", list(FAULTS), ids=list(FAULTS))
def test_every_result_arrives_exactly_once(fault, proxy, make_client):
    action = FAULTS[fault]
    client = make_client(timeout_s=5 if fault.startswith("hang") else 30, concurrency=1)
    reqs = [small_request(i, max_tokens=6) for i in range(3)]
    proxy.push(action, action)  # the first two requests to arrive meet the fault, then pass
    results = client.chat_many(reqs, desc=fault)

    assert [r.ok for r in results] == [True, True, True], [r.error for r in results]
    assert sum(r.attempts for r in results) == 5
    assert proxy.hits == 5
    assert len(proxy.delivered) == 3  # each answer delivered once, nothing duplicated
    for req, res in zip(reqs, results):
        assert _delivered_text(proxy, req) == Counter({res.text: 1})  # and it is the one we got back
    d = client.ledger.to_dict()
    assert d["calls"] == 3 and d["retries"] == 2 and d["failures"] == 0
    assert len(client.cache) == 3


def test_retry_after_is_honoured(proxy, make_client):
    client = make_client(backoff_initial_s=0.01, backoff_max_s=0.01)
    proxy.push(("429", 1.2))
    [res] = client.chat_many([small_request(100)], desc="429")
    assert res.ok and res.attempts == 2
    (t0, a0), (t1, a1) = proxy.events
    assert a0.startswith("('429'") and a1 == "pass"
    assert t1 - t0 >= 1.1  # waited what the server asked, not the 10 ms backoff


def test_failure_beyond_retry_budget_reports_cause(proxy, make_client):
    client = make_client(max_retries=2)
    proxy.push("500", "500", "500")  # 1 try + 2 retries, all failing
    [res] = client.chat_many([small_request(200)], desc="fail")
    [ok] = client.chat_many([small_request(201)], desc="ok")
    assert not res.ok and res.text is None
    assert "HTTP 500" in res.error and "server error (injected)" in res.error and "3 attempts" in res.error
    assert res.attempts == 3
    assert ok.ok
    assert client.ledger.to_dict()["failures"] == 1
    assert len(client.cache) == 1  # failures are never cached

    proxy.reset()
    proxy.push(("hang", 60.0), ("hang", 60.0))
    [res] = make_client(max_retries=1, timeout_s=1.5).chat_many([small_request(202)], desc="timeouts")
    assert not res.ok and "timeout" in res.error and res.attempts == 2


def test_client_errors_are_not_retried(proxy, make_client):
    client = make_client(max_retries=4)
    proxy.push(("status", 400, '{"error": {"message": "bad request (injected)"}}'))
    [res] = client.chat_many([small_request(300)], desc="400")
    assert not res.ok and res.attempts == 1 and "HTTP 400" in res.error
    assert proxy.hits == 1


def test_a_schema_the_server_cannot_compile_fails_fast(proxy, make_client):
    """llama-server answers a schema it cannot turn into a grammar with HTTP 400: one attempt, no retry storm."""
    from moloch_exp.llm import ChatRequest

    client = make_client(max_retries=4)
    bad = ChatRequest(messages=[{"role": "user", "content": "x"}], max_tokens=4,
                      json_schema={"type": "object", "properties": {"a": {"$ref": "#/nowhere"}}})
    [res] = client.chat_many([bad], desc="bad schema")
    assert not res.ok and res.attempts == 1 and "HTTP 400" in res.error and "nowhere" in res.error
    assert proxy.hits == 1


def test_openai_json_schema_mode_is_accepted_too(proxy, make_client):
    """The strict OpenAI form (name, strict) is understood by llama-server as well."""
    from llm_test_helpers import VOTE_SCHEMA, vote_request

    from moloch_exp.llm import json_parser

    client = make_client(structured_output="json_schema")
    [p] = client.parse_many([vote_request(1, seed=1)], json_parser(VOTE_SCHEMA), desc="openai form", invalid_retries=0)
    assert p.status == "ok" and p.value["vote"] in ("A", "B"), (p.raw, p.error)


def test_connection_refused_and_ping(llama_server, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    client = LLMClient(dead, "smollm2", max_retries=1, backoff_initial_s=0.01, progress=False)
    with pytest.raises(EndpointUnreachable, match=dead.replace(".", r"\.")):
        client.ping()
    [res] = client.chat_many([small_request(1)], desc="dead")
    assert not res.ok and "connection error" in res.error and res.attempts == 2
    live = LLMClient(llama_server.base_url, "smollm2", progress=False)
    assert "smollm2" in live.check_reachable()
