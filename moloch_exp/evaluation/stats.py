"""Statistics with honest uncertainty: tests, intervals and detectable effects for win rates and rates.

Win rates (head-to-head evaluation) use the *anchor* as the unit: each anchor contributes the share
of its valid votes preferring the second method, so voters of one anchor are never counted as
independent evidence.

* :func:`win_rate_test` — sign-flip permutation test of the per-anchor shares against 0.5 (exact
  enumeration of all 2^n sign patterns for n <= ``exact_max_anchors``, seeded Monte Carlo above),
  a t interval over the per-anchor shares (anchor-clustered: one value per anchor, df = n - 1),
  and the minimum detectable effect at power 0.8 (see :class:`WinRateTest`).
* :func:`probe_changes` — Fisher exact test per probe, Holm-corrected across the cell's probes.
* :func:`in_words` — the sentence a summary shows ("indistinguishable from parity (p=0.38, n=4 anchors)").

    from moloch_exp.evaluation.stats import win_rate_test, probe_changes, in_words
    t = win_rate_test([0.6, 0.45, 0.7, 0.55], seed=0); print(t.to_dict(), in_words(t))

Also: bootstrap CIs (:func:`mean_ci`), Wilson CIs and Fisher tests for rates.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np
from scipy import stats


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


# ----------------------------------------------------------------------------- win rate vs parity
WIN_RATE_INTERVAL = "t interval over per-anchor shares (anchor = cluster, df = n_anchors - 1), clipped to [0, 1]"
MDE_ASSUMPTION = ("two-sided one-sample t test on per-anchor shares at alpha and power 0.8, with the observed "
                  "per-anchor SD as the true SD; anchors independent, shares roughly normal")


@dataclass(frozen=True)
class WinRateTest:
    """A win rate against parity (0.5) with anchors as the unit.

    ``p`` is the two-sided sign-flip permutation p-value of mean(share - 0.5) (``method`` says exact
    or Monte Carlo); ``ci`` the anchor-clustered interval (:data:`WIN_RATE_INTERVAL`); ``mde`` the
    smallest |win rate - 0.5| this many anchors detect with power ``power`` at ``alpha``
    (:data:`MDE_ASSUMPTION`), None when the SD is 0 or n < 2. ``min_attainable_p`` is the smallest
    p-value the exact test can give with n anchors (2 / 2^n): above ``alpha`` nothing can be significant.
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

    @property
    def significant(self) -> bool:
        return self.p is not None and self.p < self.alpha

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ci"] = list(self.ci)
        d.update(significant=self.significant, interval=WIN_RATE_INTERVAL, mde_assumes=MDE_ASSUMPTION,
                 test="sign-flip permutation test of per-anchor shares - 0.5, two-sided")
        return d


def sign_flip_p(diffs: Sequence[float], exact_max: int = 16, n_permutations: int = 20000,
                seed: int = 0) -> tuple[float | None, str, int | None]:
    """Two-sided sign-flip permutation p-value of mean(diffs) against 0 → (p, method, permutations).

    Exact (all 2^n sign patterns) for n <= ``exact_max``; otherwise ``n_permutations`` seeded random
    patterns with p = (1 + hits) / (1 + n_permutations), which never understates p.
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
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_permutations, 4096):
        m = min(4096, n_permutations - start)
        signs = rng.choice((1.0, -1.0), size=(m, n))
        hits += int(np.sum(np.abs(signs @ d / n) >= observed - tol))
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


def minimum_detectable_effect(sd: float | None, n: int, alpha: float = 0.05, power: float = 0.8) -> float | None:
    """Smallest |mean difference| a two-sided one-sample t test detects with ``power`` (noncentral t).

    In the units of ``sd``; None when n < 2 or sd is 0/None (the SD of the effect is unknown).
    """
    if sd is None or not sd > 0 or n < 2:
        return None
    df = n - 1
    crit = stats.t.ppf(1 - alpha / 2, df)

    def achieved(delta: float) -> float:
        ncp = delta * math.sqrt(n) / sd
        p = float(stats.nct.sf(crit, df, ncp) + stats.nct.cdf(-crit, df, ncp))
        if math.isnan(p):  # scipy's noncentral t fails for large df; the normal limit is then exact enough
            p = float(stats.norm.sf(crit - ncp) + stats.norm.cdf(-crit - ncp))
        return p

    hi = sd
    while achieved(hi) < power:
        hi *= 2
    from scipy.optimize import brentq
    return float(brentq(lambda d: achieved(d) - power, 0.0, hi, xtol=1e-10))


def win_rate_test(shares: Sequence[float], alpha: float = 0.05, power: float = 0.8, confidence: float = 0.95,
                  exact_max_anchors: int = 16, n_permutations: int = 20000, seed: int = 0) -> WinRateTest:
    """Test per-anchor win shares (one value in [0, 1] per anchor) against parity 0.5."""
    x = np.asarray([float(s) for s in shares], dtype=float)
    n = len(x)
    if np.any((x < 0) | (x > 1)):
        raise ValueError("per-anchor shares must lie in [0, 1]")
    p, method, perms = sign_flip_p(x - 0.5, exact_max_anchors, n_permutations, seed)
    sd = float(x.std(ddof=1)) if n >= 2 else None
    return WinRateTest(mean=float(x.mean()) if n else None, ci=t_interval(x, confidence), p=p, n_anchors=n, sd=sd,
                       mde=minimum_detectable_effect(sd, n, alpha, power),
                       min_attainable_p=(2.0 / 2 ** n if n else None), method=method, n_permutations=perms,
                       alpha=alpha, power=power, confidence=confidence)


# ----------------------------------------------------------------------------- probe changes
@dataclass(frozen=True)
class ProbeChange:
    """A probe's flagged rate, trained vs baseline: Fisher exact p and its Holm-adjusted p in the family."""

    probe: str
    k: int
    n: int
    baseline_k: int
    baseline_n: int
    rate: float | None
    baseline_rate: float | None
    difference: float | None
    p: float | None
    p_holm: float | None
    family_size: int
    alpha: float = 0.05

    @property
    def significant(self) -> bool:
        return self.p_holm is not None and self.p_holm < self.alpha

    def to_dict(self) -> dict:
        return asdict(self) | {"significant": self.significant, "rate_ci95": wilson(self.k, self.n),
                               "baseline_rate_ci95": wilson(self.baseline_k, self.baseline_n),
                               "test": "Fisher exact, two-sided; Holm across the cell's probes"}


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (statsmodels ``multipletests(method="holm")``)."""
    if not pvalues:
        return []
    from statsmodels.stats.multitest import multipletests
    return [float(p) for p in multipletests(list(pvalues), method="holm")[1]]


def probe_changes(counts: Mapping[str, tuple[int, int, int, int]], alpha: float = 0.05) -> list[ProbeChange]:
    """``counts[probe] = (k, n, baseline_k, baseline_n)`` → one :class:`ProbeChange` per probe.

    Probes without data on either side (n = 0) get p = None and are left out of the Holm family.
    """
    names = list(counts)
    ps = {m: fisher_p(*counts[m]) for m in names}
    family = [m for m in names if ps[m] is not None]
    adjusted = dict(zip(family, holm([ps[m] for m in family])))
    out = []
    for m in names:
        k, n, bk, bn = counts[m]
        rate, brate = (k / n if n else None), (bk / bn if bn else None)
        out.append(ProbeChange(m, k, n, bk, bn, rate, brate, None if rate is None or brate is None else rate - brate,
                               ps[m], adjusted.get(m), len(family), alpha))
    return out


# ----------------------------------------------------------------------------- words
def _fmt_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"  # two significant digits: 0.046 never reads as 0.05


def in_words(result: WinRateTest | ProbeChange) -> str:
    """One sentence for the summary; says "indistinguishable from parity/zero" when not significant."""
    if isinstance(result, WinRateTest):
        if result.p is None or result.mean is None:
            return "no anchors with valid votes: no win rate"
        n = f"n={result.n_anchors} anchors"
        ci = (f" [{result.ci[0]:.2f}, {result.ci[1]:.2f}]" if result.ci[0] is not None
              else " (no interval: one anchor)" if result.n_anchors < 2 else " (no interval: every anchor at this share)")
        head = f"win rate {result.mean:.2f}{ci}"
        if result.significant:
            side = "above" if result.mean > 0.5 else "below"
            return f"{head} is {side} parity ({_fmt_p(result.p)}, {n})"
        extra = ""
        if result.min_attainable_p is not None and result.min_attainable_p >= result.alpha:
            extra = f"; {result.n_anchors} anchors cannot reach p<{result.alpha:g}"
        elif result.mde is not None:
            extra = f"; detectable: |win rate - 0.5| >= {result.mde:.2f}"
        return f"{head} is indistinguishable from parity ({_fmt_p(result.p)}, {n}{extra})"
    n = f"n={result.n} vs {result.baseline_n}"
    if result.p_holm is None or result.difference is None:
        return f"{result.probe}: no test (no judged outputs on one side, {n})"
    head = f"{result.probe}: {result.rate:.2f} vs {result.baseline_rate:.2f} (difference {result.difference:+.2f})"
    p = f"Holm {_fmt_p(result.p_holm)}, family of {result.family_size}, {n}"
    if result.significant:
        return f"{head} differs from zero ({p})"
    return f"{head} is indistinguishable from zero ({p})"
