"""Persistent cache and budget, counted at the proxy: a re-run makes zero requests; a run
killed with SIGKILL resumes with exactly the missing calls; a budget cap stops the batch
before passing the cap and keeps what completed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from llm_test_helpers import small_request, vote_request

from moloch_exp.llm import Budget, BudgetExceeded, Ledger, LLMClient, ResponseCache

HERE = Path(__file__).resolve().parent


def test_second_run_makes_zero_requests(proxy, make_client, llama_server, tmp_path):
    reqs = [small_request(i, max_tokens=6) for i in range(4)] + [vote_request(0, max_tokens=64, top_logprobs=2)]
    first = make_client().chat_many(reqs, desc="first")
    assert all(r.ok and not r.cached for r in first)
    assert proxy.hits == 5

    again = make_client()  # new client, same cache file
    second = again.chat_many(reqs, desc="second")
    assert proxy.hits == 5  # nothing reached the server
    assert all(r.cached and r.attempts == 0 for r in second)
    assert [r.text for r in second] == [r.text for r in first]
    assert second[-1].top_logprobs == first[-1].top_logprobs and first[-1].top_logprobs
    assert again.ledger.to_dict()["calls"] == 0 and again.ledger.to_dict()["cache_hits"] == 5

    # the key ignores where the server lives: the direct URL hits the same entries
    direct = make_client(base_url=llama_server.base_url)
    assert all(r.cached for r in direct.chat_many(reqs, desc="direct"))
    # ... but not a different model identity
    other = make_client(model_identity="smollm2-other-quant")
    other.chat_many(reqs[:1], desc="other")
    assert proxy.hits == 6


def test_kill9_midway_then_rerun_makes_exactly_the_missing_calls(proxy, tmp_path):
    n = 12
    cache_path = tmp_path / "resume.sqlite"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parents[1])])}
    worker = subprocess.Popen(
        [sys.executable, str(HERE / "resume_worker.py"), proxy.base_url, str(cache_path), str(n)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 90
        while proxy.hits < n // 2:
            assert worker.poll() is None, worker.stdout.read().decode()
            assert time.monotonic() < deadline, "worker made too little progress"
            time.sleep(0.02)
        worker.send_signal(signal.SIGKILL)
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == -signal.SIGKILL

    done = len(ResponseCache(cache_path))
    assert n // 2 - 1 <= done < n  # completed calls survived the SIGKILL
    proxy.reset()
    client = LLMClient(proxy.base_url, "smollm2", concurrency=1, cache=ResponseCache(cache_path), progress=False)
    results = client.chat_many([small_request(i, max_tokens=8) for i in range(n)], desc="resume")
    assert all(r.ok for r in results)
    assert proxy.hits == n - done  # exactly the missing calls
    assert sum(r.cached for r in results) == done
    assert len(ResponseCache(cache_path)) == n


def test_a_budget_stop_ends_a_retry_waiting_out_a_long_retry_after(proxy, make_client):
    """One request waits out a 429's Retry-After of 60 s while the others spend the budget: the stop ends
    that wait at once, and the waiting request is not sent again."""
    prices = {"smollm2": {"prompt_per_1m": 1e6, "completion_per_1m": 1e6}}  # $1 per token
    reqs = [small_request(400 + i, max_tokens=8) for i in range(8)]
    # not paced by headers: the pacer would hold every request for the 429's Retry-After, not only that one
    client = make_client(ledger=Ledger(prices=prices), budget=Budget(max_usd=200.0), concurrency=2,
                         max_retries=3, pace_by_headers=False)
    proxy.push(("429", 60))
    t0 = time.monotonic()
    with pytest.raises(BudgetExceeded, match="max_usd") as ei:
        client.chat_many(reqs, desc="budget")
    seconds = time.monotonic() - t0
    assert seconds < 20, seconds  # not the 60 s the 429 asked for
    done = [r for r in ei.value.partial if r is not None]
    assert 1 <= len(done) < len(reqs) - 1 and all(r.ok for r in done)
    assert proxy.hits == len(done) + 1  # the 429'd request was not sent again
    assert len(client.cache) == len(done)


def test_a_budget_stop_does_not_wait_for_rate_limit_slots_it_will_not_use(proxy, make_client):
    """At 60 requests a minute the bucket holds 10 (a 10 s burst) and refills one a second. The budget
    stops the batch within the burst; the 36 or so requests still queued end at once instead of each
    taking a slot (about 30 s of refills) only to send nothing."""
    prices = {"smollm2": {"prompt_per_1m": 1e6, "completion_per_1m": 1e6}}  # $1 per token
    reqs = [small_request(500 + i, max_tokens=8) for i in range(40)]
    client = make_client(ledger=Ledger(prices=prices), budget=Budget(max_usd=200.0), concurrency=2, rpm=60,
                         pace_by_headers=False)
    t0 = time.monotonic()
    with pytest.raises(BudgetExceeded, match="max_usd") as ei:
        client.chat_many(reqs, desc="budget")
    seconds = time.monotonic() - t0
    done = [r for r in ei.value.partial if r is not None]
    assert 1 <= len(done) <= 6 and proxy.hits == len(done), (len(done), proxy.hits)
    assert seconds < 8, (seconds, len(done))  # not a refill's second for each request left


def test_budget_cap_stops_before_passing_and_keeps_completed(proxy, make_client, tmp_path):
    prices = {"smollm2": {"prompt_per_1m": 1e6, "completion_per_1m": 1e6}}  # $1 per token
    reqs = [small_request(i, max_tokens=8) for i in range(8)]
    cap = 200.0
    ledger = Ledger(prices=prices)
    client = make_client(ledger=ledger, budget=Budget(max_usd=cap), concurrency=2)
    with pytest.raises(BudgetExceeded, match="max_usd") as ei:
        client.chat_many(reqs, desc="budget")
    spent = ledger.to_dict()["usd"]
    assert 0 < spent <= cap
    assert client.budget.spent_usd == pytest.approx(spent)
    partial = ei.value.partial
    done = [r for r in partial if r is not None]
    assert 1 <= len(done) < len(reqs) and all(r.ok for r in done)
    assert proxy.hits == len(done)  # refused calls never reached the server
    assert len(client.cache) == len(done)

    # raising the cap continues where it stopped: completed calls come from the cache
    proxy.reset()
    more = make_client(ledger=Ledger(prices=prices), budget=None)
    results = more.chat_many(reqs, desc="budget-2")
    assert all(r.ok for r in results)
    assert sum(r.cached for r in results) == len(done)
    assert proxy.hits == len(reqs) - len(done)
