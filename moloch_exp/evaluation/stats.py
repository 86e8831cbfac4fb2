"""Statistics with honest uncertainty: tests, intervals and detectable effects for win rates and rates.

Win rates (head-to-head evaluation) use the *anchor* as the unit: each anchor contributes the share
of its valid votes preferring the second method, so voters of one anchor are never counted as
independent evidence.

* :func:`win_rate_test` — sign-flip permutation test of the per-anchor shares against 0.5 (exact
  enumeration of all 2^n sign patterns for n <= ``exact_max_anchors``, seeded Monte Carlo above, in
  chunks of bounded memory), a t interval over the per-anchor shares (anchor-clustered: one value
  per anchor, df = n - 1), and the minimum detectable effect at power 0.8 (see :class:`WinRateTest`).
* :func:`clustered_proportion` — a share of items that come in clusters (e.g. test-retest pairs of
  one match): Wilson interval at the design-effect sample size with a t quantile.
* :func:`format_p` — "p=0.0496", never "p=0.05" for a significant p.
* :func:`in_words` — the sentence a summary shows ("indistinguishable from parity (p=0.38, n=4 anchors)").
* Probe changes (Fisher, McNemar, Holm): :mod:`moloch_exp.evaluation.probe_family`.

    from moloch_exp.evaluation.stats import win_rate_test, in_words
    t = win_rate_test([0.6, 0.45, 0.7, 0.55], seed=0); print(t.to_dict(), in_words(t))

Also: bootstrap CIs (:func:`mean_ci`), Wilson CIs and Fisher tests for rates. Every function works
at any n (the paper's 1,024 anchors x 20 voters and beyond: tests/test_stats_at_scale.py).
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from scipy import stats
from scipy.optimize import brentq


def mean_ci(values: list[float], confidence: float = 0.95, n_resamples: int = 5000, seed: int = 0) -> tuple[float | None, list[float | None]]:
    """Mean and percentile-bootstrap CI over anchors (None when there is nothing to average)."""
    if not values:
        return None, [None, None]
    arr = np.asarray(values, dtype=float)
    mean = float(arr.mean())
    if len(arr) < 2 or np.all(arr == arr[0]):
        return mean, [mean, mean] if len(arr) >= 2 else [None, None]
    res = stats.bootstrap((arr,), np.mean, confidence_level=confidence, n_resamples=n_resamples,
                          method="percentile", random_state=np.random.default_rng(seed))
    return mean, [float(res.confidence_interval.low), float(res.confidence_interval.high)]


def wilson(k: int, n: int, confidence: float = 0.95) -> list[float | None]:
    if n == 0:
        return [None, None]
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    return [float(ci.low), float(ci.high)]


def fisher_p(k1: int, n1: int, k2: int, n2: int) -> float | None:
    if n1 == 0 or n2 == 0:
        return None
    return float(stats.fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue)


def relative_increase(base: float | None, trained: float | None) -> float | None:
    """(trained - base) / base; None when undefined (no data, or a base rate of zero)."""
    if base is None or trained is None or base == 0:
        return None
    return (trained - base) / base


def pearson(xs: list[float], ys: list[float]) -> dict:
    pairs = [(x, y) for x, y in zip(xs, ys) if x is not None and y is not None and not math.isnan(x) and not math.isnan(y)]
    if len(pairs) < 3 or len({p[0] for p in pairs}) < 2 or len({p[1] for p in pairs}) < 2:
        return {"r": None, "p": None, "n": len(pairs)}
    r, p = stats.pearsonr([p[0] for p in pairs], [p[1] for p in pairs])
    return {"r": float(r), "p": float(p), "n": len(pairs)}


def format_p(p: float | None, alpha: float = 0.05, prefix: str = "p=") -> str:
    """Two significant digits, more where rounding would cross ``alpha`` (0.0496 -> "p=0.0496", never
    "p=0.05" beside a "significant"); "p<0.001" below 0.001 (and below alpha); "—" for None."""
    if p is None:
        return "—"
    floor = min(0.001, alpha)
    if p < floor:
        return f"{prefix.rstrip('=')}<{floor:g}"
    for digits in range(2, 12):
        s = f"{p:.{digits}g}"
        if (float(s) < alpha) == (p < alpha):
            return f"{prefix}{s}"
    return f"{prefix}{p!r}"


def clustered_proportion(successes: Sequence[int], totals: Sequence[int],
                         confidence: float = 0.95) -> tuple[float | None, list[float | None], float | None]:
    """A share of items that come in clusters (``successes[i]`` of ``totals[i]`` in cluster i) →
    (share, interval, design effect).

    The interval is Wilson's at Kish's effective sample size n / deff, where deff is the ratio of the
    cluster-robust variance of the share (between-cluster residuals, factor m/(m-1)) to the binomial
    one, at least 1, with the t quantile at m - 1 degrees of freedom in place of z (the adjustment Korn
    & Graubard 1998 make to survey proportions' intervals). With no variation to estimate it from
    (share 0 or 1), each cluster counts once. Undefined (None) with fewer than 2 clusters. Simulated
    coverage at 10 matches x 20 voters: about 0.95 (tests/test_stats_defects.py), where Wilson over
    the pairs as if independent covers 0.75 or less.
    """
    a = np.asarray(successes, dtype=float)
    n = np.asarray(totals, dtype=float)
    keep = n > 0
    a, n = a[keep], n[keep]
    m, total = len(n), float(n.sum())
    if m == 0:
        return None, [None, None], None
    share = float(a.sum() / total)
    if m < 2:
        return share, [None, None], None
    binomial_var = share * (1 - share) / total
    if binomial_var == 0:
        deff, n_eff = float(total / m), float(m)
    else:
        robust_var = m / (m - 1) * float(((a - share * n) ** 2).sum()) / total ** 2
        deff = max(1.0, robust_var / binomial_var)
        n_eff = total / deff
    z = float(stats.t.ppf(0.5 + confidence / 2, m - 1))
    centre = (share + z * z / (2 * n_eff)) / (1 + z * z / n_eff)
    half = z * math.sqrt(share * (1 - share) / n_eff + z * z / (4 * n_eff * n_eff)) / (1 + z * z / n_eff)
    return share, [max(0.0, centre - half), min(1.0, centre + half)], deff


# ----------------------------------------------------------------------------- win rate vs parity
WIN_RATE_INTERVAL = "t interval over per-anchor shares (anchor = cluster, df = n_anchors - 1), clipped to [0, 1]"
MDE_ASSUMPTION = ("two-sided one-sample t test on per-anchor shares at alpha and power 0.8, with the observed "
                  "per-anchor SD as the true SD; anchors independent, shares roughly normal")
#: Monte Carlo sign patterns are drawn in chunks of at most this many bytes of 8 signs (8 MiB of sums).
SIGN_CHUNK_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class WinRateTest:
    """A win rate against parity (0.5) with anchors as the unit.

    ``p`` is the two-sided sign-flip permutation p-value of mean(share - 0.5) (``method`` says exact
    or Monte Carlo); ``ci`` the anchor-clustered interval (:data:`WIN_RATE_INTERVAL`); ``mde`` the
    smallest |win rate - 0.5| this many anchors detect with power ``power`` at ``alpha``
    (:data:`MDE_ASSUMPTION`), None when the SD is 0 or n < 2. ``min_attainable_p`` is the smallest
    p-value the test can give: 2 / 2^m over the m anchors off 0.5 (an anchor at exactly 0.5 carries no
    sign), and no less than 1 / (1 + permutations) by Monte Carlo; at or above ``alpha`` nothing is
    detectable, whatever the MDE says.
    """

    mean: float | None
    ci: tuple[float | None, float | None]
    p: float | None
    n_anchors: int
    sd: float | None
    mde: float | None
    min_attainable_p: float | None
    method: str  # exact | monte_carlo | none
    n_permutations: int | None
    alpha: float
    power: float
    confidence: float
    n_at_parity: int = 0  # anchors at exactly 0.5 (no sign to flip)

    @property
    def significant(self) -> bool:
        return self.p is not None and self.p < self.alpha

    @property
    def detectable(self) -> bool:
        """Some data of this size could be significant at ``alpha``."""
        return self.min_attainable_p is not None and self.min_attainable_p < self.alpha

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = list(self.ci)
        d.update(significant=self.significant, detectable=self.detectable, interval=WIN_RATE_INTERVAL,
                 mde_assumes=MDE_ASSUMPTION, test="sign-flip permutation test of per-anchor shares - 0.5, two-sided")
        return d


def sign_flip_p(diffs: Sequence[float], exact_max: int = 16, n_permutations: int = 20000,
                seed: int = 0) -> tuple[float | None, str, int | None]:
    """Two-sided sign-flip permutation p-value of mean(diffs) against 0 → (p, method, permutations).

    Exact (all 2^n sign patterns) for n <= ``exact_max``; otherwise ``n_permutations`` seeded random
    patterns with p = (1 + hits) / (1 + n_permutations), which never understates p. Patterns are
    drawn in chunks of at most :data:`SIGN_CHUNK_ELEMENTS` bytes of signs, so memory does not grow
    with n (about 10 MiB at any n; the old single draw of 4096 x n signs took 0.5 GB at n = 4096).
    """
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    if n == 0:
        return None, "none", None
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, observed)
    if n <= exact_max:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        means = np.abs(signs @ d / n)
        return float(np.mean(means >= observed - tol)), "exact", len(signs)
    # Random bytes, 8 signs each: sum(s_i d_i) = 2 * sum(d_i where the sign is +) - sum(d), the partial
    # sums per byte looked up in a 256-row table (8x fewer draws than one per sign, no n-wide matmul).
    rng = np.random.default_rng(seed)
    n_bytes = (n + 7) // 8
    padded = np.zeros(n_bytes * 8)
    padded[:n] = d
    bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).astype(float)  # byte value -> its 8 bits
    partial = bits @ padded.reshape(n_bytes, 8).T  # [byte value, byte position] -> sum of d where the bit is set
    columns = np.arange(n_bytes)
    rows = max(1, SIGN_CHUNK_ELEMENTS // n_bytes)
    total = float(d.sum())
    hits = 0
    for start in range(0, n_permutations, rows):
        drawn = rng.integers(0, 256, size=(min(rows, n_permutations - start), n_bytes), dtype=np.uint8)
        plus = partial[drawn, columns].sum(axis=1)
        hits += int(np.sum(np.abs(2.0 * plus - total) / n >= observed - tol))
    return float((1 + hits) / (1 + n_permutations)), "monte_carlo", n_permutations


def t_interval(values: Sequence[float], confidence: float = 0.95,
               bounds: tuple[float, float] | None = (0.0, 1.0)) -> tuple[float | None, float | None]:
    """Student-t interval for the mean of ``values``, clipped to ``bounds``; (None, None) when n < 2 or
    all values are equal (a zero-width interval would claim certainty that a few anchors cannot give)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2 or np.all(x == x[0]):
        return None, None
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    lo, hi = float(x.mean()) - half, float(x.mean()) + half
    if bounds is not None:
        lo, hi = max(bounds[0], lo), min(bounds[1], hi)
    return lo, hi


def t_test_power(effect: float, n: int, alpha: float = 0.05) -> float:
    """Power of the two-sided one-sample t test at ``effect`` (in SD units) with n observations.

    Both tails as upper tails of the noncentral t (P(T < -c | d) = P(T > c | -d)): scipy's lower
    tail is NaN for large noncentralities (e.g. df = 1), its upper tail is not. Equals statsmodels'
    ``TTestPower().power`` wherever that is defined.
    """
    df = n - 1
    crit = float(stats.t.ppf(1 - alpha / 2, df))
    ncp = effect * math.sqrt(n)
    return float(stats.nct.sf(crit, df, ncp) + stats.nct.sf(crit, df, -ncp))


def minimum_detectable_effect(sd: float | None, n: int, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest |mean difference| a two-sided one-sample t test detects with ``power`` (noncentral t).

    In the units of ``sd``; None when n < 2 or sd is 0/None (the SD of the effect is unknown).
    """
    if sd is None or not sd > 0 or n < 2:
        return None
    hi = 1.0
    while t_test_power(hi, n, alpha) < power:
        hi *= 2
    return float(brentq(lambda d: t_test_power(d, n, alpha) - power, 0.0, hi, xtol=1e-12)) * sd


def min_attainable_p(n_signed: int, method: str, n_permutations: int | None) -> float | None:
    """The smallest p the sign-flip test can give with ``n_signed`` nonzero differences."""
    if method == "none":
        return None
    exact = math.ldexp(1.0, 1 - n_signed) if n_signed else 1.0  # 2 / 2^m without an int-to-float overflow
    if method == "monte_carlo" and n_permutations:
        return max(exact, 1.0 / (1 + n_permutations))
    return exact


def win_rate_test(shares: Sequence[float], alpha: float = 0.05, power: float = 0.8, confidence: float = 0.95,
                  exact_max_anchors: int = 16, n_permutations: int = 20000, seed: int = 0) -> WinRateTest:
    """Test per-anchor win shares (one value in [0, 1] per anchor) against parity 0.5."""
    x = np.asarray([float(s) for s in shares], dtype=float)
    n = len(x)
    if np.any((x < 0) | (x > 1)):
        raise ValueError("per-anchor shares must lie in [0, 1]")
    diffs = x - 0.5
    at_parity = int(np.sum(np.abs(diffs) <= 1e-12))
    p, method, perms = sign_flip_p(diffs, exact_max_anchors, n_permutations, seed)
    sd = float(x.std(ddof=1)) if n >= 2 else None
    return WinRateTest(mean=float(x.mean()) if n else None, ci=t_interval(x, confidence), p=p, n_anchors=n, sd=sd,
                       mde=minimum_detectable_effect(sd, n, alpha, power),
                       min_attainable_p=min_attainable_p(n - at_parity, method, perms), method=method,
                       n_permutations=perms, alpha=alpha, power=power, confidence=confidence, n_at_parity=at_parity)


def in_words(result: WinRateTest) -> str:
    """One sentence for the summary; says "indistinguishable from parity" when not significant."""
    if result.p is None or result.mean is None:
        return "no anchors with valid votes: no win rate"
    n = f"n={result.n_anchors} anchors"
    ci = (f" [{result.ci[0]:.2f}, {result.ci[1]:.2f}]" if result.ci[0] is not None
          else " (no interval: one anchor)" if result.n_anchors < 2 else " (no interval: every anchor at this share)")
    head = f"win rate {result.mean:.2f}{ci}"
    p = format_p(result.p, result.alpha)
    if result.significant:
        side = "above" if result.mean > 0.5 else "below"
        return f"{head} is {side} parity ({p}, {n})"
    extra = ""
    if not result.detectable:
        signed = result.n_anchors - result.n_at_parity
        extra = (f"; {result.n_anchors} anchors cannot reach p<{result.alpha:g}" if not result.n_at_parity else
                 f"; {result.n_at_parity} of {result.n_anchors} anchors sit at exactly 0.5 and carry no sign: "
                 f"the other {signed} cannot reach p<{result.alpha:g}")
    elif result.mde is not None:
        extra = (f"; detectable: |win rate - 0.5| >= {result.mde:.2f}" if result.mde <= 0.5
                 else "; no win rate in [0, 1] is detectable with power 0.8 at this spread")
    return f"{head} is indistinguishable from parity ({p}, {n}{extra})"
