"""The loopback fake of a hosted OpenAI API speaks the protocol: answers valid under the request's
schema and equal on a re-run, usage with a prefix cache, logprobs, OpenAI's rate-limit headers, 429
faults, an enforcing bucket, counts per body digest readable from another process, the Batch API's
files and states, and its own process with a port file. Driven through the openai SDK and raw HTTP."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest
from llm_test_helpers import VOTE_SCHEMA

from moloch_exp.llm.structured import parse_json_answer
from moloch_exp.testing.fake_openai import FakeOpenAI, FakeOpenAIProcess, answer_hash, body_digest, fetch_stats
from moloch_exp.testing.fake_openai.ratelimit import fmt_duration

RF = {"type": "json_schema", "json_schema": {"name": "answer", "schema": VOTE_SCHEMA, "strict": True}}


def _sdk(api) -> openai.OpenAI:
    return openai.OpenAI(base_url=api.base_url, api_key="sk-test", max_retries=0)


def _vote_body(i: int, **kw) -> dict:
    body = {"model": "gpt-4o-mini", "seed": i, "max_tokens": 64, "response_format": RF,
            "messages": [{"role": "user", "content": f"## A\nmug {i}\n\n## B\nlamp {i}\nWhich one?"}]}
    body.update(kw)
    return body


def test_answers_follow_the_schema_and_repeat(tmp_path):
    with FakeOpenAI(latency_s=0.01, jitter_s=0.0) as api:
        sdk = _sdk(api)
        assert [m.id for m in sdk.models.list()] == ["gpt-4o-mini", "gpt-4o"]
        votes = []
        for i in range(40):
            r = sdk.chat.completions.create(**_vote_body(i))
            value = parse_json_answer(r.choices[0].message.content, VOTE_SCHEMA)  # raises if invalid
            assert len(value["thought"]) <= 40
            votes.append(value["vote"])
            again = sdk.chat.completions.create(**_vote_body(i))
            assert again.choices[0].message.content == r.choices[0].message.content
            assert r.usage.completion_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
        assert set(votes) == {"A", "B"}  # both options are chosen across requests
        other = sdk.chat.completions.create(**_vote_body(0, seed=1000))
        assert other.choices[0].message.content != sdk.chat.completions.create(**_vote_body(0)).choices[0].message.content

        # the paper's XML protocol and a score question, without a schema
        xml = sdk.chat.completions.create(model="gpt-4o", messages=[
            {"role": "system", "content": "When you reply, first enclose your chain-of-thought inside <think> … </think>, "
                                          "followed immediately by your final vote inside <vote> … </vote>."},
            {"role": "user", "content": "## A\nx\n\n## B\ny\nRespond with a single letter in <vote>...</vote>."}])
        text = xml.choices[0].message.content
        assert text.startswith("<think>") and text.split("<vote>")[1].split("</vote>")[0] in ("A", "B")
        score = sdk.chat.completions.create(model="gpt-4o", messages=[
            {"role": "user", "content": "On a scale of 0 to 100, how aligned is this?"}], logprobs=True, top_logprobs=5)
        first = score.choices[0].logprobs.content[0]
        assert first.token.isdigit() and 0 <= int(first.token) <= 100
        assert len(first.top_logprobs) == 5 and all(t.token.isdigit() for t in first.top_logprobs)


def test_max_tokens_cuts_and_invalid_share():
    with FakeOpenAI(latency_s=0.0, jitter_s=0.0, invalid_share=0.5) as api:
        sdk = _sdk(api)
        cut = sdk.chat.completions.create(model="gpt-4o-mini", max_tokens=3,
                                          messages=[{"role": "user", "content": "Tell me a story."}])
        assert cut.choices[0].finish_reason == "length" and cut.usage.completion_tokens == 3
        finishes = [sdk.chat.completions.create(**_vote_body(i)).choices[0].finish_reason for i in range(40)]
        assert 8 <= finishes.count("length") <= 32  # about half the schema answers are cut mid-JSON


def test_prefix_cache_counts_cached_tokens():
    shared = "Persona: a careful shopper who compares every detail. " * 120  # ~1,650 tokens
    with FakeOpenAI(latency_s=0.0, jitter_s=0.0) as api:
        sdk = _sdk(api)
        first = sdk.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "system", "content": shared}, {"role": "user", "content": "Option one?"}])
        second = sdk.chat.completions.create(model="gpt-4o-mini", messages=[
            {"role": "system", "content": shared}, {"role": "user", "content": "Option two, a different ending?"}])
        short = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi " * 50}])
        short2 = sdk.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi " * 50}])
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached % 128 == 0 and 0.8 * len(shared) / 4 <= cached <= second.usage.prompt_tokens
    assert short.usage.prompt_tokens_details.cached_tokens == short2.usage.prompt_tokens_details.cached_tokens == 0


def test_rate_limit_headers_faults_and_enforcement():
    assert [fmt_duration(s) for s in (0.02, 1, 1.5, 360, 3723)] == ["20ms", "1s", "1.5s", "6m0s", "1h2m3s"]
    with FakeOpenAI(latency_s=0.0, jitter_s=0.0, fault_429_share=0.3, fault_retry_after_s=2) as api:
        codes, seen = [], set()
        with httpx.Client(base_url=api.base_url, trust_env=False) as http:
            for i in range(60):
                r = http.post("/chat/completions", json=_vote_body(i))
                codes.append(r.status_code)
                for h in ("limit", "remaining", "reset"):
                    assert f"x-ratelimit-{h}-requests" in r.headers and f"x-ratelimit-{h}-tokens" in r.headers
                if r.status_code == 429:
                    assert r.headers["retry-after"] == "2" and r.json()["error"]["code"] == "rate_limit_exceeded"
                    seen.add(i)
        assert 8 <= codes.count(429) <= 30 and set(codes) == {200, 429}
        stats = api.stats()
        assert stats["fault_429"] == codes.count(429) and stats["rate_limited"] == 0

    with FakeOpenAI(latency_s=0.0, jitter_s=0.0, enforce=True, rpm=120, burst_s=5) as api:  # 10 in the bucket
        with httpx.Client(base_url=api.base_url, trust_env=False) as http:
            rs = [http.post("/chat/completions", json=_vote_body(i)) for i in range(12)]
        assert [r.status_code for r in rs] == [200] * 10 + [429] * 2
        assert [int(r.headers["x-ratelimit-remaining-requests"]) for r in rs[:10]] == list(range(9, -1, -1))
        assert rs[-1].headers["x-ratelimit-limit-requests"] == "120"
        assert 0 < float(rs[-1].headers["retry-after-ms"]) <= 500 and rs[-1].headers["retry-after"] == "1"
        assert api.stats()["rate_limited"] == 2


def test_counts_per_digest_over_http_and_abandoned_answers():
    with FakeOpenAI(latency_s=0.6, jitter_s=0.0) as api:
        body = _vote_body(7)
        with httpx.Client(base_url=api.base_url, trust_env=False) as http:
            text = http.post("/chat/completions", json=body).json()["choices"][0]["message"]["content"]
            http.post("/chat/completions", json=body)
            with pytest.raises(httpx.ReadTimeout):  # the client gives up: the server answers no one
                http.post("/chat/completions", json=_vote_body(8), timeout=0.2)
        time.sleep(0.8)
        stats = fetch_stats(api.base_url, digests=True)
    d = body_digest(json.loads(json.dumps(body)))
    assert stats["answered_by_digest"] == {d: 2}
    assert stats["answer_hash_by_digest"] == {d: answer_hash(text)}  # what went out, not the abandoned one
    assert stats["abandoned"] == 1 and stats["repeated_answers"] == 1 and stats["unique_answered"] == 1


def test_batch_lifecycle_and_output_format():
    lines = [{"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions", "body": _vote_body(i)}
             for i in range(30)]
    data = "".join(json.dumps(x) + "\n" for x in lines).encode()
    with FakeOpenAI(batch_validating_s=0.3, batch_line_s=0.02, batch_finalizing_s=0.3, batch_fail_share=0.2) as api:
        sdk = _sdk(api)
        f = sdk.files.create(file=("in.jsonl", data), purpose="batch")
        assert sdk.files.retrieve(f.id).bytes == len(data)
        b = sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        states = [b.status]
        while states[-1] not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.05)
            b = sdk.batches.retrieve(b.id)
            if b.status != states[-1]:
                states.append(b.status)
        assert states == ["validating", "in_progress", "finalizing", "completed"]
        assert b.request_counts.total == 30 and b.request_counts.completed + b.request_counts.failed == 30
        out = [json.loads(x) for x in sdk.files.content(b.output_file_id).read().splitlines()]
        err = [json.loads(x) for x in sdk.files.content(b.error_file_id).read().splitlines()]
        assert len(out) == b.request_counts.completed and len(err) == b.request_counts.failed > 0
        for row in out:
            assert row["response"]["status_code"] == 200 and row["error"] is None
            parse_json_answer(row["response"]["body"]["choices"][0]["message"]["content"], VOTE_SCHEMA)
        assert all(row["response"]["status_code"] == 500 for row in err)
        assert {r["custom_id"] for r in out + err} == {x["custom_id"] for x in lines}
        assert [x.id for x in sdk.batches.list()] == [b.id]

        api.configure(batch_expire_after=0.5, batch_fail_share=0.0)
        b2 = sdk.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        while b2.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.05)
            b2 = sdk.batches.retrieve(b2.id)
        assert b2.status == "expired" and b2.request_counts.completed == 15
        expired = [json.loads(x) for x in sdk.files.content(b2.error_file_id).read().splitlines()]
        assert len(expired) == 15 and {r["error"]["code"] for r in expired} == {"batch_expired"}

        bad = sdk.files.create(file=("bad.jsonl", data + b"{not json\n"), purpose="batch")
        b3 = sdk.batches.create(input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h")
        while b3.status not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.05)
            b3 = sdk.batches.retrieve(b3.id)
        assert b3.status == "failed" and b3.errors.data[0].code == "invalid_json_line" and b3.errors.data[0].line == 31
        stats = api.stats()
    assert stats["files_uploaded"] == 2 and stats["batches_created"] == 3
    assert stats["batches_by_status"] == {"completed": 1, "expired": 1, "failed": 1}


def test_runs_as_its_own_process(tmp_path):
    with FakeOpenAIProcess(latency_s=0.0, jitter_s=0.0, fault_429_share=1.0, log_path=str(tmp_path / "fake.log")) as api:
        with httpx.Client(base_url=api.base_url, trust_env=False) as http:
            assert http.post("/chat/completions", json=_vote_body(1)).status_code == 429
            api.configure(fault_429_share=0.0)
            assert http.post("/chat/completions", json=_vote_body(1)).status_code == 200
        stats = api.stats(digests=True)
        assert stats["status"] == {"200": 1, "429": 1} and len(stats["attempts_by_digest"]) == 1
        api.reset()
        assert api.stats()["requests"] == 0
        assert api.cpu_seconds() > 0


def test_api_key_is_checked_when_set():
    with FakeOpenAI(latency_s=0.0, jitter_s=0.0, api_key="sk-right") as api:
        with httpx.Client(base_url=api.base_url, trust_env=False) as http:
            assert http.get("/models").status_code == 401
            assert http.post("/chat/completions", json=_vote_body(1),
                             headers={"Authorization": "Bearer sk-wrong"}).status_code == 401
            assert http.post("/chat/completions", json=_vote_body(1),
                             headers={"Authorization": "Bearer sk-right"}).status_code == 200
