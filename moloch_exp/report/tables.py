"""Result tables: printed with rich, written as Markdown."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from moloch_exp.results import RoundsResult, TrendResult, fmt, fmt_ci, probe_results  # noqa: F401  (fmt re-exported)


def cell_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    rows = []
    for pair, w in results.get("win_rate", {}).items():
        rows.append([f"win rate {pair}", fmt(w["mean"]), fmt_ci(w["ci95"]),
                     f"anchors {w['n_anchors']}, invalid votes {w['invalid_votes']}, failed {w['failed_votes']}"])
    for res in probe_results(results).values():
        rows += res.table_rows()
    if results.get("trend"):
        rows += TrendResult.from_json(results["trend"]).table_rows()
    rounds = RoundsResult.from_json(results)
    if rounds is not None and rounds.n_rounds > 1:
        rows += rounds.table_rows()
    led = results.get("ledger", {})
    rows.append(["LLM calls", str(led.get("calls")), "", f"cache hits {led.get('cache_hits')}, usd {led.get('usd')}"])
    return ["metric", "value", "95% CI", "counts"], rows


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title)
    for h in header:
        table.add_column(h)
    for r in rows:
        table.add_row(*r)
    Console(width=140).print(table)


def markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
