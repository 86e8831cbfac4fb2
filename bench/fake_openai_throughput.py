"""LLMClient against a hosted API's latency: calls/s at concurrency 64 against the ideal, side by side in
one run, for a bare asyncio HTTP load generator, the client as it was before its layers (the openai
SDK's transport, its ``client.py`` loaded from git at ``--before``) and the client now; with no 429s
and with a share of 429s (``Retry-After`` 0.2 s). The fake API runs as its own process.

Run (about 4 min on an idle machine)::

    python bench/fake_openai_throughput.py                       # 5,000 calls a row, 0 and 2% 429s
    python bench/fake_openai_throughput.py --calls 2000 --fault-429-shares 0.02 --before none

Prints, per row: calls, wall seconds, calls/s, the ratio to the ideal (n_calls x latency / concurrency
seconds), client CPU ms per call, and the 429s the fake answered; then the fake's CPU ms per call (its
capacity on one core: it must not be the bottleneck) and the load average before and after. Each row
uses new requests (new seeds) and a new SQLite response cache, as a first run of a stage would.
Target (issue 19 item 3): LLMClient >= 0.9 of the ideal. On a machine shared with other work the
client's figures fall with the CPU share it gets: quote them with the load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from moloch_exp.llm import ChatRequest, LLMClient, ResponseCache, json_parser  # noqa: E402
from moloch_exp.testing.fake_openai import FakeOpenAIProcess  # noqa: E402

SCHEMA = {"type": "object", "properties": {"thought": {"type": "string"}, "vote": {"type": "string", "enum": ["A", "B"]}},
          "required": ["thought", "vote"], "additionalProperties": False}
PERSONA = "You are a thrifty retired teacher from Ohio who reads every label twice. " * 8
BEFORE = "76b9bf8"  # main before the client's layers: LLMClient on the openai SDK


def request(i: int) -> ChatRequest:
    return ChatRequest(messages=[{"role": "system", "content": PERSONA},
                                 {"role": "user", "content": f"## A\nA red mug #{i}, dishwasher safe.\n\n## B\nA blue lamp #{i}."
                                                             " Which do you buy?"}],
                       max_tokens=160, temperature=0.1, seed=i, json_schema=SCHEMA, purpose="vote")


async def bare(base_url: str, seeds: range, concurrency: int) -> None:
    """``concurrency`` keep-alive HTTP/1.1 connections on raw asyncio streams: next to no client CPU."""
    u = urlsplit(base_url)
    todo = list(seeds)

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(u.hostname, u.port)
        while todo:
            i = todo.pop()
            r = request(i)
            body = json.dumps({"model": "gpt-4o-mini", "messages": r.messages_as_dicts(), "max_tokens": r.max_tokens,
                               "seed": i, "response_format": {"type": "json_schema", "json_schema": {
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

    await asyncio.gather(*(connection() for _ in range(concurrency)))


def client_before(commit: str):
    """``LLMClient`` of ``moloch_exp/llm/client.py`` at ``commit``, on today's other modules."""
    src = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:moloch_exp/llm/client.py"],
                         capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("moloch_exp.llm.client_before")
    module.__package__ = "moloch_exp.llm"
    sys.modules[module.__name__] = module
    exec(compile(src, f"{commit}:moloch_exp/llm/client.py", "exec"), module.__dict__)
    return module.LLMClient


def timed(api, fn) -> tuple[float, float, float, int]:
    """(wall s, client CPU s, fake CPU s, 429s answered) of ``fn()``."""
    limited0 = api.stats()["status"].get("429", 0)
    f0, c0, w0 = api.cpu_seconds(), time.process_time(), time.perf_counter()
    fn()
    wall, cpu, fake = time.perf_counter() - w0, time.process_time() - c0, api.cpu_seconds() - f0
    return wall, cpu, fake, api.stats()["status"].get("429", 0) - limited0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--calls", type=int, default=5000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency-s", type=float, default=0.3)
    p.add_argument("--jitter-s", type=float, default=0.05)
    p.add_argument("--fault-429-shares", type=float, nargs="+", default=[0.0, 0.02])
    p.add_argument("--before", default=BEFORE, help="git commit of the client to compare with ('none': skip)")
    args = p.parse_args()
    n, ideal_wall = args.calls, args.calls * args.latency_s / args.concurrency
    before = None
    if args.before != "none":
        try:
            before = client_before(args.before)
        except Exception as err:  # noqa: BLE001 - the row is left out, saying why
            print(f"(no 'before' row: {type(err).__name__}: {' '.join(str(err).split())[:200]})")
    clients = [("bare asyncio streams", None)]
    if before is not None:
        clients.append((f"LLMClient before ({args.before})", before))
    clients.append(("LLMClient now", LLMClient))
    print(f"fake OpenAI API: latency {args.latency_s} +- {args.jitter_s} s, concurrency {args.concurrency}, "
          f"{n} calls a row; ideal {ideal_wall:.1f} s ({args.concurrency / args.latency_s:.0f} calls/s); "
          f"load average before {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'429 share':>9} {'client':<30} {'calls':>6} {'wall s':>7} {'calls/s':>8} {'/ideal':>7} "
          f"{'cpu ms/call':>11} {'429s':>5}")
    fake_cpu, fake_calls, row = 0.0, 0, 0
    for share in args.fault_429_shares:
        with FakeOpenAIProcess(latency_s=args.latency_s, jitter_s=args.jitter_s, fault_429_share=share,
                               fault_retry_after_s=0.2) as api, tempfile.TemporaryDirectory() as tmp:
            for name, cls in clients:
                seeds = range(row * n, (row + 1) * n)  # new requests for every row: nothing cached anywhere
                row += 1
                if cls is None:
                    wall, cpu, fake, limited = timed(api, lambda: asyncio.run(bare(api.base_url, seeds, args.concurrency)))
                    ok = n
                else:
                    client = cls(api.base_url, "gpt-4o-mini", concurrency=args.concurrency, progress=False,
                                 backoff_initial_s=0.1, cache=ResponseCache(Path(tmp) / f"{row}.sqlite"))
                    out: list = []
                    wall, cpu, fake, limited = timed(api, lambda: out.extend(client.parse_many(
                        [request(i) for i in seeds], json_parser(SCHEMA), invalid_retries=0)))
                    ok = sum(x.ok for x in out)
                fake_cpu, fake_calls = fake_cpu + fake, fake_calls + n + limited
                note = "" if ok == n else f"  ({n - ok} not ok)"
                print(f"{share:>9.0%} {name:<30} {n:>6} {wall:>7.1f} {n / wall:>8.1f} {ideal_wall / wall:>7.2f} "
                      f"{1000 * cpu / n:>11.2f} {limited:>5}{note}", flush=True)
    per_call = 1000 * fake_cpu / fake_calls
    capacity = 1000 / per_call
    print(f"fake server: {per_call:.2f} CPU ms per request -> capacity about {capacity:.0f} calls/s on one core "
          f"({'not the bottleneck' if capacity > 2 * args.concurrency / args.latency_s else 'CLOSE TO THE BOTTLENECK'})")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
