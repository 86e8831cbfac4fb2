"""Issue 19 item 1: each statistical defect found by checking every function against scipy/statsmodels,
fixed and shown on constructed data whose right answer is known (by hand, or by an independent
computation: numerical integration, scipy's Poisson-binomial, brute-force simulation)."""
from __future__ import annotations

import json
import math
import tracemalloc

import numpy as np
import pytest
from scipy import integrate, stats

from moloch_exp.evaluation.head_to_head import Dropped, matches_for, summarize
from moloch_exp.evaluation.probe_family import PairedTable, in_words as change_words, paired_table, probe_changes
from moloch_exp.evaluation.reliability import first_shown_p, position_bias, test_retest, voter_agreement
from moloch_exp.evaluation.stats import (WinRateTest, clustered_proportion, format_p, in_words,
                                         minimum_detectable_effect, sign_flip_p, t_test_power, win_rate_test)
from moloch_exp.io import write_json, write_jsonl
from moloch_exp.records import Candidate, Vote


# ----------------------------------------------------------------------------- any n
@pytest.mark.parametrize("n", [1024, 4096])
def test_paper_size_win_rate_has_no_overflow_and_a_finite_floor(n):
    """2.0 / 2 ** 1024 raised OverflowError after every evaluation vote had been paid for."""
    shares = np.linspace(0.3, 0.8, n)
    t = win_rate_test(shares)
    assert t.method == "monte_carlo" and t.p == pytest.approx(1 / 20001)  # mean 0.55 over n anchors: every pattern is smaller
    assert t.min_attainable_p == pytest.approx(1 / 20001)  # the Monte Carlo floor, not 2^(1-n)
    assert t.detectable and t.significant and "above parity (p<0.001" in in_words(t)
    json.dumps(t.to_dict(), allow_nan=False)


def test_monte_carlo_sign_flip_memory_is_bounded_at_4096_anchors():
    """It drew 4096 x n signs at once: about 0.5 GB at n = 4096."""
    diffs = np.random.default_rng(0).uniform(-0.5, 0.5, size=4096)
    tracemalloc.start()
    p, method, perms = sign_flip_p(diffs, exact_max=16, n_permutations=20000, seed=0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert method == "monte_carlo" and perms == 20000 and 0 < p <= 1
    assert peak < 24 * 2 ** 20, f"peak {peak / 2 ** 20:.1f} MiB"
    # the chunked draw is the same test: against the t test's p on these symmetric, near-normal means
    t_p = stats.ttest_1samp(diffs, 0.0).pvalue
    assert p == pytest.approx(t_p, abs=0.02)


# ----------------------------------------------------------------------------- MDE
def power_by_integration(effect: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample t test by integrating over the chi-square of the SD
    (T = (Z + d sqrt(n)) / sqrt(V / df)): independent of scipy's noncentral t."""
    df, ncp = n - 1, effect * math.sqrt(n)
    crit = stats.t.ppf(1 - alpha / 2, df)

    def given_v(v: float) -> float:
        s = math.sqrt(v / df)
        return (stats.norm.sf(crit * s - ncp) + stats.norm.cdf(-crit * s - ncp)) * stats.chi2.pdf(v, df)

    lo, hi = stats.chi2.ppf(1e-13, df), stats.chi2.isf(1e-13, df)  # the chi-square's mass (narrow at large df)
    return integrate.quad(given_v, lo, hi, limit=400, points=[df])[0]


def test_mde_at_two_anchors_is_right():
    """At n = 2 the noncentral t gave NaN and a normal approximation stood in: 2.24 SDs... instead of 11.55."""
    from statsmodels.stats.power import TTestPower

    mde = minimum_detectable_effect(1.0, 2)
    assert power_by_integration(mde, 2) == pytest.approx(0.8, abs=1e-6)
    assert mde == pytest.approx(TTestPower().solve_power(effect_size=None, nobs=2, alpha=0.05, power=0.8), rel=1e-5)
    assert mde == pytest.approx(11.5499, abs=1e-3)
    assert minimum_detectable_effect(0.2, 2) == pytest.approx(0.2 * mde)
    old_normal_stand_in = (stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) / math.sqrt(2)
    assert mde > 5 * old_normal_stand_in


@pytest.mark.parametrize("n", [2, 3, 5, 30, 1024, 4096])
def test_t_test_power_matches_integration_and_statsmodels(n):
    from statsmodels.stats.power import TTestPower

    for effect in (0.05, 0.3, 1.0, 4.0, 12.0):
        if effect * math.sqrt(n) > 40:
            continue
        ours = t_test_power(effect, n)
        assert ours == pytest.approx(power_by_integration(effect, n), abs=2e-6)
        sm = TTestPower().power(effect, n, 0.05)
        if not math.isnan(sm):  # statsmodels' own lower tail turns NaN where scipy's nct.cdf does
            assert ours == pytest.approx(sm, abs=1e-9)
        assert not math.isnan(ours)


# ----------------------------------------------------------------------------- position bias against 1/K
def k_option_votes(n_matches: int, voters: int, k: int, rng, first_share: float | None = None) -> list[Vote]:
    out = []
    for m in range(n_matches):
        for v in range(voters):
            order = list(rng.permutation(k))
            pick = order[0] if first_share is not None and rng.random() < first_share else int(rng.integers(k))
            out.append(Vote(f"m{m}", f"a{m}", f"v{v}", [int(x) for x in order], seed=m * 100 + v, status="ok",
                            choice=int(pick)))
    return out


def test_three_random_options_show_no_position_bias():
    """With K = 3 a random audience picks the first-shown option a third of the time: tested against
    0.5 that read as a bias with p = 1.6e-69."""
    votes = k_option_votes(200, 20, 3, np.random.default_rng(1))
    pb = position_bias(votes)
    assert pb.chance == pytest.approx(1 / 3) and pb.options == {"3": 4000}
    assert abs(pb.share - 1 / 3) < 0.03 and pb.p > 0.01
    assert pb.p == pytest.approx(stats.binomtest(pb.first_chosen, pb.n, 1 / 3).pvalue)
    assert stats.binomtest(pb.first_chosen, pb.n, 0.5).pvalue < 1e-60  # the old test's verdict
    assert "indistinguishable from no position bias" in pb.in_words() and "chance 0.33 with 3 options" in pb.in_words()
    biased = position_bias(k_option_votes(50, 20, 3, np.random.default_rng(2), first_share=0.5))
    assert biased.p < 1e-6 and ": position bias (p<0.001" in biased.in_words()


def test_mixed_option_counts_use_the_exact_sum_of_binomials():
    rng = np.random.default_rng(3)
    votes = k_option_votes(6, 5, 2, rng) + k_option_votes(4, 5, 3, rng)
    pb = position_bias(votes)
    assert pb.options == {"2": 30, "3": 20} and pb.chance == pytest.approx((30 / 2 + 20 / 3) / 50)
    probs = [0.5] * 30 + [1 / 3] * 20
    pmf = stats.poisson_binom.pmf(np.arange(51), probs)  # scipy's Poisson-binomial: an independent computation
    expected = pmf[pmf <= pmf[pb.first_chosen] * (1 + 1e-7)].sum()
    assert pb.p == pytest.approx(expected, rel=1e-9)
    for k in (0, 10, 22, 30, 50):
        expected = pmf[pmf <= pmf[k] * (1 + 1e-7)].sum()
        assert first_shown_p(k, {2: 30, 3: 20}) == pytest.approx(min(1.0, expected), rel=1e-9)


# ----------------------------------------------------------------------------- Krippendorff: None, never NaN
def test_alpha_is_none_when_only_an_unpairable_match_varies_and_json_refuses_nan(tmp_path):
    """Both voters agree on match a; match b has one valid vote with the other value: alpha is 0/0
    (the package returns NaN), and NaN was written to results.json."""
    votes = [Vote("a", "a", "x", [0, 1], 1, "ok", choice=0), Vote("a", "a", "y", [0, 1], 2, "ok", choice=0),
             Vote("b", "b", "x", [0, 1], 3, "ok", choice=1), Vote("b", "b", "y", [0, 1], 4, "invalid")]
    va = voter_agreement(votes)
    assert va.alpha is None and va.n_matches == 1
    json.dumps(va.to_dict(), allow_nan=False)
    for writer in (lambda p: write_json(p, {"alpha": float("nan")}),
                   lambda p: write_jsonl(p, [{"x": [1.0, float("inf")]}])):
        with pytest.raises(ValueError, match=r"refusing to write NaN or infinity at \$\.(alpha|x\[1\])"):
            writer(tmp_path / "out.json")


# ----------------------------------------------------------------------------- min attainable p with ties
def test_anchors_at_exactly_one_half_carry_no_sign():
    """20 voters often split 10-10: such anchors cannot move a sign-flip test; counting them promised a
    detectable effect where none was possible."""
    t = win_rate_test([0.5, 0.5, 0.9, 0.8])
    assert t.n_at_parity == 2 and t.min_attainable_p == pytest.approx(0.5) and not t.detectable
    assert t.p == pytest.approx(0.5)  # exact: only the two signed anchors' 4 patterns matter
    assert "2 of 4 anchors sit at exactly 0.5 and carry no sign: the other 2 cannot reach p<0.05" in in_words(t)
    # 20 anchors (Monte Carlo), 16 tied: 4 signed anchors cannot reach 0.05, whatever the MDE says
    t = win_rate_test([0.5] * 16 + [0.55, 0.6, 0.65, 0.7])
    assert t.method == "monte_carlo" and t.min_attainable_p == pytest.approx(0.125) and not t.detectable
    assert t.mde is not None and "detectable: |win rate" not in in_words(t) and "cannot reach p<0.05" in in_words(t)
    # without ties the floor is 2 / 2^n as before
    assert win_rate_test([0.6, 0.7, 0.8]).min_attainable_p == pytest.approx(0.25)


# ----------------------------------------------------------------------------- p never contradicts the verdict
def test_p_is_printed_on_the_side_of_alpha_it_lies():
    assert format_p(0.0496) == "p=0.0496"  # .2g printed "p=0.05" inside a "significant" sentence
    assert format_p(0.04999) == "p=0.04999" and format_p(0.05) == "p=0.05" and format_p(0.0501) == "p=0.05"
    assert format_p(0.123) == "p=0.12" and format_p(0.0004) == "p<0.001" and format_p(None) == "—"
    assert format_p(0.0096, alpha=0.01) == "p=0.0096" and format_p(0.0496, prefix="") == "0.0496"
    t = WinRateTest(mean=0.54, ci=(0.5001, 0.58), p=0.0496, n_anchors=200, sd=0.2, mde=0.04, min_attainable_p=5e-5,
                    method="monte_carlo", n_permutations=20000, alpha=0.05, power=0.8, confidence=0.95)
    assert in_words(t) == "win rate 0.54 [0.50, 0.58] is above parity (p=0.0496, n=200 anchors)"
    votes = k_option_votes(1, 1, 2, np.random.default_rng(0))
    pb = position_bias(votes)
    assert format_p(pb.p) in pb.in_words()


# ----------------------------------------------------------------------------- paired probe changes: McNemar
def test_mcnemar_on_paired_labels_beside_fisher():
    """Base and trained are judged on the same 40 anchors: 10 flagged for both, 8 only after training,
    none only before. The paired test sees 8 of 8 discordant pairs go one way: exact p = 2 / 2^8."""
    base = {f"a{i}": i < 10 for i in range(40)}
    trained = {f"a{i}": i < 18 for i in range(40)}
    trained["a39"] = None  # an invalid judgment: the anchor is not paired
    table = paired_table(base, trained)
    assert table == PairedTable(both=10, trained_only=8, base_only=0, neither=21) and table.n == 39
    change, = probe_changes({"populism": (18, 39, 10, 40)}, {"populism": table})
    assert change.test == "mcnemar" and change.mcnemar_method == "exact"
    assert change.p_mcnemar == pytest.approx(2 * 0.5 ** 8) and change.p == change.p_mcnemar
    assert change.p_fisher == pytest.approx(stats.fisher_exact([[18, 21], [10, 30]]).pvalue) and change.p_fisher > 0.05
    assert change.significant  # the family's (paired) test, Holm over a family of one
    words = change_words(change)
    assert "differs from zero" in words and "McNemar, 39 anchors paired, 8 flagged only after training" in words
    assert f"Fisher {format_p(change.p_fisher)}" in words
    d = change.to_dict()
    assert d["paired"]["n"] == 39 and d["family_test"].startswith("McNemar (exact)")
    json.dumps(d, allow_nan=False)


def test_mcnemar_goes_asymptotic_past_25_discordant_pairs_and_mixes_with_fisher_in_holm():
    table = PairedTable(both=5, trained_only=30, base_only=10, neither=55)
    chi2 = (abs(30 - 10) - 1) ** 2 / 40  # with continuity correction
    changes = {c.probe: c for c in probe_changes({"populism": (35, 100, 15, 100), "em_first_plot": (3, 50, 1, 50)},
                                                 {"populism": table})}
    pop, em = changes["populism"], changes["em_first_plot"]
    assert pop.mcnemar_method == "chi2" and pop.p == pytest.approx(stats.chi2.sf(chi2, 1))
    assert em.test == "fisher" and em.p == pytest.approx(stats.fisher_exact([[3, 47], [1, 49]]).pvalue)
    assert pop.family_size == em.family_size == 2
    assert pop.p_holm == pytest.approx(min(1.0, 2 * pop.p)) and em.p_holm == pytest.approx(max(pop.p_holm, em.p))


# ----------------------------------------------------------------------------- test-retest clustered by match
def simulate_retest(rng, n_matches: int, voters: int, mean: float = 0.85, concentration: float = 3.0):
    """Each match has its own reproducibility (close calls flip more): pairs of one match are correlated."""
    p = rng.beta(mean * concentration, (1 - mean) * concentration, size=n_matches)
    return rng.binomial(voters, p), np.full(n_matches, voters)


def test_clustered_retest_interval_covers_near_nominal_where_the_independent_one_did_not():
    """About 200 (match, voter) pairs from 10 matches: the Wilson interval over pairs covered 0.75 or
    less; the interval clustered by match covers near 0.95."""
    rng = np.random.default_rng(19)
    reps, truth = 2000, 0.85
    clustered = independent = 0
    for _ in range(reps):
        agree, n = simulate_retest(rng, 10, 20)
        _, (lo, hi), _ = clustered_proportion(agree, n)
        clustered += lo <= truth <= hi
        w = stats.binomtest(int(agree.sum()), int(n.sum())).proportion_ci(method="wilson")
        independent += w.low <= truth <= w.high
    assert independent / reps < 0.8
    assert 0.92 <= clustered / reps <= 0.98, clustered / reps


def test_clustered_proportion_known_values_and_test_retest_uses_it():
    # every match at the same share: no excess variance, deff 1 → Wilson at the full n with t(m-1)
    share, (lo, hi), deff = clustered_proportion([8, 8, 8, 8], [10, 10, 10, 10])
    z = stats.t.ppf(0.975, 3)
    n = 40
    centre = (0.8 + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(0.8 * 0.2 / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (share, deff) == (0.8, 1.0) and (lo, hi) == pytest.approx((centre - half, centre + half))
    # all agree: no variance to estimate; each match counts once
    share, (lo, hi), deff = clustered_proportion([20, 20, 20], [20, 20, 20])
    assert share == 1.0 and hi == 1.0 and lo < 0.5 and deff == 20
    assert clustered_proportion([5], [10]) == (0.5, [None, None], None)
    # test-retest: one match all agree, one all disagree: clustered, the interval is wide
    first = [Vote(m, m, f"v{i}", [0, 1], i, "ok", choice=0) for m in ("m0", "m1") for i in range(10)]
    again = [Vote(v.match_id, v.match_id, v.voter, [1, 0], 99, "ok", choice=0 if v.match_id == "m0" else 1) for v in first]
    tr = test_retest(first, again)
    assert (tr.agree, tr.n, tr.n_clusters, tr.agreement) == (10, 20, 2, 0.5)
    assert tr.ci95[0] < 0.05 and tr.ci95[1] > 0.95 and tr.design_effect == pytest.approx(20.0)
    assert "clustering by match" in tr.to_dict()["interval"]


# ----------------------------------------------------------------------------- anchors dropped per method
def cand(anchor: str, message: str | None) -> Candidate:
    return Candidate(anchor, 0, [], message or "", None, message, "ok" if message else "failed", 0)


def test_anchors_dropped_are_counted_per_method_and_said():
    base = [cand("a0", "x"), cand("a1", "x"), cand("a2", None), cand("a3", "x"), cand("a4", None)]
    rft = [cand("a0", "y"), cand("a1", None), cand("a2", "y"), cand("a3", None), cand("a4", None), cand("a5", "y")]
    matches, dropped = matches_for(base, rft, "base_vs_rft", ("base", "rft"))
    assert [m.anchor_id for m in matches] == ["a0"]
    # a1, a3: rft wrote nothing; a2 and a5 (no base output at all): base; a4: neither
    assert dropped == Dropped("base", "rft", only_a_missing=2, only_b_missing=2, both_missing=1)
    assert dropped.per_method() == {"base": 3, "rft": 3} and dropped.total == 5
    votes = [Vote("base_vs_rft:a0", "a0", f"v{i}", [0, 1], i, "ok", choice=1) for i in range(3)]
    s = summarize(votes, dropped)
    assert s["dropped"]["missing_output"] == {"base": 3, "rft": 3} and s["anchors_missing_output"] == 5
    assert "5 anchors dropped: no output from base on 3 and rft on 3 (1 of them from both)" in s["in_words"]
    assert "uneven" not in s["in_words"]
    uneven = summarize(votes, Dropped("base", "rft", only_b_missing=4))
    assert "no output from rft on 4" in uneven["in_words"] and "uneven between the methods" in uneven["in_words"]
    clean = summarize(votes, Dropped("base", "rft"))
    assert "dropped" not in clean["in_words"] and clean["dropped"]["total"] == 0


# ----------------------------------------------------------------------------- the hand-written rest, cross-checked
def test_hand_written_measures_agree_with_statsmodels_and_scipy():
    from statsmodels.stats.inter_rater import cohens_kappa
    from statsmodels.stats.proportion import proportion_confint

    from moloch_exp.evaluation.reliability import cohen_kappa
    from moloch_exp.evaluation.stats import t_interval, wilson

    rng = np.random.default_rng(5)
    a = rng.integers(0, 3, size=300)
    b = np.where(rng.random(300) < 0.6, a, rng.integers(0, 3, size=300))
    table = np.zeros((3, 3))
    for x, y in zip(a, b):
        table[x, y] += 1
    assert cohen_kappa(list(a), list(b)) == pytest.approx(cohens_kappa(table).kappa)
    for k, n in ((0, 10), (7, 10), (300, 1024), (1024, 1024)):
        assert wilson(k, n) == pytest.approx(list(proportion_confint(k, n, method="wilson")))
    x = rng.uniform(0.2, 0.9, size=1024)
    assert t_interval(x) == pytest.approx(stats.t.interval(0.95, len(x) - 1, loc=x.mean(), scale=stats.sem(x)))
