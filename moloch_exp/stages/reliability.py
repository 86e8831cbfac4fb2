"""reliability: the audience's reliability on one vote set (a collection or a head-to-head evaluation).

    inputs   the voting stage's artifact (its votes()) and its matches; the audience panel; the task;
             the number of matches to re-ask with a new seed (``ReliabilitySettings.retest_matches(n)``:
             ``audience_reliability.retest_share`` of them, at least ``retest_min_matches``; 0: none)
    outputs  retest_votes.jsonl, reliability.json (moloch_exp.evaluation.reliability.AudienceReliability:
             position bias, Krippendorff's alpha among voters, test-retest agreement)
    stops    when failed retest votes / retest votes > <source stage>.max_failed_fraction

    python run.py audience_reliability.retest_share=0.1 audience_reliability.retest_min_matches=10

The retest asks the same voters (the panel the source stage used: ``audience.voters(seed)``)
on a seeded subset of the source's matches with ``derive_seed(seed, "retest")``, so every
(match, voter) gets a new seed; pairs are (match, voter), so a collection polled adaptively pairs
only the voters it asked. The retest polls everyone. Its agreement interval is clustered by match
(its voters are not independent), so it narrows with the number of matches re-asked, not of pairs. Its calls go through the LLM response cache
and the stage is keyed by the source's key, the audience, the task, the subset size and the seed
(the size, not the share: a share and a floor that give the same size share the stage).
Position bias and alpha are read from the source's votes (with adaptive polling: the votes asked,
which over-represent early voters of settled matches).
"""
from __future__ import annotations

from pathlib import Path

from moloch_exp.evaluation.reliability import audience_reliability, retest_subset
from moloch_exp.io import read_json, read_jsonl, write_json, write_jsonl
from moloch_exp.records import Match, Vote
from moloch_exp.seeding import derive_seed
from moloch_exp.stages.base import Artifact, StageEnv, check_failures


class Reliable(Artifact):
    def summary(self) -> dict:
        return read_json(self.dir / "reliability.json")

    def retest_votes(self) -> list[Vote]:
        return read_jsonl(self.dir / "retest_votes.jsonl", Vote)


#: Version of reliability.json's contents (2: position bias against 1/K, the retest interval clustered
#: by match, alpha None where undefined); the retest votes of an earlier version come from the LLM cache.
SUMMARY_VERSION = 2


def material(source: Artifact, audience, task, retest_matches: int, seed: int) -> dict:
    return {"source": source.key, "source_stage": source.stage, "audience": audience.identity(),
            "task": task.identity(), "retest_matches": retest_matches, "seed": seed, "summary": SUMMARY_VERSION}


def run(env: StageEnv, *, source: Artifact, matches: list[Match], audience, task, retest_matches: int,
        max_failed_fraction: float, label: str | None = None) -> Reliable:
    """``source`` has ``votes()`` (a Collected or an Evaluated); ``matches`` are the ones it voted on."""
    label = label or f"reliability_{source.label}"

    def compute(work: Path) -> None:
        if not env.dist.is_main:
            return
        votes = source.votes()
        subset = retest_subset(matches, retest_matches, derive_seed(env.seed, "retest_subset", source.label))
        retest: list[Vote] = []
        if subset:
            audience.voters(env.seed)  # the source's panel, fixed before the retest seed is used
            client = env.hub.open(audience.service)
            retest = audience.vote(client, task, subset, derive_seed(env.seed, "retest"),
                                   desc=f"{label}: retest of {len(subset)} matches")
            failed = [v for v in retest if v.status == "failed"]
            check_failures(source.stage, label, len(failed), len(retest), failed[0].error if failed else None,
                           max_failed_fraction)
        write_jsonl(work / "retest_votes.jsonl", retest)
        rel = audience_reliability(votes, retest if subset else None)
        write_json(work / "reliability.json", {"source": source.label, "retest_matches": len(subset),
                                               "retest_votes": len(retest), **rel.to_dict()})

    d = env.stages.run("reliability", label, material(source, audience, task, retest_matches, env.seed), compute)
    return Reliable("reliability", label, d)
