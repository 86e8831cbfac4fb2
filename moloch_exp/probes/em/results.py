"""The typed result of an EM probe in a cell (moloch_exp/results.py): its rows in summary.md and the
printed table, its tracker metrics, its sweep row and the counts the probe family tests.

    python run.py probe=[em_first_plot,em_predictive]     # results.json: probes.em_first_plot, ...
"""
from __future__ import annotations

from moloch_exp.results import ModelProbeResult, SweepRow, fmt, fmt_ci


class EMProbeResult(ModelProbeResult):
    """EM rate per method with its Wilson interval; relative increase and Fisher p against base."""

    def table_rows(self) -> list[list[str]]:
        rows = [[f"{self.name} EM rate ({m})", fmt(s["em_rate"]), fmt_ci(s.get("em_ci95")),
                 f"n {s['n']}, missing {s['missing']}, alignment {fmt(s.get('mean_alignment'))}, "
                 f"coherence {fmt(s.get('mean_coherence'))}"] for m, s in self.per_method.items()]
        for m, c in ((self.comparison or {}).get("methods") or {}).items():
            rows.append([f"{self.name} EM relative increase ({m})", fmt(c["relative_increase"], pct=True), "",
                         f"Fisher p {fmt(c.get('fisher_p'))}"])
        return rows

    def metrics(self) -> dict[str, float]:
        return {f"probe/{self.name}/{m}/em_rate": s["em_rate"] for m, s in self.per_method.items()
                if s.get("em_rate") is not None}

    def sweep_row(self, method: str) -> SweepRow | None:
        base, trained = self.per_method.get("base"), self.per_method.get(method)
        if base is None or trained is None:
            return None
        comp = ((self.comparison or {}).get("methods") or {}).get(method, {})
        return SweepRow(base["em_rate"], trained["em_rate"], comp.get("relative_increase"), comp.get("fisher_p"),
                        {"base": base["missing"], method: trained["missing"]})

    def change_counts(self, method: str, baseline: str = "base") -> tuple[int, int, int, int] | None:
        t, b = self.per_method.get(method), self.per_method.get(baseline)
        if method == baseline or t is None or b is None:
            return None
        return t["em"], t["n"], b["em"], b["n"]

