"""The client's own transport against real HTTP servers on loopback: it sends the very body (and key)
the openai SDK sent for the same call, and keeps the SDK's error semantics (a 2xx that is not a
completion is retried, other 4xx are not, Retry-After is read in both spellings, an unreachable port is
a connection error). Server-free, seconds.

    pytest tests/llm/test_transport.py -q
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import openai
import pytest
from llm_test_helpers import VOTE_SCHEMA

from moloch_exp.llm import ChatRequest, LLMClient
from moloch_exp.llm.batch import BatchSettings, journal_root
from moloch_exp.llm.structured import response_format_for

KEY = "sk-test-transport-0123456789"
COMPLETION = {"id": "c", "object": "chat.completion", "model": "m", "created": 0,
              "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
              "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


class Recorder:
    """A loopback server that keeps every POST (headers, JSON body) and answers from a script of
    ``(status, body bytes, headers)``; a valid completion when the script is empty."""

    def __init__(self) -> None:
        self.seen: list[tuple[dict, dict]] = []
        self.times: list[float] = []
        self.script: deque = deque()
        self.delay_s = 0.0  # before each answer
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                rec.seen.append(({k.lower(): v for k, v in self.headers.items()}, json.loads(body)))
                rec.times.append(time.monotonic())
                time.sleep(rec.delay_s)
                status, data, extra = rec.script.popleft() if rec.script else (200, json.dumps(COMPLETION).encode(), {})
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in extra.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder():
    r = Recorder()
    yield r
    r.close()


MSGS = [{"role": "system", "content": "You are a shopper. ünïcode ✓"}, {"role": "user", "content": "A or B?"}]
CASES = [  # (ChatRequest, client options, the openai SDK's create(**kwargs) for the same call)
    (ChatRequest(MSGS, 64, temperature=0.7, seed=3, json_schema=VOTE_SCHEMA), {},
     dict(messages=MSGS, temperature=0.7, max_tokens=64, seed=3,
          response_format=response_format_for("json_schema", VOTE_SCHEMA))),
    (ChatRequest(MSGS, None), {"structured_output": "llamacpp"}, dict(messages=MSGS, temperature=0.0)),
    (ChatRequest(MSGS[1:], 1, top_p=0.9, seed=0, top_logprobs=5, json_schema={"type": "integer"}),
     {"structured_output": "llamacpp", "max_tokens_param": "max_completion_tokens"},
     dict(messages=MSGS[1:], temperature=0.0, max_completion_tokens=1, top_p=0.9, seed=0, logprobs=True,
          top_logprobs=5, response_format=response_format_for("llamacpp", {"type": "integer"}))),
    (ChatRequest(MSGS, 16), {"extra_body": {"top_k": 5, "reasoning_effort": "low"}},
     dict(messages=MSGS, temperature=0.0, max_tokens=16, extra_body={"top_k": 5, "reasoning_effort": "low"})),
]


def test_the_body_and_key_are_the_openai_sdks(recorder, monkeypatch):
    monkeypatch.setenv("MOLOCH_TRANSPORT_KEY", KEY)
    sdk = openai.OpenAI(base_url=recorder.base_url, api_key=KEY, max_retries=0)
    for req, options, kwargs in CASES:
        sdk.chat.completions.create(model="m", **kwargs)
        client = LLMClient(recorder.base_url, "m", api_key_env="MOLOCH_TRANSPORT_KEY", progress=False, **options)
        [res] = client.chat_many([req])
        assert res.ok and res.text == "hi" and res.prompt_tokens == 5
        (sdk_headers, sdk_body), (headers, body) = recorder.seen[-2:]
        assert body == sdk_body
        assert headers["authorization"] == sdk_headers["authorization"] == f"Bearer {KEY}"
        assert headers["content-type"] == "application/json"
    # a local server (no key variable) gets the SDK's placeholder, as before
    LLMClient(recorder.base_url, "m", progress=False).chat_many([CASES[0][0]])
    assert recorder.seen[-1][0]["authorization"] == "Bearer not-needed"


def test_error_semantics(recorder):
    client = LLMClient(recorder.base_url, "m", progress=False, max_retries=2, backoff_initial_s=0.01,
                       backoff_max_s=0.02, pace_by_headers=False)
    req = ChatRequest(MSGS, 8)
    # a 2xx that is not a chat completion, then one that is not JSON: both retried, then answered
    recorder.script.extend([(200, b'{"choices": []}', {}), (200, b"<html>busy</html>", {})])
    [res] = client.chat_many([req])
    assert res.ok and res.attempts == 3
    # 400: not retried, the body's message in the error
    recorder.script.append((400, b'{"error": {"message": "bad seed (injected)"}}', {}))
    [res] = client.chat_many([ChatRequest(MSGS, 8, seed=1)])
    assert not res.ok and res.attempts == 1 and "HTTP 400" in res.error and "bad seed (injected)" in res.error
    # 429 with retry-after-ms (OpenAI's spelling) and 503 with Retry-After: both waited for, then answered
    recorder.script.extend([(429, b"{}", {"retry-after-ms": "400"}), (503, b"", {"Retry-After": "0.3"})])
    t = len(recorder.times)
    [res] = client.chat_many([ChatRequest(MSGS, 8, seed=2)])
    assert res.ok and res.attempts == 3
    gaps = [b - a for a, b in zip(recorder.times[t:], recorder.times[t + 1:])]
    assert gaps[0] >= 0.38 and gaps[1] >= 0.28, gaps
    # retries spent: the last cause and the count
    recorder.script.extend([(500, b"", {})] * 3)
    [res] = client.chat_many([ChatRequest(MSGS, 8, seed=3)])
    assert not res.ok and res.error == "HTTP 500: Error code: 500 (after 3 attempts)"


def test_unreachable_port_is_a_connection_error():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    client = LLMClient(dead, "m", progress=False, max_retries=1, backoff_initial_s=0.01)
    [res] = client.chat_many([ChatRequest(MSGS, 8)])
    assert not res.ok and res.attempts == 2 and res.error.startswith("connection error: ")


def test_batch_journal_sits_beside_the_cache(tmp_path):
    assert journal_root(BatchSettings(), f"sqlite:{tmp_path}/c/llm_cache.sqlite") == tmp_path / "c" / "batches"
    assert journal_root(BatchSettings(), f"files:{tmp_path}/responses") == tmp_path / "batches"
    assert journal_root(BatchSettings(journal_dir=str(tmp_path / "j")), "redis://h:6379/0") == tmp_path / "j"
    with pytest.raises(Exception, match="journal_dir"):
        journal_root(BatchSettings(), "redis://h:6379/0")


def test_replicas_get_the_requests_of_a_client_in_turn_and_a_prefix_goes_back_where_it_was():
    """Several base URLs (a managed server's replicas): each request goes to the endpoint with the fewest in flight,
    and among idle ones to the one whose previous body shares the longest prefix with it."""
    a, b = Recorder(), Recorder()
    try:
        a.delay_s = b.delay_s = 0.2
        client = LLMClient([a.base_url, b.base_url], "m", progress=False, concurrency=2)
        assert client.base_url == a.base_url and client.transport.base_urls == [a.base_url, b.base_url]
        reqs = [ChatRequest([{"role": "user", "content": f"question {i}"}], 8, seed=i) for i in range(6)]
        assert all(r.ok for r in client.chat_many(reqs))
        assert len(a.seen) == len(b.seen) == 3 and client.transport.sent == [3, 3]  # never both on one
        # both idle: a body goes to the replica that last had its longest prefix (as llama-server picks a slot)
        persona = [{"role": "system", "content": "You are Gustavo, a truck driver. " * 8}]
        both = [ChatRequest([{"role": "user", "content": "warm"}], 8),
                ChatRequest(persona + [{"role": "user", "content": "A or B?"}], 8)]
        client.chat_many(both)  # together: "warm" to the first (both empty), the persona to the second
        assert a.seen[-1][1]["messages"][0]["content"] == "warm" and len(b.seen[-1][1]["messages"]) == 2
        for question in ("C or D?", "E or F?"):  # one at a time: the persona's replica
            client.chat_many([ChatRequest(persona + [{"role": "user", "content": question}], 8)])
            assert b.seen[-1][1]["messages"][1]["content"] == question
        client.chat_many([ChatRequest([{"role": "user", "content": "warm again"}], 8)])
        assert a.seen[-1][1]["messages"][0]["content"] == "warm again" and client.transport.sent == [5, 6]
    finally:
        a.close()
        b.close()
