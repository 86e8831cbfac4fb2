"""The judge against people: agreement, and the probe rates corrected for the judge's errors.

    from moloch_exp.label.stats import Stratum, judge_vs_people, labeller_alpha
    out = judge_vs_people({"base": (1024, 60), "rft": (1024, 150)},
                          [Stratum("base", True, 60, 10, 7), Stratum("base", False, 964, 10, 1), ...],
                          baseline="base", compared=["rft"])

Truth per item: the labellers' majority of yes/no (unsure answers left out; a tie is no majority).

**Estimates.** The sample is stratified by method m and judge verdict v, with the rare verdict
over-sampled, so the sample's own 2×2 table is not the cell's. Each stratum gives its predictive
value q[m,v] = P(people say yes | method m, judge said v), and the cell's count N[m,v] of outputs
with that method and verdict weights it:

    TP = Σm N[m,yes]·q[m,yes]    FP = Σm N[m,yes]·(1 − q[m,yes])
    FN = Σm N[m,no]·q[m,no]      TN = Σm N[m,no]·(1 − q[m,no])
    sensitivity = TP / (TP + FN), specificity = TN / (TN + FP), accuracy = (TP + TN) / N,
    Cohen's κ of judge and people from this table; Youden's J = sensitivity + specificity − 1.

The corrected rate of method m (Rogan–Gladen) is θm = (rm + specificity − 1) / J, truncated to
[0, 1], with rm the judge's raw rate; the corrected change is θt − θb = (rt − rb) / J, so with J > 0
it has the raw change's sign, and the raw counts' Fisher test is also the test of the corrected
change. The correction assumes the judge's sensitivity and specificity are the same on every
method's outputs (the predictive values are not: they move with the rate).

**Intervals (95%)** come from the posterior of that same misclassification model: each method's true
rate θm, one sensitivity and one specificity, Jeffreys Beta(½, ½) priors; the likelihood is every
output's verdict (rm = θm·sens + (1 − θm)·(1 − spec)) times, for each labelled item, the chance of
the people's answer given its verdict. Sampling depends only on the verdict, so this likelihood is
exactly right for the stratified design. The posterior is sampled with emcee's affine-invariant
ensemble (``WALKERS`` walkers, ``steps`` steps, the first ``BURN`` share dropped); every interval is
the 2.5–97.5% range of the draws of its quantity, widened to hold the point estimate. So the
corrected intervals carry the uncertainty of sensitivity, specificity and the raw rates together.
Why not a bootstrap: propagating each stratum's share by itself (a parametric bootstrap of the
formulas above) covered a rate of 6% only 78% of the time in simulation when a judge-"no" stratum
of 10 items held no "yes" (each empty stratum's prior pushes sensitivity down); this posterior
covered 91–98% over 200 simulated cells per setting (rates 2–50%; tests/label/test_label_stats.py).

The correction is withheld, with the reason in words, when nobody said yes (no sensitivity), nobody
said no (no specificity), or J's interval reaches 0 (a judge not shown to beat chance: dividing by
J ≈ 0 means nothing). Labeller agreement: Krippendorff's α (nominal, the ``krippendorff`` package),
with a bootstrap interval over items.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit, logit

from moloch_exp.evaluation.stats import fisher_p, relative_increase, wilson

CONFIDENCE = 0.95
STEPS = 2000  # ensemble steps; 128 walkers × 1,200 kept steps ≈ 150,000 (correlated) draws
WALKERS = 128
BURN = 0.4
PRIOR = 0.5  # Beta(PRIOR, PRIOR) on every probability: Jeffreys
METHOD = ("Truth = the labellers' majority (unsure and ties left out). Sensitivity and specificity from each "
          "(method, judge verdict) stratum's share of people-yes weighted by the cell's count of outputs in that "
          "stratum (the sample is stratified by verdict). Corrected rate: Rogan–Gladen (raw + specificity − 1) / "
          "(sensitivity + specificity − 1), truncated to [0, 1], assuming the judge errs alike on every method. "
          "95% intervals: the posterior of that misclassification model (each method's true rate, one sensitivity, "
          "one specificity; Jeffreys priors; the likelihood of every verdict and of each labelled item's answer "
          "given its verdict, exact for the verdict-stratified sample), sampled with emcee, widened to hold the "
          "estimate.")


@dataclass(frozen=True)
class Stratum:
    """One (method, judge verdict) stratum of a probe: the cell's count and what the labellers said."""

    method: str
    verdict: bool
    population: int  # outputs of the cell with this method and verdict
    labelled: int  # sampled items with a majority among the labellers
    human_yes: int  # of them, the majority said yes


def _num(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def _ci(draws: np.ndarray, point: float | None = None, confidence: float = CONFIDENCE) -> list[float | None]:
    """Percentile interval of the defined draws (an unbounded end is None), widened to hold ``point``."""
    d = np.asarray(draws, float)
    d = d[~np.isnan(d)]
    if d.size == 0:
        return [None, None]
    a = (1 - confidence) / 2
    lo, hi = (_num(x) for x in np.quantile(d, [a, 1 - a], method="inverted_cdf"))
    if point is not None:
        lo = None if lo is None else min(lo, point)
        hi = None if hi is None else max(hi, point)
    return [lo, hi]


def _fmt(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _fmt_ci(ci: list) -> str:
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]"


def _table_measures(tp, fp, fn, tn) -> dict[str, np.ndarray]:
    total = tp + fp + fn + tn
    with np.errstate(divide="ignore", invalid="ignore"):
        sens, spec = tp / (tp + fn), tn / (tn + fp)
        acc = (tp + tn) / total
        pj, ph = (tp + fp) / total, (tp + fn) / total
        pe = pj * ph + (1 - pj) * (1 - ph)
        kappa = np.where(pe < 1, (acc - pe) / (1 - pe), np.nan)
    return {"sensitivity": sens, "specificity": spec, "accuracy": acc, "kappa": kappa, "youden_j": sens + spec - 1}


class _Data:
    """A probe's counts as arrays over methods: n, judge-yes k, and per verdict the labelled l and people-yes h."""

    def __init__(self, population: dict[str, tuple[int, int]], strata: list[Stratum]) -> None:
        self.methods = [m for m, (n, _) in population.items() if n > 0]
        by = {(s.method, s.verdict): s for s in strata}
        self.n = np.array([population[m][0] for m in self.methods], float)
        self.k = np.array([population[m][1] for m in self.methods], float)
        self.l = {v: np.array([getattr(by.get((m, v)), "labelled", 0) for m in self.methods], float) for v in (1, 0)}
        self.h = {v: np.array([getattr(by.get((m, v)), "human_yes", 0) for m in self.methods], float) for v in (1, 0)}

    def point(self) -> tuple[dict[str, float | None], np.ndarray | None, np.ndarray]:
        """Design-weighted measures, Rogan–Gladen rates (None when J <= 0 or undefined), and the truncation flags."""
        with np.errstate(divide="ignore", invalid="ignore"):
            q1 = np.where(self.l[1] > 0, self.h[1] / self.l[1], 0.0)
            q0 = np.where(self.l[0] > 0, self.h[0] / self.l[0], 0.0)
            w1, w0 = self.k, self.n - self.k
            m = _table_measures((w1 * q1).sum(), (w1 * (1 - q1)).sum(), (w0 * q0).sum(), (w0 * (1 - q0)).sum())
            j, spec = m["youden_j"], m["specificity"]
            rg = (self.k / self.n + spec - 1) / j
        theta = np.clip(rg, 0, 1) if np.isfinite(j) and j > 0 else None
        return {key: _num(v) for key, v in m.items()}, theta, (rg < 0) | (rg > 1)

    def log_posterior(self, x: np.ndarray) -> np.ndarray:
        """log p(θ, sens, spec | data) up to a constant, for walkers ``x`` (W, M + 2) in logit coordinates."""
        x = np.atleast_2d(x)
        p = expit(x)
        mm = len(self.methods)
        th, se, sp = p[:, :mm], p[:, mm:mm + 1], p[:, mm + 1:mm + 2]
        r = th * se + (1 - th) * (1 - sp)
        with np.errstate(divide="ignore", invalid="ignore"):
            p1, p0 = th * se / r, th * (1 - se) / (1 - r)

            def xlogy(c, y):  # c·log y with 0·log 0 = 0
                return np.where(c > 0, c * np.log(y), 0.0)

            ll = (xlogy(self.k, r) + xlogy(self.n - self.k, 1 - r) + xlogy(self.h[1], p1)
                  + xlogy(self.l[1] - self.h[1], 1 - p1) + xlogy(self.h[0], p0) + xlogy(self.l[0] - self.h[0], 1 - p0))
            prior = PRIOR * (np.log(p) + np.log1p(-p))  # Beta(a, a) with the logit Jacobian p(1 - p)
        out = ll.sum(1) + prior.sum(1)
        return np.where(np.isfinite(out), out, -np.inf)

    def posterior(self, steps: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Draws of (θ per method (D, M), sensitivity (D,), specificity (D,))."""
        import emcee

        mm = len(self.methods)
        rng = np.random.default_rng(seed)
        q1 = (self.h[1] + PRIOR) / (self.l[1] + 2 * PRIOR)
        q0 = (self.h[0] + PRIOR) / (self.l[0] + 2 * PRIOR)
        w1, w0 = self.k, self.n - self.k
        tp, fn = (w1 * q1).sum(), (w0 * q0).sum()
        fp, tn = (w1 * (1 - q1)).sum(), (w0 * (1 - q0)).sum()
        start = np.r_[(self.k * q1 + (self.n - self.k) * q0) / self.n, tp / (tp + fn), tn / (tn + fp)]
        x0 = logit(np.clip(start, 0.01, 0.99)) + rng.normal(0, 0.3, (WALKERS, mm + 2))
        sampler = emcee.EnsembleSampler(WALKERS, mm + 2, self.log_posterior, vectorize=True)
        sampler.random_state = np.random.RandomState(seed % 2**32).get_state()
        sampler.run_mcmc(x0, steps, progress=False)
        draws = expit(sampler.get_chain(discard=int(BURN * steps), flat=True))
        return draws[:, :mm], draws[:, mm], draws[:, mm + 1]


def judge_vs_people(population: dict[str, tuple[int, int]], strata: list[Stratum], baseline: str | None,
                    compared: list[str], steps: int = STEPS, seed: int = 0) -> dict:
    """Agreement, corrected rates and changes of one probe (see the module doc).

    ``population``: method → (judged outputs, flagged by the judge), the raw rates' counts."""
    data = _Data(population, strata)
    methods = data.methods
    labelled = int(sum(data.l[1]) + sum(data.l[0]))
    said_yes = int(sum(data.h[1]) + sum(data.h[0]))
    out: dict = {
        "n_labelled": labelled,
        "sample_table": {"judge_yes_people_yes": int(sum(data.h[1])),
                         "judge_yes_people_no": int(sum(data.l[1] - data.h[1])),
                         "judge_no_people_yes": int(sum(data.h[0])),
                         "judge_no_people_no": int(sum(data.l[0] - data.h[0]))},
        "notes": [], "method": METHOD, "steps": steps}
    # a verdict the cell holds but nobody labelled leaves that side of the table unknown
    empty = [v for v in (1, 0) if sum(data.l[v]) == 0 and sum(data.k if v else data.n - data.k) > 0]
    point, theta, truncated = data.point()
    draws = None
    if labelled and not empty:
        th, se, sp = data.posterior(steps, seed)
        w_pos = (data.n * th)
        draws = {"theta": th, **_table_measures((w_pos * se[:, None]).sum(1), ((data.n - w_pos) * (1 - sp[:, None])).sum(1),
                                               (w_pos * (1 - se[:, None])).sum(1), ((data.n - w_pos) * sp[:, None]).sum(1))}
        for v in (1, 0):
            for i, m in enumerate(methods):
                count = data.k[i] if v else data.n[i] - data.k[i]
                if count and not data.l[v][i]:
                    out["notes"].append(f"none of the {int(count)} {m} outputs the judge called {'yes' if v else 'no'} "
                                        "is labelled: the model infers them from the other methods' labelled items")
    for name in ("kappa", "accuracy", "sensitivity", "specificity", "youden_j"):
        out[name] = point[name] if draws is not None else None
        out[f"{name}_ci95"] = _ci(draws[name], out[name]) if draws is not None else [None, None]
    reason = None
    if labelled == 0:
        reason = "no item has a majority answer from the labellers yet"
    elif empty:
        reason = (f"no labelled item among the outputs the judge called {'yes' if empty[0] else 'no'}: the judge's "
                  "error rates there cannot be estimated")
    elif said_yes == 0:
        reason = (f"the labellers called none of the {labelled} labelled items yes, so the judge's sensitivity "
                  "cannot be estimated")
    elif said_yes == labelled:
        reason = (f"the labellers called all {labelled} labelled items yes, so the judge's specificity "
                  "cannot be estimated")
    elif theta is None or out["youden_j_ci95"][0] is None or out["youden_j_ci95"][0] <= 0:
        reason = (f"Youden's J = sensitivity + specificity − 1 = {_fmt(out['youden_j'])} {_fmt_ci(out['youden_j_ci95'])} "
                  "does not exclude 0: "
                  "the judge is not shown to beat chance on this sample, and dividing by J ≈ 0 means nothing")
    out["correctable"] = reason is None
    out["reason"] = reason
    out["rates"] = {}
    for i, m in enumerate(methods):
        nm, km = int(data.n[i]), int(data.k[i])
        rate = {"n": nm, "judge_yes": km, "raw": km / nm, "raw_ci95": wilson(km, nm), "corrected": None,
                "corrected_ci95": [None, None], "truncated": False}
        if reason is None:
            est = _num(theta[i])
            rate.update(corrected=est, corrected_ci95=_ci(draws["theta"][:, i], est), truncated=bool(truncated[i]))
        out["rates"][m] = rate
    out["changes"] = {}
    if baseline in methods:
        b = methods.index(baseline)
        for m in compared:
            if m not in methods:
                continue
            t = methods.index(m)
            rb, rt = data.k[b] / data.n[b], data.k[t] / data.n[t]
            ch = {"raw_difference": _num(rt - rb), "raw_relative_increase": relative_increase(_num(rb), _num(rt)),
                  "fisher_p": fisher_p(int(data.k[t]), int(data.n[t]), int(data.k[b]), int(data.n[b])),
                  "corrected_difference": None, "corrected_difference_ci95": [None, None],
                  "corrected_relative_increase": None, "corrected_relative_increase_ci95": [None, None]}
            if reason is None:
                tb, tt = _num(theta[b]), _num(theta[t])
                diff = draws["theta"][:, t] - draws["theta"][:, b]
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = diff / draws["theta"][:, b]
                r_est = relative_increase(tb, tt)
                ch.update(corrected_difference=tt - tb, corrected_difference_ci95=_ci(diff, tt - tb),
                          corrected_relative_increase=r_est, corrected_relative_increase_ci95=_ci(rel, r_est))
            out["changes"][m] = ch
    return out


def majority(answers: list[str]) -> bool | None:
    """The labellers' majority of yes/no answers (unsure left out); None for a tie or no yes/no answer."""
    yes, no = answers.count("yes"), answers.count("no")
    return None if yes == no else yes > no


def labeller_alpha(matrix: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Krippendorff's α (nominal) among labellers: ``matrix`` labellers × items, 1 yes, 0 no, nan no answer
    (or unsure). The interval resamples items (``n_boot`` bootstrap draws, percentile)."""
    import krippendorff

    matrix = np.asarray(matrix, float)
    n_labellers = int(matrix.shape[0]) if matrix.ndim == 2 else 0
    pairable = matrix[:, (~np.isnan(matrix)).sum(0) >= 2] if n_labellers >= 2 else np.zeros((n_labellers, 0))
    out = {"alpha": None, "ci95": [None, None], "n_items": int(pairable.shape[1]), "n_labellers": n_labellers,
           "measure": "Krippendorff's alpha, nominal; units = items, coders = labellers; bootstrap over items"}

    def alpha(m: np.ndarray) -> float | None:
        values = m[~np.isnan(m)]
        if m.shape[1] == 0 or np.unique(values).size < 2:
            return None  # one answer throughout: alpha is 0/0
        return _num(krippendorff.alpha(reliability_data=m, level_of_measurement="nominal", value_domain=[0.0, 1.0]))

    out["alpha"] = alpha(pairable)
    if out["alpha"] is not None:
        rng = np.random.default_rng(seed)
        boots = [alpha(pairable[:, rng.integers(0, pairable.shape[1], pairable.shape[1])]) for _ in range(n_boot)]
        out["ci95"] = _ci(np.array([b for b in boots if b is not None], float), out["alpha"])
    return out
