"""The cell's stages in the order they run, each with its inputs and its key, written once (:func:`run_stages`)
and used twice:

    Cell.run (stages/cell.py)        run_stages(env, components, settings, trend_probes) → CellArtifacts
    pre-flight (report/preflight.py) plan_cell(components, settings, trend_probes)       → CellArtifacts, keys only

    prepare → collect → build, train (each builder: rft, tfb and its rft, dpo, kto, narrow_sft) → generate
      → evaluate (pairs) → [rounds 2..N: stages/competition.later_rounds] → probe (task, model probes)
      → trend → reliability (every vote set) → controls (judge, judge2) → judge2 on the task probes

Planning runs this same code with ``PlannedStages`` in place of the stage cache (stages/base.py): each
stage unit computes its key from its own ``material(...)`` as in a run, and its artifact gets the label and
key the run will give it, but no files. Where a key depends on what an earlier stage made, the plan
assumes the full count: a vote set's retest size is planned from one match per anchor (a run counts the
matches its candidates formed), and a trend has the checkpoints of one winner a match (a run has those training saved).
"""
from __future__ import annotations

from moloch_exp.distributed import Dist
from moloch_exp.evaluation.head_to_head import matches_for
from moloch_exp.protocols import is_model_probe
from moloch_exp.stages import build, collect, competition, controls, evaluate, generate, prepare, probe, reliability
from moloch_exp.stages import train, trend
from moloch_exp.stages.artifacts import CellArtifacts, Round
from moloch_exp.stages.base import PlannedStages, StageEnv
from moloch_exp.stages.components import CellComponents, Settings


def plan_cell(c: CellComponents, s: Settings, trend_probes: list[str] = ()) -> CellArtifacts:
    """Every stage the cell will run, with its key, computed without running anything (seconds); a trend
    has the checkpoints the trainer will save (``planned_checkpoint_steps``)."""
    return run_stages(StageEnv(PlannedStages(), Dist(), None, s.seed), c, s, trend_probes)


def planned_checkpoint_steps(c: CellComponents, s: Settings) -> list[int]:
    """The steps the method's training saves when every match of the collection has one winner and every vote is
    valid (its builder's ``planned_examples``): fewer when matches are tied or votes invalid."""
    builder = c.method.builders()[c.method.name]
    return c.trainer.checkpoint_steps(builder.planned_examples(s.n_train, s.candidates_per_anchor,
                                                               c.audience.n_voters))


def run_stages(env: StageEnv, c: CellComponents, s: Settings, trend_probes: list[str] = ()) -> CellArtifacts:
    """Run (or, with ``env.planning``, key) every stage of the cell; ``trend_probes``: model probes to
    run on the trained method's checkpoints (train.trend_probes)."""
    m, done = c.method, CellArtifacts()
    prepared = done.prepared = done.keep(prepare.run(env, task=c.task, n_train=s.n_train, n_test=s.n_test))
    builders = m.builders()
    if any(b.needs_collection for b in builders.values()):
        done.collected = done.keep(collect.run(env, prepared=prepared, task=c.task, generator=c.generator,
                                               audience=c.audience, k=s.candidates_per_anchor, polling=c.polling))
    for name, builder in builders.items():
        built = done.built[name] = done.keep(build.run(env, name=name, builder=builder, task=c.task,
                                                       collected=done.collected, prepared=prepared))
        done.trained[name] = done.keep(train.run(env, name=name, built=built, model=c.model, trainer=c.trainer,
                                                 cache_dir=str(c.generator.cache_dir), collected=done.collected,
                                                 release_memory=c.generator.close))
    adapters = {"base": None} | {name: t.adapter() for name, t in done.trained.items()}
    racing = c.competition.rounds > 1
    for name in dict.fromkeys((["base"] if racing else []) + m.methods):  # later rounds face base
        done.generated[name] = done.keep(generate.run(env, name=name, prepared=prepared, task=c.task,
                                                      generator=c.generator, adapter=adapters[name]))
    for a, b in m.pairs:
        done.evaluated[(a, b)] = done.keep(evaluate.run(env, a=(a, done.generated[a]), b=(b, done.generated[b]),
                                                        audience=c.audience, task=c.task))
    if done.collected is not None and m.name in done.trained:
        done.rounds = [Round(1, m.name, done.collected, s.candidates_per_anchor, done.trained[m.name],
                             done.generated[m.name])]
    if racing:
        competition.later_rounds(env, c, s.candidates_per_anchor, done)
    later = [rnd.name for rnd in done.later_rounds]
    for pname, p in c.probes.items():
        if is_model_probe(p):
            for meth in m.methods:
                done.model_probed[(pname, meth)] = done.keep(probe.run_model_probe(
                    env, name=pname, probe=p, method=meth, model=c.model, generator=c.generator,
                    adapter=adapters[meth], judge=c.judge))
        else:
            for meth in m.methods + later:
                done.task_probed[(pname, meth)] = done.keep(probe.run_task_probe(
                    env, name=pname, probe=p, method=meth, generated=done.generated[meth], prepared=prepared,
                    judge=c.judge, task=c.task))
    if trend_probes and m.name in done.trained:
        done.trend = trend.run(env, method=m.name, trained=done.trained[m.name],
                               probes={n: c.probes[n] for n in trend_probes}, model=c.model,
                               generator=c.generator, judge=c.judge, judge2=c.judge2,  # not in stage_keys
                               planned_steps=planned_checkpoint_steps(c, s) if env.planning else None)
    _audience_and_judges(env, c, s, done)
    return done


def _audience_and_judges(env: StageEnv, c: CellComponents, s: Settings, done: CellArtifacts) -> None:
    """What the cell measures about its audience and judges (issue 11; read by stages/trust.py): the
    reliability of every vote set, each probe's judge controls per judge, judge2 on the task probes."""
    m, rel = c.method, c.reliability
    if done.collected is not None:
        ms = [] if env.planning else collect.matches(done.collected.candidates())[0]
        n = s.n_train if env.planning else len(ms)
        done.collection_reliability = done.keep(reliability.run(
            env, source=done.collected, matches=ms, audience=c.audience, task=c.task,
            retest_matches=rel.retest_matches(n), max_failed_fraction=env.tolerance.collect))
    for a, b in m.pairs:
        ms = [] if env.planning else matches_for(done.generated[a].outputs(), done.generated[b].outputs(),
                                                 f"{a}_vs_{b}")[0]
        n = s.n_test if env.planning else len(ms)
        done.pair_reliability[(a, b)] = done.keep(reliability.run(
            env, source=done.evaluated[(a, b)], matches=ms, audience=c.audience, task=c.task,
            retest_matches=rel.retest_matches(n), max_failed_fraction=env.tolerance.evaluate))
    if rel.judge_controls:
        for role, judge in c.judges().items():
            for pname, p in c.probes.items():
                if p.controls() is not None:
                    suffix = "" if role == "judge" else f"_{role}"
                    done.controlled[(role, pname)] = done.keep(controls.run(
                        env, name=pname, probe=p, judge=judge, label=f"controls_{pname}{suffix}",
                        per_probe=rel.controls_per_probe))
    if c.judge2 is not None:
        for pname, p in c.probes.items():
            if is_model_probe(p):
                continue
            for meth in m.methods:
                done.second_judged[(pname, meth)] = done.keep(probe.run_task_probe(
                    env, name=pname, probe=p, method=meth, generated=done.generated[meth], prepared=done.prepared,
                    judge=c.judge2, task=c.task, label=f"probe_{pname}_{meth}_judge2"))
