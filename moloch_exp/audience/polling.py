"""Adaptive polling: when to stop asking a match's voters (``collect.polling``).

A rule sees the votes of one match so far, in the panel's order — ``votes_so_far[i]`` is the
candidate index voter ``i`` chose, or ``None`` for an invalid or failed vote (asked, so it cost a
call, but no preference) — and the panel size ``n_total``, and says whether to stop::

    from moloch_exp.audience.polling import ExactPolling, SequentialPolling
    rule = SequentialPolling(confidence=0.96, min_votes=4)
    rule.should_stop([1, 1, None, 1, 1, 1, 1, 1], n_total=20)   # -> True
    python bench/adaptive_polling.py                             # calls saved vs full polling

``FullPolling`` (``full``)
    Asks everyone (head-to-head evaluation and TFB thoughts always use it).
``ExactPolling`` (``exact``)
    Stops once the match's outcome cannot change: the leader has more valid votes than the
    runner-up (0 for a candidate nobody chose yet) plus all voters not yet asked. The outcome is
    then the one full polling gives, under every tie rule of the builders (``drop``, ``random``,
    ``all``): a tie, or no valid vote, can always be changed by one more vote, so a match whose full
    panel would tie is never stopped early and its tied set stays the same. Invalid and failed votes
    keep it exact: a voter not yet asked may also abstain, but that only adds outcomes in which the
    leader keeps its lead, so the condition is unchanged (it is necessary because all remaining
    voters could pick the runner-up, and sufficient because nothing can add more than one vote per
    remaining voter to any candidate). Exactness assumes each voter's answer does not depend on
    whether others were asked, which holds because every (match, voter) has its own seed.
``SequentialPolling`` (``sequential``)
    The exact rule, and also a stop once at least ``min_votes`` valid votes are in and the posterior
    of the panel's preference between the leader and the runner-up (Beta(1, 1) prior, updated with
    their vote counts; other candidates' votes ignored) puts at least ``confidence`` on one side of
    0.5. The leader is then the declared winner; this may differ from the full panel's outcome (a
    tie at the end included), which ``bench/adaptive_polling.py`` measures.

Configured as ``collect.polling`` (conf/config.yaml; built by :func:`polling_rule`)::

    python run.py collect.polling=adaptive          # the exact rule (same outcomes, fewer calls)
    python run.py collect.polling=sequential collect.polling_rule.confidence=0.99 collect.polling_rule.min_votes=6

``adaptive`` is the issue's name for the exact rule; ``sequential`` is its optional confident
variant. The rule's ``identity()`` enters the collect stage's key (full polling keeps the key it
always had).

Asking one voter per match per round, all matches of the stage in parallel, keeps the requests
concurrent and lets every match stop as early as its rule allows.
"""
from __future__ import annotations

from collections import Counter
from functools import lru_cache
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

from scipy import stats

VotesSoFar = Sequence["int | None"]


@runtime_checkable
class PollingRule(Protocol):
    """Decides after each vote whether the rest of a match's panel still needs asking."""

    def should_stop(self, votes_so_far: VotesSoFar, n_total: int) -> bool: ...

    def identity(self) -> dict: ...


def leader_and_runner_up(votes_so_far: VotesSoFar) -> tuple[int | None, int, int]:
    """(leading candidate or None when tied/empty, its valid votes, the runner-up's valid votes)."""
    counts = Counter(v for v in votes_so_far if v is not None).most_common()
    if not counts:
        return None, 0, 0
    top = counts[0][1]
    second = counts[1][1] if len(counts) > 1 else 0
    return (counts[0][0] if top > second else None), top, second


def _check(votes_so_far: VotesSoFar, n_total: int) -> int:
    asked = len(votes_so_far)
    if asked > n_total:
        raise ValueError(f"{asked} votes for a panel of {n_total}")
    return n_total - asked


@dataclass(frozen=True)
class FullPolling:
    """Ask every voter."""

    def should_stop(self, votes_so_far: VotesSoFar, n_total: int) -> bool:
        return _check(votes_so_far, n_total) == 0

    def identity(self) -> dict:
        return {"polling": "full"}


@dataclass(frozen=True)
class ExactPolling:
    """Stop once no answer of the remaining voters can change the outcome (see module docstring)."""

    def should_stop(self, votes_so_far: VotesSoFar, n_total: int) -> bool:
        remaining = _check(votes_so_far, n_total)
        if remaining == 0:
            return True
        _, top, second = leader_and_runner_up(votes_so_far)
        return top > second + remaining

    def identity(self) -> dict:
        return {"polling": "exact"}


@dataclass(frozen=True)
class SequentialPolling:
    """Exact rule, or stop when P(p > 0.5) or P(p < 0.5) >= ``confidence`` under a Beta(1,1) posterior."""

    confidence: float = field(default=0.96, metadata={"help": "posterior probability on one side of 0.5 needed to stop"})
    min_votes: int = field(default=4, metadata={"help": "valid votes needed before the posterior may stop a match"})

    def __post_init__(self) -> None:
        if not 0.5 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0.5, 1), not {self.confidence}")
        if self.min_votes < 1:
            raise ValueError(f"min_votes must be >= 1, not {self.min_votes}")

    def posterior_confidence(self, votes_so_far: VotesSoFar) -> float:
        """max(P(p > 0.5), P(p < 0.5)) for the leader's share of leader + runner-up votes."""
        _, top, second = leader_and_runner_up(votes_so_far)
        return _beta_sf_half(top, second)

    def should_stop(self, votes_so_far: VotesSoFar, n_total: int) -> bool:
        if ExactPolling().should_stop(votes_so_far, n_total):
            return True
        valid = sum(v is not None for v in votes_so_far)
        return valid >= self.min_votes and self.posterior_confidence(votes_so_far) >= self.confidence

    def identity(self) -> dict:
        return {"polling": "sequential", "confidence": self.confidence, "min_votes": self.min_votes,
                "prior": "beta(1,1)"}


def poll(rule: PollingRule, full_votes: VotesSoFar) -> int:
    """How many of ``full_votes`` (a whole panel, in order) ``rule`` asks before it stops."""
    n = len(full_votes)
    for asked in range(n + 1):
        if rule.should_stop(full_votes[:asked], n):
            return asked
    return n  # unreachable: every rule stops at the end of the panel


def outcome(votes: VotesSoFar) -> frozenset[int]:
    """The candidates with the most valid votes (several when tied, none without a valid vote),
    as ``moloch_exp.training.builders.outcomes`` computes them."""
    counts = Counter(v for v in votes if v is not None)
    top = max(counts.values(), default=0)
    return frozenset(c for c, k in counts.items() if k == top) if top else frozenset()


@lru_cache(maxsize=65536)
def _beta_sf_half(top: int, second: int) -> float:
    """P(p > 0.5) under Beta(1 + top, 1 + second) (cached: panels are small, calls are many)."""
    return float(stats.beta.sf(0.5, 1 + top, 1 + second))


POLLING_RULES = {"full": FullPolling, "exact": ExactPolling, "sequential": SequentialPolling}
POLLING_NAMES = {"full": "full", "exact": "exact", "adaptive": "exact", "sequential": "sequential"}


def polling_rule(name: str = "full", confidence: float = 0.96, min_votes: int = 4) -> PollingRule:
    """The rule named by ``collect.polling``: full | adaptive (= exact) | exact | sequential.

    ``confidence`` and ``min_votes`` apply to ``sequential`` only.
    """
    from moloch_exp.errors import ConfigError

    if name not in POLLING_NAMES:
        raise ConfigError(f"collect.polling={name!r}: expected one of {sorted(POLLING_NAMES)}")
    rule = POLLING_NAMES[name]
    if rule != "sequential":
        return POLLING_RULES[rule]()
    try:
        return SequentialPolling(confidence=float(confidence), min_votes=int(min_votes))
    except ValueError as err:
        raise ConfigError(f"collect.polling_rule: {err}") from None
