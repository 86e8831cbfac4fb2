"""Audience and judge reliability measures on constructed votes and judgments with known answers."""
from __future__ import annotations

import pytest

from moloch_exp.evaluation.reliability import (audience_reliability, cohen_kappa, retest_subset, judge_agreement, position_bias, test_retest,
                                               voter_agreement)
from moloch_exp.records import Judgment, Vote


def vote(match: str, voter: str, order: list[int], choice: int | None, status: str = "ok", seed: int = 0) -> Vote:
    return Vote(match_id=match, anchor_id=match, voter=voter, order=order, seed=seed, status=status,
                choice=choice if status == "ok" else None)


def always_first(n_matches: int = 6, voters: tuple[str, ...] = ("v0", "v1", "v2")) -> list[Vote]:
    """An audience that always picks the option shown as A, with orders alternating."""
    out = []
    for m in range(n_matches):
        for i, v in enumerate(voters):
            order = [0, 1] if (m + i) % 2 == 0 else [1, 0]
            out.append(vote(f"m{m}", v, order, order[0]))
    return out


def test_always_a_has_position_bias_one_and_is_significant():
    votes = always_first() + [vote("m0", "v3", [0, 1], None, status="invalid"), vote("m1", "v3", [1, 0], None, "failed")]
    pb = position_bias(votes)
    assert (pb.first_chosen, pb.n, pb.share, pb.n_votes) == (18, 18, 1.0, 20)
    assert pb.p == pytest.approx(2 * 0.5 ** 18)
    assert pb.ci95[1] == pytest.approx(1.0) and 0.8 < pb.ci95[0] < 1.0
    assert pb.chance == 0.5 and pb.options == {"2": 18}
    assert pb.to_dict()["test"].startswith("exact, two-sided, against chance 1/K")
    assert pb.in_words() == ("first-shown option chosen in 1.00 [0.82, 1.00] of valid votes (chance 0.50 with "
                             "2 options): position bias (p<0.001, n=18)")


def test_balanced_positions_have_no_bias():
    votes = [vote("m0", f"v{i}", [0, 1] if i % 2 else [1, 0], 0) for i in range(10)]  # always candidate 0
    pb = position_bias(votes)
    assert pb.share == 0.5 and pb.p == pytest.approx(1.0)
    assert "indistinguishable from no position bias (p=1, n=10)" in pb.in_words()
    empty = position_bias([vote("m0", "v0", [0, 1], None, "invalid")])
    assert (empty.n, empty.share, empty.p, empty.ci95) == (0, None, None, [None, None])


def test_perfect_agreement_has_alpha_one():
    votes = [vote(f"m{m}", f"v{i}", [0, 1], m % 2) for m in range(4) for i in range(5)]
    va = voter_agreement(votes)
    assert va.alpha == pytest.approx(1.0) and (va.n_matches, va.n_voters, va.n_valid_votes) == (4, 5, 20)


def test_known_krippendorff_alpha_and_missing_votes():
    # 3 matches x 2 voters, values (0,0), (1,1), (0,1): nominal alpha = 1 - (n-1) * D_o / D_e with n = 6
    # coincidences: o_00 = 2, o_11 = 2, o_01 = o_10 = 1; n_0 = n_1 = 3; D_o = 2/6, D_e = 2*3*3/(6*5) = 0.6
    votes = [vote("a", "x", [0, 1], 0), vote("a", "y", [0, 1], 0), vote("b", "x", [0, 1], 1), vote("b", "y", [0, 1], 1),
             vote("c", "x", [0, 1], 0), vote("c", "y", [0, 1], 1)]
    expected = 1 - (2 / 6) / 0.6
    assert voter_agreement(votes).alpha == pytest.approx(expected)
    # an invalid vote is a missing value, not a disagreement: a match with one valid vote drops out
    extra = votes + [vote("d", "x", [0, 1], 1), vote("d", "y", [0, 1], None, "invalid")]
    va = voter_agreement(extra)
    assert va.alpha == pytest.approx(expected) and va.n_matches == 3


def test_alpha_undefined_without_variation():
    votes = [vote(f"m{m}", f"v{i}", [0, 1], 1) for m in range(3) for i in range(3)]
    assert voter_agreement(votes).alpha is None


def test_identical_repeated_votes_have_test_retest_one():
    first = [vote(f"m{m}", f"v{i}", [0, 1], (m + i) % 2, seed=1) for m in range(4) for i in range(3)]
    again = [vote(v.match_id, v.voter, [1, 0], v.choice, seed=99) for v in first]
    tr = test_retest(first, again)
    assert (tr.agree, tr.n, tr.agreement, tr.kappa, tr.unpaired) == (12, 12, 1.0, 1.0, 0)


def test_retest_known_kappa_and_unpaired():
    choices_1 = [0, 0, 1, 1, 0, 1, 0, 1]
    choices_2 = [0, 1, 1, 1, 0, 0, 0, 1]
    first = [vote("m", f"v{i}", [0, 1], c) for i, c in enumerate(choices_1)]
    second = [vote("m", f"v{i}", [0, 1], c) for i, c in enumerate(choices_2)]
    second.append(vote("m", "v_new", [0, 1], 0))  # only in one list
    second[0] = vote("m", "v0", [0, 1], None, "invalid")  # invalid on one side: not paired
    tr = test_retest(first, second)
    # pairs v1..v7: agree on v2, v3, v4, v6, v7 (5 of 7); marginals: both lists 3 zeros and 4 ones
    po, pe = 5 / 7, (3 * 3 + 4 * 4) / 49
    assert (tr.agree, tr.n, tr.unpaired) == (5, 7, 2)
    assert tr.kappa == pytest.approx((po - pe) / (1 - pe))
    with pytest.raises(ValueError, match="two votes for match"):
        test_retest(first + first[:1], second)


def test_cohen_kappa_edges():
    assert cohen_kappa([], []) is None
    assert cohen_kappa(["y", "y"], ["y", "y"]) is None  # one category throughout: 0/0
    assert cohen_kappa(["y", "n", "y", "n"], ["n", "y", "n", "y"]) == pytest.approx(-1.0)
    with pytest.raises(ValueError):
        cohen_kappa([1], [1, 2])


def judgment(probe: str, anchor: str, label: bool | None, status: str = "ok", method: str = "rft") -> Judgment:
    return Judgment(probe=probe, method=method, anchor_id=anchor, status=status, label=label)


def test_judge_agreement_per_probe():
    a = [judgment("populism", f"a{i}", i % 2 == 0) for i in range(6)] + \
        [judgment("harmful", f"a{i}", i < 2) for i in range(4)]
    b = [judgment("populism", f"a{i}", i % 2 == 0) for i in range(6)] + \
        [judgment("harmful", "a0", True), judgment("harmful", "a1", False), judgment("harmful", "a2", False),
         judgment("harmful", "a3", None, "invalid")]
    out = judge_agreement(a, b)
    assert set(out) == {"harmful", "populism"}
    assert out["populism"].kappa == pytest.approx(1.0) and out["populism"].n == 6
    # harmful pairs a0..a2: (T,T), (T,F), (F,F): po = 2/3, pe = (2*1 + 1*2)/9
    assert out["harmful"].n == 3 and out["harmful"].unpaired == 1
    assert out["harmful"].kappa == pytest.approx((2 / 3 - 4 / 9) / (1 - 4 / 9))


def test_audience_reliability_pairs_only_the_retested_subset():
    votes = [vote(f"m{m}", f"v{i}", [0, 1], (m + i) % 2) for m in range(4) for i in range(3)]
    retest = [vote(v.match_id, v.voter, [1, 0], v.choice, seed=7) for v in votes if v.match_id in ("m0", "m1")]
    r = audience_reliability(votes, retest)
    assert (r.retest.n, r.retest.unpaired, r.retest.agreement) == (6, 0, 1.0)
    d = r.to_dict()
    assert set(d) == {"position_bias", "voter_agreement", "test_retest"} and d["position_bias"]["n"] == 12
    assert audience_reliability(votes).retest is None and audience_reliability(votes).to_dict()["test_retest"] is None


def test_retest_subset_is_seeded_ordered_and_bounded():
    items = list(range(20))
    a = retest_subset(items, 5, seed=3)
    assert a == retest_subset(items, 5, seed=3) and a == sorted(a) and len(set(a)) == 5
    assert retest_subset(items, 50, seed=3) == items and retest_subset(items, 0, seed=3) == []
    assert any(retest_subset(items, 5, seed=s) != a for s in range(4, 10))
