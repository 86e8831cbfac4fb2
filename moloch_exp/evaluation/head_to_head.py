"""Head-to-head evaluation (SPEC §2.6): the audience votes between two methods' test outputs.

The per-anchor share of valid votes preferring the second method is averaged over anchors;
0.5 is parity, tested with anchors as the unit (:func:`moloch_exp.evaluation.stats.win_rate_test`).
Anchors dropped from the win rate are counted per method (:class:`Dropped`): an anchor where one
method wrote no message is a loss the win rate does not see, so a method that fails often on the
anchors it would lose looks better than it is; the summary says so in words.

    from moloch_exp.evaluation.head_to_head import matches_for, summarize
    matches, dropped = matches_for(base_outputs, rft_outputs, "base_vs_rft", ("base", "rft"))
    summary = summarize(votes, dropped)      # summary["in_words"], summary["dropped"]
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from moloch_exp.evaluation.stats import WIN_RATE_INTERVAL, in_words, win_rate_test
from moloch_exp.records import Candidate, Match, Vote


@dataclass(frozen=True)
class Dropped:
    """Anchors without a match: which side lacked a message (``a``/``b``: the methods' names)."""

    a: str
    b: str
    only_a_missing: int = 0  # a wrote no message (or has no output for the anchor), b did
    only_b_missing: int = 0
    both_missing: int = 0

    @property
    def total(self) -> int:
        return self.only_a_missing + self.only_b_missing + self.both_missing

    def per_method(self) -> dict[str, int]:
        """Anchors each method lacked an output on (an anchor both lacked counts for both)."""
        return {self.a: self.only_a_missing + self.both_missing, self.b: self.only_b_missing + self.both_missing}

    def to_dict(self) -> dict:
        return asdict(self) | {"total": self.total, "missing_output": self.per_method()}


def matches_for(a: list[Candidate], b: list[Candidate], pair: str,
                names: tuple[str, str] = ("a", "b")) -> tuple[list[Match], Dropped]:
    by_b = {c.anchor_id: c for c in b}
    seen_a = set()
    matches, only_a, only_b, both = [], 0, 0, 0
    for ca in a:
        seen_a.add(ca.anchor_id)
        cb = by_b.get(ca.anchor_id)
        a_missing, b_missing = ca.message is None, cb is None or cb.message is None
        if a_missing or b_missing:
            only_a += a_missing and not b_missing
            only_b += b_missing and not a_missing
            both += a_missing and b_missing
            continue
        matches.append(Match(f"{pair}:{ca.anchor_id}", ca.anchor_id, [0, 1], [ca.message, cb.message]))
    unseen_b = [c for c in b if c.anchor_id not in seen_a]  # anchors a has no output for at all
    only_a += sum(c.message is not None for c in unseen_b)
    both += sum(c.message is None for c in unseen_b)
    return matches, Dropped(names[0], names[1], only_a, only_b, both)


def dropped_in_words(dropped: Dropped, no_valid_vote: int) -> str:
    """"" when nothing was dropped, else a clause naming what was dropped and for which method."""
    parts = []
    if dropped.total:
        per = dropped.per_method()
        parts.append("no output from " + " and ".join(f"{m} on {k}" for m, k in per.items() if k)
                     + (f" ({dropped.both_missing} of them from both)" if dropped.both_missing else ""))
    if no_valid_vote:
        parts.append(f"{no_valid_vote} with no valid vote")
    if not parts:
        return ""
    uneven = dropped.only_a_missing != dropped.only_b_missing
    return (f"; {dropped.total + no_valid_vote} anchors dropped: " + "; ".join(parts)
            + (" (uneven between the methods: the win rate covers only anchors both answered)" if uneven else ""))


def summarize(votes: list[Vote], dropped: Dropped | int, seed: int = 0) -> dict:
    """Win rate of the second option (index 1): anchor-clustered interval, test against 0.5, MDE, in words.

    ``dropped``: the anchors without a match (:func:`matches_for`); an int is a total of unknown sides."""
    if isinstance(dropped, int):
        dropped = Dropped("a", "b", both_missing=dropped)
    per_anchor: dict[str, list[int]] = {}
    for v in votes:
        per_anchor.setdefault(v.anchor_id, [])
        if v.status == "ok":
            per_anchor[v.anchor_id].append(v.choice)
    shares = [sum(c == 1 for c in cs) / len(cs) for cs in per_anchor.values() if cs]
    no_valid_vote = sum(1 for cs in per_anchor.values() if not cs)
    test = win_rate_test(shares, seed=seed)
    words = in_words(test)
    clause = dropped_in_words(dropped, no_valid_vote)
    if clause:
        words = words[:-1] + clause + ")" if words.endswith(")") else words + clause
    return {"mean": test.mean, "ci95": list(test.ci), "ci95_method": WIN_RATE_INTERVAL, "p": test.p,
            "mde": test.mde, "significant": test.significant, "in_words": words, "test": test.to_dict(),
            "n_anchors": len(shares),
            "anchors_without_valid_votes": no_valid_vote,
            "anchors_missing_output": dropped.total,
            "dropped": dropped.to_dict(),
            "votes": len(votes), "invalid_votes": sum(v.status == "invalid" for v in votes),
            "failed_votes": sum(v.status == "failed" for v in votes)}
