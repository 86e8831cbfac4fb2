"""Requests per second of the managed llama.cpp server with one model thread against the stock thread pool.

    python bench/model_thread.py                                   # elections, 20 voters of one match, both layouts
    python bench/model_thread.py --task sales --rounds 3 --layouts shared_prefix_first

llama-cpp-python's server runs each request on whichever of anyio's pool threads is free. ggml's OpenMP build
gives every new calling thread its own worker team; the same calls from a new thread each time were much
slower than from one thread (likely libgomp sleeping at its barriers instead of spinning once more OpenMP
threads are alive than cores; see ``moloch_exp/llm/llamacpp_serve.py``).
``moloch_exp.llm.llamacpp_serve`` therefore runs every model call on one dedicated thread
(``server.model_thread: true``, the default). This bench starts two managed servers, one each way, and sends
both the same audience ballots (the real ``AudiencePanel`` and ``LLMClient``, response cache off), in
alternating blocks so that load changes on a shared machine hit both alike. Only one server works at a
time; the idle one sleeps. Prints seconds per request for each server and layout, the ratio, and how many
answers came out identical (the same seeds on the same model: all of them).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from hydra.utils import instantiate

from ballots import OPTION_FIELD, anchor_matches, compose_config, default_data_dir
from moloch_exp.connections import ServiceHub
from moloch_exp.llm.ledger import Ledger

THREADING = {"one model thread": "true", "stock thread pool": "false"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="elections", choices=sorted(OPTION_FIELD))
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--personas-file", default=None, help="under --data-dir; default: personas/exp2.json there "
                                                           "(the paper's 20 demographic voters), else bundled")
    ap.add_argument("--voters", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2, help="blocks per server and layout (new seeds each round)")
    ap.add_argument("--layouts", default="shared_prefix_first,persona_first")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--thought-max-chars", type=int, default=80)
    args = ap.parse_args()
    if args.personas_file is None and args.data_dir:
        args.personas_file = "personas/exp2.json"
    layouts = [x.strip() for x in args.layouts.split(",") if x.strip()]

    panels, task = {}, None
    for name, flag in THREADING.items():
        cfg = compose_config(args.task, args.voters, args.max_tokens, args.thought_max_chars, args.data_dir,
                             args.personas_file, [f"audience.service.server.model_thread={flag}"])
        task = instantiate(cfg.task, _convert_="all")
        panels[name] = {layout: instantiate(cfg.audience, _convert_="all", layout=layout) for layout in layouts}
    matches = anchor_matches(task, args.task, 1)

    seconds = {(n, lay): 0.0 for n in THREADING for lay in layouts}
    answers = {key: [] for key in seconds}
    with tempfile.TemporaryDirectory() as logs, ServiceHub(None, Ledger(prices={}), None, logs) as hub:
        clients = {n: hub.open(panels[n][layouts[0]].service) for n in THREADING}  # two servers: settings differ
        for n, client in clients.items():
            client.chat_many([panels[n][layouts[0]].requests(task, matches, 999)[0][0]], desc=f"warm-up {n}")
        for r in range(args.rounds):
            for layout in layouts:
                for n in (list(THREADING) if r % 2 == 0 else list(THREADING)[::-1]):
                    t0 = time.perf_counter()
                    votes = panels[n][layout].vote(clients[n], task, matches, seed=r, desc=f"{n} {layout} round {r}")
                    seconds[(n, layout)] += time.perf_counter() - t0
                    answers[(n, layout)] += [(v.status, v.raw) for v in votes]
        server_logs = sorted(Path(logs).glob("server_*.log"))
        pinned = sum("model calls: one dedicated thread" in p.read_text() for p in server_logs)

    print(f"\n== {args.task}: 1 match x {args.voters} voters x {args.rounds} rounds, "
          f"{'paper' if args.data_dir else 'bundled'} anchors, personas {args.personas_file or 'bundled'}, "
          f"max_tokens {args.max_tokens}; servers started: {len(server_logs)}, logging one model thread: {pinned}")
    print(f"{'layout':<22}{'server':<20}{'requests':>9}{'seconds':>9}{'s/request':>11}")
    for layout in layouts:
        for n in THREADING:
            k = len(answers[(n, layout)])
            print(f"{layout:<22}{n:<20}{k:>9}{seconds[(n, layout)]:>9.1f}{seconds[(n, layout)] / k:>11.3f}")
        one, pool = (answers[(n, layout)] for n in THREADING)
        same = sum(a == b for a, b in zip(one, pool))
        ratio = seconds[("stock thread pool", layout)] / seconds[("one model thread", layout)]
        print(f"{layout}: one model thread is {ratio:.2f}x the stock pool's requests/s; "
              f"identical answers {same}/{len(one)}")


if __name__ == "__main__":
    main()
