"""The paper's reported figures beside a paper-mode sweep's measurements (El & Zou 2025, abstract/§4).

    python scripts/summarize_sweep.py multirun/2026-11-24/10-00-00    # adds "vs the paper" when prompts=paper

For every cell and task probe: the paper's performance gain and relative misalignment increase for
that task, the measured gain (head-to-head win rate over base − 0.5, 95% t interval over anchors)
and the measured relative increase (trained rate / base rate − 1, 95% CI of the rate ratio by the
adjusted log method, statsmodels ``confint_proportions_2indep``) with its Fisher p.
"""
from __future__ import annotations

from statsmodels.stats.proportion import confint_proportions_2indep

from moloch_exp.report.tables import fmt
from moloch_exp.probes.task_probes import TaskProbeResult
from moloch_exp.results import probe_results

# Task -> the paper's headline gain and relative misalignment increase per probe (this project's probe names).
PAPER_REPORTED = {
    "sales": {"gain": 0.063, "probes": {"misrepresentation": 0.140}},
    "elections": {"gain": 0.049, "probes": {"disinformation": 0.223, "populism": 0.125}},
    "social_media": {"gain": 0.075, "probes": {"disinformation": 1.886, "harmful": 0.163}},
}

HEADER = ["task", "probe", "model", "method", "paper gain", "measured gain [95% CI]", "paper misalignment",
          "measured rel. increase [95% CI]", "Fisher p", "n (base/trained)"]


def relative_increase_ci(flagged: int, n: int, base_flagged: int, base_n: int) -> tuple[float | None, float | None]:
    """95% CI of trained/base − 1 (ratio of two binomial proportions, adjusted log method)."""
    if not n or not base_n:
        return None, None
    lo, hi = confint_proportions_2indep(flagged, n, base_flagged, base_n, compare="ratio", method="log-adjusted")
    return float(lo) - 1, float(hi) - 1


def comparison_rows(cells: list[dict]) -> list[dict]:
    """One row per (cell, task probe the paper reports) of a sweep's results.json files."""
    rows = []
    for r in cells:
        c = r["cell"]
        reported = PAPER_REPORTED.get(c["task"])
        if reported is None or c["method"] == "base":
            continue
        wr = (r.get("win_rate") or {}).get(f"base_vs_{c['method']}") or {}
        mean, ci = wr.get("mean"), wr.get("ci95") or [None, None]
        gain = None if mean is None else mean - 0.5
        gain_ci = [None if x is None else x - 0.5 for x in ci]
        results = probe_results(r)
        for probe, paper_increase in reported["probes"].items():
            p = results.get(probe)
            if not isinstance(p, TaskProbeResult) or "base" not in p.n or c["method"] not in p.n:
                continue
            m = c["method"]
            flagged, n, bf, bn = p.flagged[m], p.n[m], p.flagged["base"], p.n["base"]
            rows.append({"task": c["task"], "probe": probe, "model": c["model"], "method": m, "seed": c["seed"],
                         "paper_gain": reported["gain"], "gain": gain, "gain_ci95": gain_ci,
                         "paper_relative_increase": paper_increase, "relative_increase": p.relative_increase,
                         "relative_increase_ci95": list(relative_increase_ci(flagged, n, bf, bn)),
                         "fisher_p": p.fisher_p, "n": n, "base_n": bn})
    return rows


def _with_ci(x, ci) -> str:
    if x is None:
        return "—"
    lo, hi = ci if ci else (None, None)
    band = "" if lo is None or hi is None else f" [{lo:+.1%}, {hi:+.1%}]"
    return f"{x:+.1%}{band}"


def comparison_table(rows: list[dict]) -> list[list[str]]:
    return [[x["task"], x["probe"], x["model"], x["method"], f"{x['paper_gain']:+.1%}", _with_ci(x["gain"], x["gain_ci95"]),
             f"{x['paper_relative_increase']:+.1%}", _with_ci(x["relative_increase"], x["relative_increase_ci95"]),
             fmt(x["fisher_p"]), f"{x['base_n']}/{x['n']}"] for x in rows]
