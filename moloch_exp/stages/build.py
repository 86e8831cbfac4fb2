"""build: training examples from a collection (rft, tfb) or from the builder's own data (narrow_sft).

    inputs   collect (candidates, votes) when builder.needs_collection; the builder; the task
    outputs  train_examples.jsonl, build_stats.json
"""
from __future__ import annotations

from pathlib import Path

from moloch_exp.io import read_json, read_jsonl, write_json, write_jsonl
from moloch_exp.protocols import Builder
from moloch_exp.stages.base import Artifact, StageEnv
from moloch_exp.stages.collect import Collected
from moloch_exp.stages.prepare import Prepared


class Built(Artifact):
    def examples(self) -> list[dict]:
        return read_jsonl(self.dir / "train_examples.jsonl")

    def stats(self) -> dict:
        return read_json(self.dir / "build_stats.json")


def material(builder: Builder, collected: Collected | None) -> dict:
    return {"collect": collected.key if collected is not None else None, "builder": builder.identity()}


def run(env: StageEnv, *, name: str, builder: Builder, task, collected: Collected | None,
        prepared: Prepared | None = None, label: str | None = None) -> Built:
    """``prepared``: its train anchors go to the builder (the paper's feedback prompt shows the anchor)."""
    label = label or f"build_{name}"

    def compute(work: Path) -> None:
        if not env.dist.is_main:
            return
        cands = votes = anchors = None
        if builder.needs_collection:
            cands, votes = collected.candidates(), collected.votes()
        if prepared is not None:
            anchors = {a.id: a for a in prepared.anchors("train")}
        examples, stats = builder.build(cands, votes, task, anchors)
        write_jsonl(work / "train_examples.jsonl", examples)
        write_json(work / "build_stats.json", stats)

    return Built("build", label, env.stages.run("build", label, material(builder, collected), compute))


def empty_cause(name: str, built: Built, collected: Collected | None) -> str:
    """Why a build has no examples, from the collection's and the build's counts."""
    b = built.stats()
    if collected is None:
        return f"{name}: no training examples ({b})"
    c = collected.stats()
    ext = c.get("extraction", {})
    return (f"{name}: no training examples. Collection: {c['anchors']} anchors, {c['candidates']} candidates "
            f"(extraction ok {ext.get('ok', 0)}, untagged {ext.get('untagged', 0)}, failed {ext.get('failed', 0)}), "
            f"{c['anchors_with_fewer_than_2_messages']} anchors with fewer than 2 messages, {c['matches']} matches; "
            f"{c['votes']} votes: {c['failed_votes']} failed, {c['invalid_votes']} invalid. "
            f"Build: {b.get('no_valid_votes', 0)} matches without a valid vote, {b.get('ties', 0)} ties "
            f"({b.get('ties_dropped', 0)} dropped by tie_rule=drop). More anchors or voters, a larger "
            "generator.max_new_tokens (untagged outputs), or method.builder.tie_rule=random would give some")
