"""Pre-flight estimate of the LLM calls and cost of a cell, printed before any work."""
from __future__ import annotations

from moloch_exp.protocols import is_model_probe
from moloch_exp.stages.controls import EM_PROBE, has_controls, selected


def control_calls(probes: dict, per_probe: int | None = None) -> int:
    """Judge calls for the bundled judge controls of the selected probes (EM: alignment and coherence),
    ``per_probe`` of each (judge_controls.per_probe; None: all)."""
    return sum((2 if name == EM_PROBE else 1) * len(selected(name, per_probe))
               for name, p in probes.items() if has_controls(name, p))


def estimate_calls(objs: dict, settings, ledger) -> dict:
    method, audience, judge, gen = objs["method"], objs["audience"], objs["judge"], objs["generator"]
    methods, pairs = method.methods, method.pairs
    # Multi-round competition: a collection per round; rounds after the first add two head-to-head
    # pairs (against base and against the previous round) and one more method for the task probes.
    rounds = objs["competition"].rounds
    # Rough token sizes: a ballot shows two messages of about half the generation budget.
    ballot_prompt = 250 + gen.max_new_tokens
    judge_prompt = 300 + gen.max_new_tokens // 2
    task_probes = [p for p in objs["probes"].values() if not is_model_probe(p)]
    # Model probes judge their own samples (EM: alignment and coherence per sample; stance: one classification).
    model_calls = sum(p.judge_calls(settings.seed) for p in objs["probes"].values() if is_model_probe(p)) * len(methods)
    collecting = any(b.needs_collection for b in method.builders().values())
    collections = rounds if method.builder is not None and method.builder.needs_collection else int(collecting)
    rel = objs.get("reliability")
    controls_on = rel.judge_controls if rel is not None else False

    def retest(n_matches: int) -> int:  # matches re-asked of a vote set: a share, at least a floor
        return rel.retest_matches(n_matches) if rel is not None else 0
    judges = [j for j in (judge, objs.get("judge2")) if j is not None]
    # Upper bound for collect: adaptive polling (collect.polling) stops some matches early.
    items = {
        "collect_votes": (settings.n_train * audience.n_voters * collections, audience.service.identity(),
                          ballot_prompt, (audience.max_tokens or 1024) // 2),
        "retest_votes": (audience.n_voters * (retest(settings.n_train) * collecting
                                              + retest(settings.n_test) * len(pairs)),
                         audience.service.identity(), ballot_prompt, (audience.max_tokens or 1024) // 2),
        "control_judgments": (control_calls(objs["probes"], rel.controls_per_probe) * len(judges) if controls_on else 0,
                              judge.service.identity(), judge_prompt, (judge.max_tokens or 1024) // 2),
        "judge2_judgments": (settings.n_test * len(task_probes) * len(methods) if objs.get("judge2") else 0,
                             judges[-1].service.identity(), judge_prompt, (judge.max_tokens or 1024) // 2),
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
