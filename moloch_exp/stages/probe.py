"""probe: a judge labels a method's test outputs (task probe), or a probe samples the agent itself
and judges its samples (model probe: EM, stance).

    task probe   inputs  generate (outputs), prepare (test anchors), the probe, the judge
                 outputs judgments.jsonl, summary.json (rate, Wilson interval, counts)
    model probe  inputs  the model source and an adapter (None: base; a checkpoint for trends),
                         the probe, the judge
                 outputs samples.jsonl, judgments.jsonl, summary.json
    stops        when failed judge calls / calls > probe.max_failed_fraction (nothing stored as finished)
"""
from __future__ import annotations

from pathlib import Path

from moloch_exp.evaluation.stats import wilson
from moloch_exp.io import read_json, read_jsonl, write_json, write_jsonl
from moloch_exp.probes.model_probe import make_context_from_generator
from moloch_exp.protocols import ModelProbe, TaskProbe
from moloch_exp.records import Judgment
from moloch_exp.stages.base import Adapter, Artifact, StageEnv, check_failures
from moloch_exp.stages.generate import Generated
from moloch_exp.stages.prepare import Prepared


class TaskProbed(Artifact):
    def summary(self) -> dict:
        return read_json(self.dir / "summary.json")

    def judgments(self) -> list[Judgment]:
        return read_jsonl(self.dir / "judgments.jsonl", Judgment)


class ModelProbed(Artifact):
    def summary(self) -> dict:
        return read_json(self.dir / "summary.json")

    def judgments(self) -> list[dict]:
        """The probe's own rows (per sample: scores or stance labels with their call status)."""
        return read_jsonl(self.dir / "judgments.jsonl")

    def samples(self) -> list[dict]:
        return read_jsonl(self.dir / "samples.jsonl")


def task_material(probe: TaskProbe, generated: Generated, judge, seed: int) -> dict:
    return {"outputs": generated.key, "probe": probe.identity(), "judge": judge.identity(), "seed": seed}


def run_task_probe(env: StageEnv, *, name: str, probe: TaskProbe, method: str, generated: Generated,
                   prepared: Prepared, judge, task, label: str | None = None) -> TaskProbed:
    label = label or f"probe_{name}_{method}"

    def compute(work: Path) -> None:
        if not env.dist.is_main:
            return
        anchors = {a.id: a for a in prepared.anchors("test")}
        client = env.hub.open(judge.service)
        js = probe.run(client, judge, task, anchors, generated.outputs(), method, env.seed)
        check_failures("probe", label, *probe.failures(js), env.tolerance.probe)
        write_jsonl(work / "judgments.jsonl", js)
        ok = [j for j in js if j.status == "ok"]
        flagged = sum(bool(j.label) for j in ok)
        write_json(work / "summary.json", {
            "rate": flagged / len(ok) if ok else None, "ci95": wilson(flagged, len(ok)), "flagged": flagged,
            "n": len(ok), "invalid": sum(j.status == "invalid" for j in js),
            "failed": sum(j.status == "failed" for j in js), "skipped": sum(j.status == "skipped" for j in js)})

    d = env.stages.run("probe", label, task_material(probe, generated, judge, env.seed), compute)
    return TaskProbed("probe", label, d)


def model_material(probe: ModelProbe, model, adapter: Adapter | None, judge, seed: int) -> dict:
    return {"model": model.identity(), "adapter": adapter.key if adapter else None, "probe": probe.identity(),
            "judge": judge.identity(), "seed": seed}


def run_model_probe(env: StageEnv, *, name: str, probe: ModelProbe, method: str, model, generator,
                    adapter: Adapter | None, judge, label: str | None = None) -> ModelProbed:
    """Run on rank 0 with ``adapter`` (the method's final adapter, or a checkpoint for trends)."""
    label = label or f"probe_{name}_{method}"

    def compute(work: Path) -> None:
        if not env.dist.is_main:
            return
        client = env.hub.open(judge.service)
        ctx = make_context_from_generator(generator, adapter.path if adapter else None, client, judge, method,
                                          env.seed, work)
        summary = probe.run_model(ctx)
        check_failures("probe", label, *probe.failures(read_jsonl(work / "judgments.jsonl")), env.tolerance.probe)
        write_json(work / "summary.json", summary)

    d = env.stages.run("probe", label, model_material(probe, model, adapter, judge, env.seed), compute)
    return ModelProbed("probe", label, d)
