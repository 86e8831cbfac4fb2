"""bench/peak_memory.py reads what the llama-servers computed from their logs (the floor it prints rests on it):
checked against the real server's own usage on requests sent here, and the stage spans it counts once.

    pytest tests/llm/test_server_work_log.py -q
"""
from __future__ import annotations

import importlib.util
import os
import time
from pathlib import Path

import psutil
import pytest

from moloch_exp.llm import ChatRequest, LLMClient

BENCH = Path(__file__).resolve().parents[2] / "bench" / "peak_memory.py"


def peak_memory():
    spec = importlib.util.spec_from_file_location("peak_memory_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def work_of(bench, log: Path, tmp_path: Path) -> dict[str, float]:
    """server_work() of the log as it is now (copied under the name the run's logs have)."""
    logs = tmp_path / f"logs_{time.monotonic_ns()}"
    logs.mkdir()
    (logs / "server_0.log").write_bytes(log.read_bytes())
    return bench.server_work(logs)


@pytest.mark.server
def test_server_work_counts_what_the_server_reports(llama_server, tmp_path):
    bench, log = peak_memory(), Path(llama_server.log_path)
    before = work_of(bench, log, tmp_path)
    client = LLMClient(llama_server.base_url, "smollm2", timeout_s=120, progress=False)
    reqs = [ChatRequest(messages=[{"role": "user", "content": f"Name {n} colours of the rainbow."}], max_tokens=m,
                        temperature=0.0) for n, m in ((2, 9), (3, 13))]
    results = client.chat_many(reqs, desc="server work")
    assert all(r.ok for r in results), [r.error for r in results]
    evaluated = sum(r.prompt_tokens - r.cached_prompt_tokens for r in results)
    generated = sum(r.completion_tokens for r in results)
    deadline = time.monotonic() + 10  # the timing lines may reach the log just after the answer
    while True:
        after = work_of(bench, log, tmp_path)
        if after["requests"] - before["requests"] >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert after["requests"] - before["requests"] == 2
    assert after["prompt_tokens"] - before["prompt_tokens"] == evaluated
    assert after["generated_tokens"] - before["generated_tokens"] == generated
    assert after["prompt_s"] > before["prompt_s"] and after["generation_s"] > before["generation_s"]
    # the sampler finds the server among this process's descendants and reads its own CPU seconds
    server_cpu: dict[int, float] = {}
    assert bench.tree_rss(psutil.Process(os.getpid()), server_cpu) > 0
    assert server_cpu.get(llama_server.pid, 0) > 0, server_cpu


def test_busy_seconds_hold_this_process_and_no_idle_time():
    """The 'other work' figure is the cores' busy seconds less the run's: they must hold this process's own CPU
    seconds and never count idle time (no more than wall time x cores)."""
    bench = peak_memory()
    before, cpu0, wall0 = bench.cores_times(), time.process_time(), time.monotonic()
    while time.process_time() - cpu0 < 0.4:
        pass
    time.sleep(0.3)  # idle: counted nowhere
    busy = bench.busy_seconds(before, bench.cores_times())
    own, wall = time.process_time() - cpu0, time.monotonic() - wall0
    assert own - 0.05 <= busy <= wall * len(os.sched_getaffinity(0)) + 0.05, (own, busy, wall)


def test_stage_spans_inside_another_are_counted_once():
    bench = peak_memory()
    # candidates (10-30) ran inside collect (10-70); train ran after
    assert bench.union_seconds([(10, 70), (10, 30), (70, 100)]) == 90
    assert bench.union_seconds([(0, 5), (3, 8), (20, 21)]) == 9
    assert bench.union_seconds([]) == 0
