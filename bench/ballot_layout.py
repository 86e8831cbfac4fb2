"""Votes per second of the two ballot layouts against one managed llama.cpp server, side by side.

    python bench/ballot_layout.py                   # sales: paper anchors and the paper's 20 demographic voters
                                                    # (personas/exp2.json) if ../shared is there, else bundled
    python bench/ballot_layout.py --tasks sales,elections,social_media              # all three tasks
    python bench/ballot_layout.py --tasks sales --matches 2                         # more votes per layout
    python bench/ballot_layout.py --tasks elections --personas-file personas/split1.json  # PRODIGY bios
    python bench/ballot_layout.py --max-tokens 160 --thought-max-chars 300   # the default audience's answer size

``persona_first`` (the paper's order: the persona in the system message, then the ballot) against
``shared_prefix_first`` (``audience.layout=shared_prefix_first``: the ballot all voters of a match
share comes first, the persona last, and each match's requests are sent grouped by the option
order the voter sees). llama.cpp keeps the previous request's KV cache and reuses its longest
common prefix, so the second layout pays prompt processing for the shared ballot once per option
order instead of once per voter. Both layouts go through the real ``AudiencePanel`` and
``LLMClient`` with the response cache off, on the same matches and voters, interleaved in
``--rounds`` rounds (new seeds each round) so that load changes on a shared machine hit both alike.
The option texts are the anchors' own long fields (product descriptions, candidate biographies,
articles), which stand in for the agents' messages.

Prints, per task: votes/s per layout and their ratio; the prompt tokens the server had to evaluate
per request, read from its own timing lines (what prefix reuse saved); and how far the faster layout changes the outcome:
agreement of each match's winner (majority of valid votes) and of individual votes between layouts.
The layout can only remove prompt processing of the shared part: the persona (evaluated per voter),
the first voter of each option order, and the answer itself are paid in both layouts.
"""
from __future__ import annotations

import argparse
import re
import tempfile
import time
from collections import Counter
from pathlib import Path

from hydra.utils import instantiate

from ballots import OPTION_FIELD, anchor_matches, compose_config, default_data_dir
from moloch_exp.connections import ServiceHub
from moloch_exp.llm.ledger import Ledger

LAYOUTS = ("persona_first", "shared_prefix_first")
# llama.cpp's per-request timing lines (llama_perf_context_print), as llama-cpp-python's server logs them
PROMPT_EVAL = re.compile(r"prompt eval time =\s*([\d.]+) ms /\s*(\d+) tokens")
BATCHED = re.compile(r"batched request: (\d+) prompt tokens evaluated")  # llamacpp_batch.py's line per request


def build(args, task_name: str):
    extra = [f"audience.service.client.concurrency={args.concurrency or args.parallel}"] if (
        args.concurrency or args.parallel > 1) else []
    if args.parallel > 1:
        extra.append(f"audience.service.server.n_parallel={args.parallel}")
    cfg = compose_config(task_name, args.voters, args.max_tokens, args.thought_max_chars, args.data_dir,
                         args.personas_file, extra)
    task = instantiate(cfg.task, _convert_="all")
    panels = {layout: instantiate(cfg.audience, _convert_="all", layout=layout) for layout in LAYOUTS}
    return task, panels, anchor_matches(task, task_name, args.matches)


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
    """Sum llama.cpp's timing lines written to ``log`` between byte offsets ``start`` and ``end``."""
    with open(log, "rb") as fh:
        fh.seek(start)
        text = fh.read(end - start).decode("utf-8", "replace")
    pe = [int(n) for _, n in PROMPT_EVAL.findall(text)] + [int(n) for n in BATCHED.findall(text)]
    # token counts only: llama-cpp-python's per-request millisecond figures are unreliable (a request
    # whose prompt was evaluated can report ~0 ms), so time comes from the wall clock
    return {"requests": len(pe), "prompt_tokens": sum(pe)}


def run_task(args, task_name: str, hub: ServiceHub, log_dir: Path) -> float:
    task, panels, matches = build(args, task_name)
    client = hub.open(panels[LAYOUTS[0]].service)  # one server: both layouts share it
    client.chat_many([panels[LAYOUTS[0]].requests(task, matches[:1], 999)[0][0]], desc="warm-up")
    log = next(log_dir.glob("server_*.log"))
    seconds = {layout: 0.0 for layout in LAYOUTS}
    votes = {layout: [] for layout in LAYOUTS}
    timing = {layout: Counter() for layout in LAYOUTS}
    for r in range(args.rounds):
        for layout in (LAYOUTS if r % 2 == 0 else LAYOUTS[::-1]):
            time.sleep(0.5)  # let the previous block's last timing lines reach the log
            start = log.stat().st_size
            t0 = time.perf_counter()
            vs = panels[layout].vote(client, task, matches, seed=r, desc=f"{task_name} {layout} round {r}")
            seconds[layout] += time.perf_counter() - t0
            time.sleep(0.5)
            timing[layout].update(server_timings(log, start, log.stat().st_size))
            votes[layout] += vs
    n = {layout: len(votes[layout]) for layout in LAYOUTS}
    rate = {layout: n[layout] / seconds[layout] for layout in LAYOUTS}
    print(f"\n== task {task_name}: {args.matches} matches x {args.voters} voters x {args.rounds} rounds, "
          f"{'paper' if args.data_dir else 'bundled'} anchors, personas {args.personas_file or 'bundled'}, "
          f"max_tokens {args.max_tokens}, server parallel {args.parallel}")
    print(f"{'layout':<22}{'votes':>6}{'seconds':>9}{'votes/s':>9}{'invalid':>8}{'failed':>7}"
          f"{'requests':>9}{'prompt tokens evaluated/request':>33}")
    for layout in LAYOUTS:
        vs, t = votes[layout], timing[layout]
        req = max(t["requests"], 1)
        print(f"{layout:<22}{n[layout]:>6}{seconds[layout]:>9.1f}{rate[layout]:>9.3f}"
              f"{sum(v.status == 'invalid' for v in vs):>8}{sum(v.status == 'failed' for v in vs):>7}"
              f"{t['requests']:>9}{t['prompt_tokens'] / req:>33.0f}")
    ratio = rate["shared_prefix_first"] / rate["persona_first"]
    print(f"shared_prefix_first / persona_first votes/s: {ratio:.2f}x (target >= 3x: {'MET' if ratio >= 3 else 'NOT MET'})")
    # What the faster layout changes: per round (same seed, same voters, same option order) compare outcomes.
    agree_w = total_w = agree_v = total_v = 0
    per_round = len(matches) * args.voters
    for r in range(args.rounds):
        a = votes["persona_first"][r * per_round:(r + 1) * per_round]
        b = votes["shared_prefix_first"][r * per_round:(r + 1) * per_round]
        wa, wb = winners(a), winners(b)
        agree_w += sum(wa[m] == wb[m] for m in wa)
        total_w += len(wa)
        both = [(x.choice, y.choice) for x, y in zip(a, b) if x.status == y.status == "ok"]
        agree_v += sum(x == y for x, y in both)
        total_v += len(both)
    print(f"winner agreement between layouts: {agree_w}/{total_w} matches"
          f" ({agree_w / total_w:.0%}); vote agreement: {agree_v}/{total_v} voter-matches"
          + (f" ({agree_v / total_v:.0%})" if total_v else ""))
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", default="sales", help="comma-separated: sales, elections, social_media")
    ap.add_argument("--data-dir", default=default_data_dir(),
                    help="the paper's splits (longer options, ~500-token ballots); default: ../shared if present")
    ap.add_argument("--personas-file", default=None,
                    help="persona file under --data-dir: personas/split1.json (the paper's 20 PRODIGY voters, "
                         "~160-token bios) or personas/exp2.json (20 demographic voters, ~25 tokens); default: "
                         "exp2 when --data-dir is there, else the bundled personas")
    ap.add_argument("--concurrency", type=int, default=None, help="requests in flight (default: the audience config's)")
    ap.add_argument("--parallel", type=int, default=1,
                    help="N > 1: the server decodes up to N requests together (server.n_parallel; llamacpp_batch.py), "
                         "with N requests in flight unless --concurrency says otherwise")
    ap.add_argument("--log-dir", default=None, help="where the server log's temporary folder goes (default: the system's)")
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

    ratios = {}
    with tempfile.TemporaryDirectory(dir=args.log_dir) as logs, ServiceHub(None, Ledger(prices={}), None, logs) as hub:
        for task_name in tasks:
            ratios[task_name] = run_task(args, task_name, hub, Path(logs))
    if len(ratios) > 1:
        print("\nvotes/s ratio by task: " + ", ".join(f"{t} {r:.2f}x" for t, r in ratios.items()))


if __name__ == "__main__":
    main()
