"""Votes per second of the two ballot layouts on the managed llama.cpp server, one slot and several, side by side.

    python bench/ballot_layout.py                          # sales: paper anchors, the paper's 20 demographic voters
                                                           # (personas/exp2.json) if ../shared is there; 1 and 8 slots
    python bench/ballot_layout.py --slots 8 --matches 2    # several slots only, more votes
    python bench/ballot_layout.py --tasks sales,elections,social_media
    python bench/ballot_layout.py --threads 2              # two generating threads (default: the config's, 1)

The previous server (llama-cpp-python 0.3.36 with the project's grammar pass and batched decoding) was compared
with llama-server here, on the same ballots in one run, before it was removed: its figures are in
``bench/ballot_layout_table.txt``, and the comparison runs again at commit ba06f5c
(``git worktree add /tmp/cmp ba06f5c``, ``pip install 'llama-cpp-python[server]==0.3.36'``, then
``python bench/ballot_layout.py --servers llama-server,llama-cpp-python``).

``persona_first`` (the paper's order: the persona in the system message, then the ballot) against
``shared_prefix_first`` (``audience.layout=shared_prefix_first``: the ballot all voters of a match share comes
first, the persona last; requests are sent grouped by the option order the voter sees and, on a server with several slots, each group's
first ballot ahead of the rest, see ``AudiencePanel.send_waves``). Both
layouts go through the real ``AudiencePanel`` and ``LLMClient`` with the response cache off, on the same matches
and voters, interleaved in ``--rounds`` rounds (new seeds each round) so that load changes on a shared machine
hit both alike. The option texts are the anchors' own long fields (product descriptions, candidate
biographies, articles), which stand in for the agents' messages.

Prints one row per slot count and layout: votes/s, invalid and failed votes, and the prompt tokens the server
evaluated per request (read from its own timing lines: what prefix reuse saved); then, per slot count, the
shared/persona ratio, the several-slot/one-slot ratio per layout, and how far the faster layout changes the
outcome (agreement of each match's winner and of individual votes between layouts).
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

from hydra.utils import instantiate

from ballots import OPTION_FIELD, anchor_matches, compose_config, default_data_dir
from moloch_exp.connections import ServiceHub
from moloch_exp.llm.ledger import Ledger

LAYOUTS = ("persona_first", "shared_prefix_first")
# llama-server's per-request timing line (print_timings)
PROMPT_EVAL = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")


def build(args, task_name: str, slots: int):
    extra = [f"audience.service.server.n_parallel={slots}", "audience.service.server.replicas=1",  # one server
             f"audience.service.client.concurrency={args.concurrency or max(slots, 2)}"]
    if args.threads:
        extra.append(f"audience.service.server.threads={args.threads}")
    cfg = compose_config(task_name, args.voters, args.max_tokens, args.thought_max_chars, args.data_dir,
                         args.personas_file, extra)
    task = instantiate(cfg.task, _convert_="all")
    panels = {layout: instantiate(cfg.audience, _convert_="all", layout=layout) for layout in LAYOUTS}
    return task, panels


def winners(votes) -> dict[str, int | None]:
    by_match: dict[str, Counter] = {}
    for v in votes:
        by_match.setdefault(v.match_id, Counter())
        if v.status == "ok":
            by_match[v.match_id][v.choice] += 1
    out = {}
    for mid, c in by_match.items():
        top = c.most_common(2)
        out[mid] = None if not top or (len(top) == 2 and top[0][1] == top[1][1]) else top[0][0]
    return out


def server_timings(log: Path, start: int, end: int) -> dict:
    """Sum llama-server's timing lines written to ``log`` between byte offsets ``start`` and ``end``."""
    with open(log, "rb") as fh:
        fh.seek(start)
        text = fh.read(end - start).decode("utf-8", "replace")
    pe = [int(n) for _, n in PROMPT_EVAL.findall(text)]
    return {"requests": len(pe), "prompt_tokens": sum(pe)}


def run_slots(args, task_name: str, slots: int, log_root: Path) -> dict:
    """A server with ``slots`` slots, both layouts interleaved, ``args.rounds`` rounds; returns the measured rows."""
    seconds, votes, timing = defaultdict(float), defaultdict(list), defaultdict(Counter)
    log_dir = log_root / f"{task_name}-{slots}"
    with ServiceHub(None, Ledger(prices={}), None, log_dir) as hub:
        task, panels = build(args, task_name, slots)
        client = hub.open(panels[LAYOUTS[0]].service)  # one server: both layouts share it
        matches = anchor_matches(task, task_name, args.matches)
        client.chat_many([panels[LAYOUTS[0]].requests(task, matches[:1], 999)[0][0]], desc="warm-up")
        log = next(log_dir.glob("server_*.log"))
        for r in range(args.rounds):
            for layout in (LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]):
                time.sleep(0.5)  # let the previous block's last timing lines reach the log
                start = log.stat().st_size
                t0 = time.perf_counter()
                vs = panels[layout].vote(client, task, matches, seed=r, desc=f"{task_name} x{slots} {layout} round {r}")
                seconds[layout] += time.perf_counter() - t0
                time.sleep(0.5)
                timing[layout].update(server_timings(log, start, log.stat().st_size))
                votes[layout] += vs
    return {layout: {"votes": len(votes[layout]), "seconds": seconds[layout],
                     "rate": len(votes[layout]) / seconds[layout],
                     "invalid": sum(v.status == "invalid" for v in votes[layout]),
                     "failed": sum(v.status == "failed" for v in votes[layout]),
                     "prompt_per_request": timing[layout]["prompt_tokens"] / max(timing[layout]["requests"], 1),
                     "list": votes[layout]} for layout in LAYOUTS}


def agreement(a: list, b: list, per_round: int, rounds: int) -> tuple[int, int, int, int]:
    """(winner agreements, matches, vote agreements, voter-matches) between two vote lists of equal rounds."""
    agree_w = total_w = agree_v = total_v = 0
    for r in range(rounds):
        x, y = a[r * per_round:(r + 1) * per_round], b[r * per_round:(r + 1) * per_round]
        wa, wb = winners(x), winners(y)
        agree_w += sum(wa[m] == wb[m] for m in wa)
        total_w += len(wa)
        both = [(p.choice, q.choice) for p, q in zip(x, y) if p.status == q.status == "ok"]
        agree_v += sum(p == q for p, q in both)
        total_v += len(both)
    return agree_w, total_w, agree_v, total_v


def report(args, task_name: str, results: dict[int, dict]) -> None:
    print(f"\n== task {task_name}: {args.matches} matches x {args.voters} voters x {args.rounds} rounds, "
          f"{'paper' if args.data_dir else 'bundled'} anchors, personas {args.personas_file or 'bundled'}, "
          f"max_tokens {args.max_tokens}, generating threads {args.threads or 'as configured'}")
    print(f"{'slots':>5}  {'layout':<21}{'votes':>6}{'seconds':>9}{'votes/s':>9}{'invalid':>8}{'failed':>7}"
          f"{'prompt tokens/request':>23}")
    for slots, rows in results.items():
        for layout in LAYOUTS:
            row = rows[layout]
            print(f"{slots:>5}  {layout:<21}{row['votes']:>6}{row['seconds']:>9.1f}{row['rate']:>9.3f}"
                  f"{row['invalid']:>8}{row['failed']:>7}{row['prompt_per_request']:>23.0f}")
    print()
    first = next(iter(results))
    for slots, rows in results.items():
        ratio = rows["shared_prefix_first"]["rate"] / rows["persona_first"]["rate"]
        print(f"{slots} slot(s): shared_prefix_first / persona_first votes/s {ratio:.2f}x")
        if slots != first:
            print(f"{slots} slot(s) / {first} slot(s) votes/s: " + ", ".join(
                f"{layout} {rows[layout]['rate'] / results[first][layout]['rate']:.2f}x" for layout in LAYOUTS))
    per_round = args.matches * args.voters
    for slots, rows in results.items():
        w, tw, v, tv = agreement(rows["persona_first"]["list"], rows["shared_prefix_first"]["list"], per_round,
                                 args.rounds)
        print(f"{slots} slot(s): winner agreement between layouts {w}/{tw} matches; vote agreement {v}/{tv} "
              "voter-matches")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="sales", help="comma-separated: sales, elections, social_media")
    ap.add_argument("--slots", default="1,8", help="comma-separated slot counts (server.n_parallel)")
    ap.add_argument("--data-dir", default=default_data_dir(),
                    help="the paper's splits (longer options, ~500-token ballots); default: ../shared if present")
    ap.add_argument("--personas-file", default=None,
                    help="persona file under --data-dir: personas/split1.json (the paper's 20 PRODIGY voters, "
                         "~160-token bios) or personas/exp2.json (20 demographic voters, ~25 tokens); default: "
                         "exp2 when --data-dir is there, else the bundled personas")
    ap.add_argument("--concurrency", type=int, default=None,
                    help="requests in flight (default: the slot count, at least 2)")
    ap.add_argument("--threads", type=int, default=None,
                    help="generating threads of the server (default: the audience config's, 1; two wait for "
                         "each other at every step, which costs on a busy machine)")
    ap.add_argument("--log-dir", default=None, help="where the server logs' temporary folder goes (default: the system's)")
    ap.add_argument("--matches", type=int, default=1)
    ap.add_argument("--voters", type=int, default=None,
                    help="voters per match (default: 20, the paper's panel, with --data-dir; else 8, the bundled ones)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-tokens", type=int, default=48, help="answer limit (a one-sentence thought and the vote)")
    ap.add_argument("--thought-max-chars", type=int, default=80)
    args = ap.parse_args()
    if args.personas_file is None and args.data_dir:
        args.personas_file = "personas/exp2.json"
    if args.voters is None:
        args.voters = 20 if args.personas_file else 8
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    bad = [t for t in tasks if t not in OPTION_FIELD]
    if bad:
        ap.error(f"unknown task(s) {', '.join(bad)} (choose from {', '.join(OPTION_FIELD)})")
    slot_counts = [int(s) for s in args.slots.split(",")]
    with tempfile.TemporaryDirectory(dir=args.log_dir) as logs:
        for task_name in tasks:
            results = {slots: run_slots(args, task_name, slots, Path(logs)) for slots in slot_counts}
            report(args, task_name, results)


if __name__ == "__main__":
    main()
