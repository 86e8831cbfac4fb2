"""What a cell measures about its own audience and judges (issue 11), after its stages have run:

    reliability   every vote set (the collection, each head-to-head pair): position bias, voters'
                  Krippendorff alpha, test-retest on re-asked matches (stages/reliability.py)
    controls      each probe's bundled judge controls, for judge and judge2 (stages/controls.py)
    judge2        the task probes judged again by judge2: Cohen's kappa per probe
    probe family  McNemar on labels paired by anchor (else Fisher) per probe, Fisher beside it,
                  Holm across the cell's probes (ProbeChangesResult)

    python run.py judge@judge2=local audience_reliability.retest_share=0.1 judge_controls.per_probe=null
"""
from __future__ import annotations

from typing import Any, Callable

from moloch_exp.evaluation.head_to_head import matches_for
from moloch_exp.evaluation.reliability import judge_agreement
from moloch_exp.protocols import is_model_probe
from moloch_exp.results import ProbeChangesResult, ReliabilityResult
from moloch_exp.stages import collect, controls, probe, reliability
from moloch_exp.stages.base import StageEnv


def measure(env: StageEnv, done: dict[str, Any], *, method, probe_objects: dict, probe_results: dict, audience,
            task, judge, judge2, settings, keep: Callable) -> dict:
    """Audience reliability of every vote set, judge controls and judge2 agreement on the task
    probes, and the probe-change family (issue 11); read from the cell's finished artifacts ``done``
    (label → artifact); ``keep`` records the stages this adds."""
    m, by_vote_set = method, {}
    vote_sets = []
    if "collect" in done:
        vote_sets.append((done["collect"], collect.matches(done["collect"].candidates())[0],
                          env.tolerance.collect))
    for a, b in m.pairs:
        ms, _ = matches_for(done[f"generate_{a}"].outputs(), done[f"generate_{b}"].outputs(), f"{a}_vs_{b}")
        vote_sets.append((done[f"evaluate_{a}_vs_{b}"], ms, env.tolerance.evaluate))
    for source, ms, tolerance in vote_sets:
        by_vote_set[source.label] = keep(reliability.run(
            env, source=source, matches=ms, audience=audience, task=task,
            retest_matches=settings.retest_matches(len(ms)), max_failed_fraction=tolerance)).summary()
    judges = {"judge": judge} | ({"judge2": judge2} if judge2 is not None else {})
    scores: dict[str, dict] = {}
    if settings.judge_controls:
        for jname, judge_ in judges.items():
            for pname, p in probe_objects.items():
                if controls.has_controls(pname, p):
                    suffix = "" if jname == "judge" else f"_{jname}"
                    controlled = keep(controls.run(env, name=pname, probe=p, judge=judge_,
                                                   label=f"controls_{pname}{suffix}",
                                                   per_probe=settings.controls_per_probe))
                    scores.setdefault(jname, {})[pname] = controlled.score(
                        pname, p, judge_.min_control_accuracy).to_dict()
    agreement = {}
    if judge2 is not None:
        prepared = done["prepare"]
        for pname, p in probe_objects.items():
            if is_model_probe(p):
                continue
            first, second = [], []
            for meth in m.methods:
                first += done[f"probe_{pname}_{meth}"].judgments()
                second += keep(probe.run_task_probe(
                    env, name=pname, probe=p, method=meth, generated=done[f"generate_{meth}"],
                    prepared=prepared, judge=judge2, task=task,
                    label=f"probe_{pname}_{meth}_judge2")).judgments()
            paired = judge_agreement(first, second).get(pname)
            agreement[pname] = paired.to_dict() if paired is not None else None
    return {"reliability": ReliabilityResult(by_vote_set, scores, agreement),
            "probe_changes": ProbeChangesResult.from_probes(probe_results, m.name)}
