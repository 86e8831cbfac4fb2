"""Pre-flight estimate of the LLM calls and cost of a cell, printed before any work."""
from __future__ import annotations

from moloch_exp.protocols import is_model_probe


def estimate_calls(objs: dict, settings, ledger) -> dict:
    method, audience, judge, gen = objs["method"], objs["audience"], objs["judge"], objs["generator"]
    trained = list(method.builders())
    methods, pairs = method.methods, method.pairs
    # Multi-round competition: a collection per round; rounds after the first add two head-to-head
    # pairs (against base and against the previous round) and one more method for the task probes.
    rounds = objs["competition"].rounds
    collections = rounds if method.builder is not None and method.builder.needs_collection else int(bool(trained))
    # Rough token sizes: a ballot shows two messages of about half the generation budget.
    ballot_prompt = 250 + gen.max_new_tokens
    judge_prompt = 300 + gen.max_new_tokens // 2
    task_probes = [p for p in objs["probes"].values() if not is_model_probe(p)]
    # Model probes judge their own samples (EM: alignment and coherence per sample; stance: one classification).
    model_calls = sum(p.judge_calls(settings.seed) for p in objs["probes"].values() if is_model_probe(p)) * len(methods)
    items = {
        "collect_votes": (settings.n_train * audience.n_voters * collections, audience.service.identity(),
                          ballot_prompt, (audience.max_tokens or 1024) // 2),
        "evaluate_votes": (settings.n_test * audience.n_voters * (len(pairs) + 2 * (rounds - 1)),
                           audience.service.identity(), ballot_prompt, (audience.max_tokens or 1024) // 2),
        "judgments": (settings.n_test * len(task_probes) * (len(methods) + rounds - 1), judge.service.identity(),
                      judge_prompt, (judge.max_tokens or 1024) // 2),
        "model_probe_judgments": (model_calls, judge.service.identity(), 400, 8),
    }
    out, usd = {}, 0.0
    for name, (n, model, p_tok, c_tok) in items.items():
        cost = ledger.cost(model, n * p_tok, n * c_tok)
        out[name] = n
        usd += cost
    out["calls"] = sum(v for k, v in out.items())
    out["usd_upper_bound"] = round(usd, 4)
    return out
