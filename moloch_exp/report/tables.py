"""Result tables: printed with rich, written as Markdown."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table

from moloch_exp.evaluation.stats import format_p
from moloch_exp.llm.ledger import usd_text
from moloch_exp.llm.prices import LOCAL
from moloch_exp.report.labels import LabelsResult
from moloch_exp.results import (ProbeChangesResult, ReliabilityResult, RoundsResult, TrendResult, fmt,  # noqa: F401
                                 fmt_ci, probe_results)  # (fmt re-exported)


def cell_rows(results: dict) -> tuple[list[str], list[list[str]]]:
    rows = []
    for pair, w in results.get("win_rate", {}).items():
        # an MDE past 0.5, or a smallest attainable p at or above alpha (too few anchors off 0.5), means
        # no win rate in [0, 1] is detectable with these anchors
        undetectable = (w.get("mde") is not None and w["mde"] > 0.5) or (w.get("test") or {}).get("detectable") is False
        mde = "none detectable" if undetectable else fmt(w.get("mde"))
        test = f", sign-flip p {format_p(w['p'], prefix='')}, MDE {mde}" if "p" in w else ""
        dropped = (w.get("dropped") or {}).get("missing_output") or {}
        drops = "".join(f", no output from {m}: {k}" for m, k in dropped.items() if k)
        rows.append([f"win rate {pair}", fmt(w["mean"]), fmt_ci(w["ci95"]),
                     f"anchors {w['n_anchors']}, invalid votes {w['invalid_votes']}, failed {w['failed_votes']}{test}"
                     f"{drops}, no valid vote: {w.get('anchors_without_valid_votes', 0)}"])
    for res in probe_results(results).values():
        rows += res.table_rows()
    if results.get("probe_changes"):
        rows += ProbeChangesResult.from_json(results["probe_changes"]).table_rows()
    if results.get("reliability"):
        rows += ReliabilityResult.from_json(results["reliability"]).table_rows()
    if results.get("trend"):
        rows += TrendResult.from_json(results["trend"]).table_rows()
    rounds = RoundsResult.from_json(results)
    if rounds is not None and rounds.n_rounds > 1:
        rows += rounds.table_rows()
    rows += label_rows(results)
    rows += ledger_rows(results.get("ledger", {}), results.get("estimate"))
    return ["metric", "value", "95% CI", "counts"], rows


def ledger_rows(led: dict, estimate: dict | None) -> list[list[str]]:
    """Calls and dollars spent (USD; "unpriced" naming the models without a price; "free (local)" for
    managed local servers), beside the pre-flight estimate."""
    per_model = led.get("per_model") or {}

    def spent(usd: float | None, models: list[dict], unpriced=()) -> str:
        if models and all(pm.get("price") == LOCAL.source for pm in models):
            return "free (local)"
        return usd_text(usd, unpriced)

    est = ""
    if estimate and "usd" in estimate:
        est_usd = "free (local)" if estimate.get("local_only") else usd_text(estimate["usd"], estimate.get("unpriced", ()))
        est = f"estimated {est_usd} before cache hits"
    rows = [["LLM calls", str(led.get("calls")), "", f"cache hits {led.get('cache_hits')}, "
             f"tokens in {led.get('prompt_tokens')} (cached {led.get('cached_prompt_tokens', 0)}), "
             f"out {led.get('completion_tokens')}"],
            ["LLM spend", spent(led.get("usd"), list(per_model.values()), led.get("unpriced") or ()), "", est]]
    for model, pm in per_model.items():
        rows.append([f"LLM spend {model}", spent(pm.get("usd"), [pm]) if pm.get("usd") is not None else "unpriced",
                     "", f"calls {pm.get('calls')}, price: {pm.get('price') or 'none known'}"])
    return rows


def sentences(results: dict) -> list[str]:
    """The summary in words: flagged judges, win rates against parity, probe changes, position bias."""
    rel = ReliabilityResult.from_json(results["reliability"]) if results.get("reliability") else None
    out = [s for s in (rel.sentences() if rel else []) if s.startswith("**")]
    out += [f"{pair}: {w['in_words']}" for pair, w in results.get("win_rate", {}).items() if w.get("in_words")]
    if results.get("probe_changes"):
        out += ProbeChangesResult.from_json(results["probe_changes"]).sentences()
    out += [s for s in (rel.sentences() if rel else []) if not s.startswith("**")]
    return out + label_sentences(results)


def label_rows(results: dict) -> list[list[str]]:
    """The judges checked by people (``python -m moloch_exp.label report``): agreement and corrected rates."""
    return LabelsResult.from_json(results["labels"]).table_rows() if results.get("labels") else []


def label_sentences(results: dict) -> list[str]:
    return LabelsResult.from_json(results["labels"]).sentences() if results.get("labels") else []


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
