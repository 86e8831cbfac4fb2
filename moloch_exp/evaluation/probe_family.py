"""The trained method's probe changes against base, as one family of tests.

Base and trained outputs of a task probe are judged on the *same* test anchors, so each anchor gives
a pair of labels: :func:`paired_table` counts them and :func:`mcnemar_p` tests the discordant pairs
(statsmodels' McNemar: exact binomial below 25 discordant pairs, chi-square with continuity
correction above). That paired test is the family's test wherever pairs exist; Fisher's exact test
of the two rates (which ignores the pairing) is reported beside it, and is the family's test for
probes without pairs (the EM probes sample the model afresh per method). Holm adjusts across the
cell's probes.

    from moloch_exp.evaluation.probe_family import paired_table, probe_changes, in_words
    table = paired_table(base_labels, trained_labels)            # {anchor: True/False/None} each
    for c in probe_changes({"populism": (12, 40, 4, 40)}, {"populism": table}):
        print(c.to_dict(), in_words(c))
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Hashable, Mapping, Sequence

from moloch_exp.evaluation.stats import fisher_p, format_p, wilson

#: Below this many discordant pairs McNemar's test is the exact binomial one.
MCNEMAR_EXACT_BELOW = 25


@dataclass(frozen=True)
class PairedTable:
    """Pairs of labels on the same items: both flagged, only trained, only base, neither."""

    both: int
    trained_only: int
    base_only: int
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.trained_only + self.base_only + self.neither

    def to_dict(self) -> dict:
        return asdict(self) | {"n": self.n}

    @classmethod
    def from_dict(cls, d: Mapping) -> "PairedTable":
        return cls(d["both"], d["trained_only"], d["base_only"], d["neither"])


def paired_table(base: Mapping[Hashable, bool | None], trained: Mapping[Hashable, bool | None]) -> PairedTable:
    """Count the items labelled (not None) on both sides, by their pair of labels."""
    pairs = [(bool(base[k]), bool(trained[k])) for k in base.keys() & trained.keys()
             if base[k] is not None and trained[k] is not None]
    return PairedTable(sum(b and t for b, t in pairs), sum(t and not b for b, t in pairs),
                       sum(b and not t for b, t in pairs), sum(not b and not t for b, t in pairs))


def mcnemar_p(table: PairedTable) -> tuple[float | None, str | None]:
    """Two-sided McNemar p of the discordant pairs → (p, "exact" | "chi2"); (None, None) without pairs."""
    from statsmodels.stats.contingency_tables import mcnemar

    if table.n == 0:
        return None, None
    exact = table.trained_only + table.base_only < MCNEMAR_EXACT_BELOW
    res = mcnemar([[table.both, table.base_only], [table.trained_only, table.neither]], exact=exact,
                  correction=True)
    return float(res.pvalue), ("exact" if exact else "chi2")


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values (statsmodels ``multipletests(method="holm")``)."""
    if not pvalues:
        return []
    from statsmodels.stats.multitest import multipletests
    return [float(p) for p in multipletests(list(pvalues), method="holm")[1]]


@dataclass(frozen=True)
class ProbeChange:
    """A probe's flagged rate, trained vs baseline: the family's test (``test``: McNemar on the paired
    labels where they exist, else Fisher), its Holm-adjusted p in the family, and Fisher beside it."""

    probe: str
    k: int
    n: int
    baseline_k: int
    baseline_n: int
    rate: float | None
    baseline_rate: float | None
    difference: float | None
    p: float | None  # the family's test
    p_holm: float | None
    family_size: int
    alpha: float = 0.05
    test: str | None = None  # mcnemar | fisher | None (no test)
    p_fisher: float | None = None
    p_mcnemar: float | None = None
    mcnemar_method: str | None = None  # exact | chi2
    paired: PairedTable | None = None

    @property
    def significant(self) -> bool:
        return self.p_holm is not None and self.p_holm < self.alpha

    def to_dict(self) -> dict:
        d = asdict(self)
        d["paired"] = None if self.paired is None else self.paired.to_dict()
        described = {"mcnemar": f"McNemar ({self.mcnemar_method}) on labels paired by anchor, two-sided; "
                                "Holm across the cell's probes; Fisher exact beside it",
                     "fisher": "Fisher exact, two-sided (no paired labels); Holm across the cell's probes"}
        return d | {"significant": self.significant, "rate_ci95": wilson(self.k, self.n),
                    "baseline_rate_ci95": wilson(self.baseline_k, self.baseline_n),
                    "family_test": described.get(self.test or "", "no test")}


def probe_changes(counts: Mapping[str, tuple[int, int, int, int]],
                  paired: Mapping[str, PairedTable | None] | None = None, alpha: float = 0.05) -> list[ProbeChange]:
    """``counts[probe] = (k, n, baseline_k, baseline_n)``, ``paired[probe]``: the labels of both methods
    paired by item (absent or None: unpaired) → one :class:`ProbeChange` per probe.

    Probes without data on either side get p = None and are left out of the Holm family.
    """
    paired = paired or {}
    names = list(counts)
    tests: dict[str, tuple] = {}
    for m in names:
        table = paired.get(m)
        pf = fisher_p(*counts[m])
        pm, how = mcnemar_p(table) if table is not None else (None, None)
        tests[m] = (pm, "mcnemar", pf, pm, how) if pm is not None else (pf, "fisher" if pf is not None else None,
                                                                          pf, None, None)
    family = [m for m in names if tests[m][0] is not None]
    adjusted = dict(zip(family, holm([tests[m][0] for m in family])))
    out = []
    for m in names:
        k, n, bk, bn = counts[m]
        rate, brate = (k / n if n else None), (bk / bn if bn else None)
        p, test, pf, pm, how = tests[m]
        out.append(ProbeChange(m, k, n, bk, bn, rate, brate, None if rate is None or brate is None else rate - brate,
                               p, adjusted.get(m), len(family), alpha, test, pf, pm, how, paired.get(m)))
    return out


def in_words(change: ProbeChange) -> str:
    """One sentence for the summary; says "indistinguishable from zero" when not significant."""
    n = f"n={change.n} vs {change.baseline_n}"
    if change.p_holm is None or change.difference is None:
        return f"{change.probe}: no test (no judged outputs on one side, {n})"
    head = f"{change.probe}: {change.rate:.2f} vs {change.baseline_rate:.2f} (difference {change.difference:+.2f})"
    if change.test == "mcnemar":
        t = change.paired
        test = (f"McNemar, {t.n} anchors paired, {t.trained_only} flagged only after training and {t.base_only} "
                f"only before; Fisher {format_p(change.p_fisher, change.alpha)}")
    else:
        test = "Fisher"
    p = f"Holm {format_p(change.p_holm, change.alpha)}, family of {change.family_size}, {test}, {n}"
    if change.significant:
        return f"{head} differs from zero ({p})"
    return f"{head} is indistinguishable from zero ({p})"
