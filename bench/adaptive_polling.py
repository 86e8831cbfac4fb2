"""Adaptive polling (``moloch_exp.audience.polling``): calls saved and outcome agreement vs full polling.

Run (about 15 s on one core; pure Python, no LLM)::

    python bench/adaptive_polling.py                                   # simulated panels only
    python bench/adaptive_polling.py --votes runs/.../collect/<key>/votes.jsonl   # + a recorded run
    python bench/adaptive_polling.py --confidence 0.99 --min-votes 6 --matches 20000 --invalid 0.05

Every full panel (default 20 voters) is replayed in panel order through each rule; a rule's cost
is the number of voters asked before it stops, its outcome the candidates with the most valid
votes among those asked (ties kept as tied sets). Printed side by side in one run, per source:
calls saved against full polling and the share of matches whose outcome equals the full panel's.

Sources: (a) ``--votes``: a collect stage's ``votes.jsonl`` (``records.Vote``; one match = one
``match_id``, voters in file order, which is the panel order; invalid and failed votes are asked
votes without a preference); (b) simulated matches of two candidates whose panel preference p is
drawn per match from Beta(2, 2), a narrower Beta(5, 5) and a wider Beta(0.5, 0.5); each voter picks
candidate 1 with probability p, or is invalid with probability ``--invalid``. Seeded.

Targets (on Beta(2, 2)): exact keeps every outcome with >= 20% fewer calls; sequential saves
>= 40% of calls with >= 98% agreement. The script prints whether each is met.

Recorded panels: bench/data/votes_20_voters_smollm2.jsonl is the collect stage's votes.jsonl of one real run
of this project (6 sales anchors, 20 voters from the paper's personas/all.json voiced by SmolLM2 on the
local llama.cpp server, the tiny agent's candidates):

    python bench/adaptive_polling.py --votes bench/data/votes_20_voters_smollm2.jsonl
"""
from __future__ import annotations

import argparse
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from moloch_exp.audience.polling import ExactPolling, PollingRule, SequentialPolling, outcome, poll  # noqa: E402
from moloch_exp.records import Vote, read_jsonl  # noqa: E402

Panel = list  # list[int | None], one entry per voter in panel order


def simulated_panels(a: float, b: float, n_matches: int, n_voters: int, invalid: float, seed: int) -> list[Panel]:
    rng = np.random.default_rng(seed)
    p = rng.beta(a, b, size=n_matches)
    picks = (rng.random((n_matches, n_voters)) < p[:, None]).astype(int)
    bad = rng.random((n_matches, n_voters)) < invalid
    return [[None if bad[m, i] else int(picks[m, i]) for i in range(n_voters)] for m in range(n_matches)]


def recorded_panels(path: str) -> list[Panel]:
    by_match: OrderedDict[str, Panel] = OrderedDict()
    for v in read_jsonl(path, Vote):
        by_match.setdefault(v.match_id, []).append(v.choice if v.status == "ok" else None)
    return list(by_match.values())


def replay(rule: PollingRule, panels: list[Panel]) -> dict:
    asked = agree = disagree_on_tie = 0
    for panel in panels:
        k = poll(rule, panel)
        asked += k
        same = outcome(panel[:k]) == outcome(panel)
        agree += same
        disagree_on_tie += (not same) and len(outcome(panel)) > 1
    full = sum(len(p) for p in panels)
    return {"saved": 1 - asked / full if full else 0.0, "agreement": agree / len(panels) if panels else None,
            "calls": asked, "full_calls": full, "matches": len(panels),
            "disagreements": len(panels) - agree, "disagreements_full_panel_tied": disagree_on_tie}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--votes", help="a collect stage's votes.jsonl to replay (source a)")
    ap.add_argument("--matches", type=int, default=10000, help="simulated matches per spread")
    ap.add_argument("--voters", type=int, default=20)
    ap.add_argument("--invalid", type=float, default=0.0, help="share of simulated votes that are invalid")
    ap.add_argument("--confidence", type=float, default=SequentialPolling.confidence)
    ap.add_argument("--min-votes", type=int, default=SequentialPolling.min_votes)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    rules: dict[str, PollingRule] = {"exact": ExactPolling(),
                                     "sequential": SequentialPolling(args.confidence, args.min_votes)}
    sources: list[tuple[str, list[Panel]]] = []
    if args.votes:
        panels = recorded_panels(args.votes)
        sizes = sorted({len(p) for p in panels})
        sources.append((f"recorded ({len(panels)} matches, panel sizes {sizes})", panels))
    for i, (a, b) in enumerate([(2, 2), (5, 5), (0.5, 0.5)]):
        sources.append((f"Beta({a:g},{b:g})", simulated_panels(a, b, args.matches, args.voters, args.invalid,
                                                              args.seed + i)))

    print(f"adaptive polling vs full polling: {args.voters} voters, {args.matches} simulated matches per spread, "
          f"invalid share {args.invalid:g}, seed {args.seed}")
    print(f"rules: {', '.join(str(r.identity()) for r in rules.values())}")
    head = f"{'source':<44}" + "".join(f"{name + ' saved':>18}{name + ' agree':>18}" for name in rules)
    print(head)
    print("-" * len(head))
    results: dict[str, dict[str, dict]] = {}
    for label, panels in sources:
        results[label] = {name: replay(rule, panels) for name, rule in rules.items()}
        print(f"{label:<44}" + "".join(f"{r['saved']:>18.1%}{r['agreement']:>18.2%}" for r in results[label].values()))

    print("sequential disagreements whose full panel ended tied: " + ", ".join(
        f"{label.split(' ')[0]} {r['sequential']['disagreements_full_panel_tied']}/{r['sequential']['disagreements']}"
        for label, r in results.items()))
    target = results["Beta(2,2)"]
    checks = [("exact: every outcome identical", target["exact"]["agreement"] == 1.0),
              ("exact: >= 20% fewer calls", target["exact"]["saved"] >= 0.20),
              ("sequential: >= 40% fewer calls", target["sequential"]["saved"] >= 0.40),
              ("sequential: >= 98% agreement", target["sequential"]["agreement"] >= 0.98)]
    print("\ntargets on Beta(2,2):")
    for name, ok in checks:
        print(f"  {'MET    ' if ok else 'NOT MET'} {name}")
    if not args.votes:
        print("(no --votes: source (a), a recorded 20-voter run, not replayed)")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
