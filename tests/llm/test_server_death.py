"""A managed llama.cpp server that dies in the middle of a batch (SIGKILL, SIGSEGV) is noticed in
seconds: the batch stops with one ServerDied line naming the server, the signal and its log tail, and
no request is retried against the dead port. Real server, real client, a counting proxy between them.

    pytest tests/llm/test_server_death.py -q
"""
from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from fault_proxy import FaultProxy
from llm_test_helpers import small_request

from moloch_exp.errors import ServiceError
from moloch_exp.llm import LLMClient, ManagedServer, ResponseCache, ServerDied

pytestmark = pytest.mark.server


def _kill_after(proxy: FaultProxy, pid: int, sig: int, n_delivered: int, box: dict) -> threading.Thread:
    """Kill ``pid`` with ``sig`` once ``n_delivered`` answers came back; note the time and the proxy's count."""

    def go() -> None:
        deadline = time.monotonic() + 120
        while len(proxy.delivered) < n_delivered and time.monotonic() < deadline:
            time.sleep(0.02)
        with proxy.lock:
            box["hits_at_kill"] = proxy.hits
        box["t_kill"] = time.monotonic()
        os.kill(pid, sig)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
def test_server_killed_mid_batch_stops_it_with_one_line(sig, tmp_path):
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with ManagedServer(n_ctx=512, threads=1, model_name="smollm2", log_path=str(tmp_path / "server.log")) as srv:
        port = srv.port
        with FaultProxy(srv.base_url) as proxy:
            # generous retries: without the liveness check, 30 requests x 6 attempts would hammer the dead port
            client = LLMClient(proxy.base_url, "smollm2", structured_output="llamacpp", timeout_s=60, max_retries=5,
                               backoff_initial_s=0.5, backoff_max_s=2, concurrency=2, cache=cache, progress=False,
                               liveness=srv.check_alive)
            box: dict = {}
            killer = _kill_after(proxy, srv.pid, sig, n_delivered=2, box=box)
            with pytest.raises(ServerDied) as raised:
                client.chat_many([small_request(i) for i in range(30)], desc="votes")
            seconds_to_notice = time.monotonic() - box["t_kill"]
            killer.join(5)
            with proxy.lock:
                attempts_after_death = proxy.hits - box["hits_at_kill"]
    msg = str(raised.value)
    assert isinstance(raised.value, ServiceError) and "\n" not in msg
    assert f"killed by signal {sig.name}" in msg, msg
    assert "smollm2" in msg and f"port {port}" in msg and "server.log" in msg and "ends: " in msg
    assert " slot " in msg or " srv " in msg, msg  # the log tail (llama-server's lines) is in the line
    assert "results of 'votes' completed and cached" in msg
    print(f"\n{sig.name}: noticed after {seconds_to_notice:.2f} s, {attempts_after_death} request(s) after death")
    assert seconds_to_notice < 5, seconds_to_notice
    assert attempts_after_death <= 2, attempts_after_death  # at most the requests in flight at the kill
    assert len(proxy.delivered) >= 2  # what completed before the kill is kept
    assert sum(cache.get(client.key_for(small_request(i))) is not None for i in range(30)) >= 2


def test_an_answer_on_the_wire_when_the_server_dies_is_kept(proxy, make_client):
    """Of two requests in flight, one is answered late (1 s) and one finds the server dead: the batch stops,
    the six still waiting are cancelled, and the late answer is still received and cached, not cancelled."""

    def liveness() -> None:
        if proxy.hits >= 2:  # both requests went out: the dropped one's check finds the server "dead"
            raise ServiceError("llamacpp server for model smollm2 died (test)")

    # not paced by headers: the pacer would send the very first request alone
    client = make_client(concurrency=2, max_retries=5, liveness=liveness, pace_by_headers=False)
    proxy.push(("delay", 1.0), ("hang", 0))  # in arrival order: a late answer, then a dropped connection
    reqs = [small_request(300 + i) for i in range(8)]
    with pytest.raises(ServiceError) as raised:
        client.chat_many(reqs, desc="votes")
    assert "(1/8 results of 'votes' completed and cached)" in str(raised.value), raised.value
    assert proxy.hits == 2 and len(proxy.delivered) == 1  # nothing retried or sent after the death
    assert sum(client.cache.get(client.key_for(r)) is not None for r in reqs) == 1


def test_check_alive_after_a_clean_stop_and_a_later_call(tmp_path):
    srv = ManagedServer(n_ctx=512, threads=1, log_path=str(tmp_path / "server.log")).start()
    srv.check_alive()  # healthy
    srv.stop()
    srv.check_alive()  # stopped on purpose: not a death
    assert srv.died is None
