"""Statistics with honest uncertainty: bootstrap CIs for win rates, Wilson CIs and Fisher tests for rates."""
from __future__ import annotations

import math

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
