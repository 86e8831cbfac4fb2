"""evaluate: the audience votes between two methods' test outputs (head to head).

    inputs   generate (outputs of methods a and b); the audience panel; the task's ballot
    outputs  votes.jsonl, summary.json (win rate of b with its interval and test, counts, the anchors
             dropped per method: moloch_exp.evaluation.head_to_head.summarize)
    stops    when failed votes / votes > evaluate.max_failed_fraction (nothing stored as finished)

The key's ``summary`` names the version of summary.json's contents (2: per-method drops and the
issue-19 statistics); the votes of an earlier version come back from the LLM response cache.
"""
from __future__ import annotations

from pathlib import Path

from moloch_exp.evaluation.head_to_head import matches_for, summarize
from moloch_exp.io import read_json, read_jsonl, write_json, write_jsonl
from moloch_exp.records import Vote
from moloch_exp.stages.base import Artifact, StageEnv, check_failures
from moloch_exp.stages.generate import Generated


class Evaluated(Artifact):
    def summary(self) -> dict:
        return read_json(self.dir / "summary.json")

    def votes(self) -> list[Vote]:
        return read_jsonl(self.dir / "votes.jsonl", Vote)


SUMMARY_VERSION = 2


def material(a: Generated, b: Generated, audience, task, seed: int) -> dict:
    return {"a": a.key, "b": b.key, "audience": audience.identity(), "task": task.identity(), "seed": seed,
            "summary": SUMMARY_VERSION}


def run(env: StageEnv, *, a: tuple[str, Generated], b: tuple[str, Generated], audience, task,
        label: str | None = None) -> Evaluated:
    (name_a, gen_a), (name_b, gen_b) = a, b
    pair = f"{name_a}_vs_{name_b}"
    label = label or f"evaluate_{pair}"

    def compute(work: Path) -> None:
        if not env.dist.is_main:
            return
        matches, dropped = matches_for(gen_a.outputs(), gen_b.outputs(), pair, (name_a, name_b))
        client = env.hub.open(audience.service)
        votes = audience.vote(client, task, matches, env.seed, desc=f"evaluate: {pair}")
        failed = [v for v in votes if v.status == "failed"]
        check_failures("evaluate", label, len(failed), len(votes), failed[0].error if failed else None,
                       env.tolerance.evaluate)
        write_jsonl(work / "votes.jsonl", votes)
        write_json(work / "summary.json", summarize(votes, dropped, seed=env.seed))

    d = env.stages.run("evaluate", label, material(gen_a, gen_b, audience, task, env.seed), compute)
    return Evaluated("evaluate", label, d)
