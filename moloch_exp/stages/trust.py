"""What a cell measures about its own audience and judges (issue 11), read from its finished artifacts
(the stages themselves run in stages/plan.py):

    reliability   every vote set (the collection, each head-to-head pair): position bias, voters'
                  Krippendorff alpha, test-retest on re-asked matches (stages/reliability.py)
    controls      each probe's judge controls, for judge and judge2 (stages/controls.py)
    judge2        the task probes judged again by judge2: Cohen's kappa per probe
    probe family  McNemar on labels paired by anchor (else Fisher) per probe, Fisher beside it,
                  Holm across the cell's probes (ProbeChangesResult)

    python run.py judge@judge2=local audience_reliability.retest_share=0.1 judge_controls.per_probe=null
"""
from __future__ import annotations

from moloch_exp.evaluation.reliability import judge_agreement
from moloch_exp.protocols import is_model_probe
from moloch_exp.results import ProbeChangesResult, ProbeResult, ReliabilityResult
from moloch_exp.stages.artifacts import CellArtifacts
from moloch_exp.stages.components import CellComponents


def measure(c: CellComponents, done: CellArtifacts, probe_results: dict[str, ProbeResult]) -> dict:
    """Audience reliability of every vote set, judge controls and judge2 agreement on the task probes,
    and the probe-change family."""
    by_vote_set = {}
    if done.collection_reliability is not None:
        by_vote_set[done.collected.label] = done.collection_reliability.summary()
    for pair, reliable in done.pair_reliability.items():
        by_vote_set[done.evaluated[pair].label] = reliable.summary()
    judges = c.judges()
    scores: dict[str, dict] = {}
    for (role, pname), controlled in done.controlled.items():
        scores.setdefault(role, {})[pname] = controlled.score(
            c.probes[pname].controls(), judges[role].min_control_accuracy).to_dict()
    agreement = {}
    if c.judge2 is not None:
        for pname, p in c.probes.items():
            if is_model_probe(p):
                continue
            first, second = [], []
            for meth in c.method.methods:
                first += done.task_probed[(pname, meth)].judgments()
                second += done.second_judged[(pname, meth)].judgments()
            paired = judge_agreement(first, second).get(pname)
            agreement[pname] = paired.to_dict() if paired is not None else None
    return {"reliability": ReliabilityResult(by_vote_set, scores, agreement),
            "probe_changes": ProbeChangesResult.from_probes(probe_results, c.method.name)}
