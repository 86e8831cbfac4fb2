"""generate: one output per test anchor from the base model or an adapter (same seeds for every method).

    inputs   prepare (test anchors); the generator; the task's prompts; an adapter (None: base)
    outputs  outputs.jsonl
"""
from __future__ import annotations

from pathlib import Path

from moloch_exp.io import read_jsonl, write_jsonl
from moloch_exp.records import Candidate
from moloch_exp.stages.base import Adapter, Artifact, StageEnv
from moloch_exp.stages.generation import candidates
from moloch_exp.stages.prepare import Prepared


class Generated(Artifact):
    def outputs(self) -> list[Candidate]:
        return read_jsonl(self.dir / "outputs.jsonl", Candidate)


def material(prepared: Prepared, task, generator, adapter: Adapter | None, seed: int) -> dict:
    return {"prepare": prepared.key, "generator": generator.identity(), "task": task.identity(),
            "adapter": adapter.key if adapter else None, "seed": seed}


def run(env: StageEnv, *, name: str, prepared: Prepared, task, generator, adapter: Adapter | None,
        label: str | None = None) -> Generated:
    label = label or f"generate_{name}"

    def compute(work: Path) -> None:
        outs = candidates(env, task, generator, prepared.anchors("test"), 1, "test", adapter.path if adapter else None,
                          f"generate: {name} test outputs")
        if env.dist.is_main:
            write_jsonl(work / "outputs.jsonl", outs)

    d = env.stages.run("generate", label, material(prepared, task, generator, adapter, env.seed), compute)
    return Generated("generate", label, d)
