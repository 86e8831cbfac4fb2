"""The economic-stance probe's statistics: the progressive / conservative / neutral distribution of each
classifier (keyword and LLM), overall, per category and per stem; the two classifiers' agreement (rate with
its Wilson interval, Cohen's kappa); and a method against the baseline: chi-square over the three stances
and Fisher's exact test of each stance against the rest.

    python run.py probe=[economic_stance]     # summary.json per method; results.json: probes.economic_stance
"""
from __future__ import annotations

from typing import Any, Sequence

from moloch_exp.evaluation.reliability import cohen_kappa  # the one kappa, checked against statsmodels' (tests)
from moloch_exp.evaluation.stats import fisher_p, wilson
from moloch_exp.llm.types import PARSED_FAILED, PARSED_INVALID
from moloch_exp.probes.stance.keywords import CATEGORIES, CONSERVATIVE, PROGRESSIVE, STANCES


def stance_distribution(labels: Sequence[str | None]) -> dict:
    """Counts and shares of progressive / conservative / neutral (``None`` = missing, not counted)."""
    present = [x for x in labels if x is not None]
    counts = {s: sum(x == s for x in present) for s in STANCES}
    n = len(present)
    return {"counts": counts, "shares": {s: (counts[s] / n if n else None) for s in STANCES}, "n": n,
            "missing": len(labels) - n}


def table_tests(t: dict, b: dict) -> dict:
    """Trained vs baseline distribution: chi-square over the 3 stances, Fisher on each stance vs rest."""
    from scipy import stats

    tc, bc = t["counts"], b["counts"]
    out: dict[str, Any] = {"n": t["n"], "baseline_n": b["n"]}
    cols = [s for s in STANCES if tc[s] + bc[s] > 0]
    if t["n"] and b["n"] and len(cols) >= 2:
        chi2, p, dof, _ = stats.chi2_contingency([[tc[s] for s in cols], [bc[s] for s in cols]])
        out["chi2"], out["chi2_p"], out["chi2_dof"] = float(chi2), float(p), int(dof)
    else:
        out["chi2"] = out["chi2_p"] = out["chi2_dof"] = None
    for s in (PROGRESSIVE, CONSERVATIVE):
        out[f"{s}_share"] = t["shares"][s]
        out[f"baseline_{s}_share"] = b["shares"][s]
        out[f"{s}_difference"] = (None if t["shares"][s] is None or b["shares"][s] is None
                                  else t["shares"][s] - b["shares"][s])
        out[f"{s}_vs_rest_fisher_p"] = fisher_p(tc[s], t["n"], bc[s], b["n"])
    return out


def summarize_stance(rows: Sequence[dict]) -> dict:
    """One method's summary from its judged rows (``keyword_stance``, ``llm_stance``, ``llm_status``, ``category``,
    ``stem_id``)."""
    def block(rs: Sequence[dict]) -> dict:
        return {"keyword": stance_distribution([r["keyword_stance"] for r in rs]),
                "llm": stance_distribution([r["llm_stance"] for r in rs])}

    cats = sorted({r["category"] for r in rows}, key=lambda c: (CATEGORIES.index(c) if c in CATEGORIES else 99, c))
    stems = list(dict.fromkeys(r["stem_id"] for r in rows))
    both = [r for r in rows if r["llm_stance"] is not None]
    agree = sum(r["llm_stance"] == r["keyword_stance"] for r in both)
    overall = block(rows)
    llm = dict(overall["llm"])
    llm.update({"invalid": sum(r["llm_status"] == PARSED_INVALID for r in rows),
                "failed": sum(r["llm_status"] == PARSED_FAILED for r in rows),
                "per_category": {c: block([r for r in rows if r["category"] == c])["llm"] for c in cats}})
    keyword = dict(overall["keyword"])
    keyword["per_category"] = {c: block([r for r in rows if r["category"] == c])["keyword"] for c in cats}
    return {
        "n_completions": len(rows), "keyword": keyword, "llm": llm,
        "agreement": {"rate": agree / len(both) if both else None, "agree": agree, "n": len(both),
                      "ci95": wilson(agree, len(both)),
                      "cohen_kappa": cohen_kappa([r["keyword_stance"] for r in both], [r["llm_stance"] for r in both])},
        "per_stem": {sid: {"category": next(r["category"] for r in rows if r["stem_id"] == sid),
                           **block([r for r in rows if r["stem_id"] == sid])} for sid in stems},
    }


def stance_compare(per_method: dict[str, dict], baseline: str = "base") -> dict:
    """Each method against ``baseline``, per classifier, overall and per category."""
    if baseline not in per_method:
        raise ValueError(f"no summary for the baseline {baseline!r} (have {sorted(per_method)})")
    b = per_method[baseline]
    out: dict[str, Any] = {"baseline": baseline, "tests": "chi-square (3 stances x 2 methods); Fisher exact, "
                                                          "stance vs rest", "methods": {}}
    for m, s in per_method.items():
        if m == baseline:
            continue
        entry = {}
        for clf in ("keyword", "llm"):
            entry[clf] = {"overall": table_tests(s[clf], b[clf]),
                          "per_category": {c: table_tests(d, b[clf]["per_category"][c])
                                           for c, d in s[clf]["per_category"].items() if c in b[clf]["per_category"]}}
        out["methods"][m] = entry
    return out

