"""The typed result of the economic-stance probe in a cell (moloch_exp/results.py): the shares of each
stance per method and classifier in summary.md and the printed table.

    python run.py probe=[economic_stance]     # results.json: probes.economic_stance
"""
from __future__ import annotations

from moloch_exp.results import ModelProbeResult, fmt


class StanceProbeResult(ModelProbeResult):
    """Progressive/conservative/neutral shares per method by the keyword and the LLM classifier."""

    def table_rows(self) -> list[list[str]]:
        rows = []
        for m, s in self.per_method.items():
            for clf in ("keyword", "llm"):
                d = s.get(clf) or {}
                shares = d.get("shares") or {}
                rows.append([f"{self.name} {clf} ({m})", "", "",
                             ", ".join(f"{k} {fmt(v)}" for k, v in shares.items()) + f"; n {d.get('n')}"])
        return rows
