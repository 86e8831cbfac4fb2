"""Reliability of the audience and of the judges, from the recorded votes and judgments.

* :func:`position_bias` — share of valid votes choosing the option shown first (``order[0] == choice``),
  Wilson interval, exact binomial test against 0.5. An audience that always picks "A" has 1.0.
* :func:`voter_agreement` — Krippendorff's alpha (nominal; units = matches, coders = voters, value =
  the chosen candidate; invalid/failed votes are missing values), via the ``krippendorff`` package.
* :func:`test_retest` — the same (match, voter) asked twice with new seeds: percent agreement
  (Wilson interval) and Cohen's kappa over the pairs where both votes are valid.
* :func:`audience_reliability` — the three audience measures at once; :func:`retest_subset` picks the
  matches to re-ask (seeded).
* :func:`judge_agreement` — Cohen's kappa between two judges' yes/no labels on the same outputs,
  per probe.

    from moloch_exp.evaluation.reliability import position_bias, voter_agreement, test_retest, judge_agreement
    votes = read_jsonl("runs/.../collect/<key>/votes.jsonl", Vote)
    print(position_bias(votes).to_dict(), voter_agreement(votes).to_dict())
    # test-retest: re-ask a seeded subset of matches with a new seed; the same personas answer
    # (panel.voters(seed) fixes the panel before the retest seed is used), pairs are (match, voter)
    panel.voters(seed)
    again = panel.vote(client, task, retest_subset(matches, 10, seed), derive_seed(seed, "retest"))
    print(audience_reliability(votes, again).to_dict())

Every result carries its n; a measure that is undefined on the data (no valid votes, a single
category everywhere) is None, never a made-up number.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Hashable, Sequence, TypeVar

import numpy as np
from scipy import stats

from moloch_exp.evaluation.stats import wilson
from moloch_exp.records import Judgment, Vote

OK = "ok"
T = TypeVar("T")


def retest_subset(items: Sequence[T], n: int, seed: int) -> list[T]:
    """A seeded choice of ``n`` items (all when fewer) in their original order: the matches to re-ask."""
    if n < 0:
        raise ValueError(f"retest size must be >= 0, not {n}")
    keep = set(random.Random(seed).sample(range(len(items)), min(n, len(items))))
    return [x for i, x in enumerate(items) if i in keep]


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Cohen's kappa of two paired label sequences; None when empty or when chance agreement is 1
    (both raters used one and the same category throughout: kappa is 0/0)."""
    if len(a) != len(b):
        raise ValueError(f"cohen_kappa: sequences of different lengths ({len(a)} vs {len(b)})")
    n = len(a)
    if n == 0:
        return None
    po = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    pe = sum(ca[c] * cb[c] for c in ca) / (n * n)
    if pe >= 1.0:
        return None
    return (po - pe) / (1 - pe)


@dataclass(frozen=True)
class PositionBias:
    """Share of valid votes that chose the first-shown option; 0.5 = no position bias."""

    first_chosen: int
    n: int
    share: float | None
    ci95: list[float | None]
    p: float | None  # exact two-sided binomial test against 0.5
    n_votes: int  # all votes, including invalid and failed ones

    def to_dict(self) -> dict:
        return asdict(self) | {"test": "exact binomial, two-sided, against 0.5", "interval": "Wilson",
                               "in_words": self.in_words()}

    def in_words(self, alpha: float = 0.05) -> str:
        if self.share is None:
            return "position bias: no valid votes"
        lo, hi = self.ci95
        head = f"first-shown option chosen in {self.share:.2f} [{lo:.2f}, {hi:.2f}] of valid votes"
        p = f"p={self.p:.2g}" if self.p >= 0.001 else "p<0.001"
        if self.p < alpha:
            return f"{head}: position bias ({p}, n={self.n})"
        return f"{head}: indistinguishable from no position bias ({p}, n={self.n})"


def position_bias(votes: Sequence[Vote]) -> PositionBias:
    valid = [v for v in votes if v.status == OK and v.choice is not None and v.order]
    k = sum(v.order[0] == v.choice for v in valid)
    n = len(valid)
    return PositionBias(k, n, k / n if n else None, wilson(k, n),
                        float(stats.binomtest(k, n, 0.5).pvalue) if n else None, len(votes))


@dataclass(frozen=True)
class VoterAgreement:
    """Krippendorff's alpha (nominal) among voters over matches."""

    alpha: float | None
    n_matches: int  # matches with at least two valid votes (pairable units)
    n_voters: int
    n_valid_votes: int

    def to_dict(self) -> dict:
        return asdict(self) | {"measure": "Krippendorff's alpha, nominal; units = matches, coders = voters"}


def voter_agreement(votes: Sequence[Vote]) -> VoterAgreement:
    import krippendorff

    valid = [v for v in votes if v.status == OK and v.choice is not None]
    matches = sorted({v.match_id for v in valid})
    voters = sorted({v.voter for v in valid})
    per_match = Counter(v.match_id for v in valid)
    pairable = sum(c >= 2 for c in per_match.values())
    data = np.full((len(voters), len(matches)), np.nan)
    mi, vi = {m: i for i, m in enumerate(matches)}, {v: i for i, v in enumerate(voters)}
    for v in valid:
        data[vi[v.voter], mi[v.match_id]] = v.choice
    alpha = None
    # alpha needs two values somewhere and a unit with two coders; otherwise it is undefined
    if pairable and len({v.choice for v in valid}) >= 2:
        alpha = float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
    return VoterAgreement(alpha, pairable, len(voters), len(valid))


@dataclass(frozen=True)
class PairedAgreement:
    """Agreement of paired labels: percent agreement (Wilson interval) and Cohen's kappa."""

    agree: int
    n: int  # pairs where both labels are valid
    agreement: float | None
    ci95: list[float | None]
    kappa: float | None
    unpaired: int  # items present in only one list, or with an invalid/failed label on either side

    def to_dict(self) -> dict:
        return asdict(self) | {"interval": "Wilson", "kappa": self.kappa}


def _paired(a: dict, b: dict) -> PairedAgreement:
    keys = sorted(set(a) & set(b), key=str)
    pairs = [(a[k], b[k]) for k in keys if a[k] is not None and b[k] is not None]
    agree = sum(x == y for x, y in pairs)
    n = len(pairs)
    return PairedAgreement(agree, n, agree / n if n else None, wilson(agree, n),
                           cohen_kappa([x for x, _ in pairs], [y for _, y in pairs]), len(set(a) | set(b)) - n)


def _vote_key(v: Vote) -> tuple[str, str]:
    return (v.match_id, v.voter)


def test_retest(first: Sequence[Vote], second: Sequence[Vote]) -> PairedAgreement:
    """Agreement of the same (match, voter) asked twice (e.g. the retest asked with new seeds)."""
    def index(votes: Sequence[Vote], which: str) -> dict:
        out: dict = {}
        for v in votes:
            if _vote_key(v) in out:
                raise ValueError(f"test_retest: {which} list has two votes for match {v.match_id!r}, voter {v.voter!r}")
            out[_vote_key(v)] = v.choice if v.status == OK else None
        return out

    return _paired(index(first, "first"), index(second, "second"))


test_retest.__test__ = False  # a measure named test_*, not a pytest test


def judge_agreement(first: Sequence[Judgment], second: Sequence[Judgment]) -> dict[str, PairedAgreement]:
    """Per probe: agreement of two judges' labels on the same outputs (key: probe, method, anchor)."""
    def index(js: Sequence[Judgment]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        for j in js:
            out.setdefault(j.probe, {})[(j.method, j.anchor_id)] = j.label if j.status == OK else None
        return out

    a, b = index(first), index(second)
    return {probe: _paired(a.get(probe, {}), b.get(probe, {})) for probe in sorted(set(a) | set(b))}


@dataclass(frozen=True)
class AudienceReliability:
    """The audience measures of one vote set (``retest``: None when no matches were re-asked)."""

    position_bias: PositionBias
    voter_agreement: VoterAgreement
    retest: PairedAgreement | None

    def to_dict(self) -> dict:
        return {"position_bias": self.position_bias.to_dict(), "voter_agreement": self.voter_agreement.to_dict(),
                "test_retest": None if self.retest is None else self.retest.to_dict()}


def audience_reliability(votes: Sequence[Vote], retest_votes: Sequence[Vote] | None = None) -> AudienceReliability:
    """All audience measures; ``retest_votes`` are the re-asked subset, paired with ``votes`` by (match, voter)."""
    retest = None
    if retest_votes is not None:
        asked_again = {_vote_key(v) for v in retest_votes}
        retest = test_retest([v for v in votes if _vote_key(v) in asked_again], retest_votes)
    return AudienceReliability(position_bias(votes), voter_agreement(votes), retest)
