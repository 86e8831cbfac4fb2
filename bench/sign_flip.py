"""The win-rate test's Monte Carlo sign flips (``moloch_exp.evaluation.stats.sign_flip_p``) against the
draw it replaced (issue 19), side by side in one run: time and peak memory (tracemalloc) at 1,024 and
4,096 anchors (and more with --anchors), 20,000 sign patterns each.

Run (about a minute on one core)::

    python bench/sign_flip.py
    python bench/sign_flip.py --anchors 1024 4096 16384 --permutations 20000

The replaced draw took 4096 x n signs at once with ``rng.choice`` (about 0.5 GB at n = 4,096); the
current one draws random bytes (8 signs each) in chunks of bounded size and looks up partial sums in
a 256-row table. Both are seeded Monte Carlo estimates of the same p; the script prints both p's
(they differ only by Monte Carlo error) and the ratios. Target: the current peak is at least 10x
smaller at 4,096 anchors and does not grow with n; it is not slower.
"""
from __future__ import annotations

import argparse
import time
import tracemalloc

import numpy as np

from moloch_exp.evaluation.stats import sign_flip_p


def replaced_sign_flip_p(diffs: np.ndarray, n_permutations: int = 20000, seed: int = 0) -> float:
    """The Monte Carlo branch before issue 19: 4096 x n signs drawn at a time."""
    d = np.asarray(diffs, dtype=float)
    n = len(d)
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, observed)
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, n_permutations, 4096):
        m = min(4096, n_permutations - start)
        signs = rng.choice((1.0, -1.0), size=(m, n))
        hits += int(np.sum(np.abs(signs @ d / n) >= observed - tol))
    return float((1 + hits) / (1 + n_permutations))


def measure(fn, *args) -> tuple[float, float, float]:
    """(p, seconds, peak MiB)."""
    tracemalloc.start()
    started = time.perf_counter()
    p = fn(*args)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    return p, seconds, peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--anchors", type=int, nargs="+", default=[1024, 4096])
    ap.add_argument("--permutations", type=int, default=20000)
    args = ap.parse_args()
    print(f"{'anchors':>8} | {'p (replaced)':>12} {'s':>6} {'MiB':>7} | {'p (current)':>12} {'s':>6} {'MiB':>6} | "
          f"{'time ratio':>10} {'memory ratio':>12}")
    met = True
    for n in args.anchors:
        # per-anchor shares of 20 voters around a small true effect (some exactly at 0.5)
        shares = np.random.default_rng(n).binomial(20, 0.503, size=n) / 20
        diffs = shares - 0.5
        p_old, t_old, m_old = measure(replaced_sign_flip_p, diffs, args.permutations)
        (p_new, method, _), t_new, m_new = measure(lambda d, k: sign_flip_p(d, 16, k, 0), diffs, args.permutations)
        assert method == "monte_carlo"
        print(f"{n:>8} | {p_old:>12.3g} {t_old:>6.2f} {m_old:>7.1f} | {p_new:>12.3g} {t_new:>6.2f} {m_new:>6.1f} | "
              f"{t_old / t_new:>9.1f}x {m_old / m_new:>11.1f}x")
        met &= t_new <= t_old and (n < 4096 or m_old / m_new >= 10) and m_new < 32
    print(f"target (not slower; peak >= 10x smaller from 4,096 anchors and under 32 MiB at any n): "
          f"{'met' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
