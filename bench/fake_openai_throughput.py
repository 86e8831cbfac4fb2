"""The loopback fake OpenAI API under load: is it ever the bottleneck? Calls/s at concurrency 64 against
the ideal (concurrency / mean latency), for a bare asyncio HTTP load generator and for LLMClient, with
the fake's own CPU time per call, side by side in one run.

Run (about 1 min; the fake runs as its own process)::

    python bench/fake_openai_throughput.py
    python bench/fake_openai_throughput.py --calls 4000 --concurrency 64 --latency-s 0.3 --fault-429-share 0.02

Prints, per client: calls, wall seconds, calls/s, the ratio to the ideal, client CPU ms per call; and
the fake's CPU ms per call, hence the calls/s one core of it could serve (its capacity). Target: the
fake's capacity is well above the ~190 calls/s of concurrency 64 at 0.3 s (so it is not the bottleneck),
and the bare load generator reaches >= 0.9 of the ideal. On a machine shared with other work the client
figures fall with the CPU share the client gets; the fake's CPU per call does not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moloch_exp.llm import ChatRequest, LLMClient, json_parser  # noqa: E402
from moloch_exp.testing.fake_openai import FakeOpenAIProcess  # noqa: E402

SCHEMA = {"type": "object", "properties": {"thought": {"type": "string"}, "vote": {"type": "string", "enum": ["A", "B"]}},
          "required": ["thought", "vote"], "additionalProperties": False}
PERSONA = "You are a thrifty retired teacher from Ohio who reads every label twice. " * 8


def request(i: int) -> ChatRequest:
    return ChatRequest(messages=[{"role": "system", "content": PERSONA},
                                 {"role": "user", "content": f"## A\nA red mug #{i}, dishwasher safe.\n\n## B\nA blue lamp #{i}."
                                                             " Which do you buy?"}],
                       max_tokens=160, temperature=0.1, seed=i, json_schema=SCHEMA, purpose="vote")


async def bare(base_url: str, n: int, concurrency: int) -> float:
    """``concurrency`` keep-alive HTTP/1.1 connections on raw asyncio streams: next to no client CPU."""
    u = urlsplit(base_url)
    todo = list(range(n))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        while todo:
            i = todo.pop()
            r = request(i)
            body = json.dumps({"model": "gpt-4o-mini", "messages": r.messages_as_dicts(), "max_tokens": r.max_tokens,
                               "seed": i + 10**6, "response_format": {"type": "json_schema", "json_schema": {
                                   "name": "answer", "schema": SCHEMA, "strict": True}}}).encode()
            while True:
                writer.write(f"POST {u.path}/chat/completions HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: "
                             f"application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head.split(b" ", 2)[1])
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                await reader.readexactly(length)
                if status != 429:
                    break
                await asyncio.sleep(float(re.search(rb"(?i)retry-after-ms: *(\d+)", head).group(1)) / 1000)
            assert status == 200, status
        writer.close()

    t = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return time.perf_counter() - t


def row(name: str, n: int, wall: float, cpu: float, ideal: float) -> str:
    return f"{name:<28} {n:>6} {wall:>8.1f} {n / wall:>8.1f} {n / wall / ideal:>7.2f} {1000 * cpu / n:>9.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency-s", type=float, default=0.3)
    p.add_argument("--jitter-s", type=float, default=0.05)
    p.add_argument("--fault-429-share", type=float, default=0.0)
    args = p.parse_args()
    ideal = args.concurrency / args.latency_s
    with FakeOpenAIProcess(latency_s=args.latency_s, jitter_s=args.jitter_s, fault_429_share=args.fault_429_share,
                           fault_retry_after_s=0.2) as api:
        rows = []
        c0, t0 = api.cpu_seconds(), time.process_time()
        wall = asyncio.run(bare(api.base_url, args.calls, args.concurrency))
        rows.append(row("bare asyncio streams", args.calls, wall, time.process_time() - t0, ideal))
        fake_cpu = api.cpu_seconds() - c0
        n_fake = args.calls

        client = LLMClient(api.base_url, "gpt-4o-mini", concurrency=args.concurrency, progress=False,
                           backoff_initial_s=0.1)
        reqs = [request(i) for i in range(args.calls)]
        c0, t0, w0 = api.cpu_seconds(), time.process_time(), time.perf_counter()
        parsed = client.parse_many(reqs, json_parser(SCHEMA), invalid_retries=0)
        wall = time.perf_counter() - w0
        rows.append(row("LLMClient.parse_many", args.calls, wall, time.process_time() - t0, ideal))
        fake_cpu += api.cpu_seconds() - c0
        n_fake += args.calls
        stats = api.stats()
    ok = sum(x.ok for x in parsed)
    print(f"fake OpenAI API: latency {args.latency_s} +- {args.jitter_s} s, concurrency {args.concurrency}, "
          f"ideal {ideal:.0f} calls/s, 429 share {args.fault_429_share}")
    print(f"{'client':<28} {'calls':>6} {'wall s':>8} {'calls/s':>8} {'/ideal':>7} {'cpu ms/call':>9}")
    for r in rows:
        print(r)
    per_call = 1000 * fake_cpu / n_fake
    print(f"fake server: {per_call:.2f} CPU ms per call -> capacity about {1000 / per_call:.0f} calls/s on one core "
          f"({'not the bottleneck' if 1000 / per_call > 2 * ideal else 'CLOSE TO THE BOTTLENECK'} at {ideal:.0f} calls/s)")
    print(f"server counts: {stats['answered']} answered, {stats['status'].get('429', 0)} x 429; "
          f"LLMClient: {ok}/{len(parsed)} parsed ok")


if __name__ == "__main__":
    main()
