"""Structured-answer speed of llama-cpp-python's stock grammar pass against the pooled one, side by side.

    python bench/grammar_sampler.py                          # 20 sales votes, paper anchors and voters if ../shared is there
    python bench/grammar_sampler.py --task elections --votes 40 --max-tokens 160 --thought-max-chars 300

The managed llama.cpp server runs ``moloch_exp.llm.llamacpp_serve``, which applies the JSON-schema grammar to
the top ``--pool`` candidates first and, only where that could change the result, to the candidates whose
first bytes the grammar can still read (``ManagedServer(grammar_pool=0)`` is the stock pass). This bench loads
SmolLM2 once, in-process (no HTTP), and answers the same audience ballots (the real ``AudiencePanel`` requests
in their send order: the vote schema, temperature, seeds; by default the shared-prefix layout, so that little
besides the answer is timed) with both passes, in alternating blocks so load changes hit both alike. Prints
seconds per answer, milliseconds per generated token, the speed ratio, how many answers came out identical
(the pooled pass is meant to be exact: all of them), and which path answered each grammar step.
"""
from __future__ import annotations

import argparse
import os
import time

from hydra.utils import instantiate
from llama_cpp import Llama

from ballots import OPTION_FIELD, anchor_matches, compose_config, default_data_dir
from moloch_exp.llm import llamacpp_serve, smollm2_gguf_path
from moloch_exp.llm.structured import response_format_for


def ballots(args):
    cfg = compose_config(args.task, args.votes, args.max_tokens, args.thought_max_chars, args.data_dir,
                         args.personas_file)
    task = instantiate(cfg.task, _convert_="all")
    panel = instantiate(cfg.audience, _convert_="all", layout=args.layout)
    requests, meta = panel.requests(task, anchor_matches(task, args.task, 1), 0)
    return [requests[i] for i in panel.send_order(list(range(len(requests))), meta)]


def answer(llm: Llama, req) -> tuple[str, int]:
    out = llm.create_chat_completion([{"role": r, "content": c} for r, c in req.messages],
                                     response_format=response_format_for("llamacpp", req.json_schema),
                                     max_tokens=req.max_tokens, temperature=req.temperature, seed=req.seed)
    return out["choices"][0]["message"]["content"], out["usage"]["completion_tokens"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="sales", choices=sorted(OPTION_FIELD))
    ap.add_argument("--data-dir", default=default_data_dir())
    ap.add_argument("--personas-file", default=None, help="under --data-dir, e.g. personas/exp2.json (20 voters); "
                    "default: that file when --data-dir is there, else the 8 bundled personas")
    ap.add_argument("--votes", type=int, default=None, help="ballots, one per voter of one match (default: all voters)")
    ap.add_argument("--block", type=int, default=10, help="ballots per block (10: one option order of 20 voters); "
                    "blocks alternate stock / pooled")
    ap.add_argument("--layout", default="shared_prefix_first", choices=["shared_prefix_first", "persona_first"],
                    help="shared_prefix_first (default): consecutive ballots share the ballot, so the time is "
                         "mostly the answer's; persona_first: every answer also pays its whole prompt")
    ap.add_argument("--pool", type=int, default=llamacpp_serve.DEFAULT_POOL)
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: all cores)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--thought-max-chars", type=int, default=80)
    args = ap.parse_args()
    if args.personas_file is None and args.data_dir:
        args.personas_file = "personas/exp2.json"
    if args.votes is None:
        args.votes = 20 if args.personas_file else 8

    requests = ballots(args)
    threads = args.threads or os.cpu_count() or 1
    llm = Llama(smollm2_gguf_path(), n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
    answer(llm, requests[0])  # page the model in
    seconds = {"stock": 0.0, "pooled": 0.0}
    tokens = {"stock": 0, "pooled": 0}
    texts: dict[str, list[str]] = {"stock": [], "pooled": []}
    blocks = [requests[i:i + args.block] for i in range(0, len(requests), args.block)]
    for b, block in enumerate(blocks):
        for mode in (("stock", "pooled") if b % 2 == 0 else ("pooled", "stock")):
            if mode == "pooled":
                llamacpp_serve.install(args.pool)
            # both modes start a block from an empty cache, so each prompt is evaluated in the same pieces
            # (another split changes logits in the last bits, and a near-tie could then sample differently)
            llm.reset()
            for req in block:
                t0 = time.perf_counter()
                text, n = answer(llm, req)
                seconds[mode] += time.perf_counter() - t0
                tokens[mode] += n
                texts[mode].append((req.seed, text))
            llamacpp_serve.uninstall()
    n = len(requests)
    print(f"\n== {args.task}: {n} ballots, {'paper' if args.data_dir else 'bundled'} anchors, max_tokens "
          f"{args.max_tokens}, {threads} thread(s), pool {args.pool}, layout {args.layout}")
    print(f"{'grammar pass':<14}{'s/answer':>10}{'tokens':>8}{'ms/token':>10}  (prompt included, {args.layout})")
    for mode in seconds:
        print(f"{mode:<14}{seconds[mode] / n:>10.3f}{tokens[mode]:>8}{1000 * seconds[mode] / max(tokens[mode], 1):>10.1f}")
    same = sum(a == b for a, b in zip(sorted(texts["stock"]), sorted(texts["pooled"])))
    steps = llamacpp_serve.steps
    print(f"pooled / stock answers per second: {seconds['stock'] / seconds['pooled']:.2f}x; identical answers: "
          f"{same}/{n}; grammar steps: {steps['pooled']} from the pool, {steps['by_bytes']} by bytes, "
          f"{steps['full']} full of {sum(steps.values())}")


if __name__ == "__main__":
    main()
