"""Votes per second of the default cell's audience on the local server, laid out three ways, side by side:
one llama-server with two slots (the default before), two single-thread replicas with one slot each (the
default now, ``server.replicas=2``), two replicas with two slots each.

    python bench/server_replicas.py                      # 4 matches x 5 voters (the default cell's votes), 3 rounds
    python bench/server_replicas.py --rounds 5 --matches 8
    python bench/server_replicas.py --layouts one_server_2_slots,replicas_2x1   # a subset

Every layout goes through the real ``AudiencePanel``, ``ServiceHub`` and ``LLMClient`` (response cache off) with
the default cell's ballot (bundled personas, 5 voters, ``max_tokens`` 160, thoughts up to 300 characters,
the JSON schema as a grammar). The options are the paper's sales descriptions when ``../shared`` is there
(the bundled ones otherwise), standing in for the agents' messages. The layouts take turns within each
round (new seeds each round, the order rotated), so that load from other work hits all alike. Prints, per
layout: votes/s, the servers' CPU seconds per vote (the work, whatever the load), prompt and generated
tokens per vote, and per round the ratio of each layout's votes/s to the first layout's, with the median.
On a machine shared with other work the votes/s move with that work; the CPU seconds per vote less so.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import psutil
from hydra.utils import instantiate

from ballots import anchor_matches, compose_config, default_data_dir
from moloch_exp.connections import ServiceHub
from moloch_exp.llm.ledger import Ledger

SERVER = "audience.service.server"
LAYOUTS = {  # name -> overrides of the default audience
    "one_server_2_slots": [f"{SERVER}.replicas=1", f"{SERVER}.n_parallel=2", f"{SERVER}.threads_batch=2",
                           "audience.service.client.concurrency=2"],
    "replicas_2x1": [],  # conf/audience/local.yaml
    "replicas_2x2": [f"{SERVER}.n_parallel=2", "audience.service.client.concurrency=4"],
}


def server_cpu(servers) -> float:
    return sum(sum(psutil.Process(s.pid).cpu_times()[:2]) for s in servers)


def run_layout(name: str, args, round_no: int, log_root: Path) -> dict:
    cfg = compose_config("sales", 5, 160, 300, args.data_dir, None, LAYOUTS[name])
    task, panel = instantiate(cfg.task, _convert_="all"), instantiate(cfg.audience, _convert_="all")
    matches = anchor_matches(task, "sales", args.matches)
    with ServiceHub(None, Ledger(prices={}), None, log_root / f"{name}-{round_no}") as hub:
        client = hub.open(panel.service)
        servers = hub.launch(panel.service)  # the running replicas
        client.chat_many([panel.requests(task, matches[:1], 10_000 + round_no)[0][0]], desc="warm-up")
        before, cpu0, t0 = client.ledger.to_dict(), server_cpu(servers), time.perf_counter()
        votes = panel.vote(client, task, matches, seed=round_no, desc=f"{name} round {round_no}")
        seconds, cpu = time.perf_counter() - t0, server_cpu(servers) - cpu0
        after = client.ledger.to_dict()
    return {"votes": len(votes), "seconds": seconds, "cpu": cpu, "ok": sum(v.status == "ok" for v in votes),
            **{k: after[f"{k}_tokens"] - before[f"{k}_tokens"] for k in ("prompt", "completion")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layouts", default=",".join(LAYOUTS), help=f"comma-separated among {', '.join(LAYOUTS)}")
    ap.add_argument("--matches", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data-dir", default=default_data_dir(), help="the paper's splits (default: ../shared if present)")
    args = ap.parse_args()
    names = [n.strip() for n in args.layouts.split(",") if n.strip()]
    bad = [n for n in names if n not in LAYOUTS]
    if bad:
        ap.error(f"unknown layout(s) {', '.join(bad)}")
    rows: dict[str, list[dict]] = defaultdict(list)
    load = [psutil.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as logs:
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                rows[name].append(run_layout(name, args, r, Path(logs)))
                load.append(psutil.getloadavg()[0])
    print(f"\n{args.matches} matches x 5 voters x {args.rounds} rounds, options from "
          f"{'the paper' if args.data_dir else 'the bundled'} sales anchors; load average {min(load):.1f}-"
          f"{max(load):.1f} (above 0.5: other work shared the cores)")
    print(f"{'layout':<20}{'votes':>6}{'ok':>5}{'seconds':>9}{'votes/s':>9}{'server cpu s/vote':>19}"
          f"{'prompt/vote':>13}{'generated/vote':>16}")
    for name in names:
        rs = rows[name]
        votes, seconds = sum(x["votes"] for x in rs), sum(x["seconds"] for x in rs)
        print(f"{name:<20}{votes:>6}{sum(x['ok'] for x in rs):>5}{seconds:>9.1f}{votes / seconds:>9.3f}"
              f"{sum(x['cpu'] for x in rs) / votes:>19.2f}{sum(x['prompt'] for x in rs) / votes:>13.0f}"
              f"{sum(x['completion'] for x in rs) / votes:>16.0f}")
    first = names[0]
    for name in names[1:]:
        ratios = [(b["votes"] / b["seconds"]) / (a["votes"] / a["seconds"]) for a, b in zip(rows[first], rows[name])]
        print(f"{name} / {first} votes/s per round: {', '.join(f'{x:.2f}' for x in ratios)}; "
              f"median {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
