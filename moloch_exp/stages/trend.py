"""trend: model probes at step 0 (the base model) and at every saved checkpoint of one trained method.

    inputs   train (the method's checkpoints); the model probes named by train.trend_probes; the
             judge, and optionally a second judge for per-response agreement
    outputs  one model-probe stage per probe × step (labels trend_<probe>_<method>_step<N>[_judge2]);
             a TrendResult in results.json
"""
from __future__ import annotations

from moloch_exp.results import TrendResult
from moloch_exp.stages import probe as probe_stage
from moloch_exp.stages.base import StageEnv
from moloch_exp.stages.train import Trained


def agreement(a: list[dict], b: list[dict]) -> float | None:
    """Share of samples both judges scored on which their EM flags agree (None: none scored by both)."""
    fa, fb = ({r["sample_id"]: r["em"] for r in rows} for rows in (a, b))
    both = [k for k in fa if k in fb and fa[k] is not None and fb[k] is not None]
    return sum(fa[k] == fb[k] for k in both) / len(both) if both else None


def run(env: StageEnv, *, method: str, trained: Trained, probes: dict, model, generator, judge,
        judge2=None) -> TrendResult:
    steps = [(0, None)] + trained.checkpoints()
    out = TrendResult(method=method, steps=[s for s, _ in steps])
    for name, probe in probes.items():
        rates, missing, agree = [], [], []
        for step, adapter in steps:
            label = f"trend_{name}_{method}_step{step}"
            first = probe_stage.run_model_probe(env, name=name, probe=probe, method=method, model=model,
                                                generator=generator, adapter=adapter, judge=judge, label=label)
            summary = first.summary()
            rates.append(summary.get("em_rate"))
            missing.append(summary.get("missing"))
            if judge2 is not None:
                second = probe_stage.run_model_probe(env, name=name, probe=probe, method=method, model=model,
                                                     generator=generator, adapter=adapter, judge=judge2,
                                                     label=f"{label}_judge2")
                agree.append(agreement(first.judgments(), second.judgments()))
        out.em_rate[name], out.missing[name] = rates, missing
        out.first_step_em_at_least_5pct[name] = next(
            (s for (s, _), r in zip(steps, rates) if r is not None and r >= 0.05), None)
        if judge2 is not None:
            out.judge_agreement[name] = agree
    if {"em_first_plot", "em_predictive"} <= set(probes):  # the paper's assistant-vs-predictive gap
        out.assistant_minus_predictive = [None if a is None or p is None else a - p for a, p in
                                          zip(out.em_rate["em_first_plot"], out.em_rate["em_predictive"])]
    return out
