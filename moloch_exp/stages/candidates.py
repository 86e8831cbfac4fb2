"""candidates: the agent's K candidates per train anchor, the first half of a collection, stored before any vote.

    inputs   prepare (train anchors); the generator (and optionally an adapter: later rounds); the task's
             prompts; K
    outputs  candidates.jsonl

collect calls it inside its own compute, so a finished collection never needs it. It is a stage of its
own so that a run stopped while the audience votes (collect: 20,480 API calls at the paper's size) is
re-run with the candidates it had: the agent's generation is not paid for twice, and the re-run's
ballots are exactly the requests the LLM response cache holds. Generated again, one candidate that
differed by a token (a GPU's nondeterministic kernels, another batch shape) would make every ballot
showing it a new request, asked and billed again.
"""
from __future__ import annotations

from pathlib import Path

from moloch_exp.io import read_jsonl, write_jsonl
from moloch_exp.records import Candidate
from moloch_exp.stages.base import Adapter, Artifact, StageEnv
from moloch_exp.stages.generation import candidates as generate_candidates
from moloch_exp.stages.prepare import Prepared


class Candidates(Artifact):
    def candidates(self) -> list[Candidate]:
        return read_jsonl(self.dir / "candidates.jsonl", Candidate)


def material(prepared: Prepared, task, generator, k: int, seed: int, adapter: Adapter | None = None) -> dict:
    out = {"prepare": prepared.key, "generator": generator.identity(), "task": task.identity(), "k": k,
           "seed": seed}
    if adapter is not None:
        out["adapter"] = adapter.key
    return out


def run(env: StageEnv, *, prepared: Prepared, task, generator, k: int, adapter: Adapter | None = None,
        label: str = "collect_candidates") -> Candidates:
    def compute(work: Path) -> None:
        cands = generate_candidates(env, task, generator, prepared.anchors("train"), k, "collect",
                                    adapter.path if adapter else None, f"{label}: agent candidates")
        if env.dist.is_main:
            write_jsonl(work / "candidates.jsonl", cands)

    d = env.stages.run("candidates", label, material(prepared, task, generator, k, env.seed, adapter), compute)
    return Candidates("candidates", label, d)
