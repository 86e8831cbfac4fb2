"""Win rate against parity with anchors as the unit, MDE, Fisher/McNemar + Holm, and the summary's words."""
from __future__ import annotations

import math

import numpy as np
import pytest

from moloch_exp.evaluation.probe_family import holm, in_words as change_in_words, probe_changes
from moloch_exp.evaluation.stats import in_words, minimum_detectable_effect, sign_flip_p, t_interval, win_rate_test


def test_exact_sign_flip_p_counts_patterns_at_least_as_extreme():
    # all four differences positive: only the all-plus and all-minus patterns reach |mean| = 0.25
    p, method, perms = sign_flip_p([0.1, 0.2, 0.3, 0.4])
    assert (method, perms) == ("exact", 16)
    assert p == pytest.approx(2 / 16)
    # one sign against the rest: patterns with |mean| >= observed, counted by hand
    p, _, _ = sign_flip_p([0.3, 0.3, -0.1])
    # |sum| for the 8 patterns: 0.5, 0.7, 0.1, 0.1 and their mirrors; observed 0.5 -> 4 of 8
    assert p == pytest.approx(4 / 8)


def test_monte_carlo_p_matches_exact_and_is_seeded():
    rng = np.random.default_rng(3)
    diffs = rng.uniform(-0.3, 0.45, size=14)
    exact, m, _ = sign_flip_p(diffs, exact_max=16)
    mc, m2, n = sign_flip_p(diffs, exact_max=0, n_permutations=100_000, seed=1)
    assert (m, m2, n) == ("exact", "monte_carlo", 100_000)
    assert mc == pytest.approx(exact, abs=0.006)
    assert sign_flip_p(diffs, exact_max=0, n_permutations=5000, seed=7) == sign_flip_p(diffs, exact_max=0,
                                                                                      n_permutations=5000, seed=7)


def test_mirrored_shares_are_at_parity_and_clear_shares_are_not():
    t = win_rate_test([0.2, 0.8, 0.35, 0.65, 0.5])
    assert t.mean == pytest.approx(0.5) and t.p == pytest.approx(1.0) and not t.significant
    t = win_rate_test([0.7] * 10 + [0.8] * 10)  # 20 anchors: Monte Carlo
    assert t.method == "monte_carlo" and t.p < 0.001 and t.significant


def test_four_anchors_cannot_be_significant_and_say_so():
    # the default cell: 0.75 from 4 anchors
    t = win_rate_test([1.0, 0.6, 0.8, 0.6])
    assert t.mean == pytest.approx(0.75) and t.n_anchors == 4
    assert t.min_attainable_p == pytest.approx(0.125) and t.p == pytest.approx(0.125)
    words = in_words(t)
    assert "indistinguishable from parity" in words and "p=0.12" in words and "n=4 anchors" in words
    assert "cannot reach p<0.05" in words
    # t interval with df=3: 0.75 -/+ 3.1824 * 0.19149 / 2, the upper end clipped to 1: it includes parity
    assert t.ci[0] == pytest.approx(0.75 - 3.182446 * math.sqrt(0.11 / 3) / 2, abs=1e-5) and t.ci[1] == 1.0
    d = t.to_dict()
    assert d["n_anchors"] == 4 and d["significant"] is False and "t interval" in d["interval"]


def test_t_interval_known_values_and_clipping():
    lo, hi = t_interval([0.5, 0.6, 0.7])
    # mean 0.6, sd 0.1, se 0.1/sqrt(3), t(0.975, 2) = 4.3027
    assert lo == pytest.approx(0.6 - 4.302653 * 0.1 / math.sqrt(3), abs=1e-5)
    assert hi == pytest.approx(0.6 + 4.302653 * 0.1 / math.sqrt(3), abs=1e-5)
    assert t_interval([0.4, 0.6]) == (0.0, 1.0)
    assert t_interval([0.4]) == (None, None)
    assert t_interval([1.0, 1.0, 1.0]) == (None, None)


def test_all_anchors_won_is_not_certainty():
    t = win_rate_test([1.0] * 5)
    assert t.ci == (None, None) and t.mde is None and t.p == pytest.approx(2 / 32)
    assert in_words(t) == ("win rate 1.00 (no interval: every anchor at this share) is indistinguishable from parity "
                           "(p=0.062, n=5 anchors; 5 anchors cannot reach p<0.05)")


def test_minimum_detectable_effect_matches_power_analysis():
    from statsmodels.stats.power import TTestPower

    for n, sd in ((4, 0.2), (12, 0.15), (50, 0.3)):
        mde = minimum_detectable_effect(sd, n)
        # statsmodels' own power function gives 0.8 at the MDE (in SD units)
        assert TTestPower().power(effect_size=mde / sd, nobs=n, alpha=0.05, alternative="two-sided") == \
            pytest.approx(0.8, abs=1e-6)
    # large n: the normal approximation (z_0.975 + z_0.8) * sd / sqrt(n)
    assert minimum_detectable_effect(0.2, 2000) == pytest.approx((1.959964 + 0.841621) * 0.2 / math.sqrt(2000), rel=0.01)
    assert minimum_detectable_effect(0.0, 10) is None and minimum_detectable_effect(0.2, 1) is None
    # more anchors detect smaller effects
    assert minimum_detectable_effect(0.2, 40) < minimum_detectable_effect(0.2, 10)


def test_significant_win_rate_in_words():
    t = win_rate_test([0.3, 0.2, 0.25, 0.1, 0.35, 0.3, 0.2, 0.15, 0.3, 0.2])
    assert t.significant and t.p == pytest.approx(2 / 1024)
    assert in_words(t).startswith("win rate 0.24") and "below parity (p=0.002, n=10 anchors)" in in_words(t)
    assert in_words(win_rate_test([])) == "no anchors with valid votes: no win rate"


def test_holm_known_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5] and holm([]) == []


def test_probe_changes_fisher_and_holm_family():
    out = probe_changes({"misrepresentation": (10, 10, 0, 10), "populism": (5, 10, 5, 10), "harmful": (0, 0, 3, 10)})
    by = {c.probe: c for c in out}
    p_extreme = 2 / math.comb(20, 10)  # Fisher two-sided: the observed table and its mirror
    assert by["misrepresentation"].p == pytest.approx(p_extreme)
    assert by["misrepresentation"].p_holm == pytest.approx(2 * p_extreme)
    assert by["populism"].p == pytest.approx(1.0) and by["populism"].p_holm == pytest.approx(1.0)
    assert by["harmful"].p is None and by["harmful"].p_holm is None
    assert {c.family_size for c in out} == {2}
    assert by["misrepresentation"].significant and not by["populism"].significant
    assert by["misrepresentation"].difference == pytest.approx(1.0)
    assert "differs from zero" in change_in_words(by["misrepresentation"])
    assert change_in_words(by["populism"]) == ("populism: 0.50 vs 0.50 (difference +0.00) is indistinguishable from "
                                               "zero (Holm p=1, family of 2, Fisher, n=10 vs 10)")
    assert "no test" in change_in_words(by["harmful"])
    assert {c.test for c in out} == {"fisher", None} and by["populism"].p_fisher == by["populism"].p
    d = by["populism"].to_dict()
    assert d["rate_ci95"][0] < 0.5 < d["rate_ci95"][1] and d["significant"] is False
