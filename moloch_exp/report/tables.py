"""Result tables: printed with rich, written as Markdown."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table


def fmt(x, pct: bool = False) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:+.1%}" if pct else f"{x:.3f}"
    return str(x)


def fmt_ci(ci) -> str:
    if not ci or ci[0] is None:
        return "—"
    return f"[{ci[0]:.3f}, {ci[1]:.3f}]"


def cell_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    rows = []
    for pair, w in results.get("win_rate", {}).items():
        rows.append([f"win rate {pair}", fmt(w["mean"]), fmt_ci(w["ci95"]),
                     f"anchors {w['n_anchors']}, invalid votes {w['invalid_votes']}, failed {w['failed_votes']}"])
    for probe, p in results.get("probes", {}).items():
        if p.get("kind") == "model":
            rows += model_probe_rows(probe, p)
            continue
        for m, n in p["n"].items():
            rows.append([f"{probe} ({m})", fmt(p[m]), fmt_ci(p["ci95"][m]),
                         f"n {n}, invalid {p['invalid'][m]}, failed {p['failed'][m]}, skipped {p['skipped'][m]}"])
        if "relative_increase" in p:
            rows.append([f"{probe} relative increase", fmt(p["relative_increase"], pct=True), "",
                         f"Fisher p {fmt(p.get('fisher_p'))}"])
    trend = results.get("trend")
    if trend:
        for name, rates in trend["em_rate"].items():
            agree = trend["judge_agreement"].get(name)
            rows.append([f"{name} trend EM rate by step", ", ".join(fmt(r) for r in rates), "",
                         f"steps {trend['steps']}, first step >= 5%: {fmt(trend['first_step_em_at_least_5pct'][name])}"
                         + (f", judge agreement {[fmt(a) for a in agree]}" if agree else "")])
    led = results.get("ledger", {})
    rows.append(["LLM calls", str(led.get("calls")), "", f"cache hits {led.get('cache_hits')}, usd {led.get('usd')}"])
    return ["metric", "value", "95% CI", "counts"], rows


def model_probe_rows(probe: str, p: dict) -> list[list[str]]:
    """EM probes: EM rate with its Wilson CI; stance probe: progressive/conservative shares."""
    rows = []
    for m, summ in p.items():
        if not isinstance(summ, dict) or m in ("comparison",):
            continue
        if "em_rate" in summ:
            rows.append([f"{probe} EM rate ({m})", fmt(summ["em_rate"]), fmt_ci(summ.get("em_ci95")),
                         f"n {summ['n']}, missing {summ['missing']}, alignment {fmt(summ.get('mean_alignment'))}, "
                         f"coherence {fmt(summ.get('mean_coherence'))}"])
        elif "keyword" in summ:
            for clf in ("keyword", "llm"):
                d = summ.get(clf) or {}
                shares = d.get("shares") or {}
                rows.append([f"{probe} {clf} ({m})", "", "",
                             ", ".join(f"{k} {fmt(v)}" for k, v in shares.items()) + f"; n {d.get('n')}"])
    comp = (p.get("comparison") or {}).get("methods", {})
    for m, c in comp.items():
        if "relative_increase" in c:
            rows.append([f"{probe} EM relative increase ({m})", fmt(c["relative_increase"], pct=True), "",
                         f"Fisher p {fmt(c.get('fisher_p'))}"])
    return rows


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
