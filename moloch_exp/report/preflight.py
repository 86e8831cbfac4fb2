"""Pre-flight estimate of the LLM calls and cost of a cell, printed before any work."""
from __future__ import annotations


def estimate_calls(objs: dict, settings, ledger) -> dict:
    method, audience, judge, gen = objs["method"], objs["audience"], objs["judge"], objs["generator"]
    trained = list(method.builders())
    methods = list(dict.fromkeys([m for m in method.compare_against] + [method.name]))
    pairs = [m for m in method.compare_against if m != method.name]
    # Rough token sizes: a ballot shows two messages of about half the generation budget.
    ballot_prompt = 250 + gen.max_new_tokens
    judge_prompt = 300 + gen.max_new_tokens // 2
    task_probes = [p for p in objs["probes"].values() if getattr(p, "kind", "task") != "model"]
    # Model probes judge their own samples: two judgments (alignment, coherence) per EM sample, one per stance sample.
    model_calls = sum(len(p.samples(settings.seed)) * (1 if hasattr(p, "stems") else 2)
                      for p in objs["probes"].values() if getattr(p, "kind", "task") == "model") * len(methods)
    items = {
        "collect_votes": (settings.n_train * audience.n_voters if trained else 0, audience.service.identity(),
                          ballot_prompt, (audience.max_tokens or 1024) // 2),
        "evaluate_votes": (settings.n_test * audience.n_voters * len(pairs), audience.service.identity(),
                           ballot_prompt, (audience.max_tokens or 1024) // 2),
        "judgments": (settings.n_test * len(task_probes) * len(methods), judge.service.identity(),
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
