"""collect: K agent candidates per train anchor and the audience's votes on them.

    inputs   prepare (train anchors); the generator (and optionally an adapter: later rounds), through
             the candidates stage (stages/candidates.py: stored before the first vote, so a re-run of a
             stopped collection votes on the same candidates without generating them again);
             the task's prompts; the audience panel; optionally an opponent collection (a later
             round with competition.opponent=previous: one own candidate per anchor, index 0,
             against the opponent collection's candidate 0 for the same anchor, index 1)
             the polling rule (``collect.polling``: full asks every voter; adaptive/sequential stop a
             match's voters early; its identity() enters the key)
    outputs  candidates.jsonl, votes.jsonl, collection_stats.json
    stops    when failed votes / votes > collect.max_failed_fraction (nothing stored as finished)
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from moloch_exp.audience.polling import FullPolling, PollingRule
from moloch_exp.io import read_json, read_jsonl, write_json, write_jsonl
from moloch_exp.records import Candidate, Match, Vote
from moloch_exp.stages import candidates as agent_candidates
from moloch_exp.stages.base import Adapter, Artifact, StageEnv, check_failures
from moloch_exp.stages.prepare import Prepared


class Collected(Artifact):
    def candidates(self) -> list[Candidate]:
        return read_jsonl(self.dir / "candidates.jsonl", Candidate)

    def votes(self) -> list[Vote]:
        return read_jsonl(self.dir / "votes.jsonl", Vote)

    def stats(self) -> dict:
        return read_json(self.dir / "collection_stats.json")


def material(prepared: Prepared, task, generator, audience, k: int, seed: int, adapter: Adapter | None = None,
             opponent: Collected | None = None, polling: PollingRule | None = None) -> dict:
    out = {"prepare": prepared.key, "generator": generator.identity(), "task": task.identity(), "k": k,
           "audience": audience.identity(), "seed": seed}
    if adapter is not None:  # round 1 (the base model) keeps the key it always had
        out["adapter"] = adapter.key
    if opponent is not None:
        out["opponent"] = opponent.key
    if polling is not None and polling.identity() != FullPolling().identity():  # full: the key it always had
        out["polling"] = polling.identity()
    return out


def against(own: list[Candidate], opponent: Collected) -> list[Candidate]:
    """Each own candidate (index 0) followed by the opponent collection's candidate 0 for its anchor (index 1)."""
    theirs = {c.anchor_id: c for c in opponent.candidates() if c.index == 0}
    out = []
    for c in own:
        out.append(c)
        if c.anchor_id in theirs:
            out.append(replace(theirs[c.anchor_id], index=1))
    return out


def matches(cands: list[Candidate]) -> tuple[list[Match], int, int]:
    """One match per anchor among its candidates with a message; (matches, anchors, anchors with < 2)."""
    by_anchor: dict[str, list[Candidate]] = {}
    for c in cands:
        by_anchor.setdefault(c.anchor_id, []).append(c)
    out, too_few = [], 0
    for anchor_id, cs in by_anchor.items():
        ok = [c for c in cs if c.message is not None]
        if len(ok) < 2:
            too_few += 1
            continue
        out.append(Match(f"collect:{anchor_id}", anchor_id, [c.index for c in ok], [c.message for c in ok]))
    return out, len(by_anchor), too_few


def run(env: StageEnv, *, prepared: Prepared, task, generator, audience, k: int, adapter: Adapter | None = None,
        opponent: Collected | None = None, label: str = "collect", polling: PollingRule | None = None) -> Collected:
    """``opponent``: a race against an earlier agent's candidates (then ``k`` must be 1)."""
    if opponent is not None and k != 1:
        raise ValueError("collect against an opponent collection generates one own candidate per anchor (k=1)")
    polling = polling or FullPolling()
    full = polling.identity() == FullPolling().identity()

    def compute(work: Path) -> None:
        own = agent_candidates.run(env, prepared=prepared, task=task, generator=generator, k=k, adapter=adapter,
                                   label=f"{label}_candidates")
        if not env.dist.is_main:
            return
        cands = own.candidates()
        if opponent is not None:
            cands = against(cands, opponent)
        write_jsonl(work / "candidates.jsonl", cands)
        ms, n_anchors, too_few = matches(cands)
        client = env.hub.open(audience.service)
        votes = audience.vote(client, task, ms, env.seed, desc=f"{label}: audience votes",
                              polling=None if full else polling)  # full: one batch, not voter by voter
        failed = [v for v in votes if v.status == "failed"]
        check_failures("collect", label, len(failed), len(votes), failed[0].error if failed else None,
                       env.tolerance.collect)
        write_jsonl(work / "votes.jsonl", votes)
        write_json(work / "collection_stats.json", {
            "anchors": n_anchors, "candidates": len(cands),
            "extraction": {s: sum(c.extraction == s for c in cands) for s in ("ok", "untagged", "failed")},
            "matches": len(ms), "anchors_with_fewer_than_2_messages": too_few,
            "voters": [p.id for p in audience.voters(env.seed)],
            "polling": polling.identity(), "votes_full_panel": len(ms) * len(audience.voters(env.seed)),
            "votes": len(votes), "invalid_votes": sum(v.status == "invalid" for v in votes),
            "failed_votes": len(failed)})

    d = env.stages.run("collect", label, material(prepared, task, generator, audience, k, env.seed, adapter, opponent,
                                                   polling),
                       compute)
    return Collected("collect", label, d)
