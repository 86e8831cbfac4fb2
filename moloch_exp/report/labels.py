"""The ``labels`` block of results.json (what people found about the judges) and how it is shown:
cell table rows, sentences, tracker metrics, the report.html section and the sweep summary's part.

    from moloch_exp.report.labels import LabelsResult, labels_section_html
    res = LabelsResult.from_json(results["labels"])
    res.table_rows(); res.sentences(); res.sweep_fields("misrepresentation", "rft")

Each probe's entry is :func:`moloch_exp.label.stats.judge_vs_people`'s dict plus the sample's
tallies (items, labelled, unsure answers, ties, stale items), Krippendorff's α among labellers and
its sentence (``in_words``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from jinja2 import Environment
from markupsafe import Markup

from moloch_exp.results import fmt, fmt_ci


def _f(x, signed: bool = False) -> str:
    if x is None:
        return "—"
    return f"{x:+.3f}" if signed else f"{x:.3f}"


def _ci(ci) -> str:
    if not ci or (ci[0] is None and ci[1] is None):
        return "—"
    lo = "−∞" if ci[0] is None else f"{ci[0]:.2f}"
    hi = "∞" if ci[1] is None else f"{ci[1]:.2f}"
    return f"[{lo}, {hi}]"


def _p(p) -> str:
    return "—" if p is None else ("<0.001" if p < 0.001 else f"{p:.2g}")


def probe_in_words(probe: str, p: dict, labellers: int) -> str:
    """One probe's finding as a sentence: agreement, then the corrected rates and change, or why not."""
    t = p["sample_table"]
    agree = t["judge_yes_people_yes"] + t["judge_no_people_no"]
    who = f"{labellers} labeller" + ("s" if labellers != 1 else "")
    if p["n_labelled"] == 0:
        return f"People checked the judge on {probe}: no item has a majority answer yet ({p['items']} sampled, {who})."
    head = (f"People checked the judge on {probe} ({p['n_labelled']} items with a majority answer, {who}): it agrees "
            f"with them on {agree} of {p['n_labelled']}")
    if p["kappa"] is not None:
        head += (f" (κ {_f(p['kappa'])} {_ci(p['kappa_ci95'])}, sensitivity {_f(p['sensitivity'])} "
                 f"{_ci(p['sensitivity_ci95'])}, specificity {_f(p['specificity'])} {_ci(p['specificity_ci95'])},"
                 " weighted to the cell)")
    if not p["correctable"]:
        return f"{head}; no correction for judge error: {p['reason']}; the raw rates stand uncorrected."
    rates = ", ".join(f"{m} {_f(r['corrected'])} {_ci(r['corrected_ci95'])} (raw {_f(r['raw'])})"
                      for m, r in p["rates"].items())
    out = f"{head}; corrected for its errors: {rates}"
    for m, c in p["changes"].items():
        lo, hi = c["corrected_difference_ci95"]
        zero = lo is not None and hi is not None and lo <= 0 <= hi
        fisher = f"Fisher p {_p(c['fisher_p'])} on the raw counts"
        out += (f"; the corrected change {m} − base {_f(c['corrected_difference'], True)} "
                f"{_ci(c['corrected_difference_ci95'])} "
                + (f"is indistinguishable from zero ({fisher})" if zero else f"excludes zero ({fisher})"))
    return out + "."


@dataclass
class LabelsResult:
    sample: dict  # items, per_probe, seed, source, labellers, method (how it is estimated)
    probes: dict[str, dict] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"sample": self.sample, "probes": self.probes}

    @classmethod
    def from_json(cls, data: dict) -> "LabelsResult":
        return cls(data.get("sample", {}), data.get("probes", {}))

    def table_rows(self) -> list[list[str]]:
        rows = []
        for name, p in self.probes.items():
            acc = (f"accuracy {_f(p['accuracy'])} {_ci(p['accuracy_ci95'])}, sensitivity {_f(p['sensitivity'])} "
                   f"{_ci(p['sensitivity_ci95'])}, specificity {_f(p['specificity'])} {_ci(p['specificity_ci95'])}")
            rows.append([f"{name} judge vs people κ", fmt(p["kappa"]), fmt_ci(p["kappa_ci95"]),
                         f"{p['n_labelled']} of {p['items']} items with a majority of {p['labellers']} labeller(s); "
                         + acc])
            a = p.get("labeller_alpha")
            if a and a["n_labellers"] >= 2:
                rows.append([f"{name} labeller agreement α", fmt(a["alpha"]), fmt_ci(a["ci95"]),
                             f"Krippendorff nominal, {a['n_items']} items, {a['n_labellers']} labellers"])
            if not p["correctable"]:
                rows.append([f"{name} corrected for judge error", "—", "", f"not corrected: {p['reason']}"])
                continue
            for m, r in p["rates"].items():
                rows.append([f"{name} ({m}) corrected for judge error", fmt(r["corrected"]), fmt_ci(r["corrected_ci95"]),
                             f"raw {fmt(r['raw'])} {fmt_ci(r['raw_ci95'])}, n {r['n']}; Rogan–Gladen"
                             + (", truncated to [0, 1]" if r["truncated"] else "")])
            for m, c in p["changes"].items():
                rows.append([f"{name} corrected change {m} − base", fmt(c["corrected_difference"]),
                             _ci(c["corrected_difference_ci95"]),
                             f"raw {fmt(c['raw_difference'])}, corrected relative increase "
                             f"{fmt(c['corrected_relative_increase'], pct=True)} "
                             f"{_ci(c['corrected_relative_increase_ci95'])}, Fisher p {_p(c['fisher_p'])} (raw counts)"])
        return rows

    def sentences(self) -> list[str]:
        return [p["in_words"] for p in self.probes.values()]

    def metrics(self) -> dict[str, float]:
        out = {}
        for name, p in self.probes.items():
            for key in ("kappa", "sensitivity", "specificity"):
                if p[key] is not None:
                    out[f"labels/{name}/{key}"] = p[key]
            for m, r in p["rates"].items():
                if r["corrected"] is not None:
                    out[f"labels/{name}/{m}/corrected_rate"] = r["corrected"]
        return out

    def sweep_fields(self, probe: str, method: str) -> dict:
        """The sweep summary's fields for ``probe`` in a cell of ``method`` (None where nobody labelled)."""
        p = self.probes.get(probe)
        if p is None:
            return {"people_labelled": None, "people_kappa": None, "corrected_base_rate": None,
                    "corrected_trained_rate": None, "corrected_difference": None,
                    "corrected_difference_ci95": None, "correction_withheld": None}
        c = p["changes"].get(method) or {}
        return {"people_labelled": p["n_labelled"], "people_kappa": p["kappa"],
                "corrected_base_rate": (p["rates"].get("base") or {}).get("corrected"),
                "corrected_trained_rate": (p["rates"].get(method) or {}).get("corrected"),
                "corrected_difference": c.get("corrected_difference"),
                "corrected_difference_ci95": c.get("corrected_difference_ci95"),
                "correction_withheld": p["reason"]}


SECTION = """<h2>People check the judges</h2>
<p>{{ sample['items'] }} sampled outputs ({{ sample.per_probe }} per probe, stratified by probe, method and judge verdict,
seed {{ sample.seed }}), labelled blind by {{ sample.labellers|length }} labeller(s). {{ sample.method }}</p>
{% for name, p in probes.items() %}<h3>{{ name }}</h3><p><i>{{ p.question }}</i></p><p>{{ p.in_words }}</p>
<table><tr><th>method</th><th>n</th><th>raw rate</th><th>95% CI</th><th>corrected rate</th><th>95% CI</th></tr>
{% for m, r in p.rates.items() %}<tr><td>{{ m }}</td><td>{{ r.n }}</td><td>{{ f(r.raw) }}</td><td>{{ ci(r.raw_ci95) }}</td>
<td>{{ f(r.corrected) }}</td><td>{{ ci(r.corrected_ci95) }}</td></tr>{% endfor %}</table>
<table><tr><th>sample</th><th>people yes</th><th>people no</th></tr>
<tr><td>judge yes</td><td>{{ p.sample_table.judge_yes_people_yes }}</td><td>{{ p.sample_table.judge_yes_people_no }}</td></tr>
<tr><td>judge no</td><td>{{ p.sample_table.judge_no_people_yes }}</td><td>{{ p.sample_table.judge_no_people_no }}</td></tr></table>
<p>{{ p['items'] }} items, {{ p.unsure }} unsure answers, {{ p.ties }} ties{% if p.stale %}, {{ p.stale }} stale (left out){% endif %}
{% if p.labeller_alpha and p.labeller_alpha.n_labellers >= 2 %}; labeller agreement Krippendorff's α
{{ f(p.labeller_alpha.alpha) }} {{ ci(p.labeller_alpha.ci95) }} over {{ p.labeller_alpha.n_items }} items{% endif %}.
{% for n in p.notes %}<br>{{ n }}{% endfor %}</p>{% endfor %}"""


def labels_section_html(results: dict) -> Markup:
    """The report.html section for the cell's ``labels`` block ('' when nobody labelled)."""
    if not results.get("labels"):
        return Markup("")
    res = LabelsResult.from_json(results["labels"])
    html = Environment(autoescape=True).from_string(SECTION).render(sample=res.sample, probes=res.probes, f=_f, ci=_ci)
    return Markup(html)


def sweep_labels_markdown(rows: list[dict]) -> str:
    """The sweep summary's section on judges checked by people ('' when no cell has labels)."""
    rows = [r for r in rows if r.get("people_labelled")]
    if not rows:
        return ""
    lines = ["", "## Judges checked by people", "",
             "| task | model | method | probe | labelled | κ | raw change | corrected change | 95% CI |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        withheld = r.get("correction_withheld")
        raw = (r["trained_rate"] - r["base_rate"]) if r.get("trained_rate") is not None and r.get("base_rate") is not None else None
        lines.append(f"| {r['task']} | {r['model']} | {r['method']} | {r['probe']} | {r['people_labelled']} | "
                     f"{_f(r['people_kappa'])} | {_f(raw, True)} | "
                     + (f"not corrected: {withheld} | |" if withheld else
                        f"{_f(r['corrected_difference'], True)} | {_ci(r['corrected_difference_ci95'])} |"))
    return "\n".join(lines) + "\n"
