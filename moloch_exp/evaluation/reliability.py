"""Reliability of the audience and of the judges, from the recorded votes and judgments.

* :func:`position_bias` — share of valid votes choosing the option shown first (``order[0] == choice``),
  Wilson interval, exact test against chance 1/K (K = options shown: ``len(order)``; a vote set mixing
  K is tested against the exact distribution of the sum of its binomials). An audience that always
  picks "A" has 1.0.
* :func:`voter_agreement` — Krippendorff's alpha (nominal; units = matches, coders = voters, value =
  the chosen candidate; invalid/failed votes are missing values), via the ``krippendorff`` package.
* :func:`test_retest` — the same (match, voter) asked twice with new seeds: percent agreement and
  Cohen's kappa over the pairs where both votes are valid; the interval is clustered by match (the
  voters of one match are not independent: :func:`moloch_exp.evaluation.stats.clustered_proportion`).
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
    again = panel.vote(client, task, retest_subset(matches, retest_size(len(matches), 0.05, 10), seed),
                       derive_seed(seed, "retest"))
    print(audience_reliability(votes, again).to_dict())

Every result carries its n; a measure that is undefined on the data (no valid votes, a single
category everywhere) is None, never a made-up number.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Callable, Hashable, Sequence, TypeVar

import numpy as np
from scipy import stats

from moloch_exp.evaluation.stats import clustered_proportion, format_p, wilson
from moloch_exp.records import Judgment, Vote

OK = "ok"
T = TypeVar("T")


def retest_size(n_matches: int, share: float, min_matches: int) -> int:
    """Matches of a vote set to re-ask: ``share`` of them, at least ``min_matches`` (all when fewer)."""
    if not 0.0 <= share <= 1.0 or min_matches < 0:
        raise ValueError(f"retest share must be in [0, 1] and its floor >= 0, not {share}, {min_matches}")
    return min(n_matches, max(min_matches, math.ceil(share * n_matches - 1e-9)))


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
    """Share of valid votes that chose the first-shown option; ``chance`` (1/K, averaged over the votes'
    K) = no position bias."""

    first_chosen: int
    n: int
    share: float | None
    ci95: list[float | None]
    p: float | None  # exact two-sided test against chance
    n_votes: int  # all votes, including invalid and failed ones
    chance: float | None = None
    options: dict[str, int] = field(default_factory=dict)  # K (options shown) -> valid votes

    def to_dict(self) -> dict:
        return asdict(self) | {"test": "exact, two-sided, against chance 1/K (K = options shown)",
                               "interval": "Wilson", "in_words": self.in_words()}

    def in_words(self, alpha: float = 0.05) -> str:
        if self.share is None:
            return "position bias: no valid votes"
        lo, hi = self.ci95
        ks = sorted(int(k) for k in self.options)
        shown = f"{ks[0]} options" if len(ks) == 1 else f"{'/'.join(map(str, ks))} options"
        head = (f"first-shown option chosen in {self.share:.2f} [{lo:.2f}, {hi:.2f}] of valid votes "
                f"(chance {self.chance:.2f} with {shown})")
        p = format_p(self.p, alpha)
        if self.p < alpha:
            return f"{head}: position bias ({p}, n={self.n})"
        return f"{head}: indistinguishable from no position bias ({p}, n={self.n})"


def first_shown_p(k: int, n_by_options: dict[int, int]) -> float:
    """Two-sided p of ``k`` first-shown choices when a vote with K options picks the first with chance
    1/K: scipy's exact binomial test for one K; for mixed K the exact distribution of the sum of the
    binomials (convolved), two-sided as scipy does (outcomes no more likely than the observed one)."""
    if len(n_by_options) == 1:
        (opts, n), = n_by_options.items()
        return float(stats.binomtest(k, n, 1.0 / opts).pvalue)
    from scipy.signal import fftconvolve

    pmf = np.array([1.0])
    for opts, n in sorted(n_by_options.items()):
        pmf = np.clip(fftconvolve(pmf, stats.binom.pmf(np.arange(n + 1), n, 1.0 / opts)), 0.0, None)
    return float(min(1.0, pmf[pmf <= pmf[k] * (1 + 1e-7)].sum()))


def position_bias(votes: Sequence[Vote]) -> PositionBias:
    valid = [v for v in votes if v.status == OK and v.choice is not None and len(v.order or []) >= 2]
    k = sum(v.order[0] == v.choice for v in valid)
    n = len(valid)
    by_options = Counter(len(v.order) for v in valid)
    chance = sum(c / opts for opts, c in by_options.items()) / n if n else None
    return PositionBias(k, n, k / n if n else None, wilson(k, n), first_shown_p(k, dict(by_options)) if n else None,
                        len(votes), chance, {str(opts): c for opts, c in sorted(by_options.items())})


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
    # alpha needs two values among the pairable units (a value seen only in a unit with one coder does
    # not enter the coincidences): otherwise its expected disagreement is 0 and alpha is 0/0
    if len({v.choice for v in valid if per_match[v.match_id] >= 2}) >= 2:
        value = float(krippendorff.alpha(reliability_data=data, level_of_measurement="nominal"))
        alpha = value if math.isfinite(value) else None
    return VoterAgreement(alpha, pairable, len(voters), len(valid))


@dataclass(frozen=True)
class PairedAgreement:
    """Agreement of paired labels: percent agreement with its interval, and Cohen's kappa.

    ``ci95`` is Wilson's over independent pairs, or clustered (``n_clusters`` set: pairs of one
    cluster, e.g. the voters of one match, are not independent; ``design_effect`` says by how much
    the clustering widens it)."""

    agree: int
    n: int  # pairs where both labels are valid
    agreement: float | None
    ci95: list[float | None]
    kappa: float | None
    unpaired: int  # items present in only one list, or with an invalid/failed label on either side
    n_clusters: int | None = None
    design_effect: float | None = None

    def to_dict(self) -> dict:
        how = ("Wilson" if self.n_clusters is None else
               "Wilson at the effective n (design effect of clustering by match, t quantile with "
               "n_clusters - 1 df; Korn & Graubard)")
        return asdict(self) | {"interval": how, "kappa": self.kappa}


def _paired(a: dict, b: dict, cluster: Callable[[Hashable], Hashable] | None = None) -> PairedAgreement:
    keys = sorted(set(a) & set(b), key=str)
    pairs = [(k, a[k], b[k]) for k in keys if a[k] is not None and b[k] is not None]
    agree = sum(x == y for _, x, y in pairs)
    n = len(pairs)
    kappa = cohen_kappa([x for _, x, _ in pairs], [y for _, _, y in pairs])
    unpaired = len(set(a) | set(b)) - n
    if cluster is None:
        return PairedAgreement(agree, n, agree / n if n else None, wilson(agree, n), kappa, unpaired)
    per: dict[Hashable, list[int]] = {}
    for k, x, y in pairs:
        c = per.setdefault(cluster(k), [0, 0])
        c[0] += x == y
        c[1] += 1
    share, ci, deff = clustered_proportion([c[0] for c in per.values()], [c[1] for c in per.values()])
    return PairedAgreement(agree, n, share, ci, kappa, unpaired, len(per), deff)


def _vote_key(v: Vote) -> tuple[str, str]:
    return (v.match_id, v.voter)


def test_retest(first: Sequence[Vote], second: Sequence[Vote]) -> PairedAgreement:
    """Agreement of the same (match, voter) asked twice (e.g. the retest asked with new seeds); the
    interval is clustered by match."""
    def index(votes: Sequence[Vote], which: str) -> dict:
        out: dict = {}
        for v in votes:
            if _vote_key(v) in out:
                raise ValueError(f"test_retest: {which} list has two votes for match {v.match_id!r}, voter {v.voter!r}")
            out[_vote_key(v)] = v.choice if v.status == OK else None
        return out

    return _paired(index(first, "first"), index(second, "second"), cluster=lambda key: key[0])


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
