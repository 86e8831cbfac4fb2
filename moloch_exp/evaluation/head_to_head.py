"""Head-to-head evaluation (SPEC §2.6): the audience votes between two methods' test outputs.

The per-anchor share of valid votes preferring the second method is averaged over anchors;
0.5 is parity, tested with anchors as the unit (:func:`moloch_exp.evaluation.stats.win_rate_test`).
Anchors where either output has no message, or no vote was valid, are counted.
"""
from __future__ import annotations

from moloch_exp.evaluation.stats import WIN_RATE_INTERVAL, in_words, win_rate_test
from moloch_exp.records import Candidate, Match, Vote


def matches_for(a: list[Candidate], b: list[Candidate], pair: str) -> tuple[list[Match], int]:
    by_b = {c.anchor_id: c for c in b}
    matches, missing = [], 0
    for ca in a:
        cb = by_b.get(ca.anchor_id)
        if cb is None or ca.message is None or cb.message is None:
            missing += 1
            continue
        matches.append(Match(f"{pair}:{ca.anchor_id}", ca.anchor_id, [0, 1], [ca.message, cb.message]))
    return matches, missing


def summarize(votes: list[Vote], n_missing_outputs: int, seed: int = 0) -> dict:
    """Win rate of the second option (index 1): anchor-clustered interval, test against 0.5, MDE, in words."""
    per_anchor: dict[str, list[int]] = {}
    for v in votes:
        per_anchor.setdefault(v.anchor_id, [])
        if v.status == "ok":
            per_anchor[v.anchor_id].append(v.choice)
    shares = [sum(c == 1 for c in cs) / len(cs) for cs in per_anchor.values() if cs]
    test = win_rate_test(shares, seed=seed)
    return {"mean": test.mean, "ci95": list(test.ci), "ci95_method": WIN_RATE_INTERVAL, "p": test.p,
            "mde": test.mde, "significant": test.significant, "in_words": in_words(test), "test": test.to_dict(),
            "n_anchors": len(shares),
            "anchors_without_valid_votes": sum(1 for cs in per_anchor.values() if not cs),
            "anchors_missing_output": n_missing_outputs,
            "votes": len(votes), "invalid_votes": sum(v.status == "invalid" for v in votes),
            "failed_votes": sum(v.status == "failed" for v in votes)}
