"""Typed results of a cell: what each probe kind (and the checkpoint trend) found, and how it is shown.

Every result knows its own table rows, tracker metrics and sweep row, and serialises itself into
results.json (``to_json``, tagged with ``result_type``, the dotted name of its class);
:func:`probe_result_from_json` reads it back. The report (moloch_exp/report/) uses only these
methods. A new probe kind brings its result class in its own module.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from moloch_exp.evaluation.stats import format_p


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


@dataclass
class SweepRow:
    """One probe × cell in the sweep views: base and trained rates and their comparison."""

    base_rate: float | None
    trained_rate: float | None
    relative_increase: float | None
    fisher_p: float | None
    invalid: dict[str, int]
    mcnemar_p: float | None = None  # where the two methods' labels pair up by anchor (task probes)


@dataclass
class RatePlot:
    """Per-method flagged shares with intervals, for the cell's probe-rate plot."""

    rate: dict[str, float | None]
    ci95: dict[str, list]


class ProbeResult:
    """Base of every probe result. Subclasses are dataclasses with ``name`` and implement these."""

    kind: ClassVar[str] = "task"  # task | model (kept in results.json)
    name: str

    def to_json(self) -> dict:
        raise NotImplementedError

    @classmethod
    def from_json(cls, name: str, data: dict) -> "ProbeResult":
        raise NotImplementedError

    def table_rows(self) -> list[list[str]]:
        """Rows of the cell table: [metric, value, 95% CI, counts]."""
        raise NotImplementedError

    def metrics(self) -> dict[str, float]:
        """Flat metrics for a tracker (wandb), keyed ``probe/<name>/...``."""
        return {}

    def sweep_row(self, method: str) -> SweepRow | None:
        """This probe in the sweep views for a cell of ``method`` (None: not a rate probe)."""
        return None

    def rate_plot(self) -> RatePlot | None:
        """Flagged shares for the cell's probe-rate plot (None: not plotted there)."""
        return None

    def change_counts(self, method: str, baseline: str = "base") -> tuple[int, int, int, int] | None:
        """(flagged, n, baseline flagged, baseline n) for the cell's probe-change family (None: not a rate probe
        or no comparison)."""
        return None

    def paired_counts(self, method: str, baseline: str = "base"):
        """The two methods' labels paired by item (``moloch_exp.evaluation.probe_family.PairedTable``)
        for McNemar's test in the probe family; None: unpaired (Fisher is the family's test)."""
        return None

    def output_label_files(self, linked_stages: Path) -> list[Path]:
        """Judgments (moloch_exp.records.Judgment JSONL) labelling the task's test outputs, for the match
        viewer, under ``<output_dir>/stages``; none for probes that judge their own samples."""
        return []

    def second_judge_label_files(self, linked_stages: Path) -> list[Path]:
        """The same judgments by the second judge (``judge@judge2``), those that exist; none when it did not run."""
        return []

    def tagged(self, body: dict) -> dict:
        """``body`` with the kind and the result_type that read it back (:func:`probe_result_from_json`)."""
        return {"kind": self.kind, "result_type": f"{type(self).__module__}.{type(self).__qualname__}", **body}


#: result_type of classes that moved (results.json written before moloch_exp/probes/em.py was split, issue 21)
MOVED_RESULT_TYPES = {"moloch_exp.probes.em.EMProbeResult": "moloch_exp.probes.em.results.EMProbeResult",
                      "moloch_exp.probes.em.StanceProbeResult": "moloch_exp.probes.stance.results.StanceProbeResult"}


def probe_result_from_json(name: str, data: dict) -> ProbeResult:
    """Read one probe's entry of results.json back into its result class."""
    module, _, cls = MOVED_RESULT_TYPES.get(data["result_type"], data["result_type"]).rpartition(".")
    return getattr(importlib.import_module(module), cls).from_json(name, data)


def probe_results(results: dict) -> dict[str, ProbeResult]:
    return {name: probe_result_from_json(name, d) for name, d in results.get("probes", {}).items()}


@dataclass
class TrendResult:
    """EM rates of the model probes at step 0 (base) and at every saved checkpoint of one method."""

    method: str
    steps: list[int]
    em_rate: dict[str, list[float | None]] = field(default_factory=dict)
    missing: dict[str, list[int | None]] = field(default_factory=dict)
    first_step_em_at_least_5pct: dict[str, int | None] = field(default_factory=dict)
    judge_agreement: dict[str, list[float | None]] = field(default_factory=dict)
    assistant_minus_predictive: list[float | None] | None = None

    def to_json(self) -> dict:
        out: dict[str, Any] = {"method": self.method, "steps": self.steps, "em_rate": self.em_rate,
                               "missing": self.missing, "first_step_em_at_least_5pct": self.first_step_em_at_least_5pct,
                               "judge_agreement": self.judge_agreement}
        if self.assistant_minus_predictive is not None:
            out["assistant_minus_predictive"] = self.assistant_minus_predictive
        return out

    @classmethod
    def from_json(cls, data: dict) -> "TrendResult":
        return cls(**data)

    def table_rows(self) -> list[list[str]]:
        rows = []
        for name, rates in self.em_rate.items():
            agree = self.judge_agreement.get(name)
            rows.append([f"{name} trend EM rate by step", ", ".join(fmt(r) for r in rates), "",
                         f"steps {self.steps}, first step >= 5%: {fmt(self.first_step_em_at_least_5pct[name])}"
                         + (f", judge agreement {[fmt(a) for a in agree]}" if agree else "")])
        return rows

    def metrics(self) -> dict[str, float]:
        return {f"trend/{name}/step_{s}/em_rate": r for name, rates in self.em_rate.items()
                for s, r in zip(self.steps, rates) if r is not None}


@dataclass
class ModelProbeResult(ProbeResult):
    """A model probe's summary per method (summary.json of each probe stage) and the comparison against base."""

    kind: ClassVar[str] = "model"
    name: str
    per_method: dict[str, dict]
    comparison: dict | None = None

    def to_json(self) -> dict:
        body: dict = dict(self.per_method)
        if self.comparison is not None:
            body["comparison"] = self.comparison
        return self.tagged(body)

    @classmethod
    def from_json(cls, name: str, data: dict) -> "ModelProbeResult":
        per = {k: v for k, v in data.items() if k not in ("kind", "result_type", "comparison")}
        return cls(name, per, data.get("comparison"))

    def table_rows(self) -> list[list[str]]:
        return []


@dataclass
class RoundResult:
    """One round of a competition: its agent's head-to-head win rates and task-probe rates.

    Round 0 is the base model (no win rates); ``vs_previous`` of round 1 is null (its previous
    agent is the base: see ``vs_base``)."""

    round: int
    agent: str  # base, <method>, <method>_r<r>
    win_rate: dict[str, dict | None]  # vs_base, vs_previous: head-to-head summaries (mean, ci95, n_anchors, ...)
    probes: dict[str, dict]  # probe → {rate, ci95, n, flagged, fisher_p_vs_base}


@dataclass
class RoundsResult:
    """Win rate and each task probe's rate against round (issue 10), from the cell's evaluations."""

    method: str
    opponent: str
    init: str
    rounds: list[RoundResult]

    def to_json(self) -> dict:
        """``{"competition": {...}, "rounds": [...]}``, merged into results.json."""
        return {"competition": {"method": self.method, "opponent": self.opponent, "init": self.init,
                                "rounds": max(r.round for r in self.rounds)},
                "rounds": [{"round": r.round, "agent": r.agent, "win_rate": r.win_rate, "probes": r.probes}
                           for r in self.rounds]}

    @classmethod
    def from_json(cls, results: dict) -> "RoundsResult | None":
        if not results.get("rounds"):
            return None
        c = results["competition"]
        return cls(c["method"], c["opponent"], c["init"], [RoundResult(**r) for r in results["rounds"]])

    @property
    def n_rounds(self) -> int:
        return max(r.round for r in self.rounds)

    def series(self) -> dict[str, tuple[list[int], list[float | None], list[list]]]:
        """Curve name → (rounds, values, 95% intervals): win rate vs base / vs previous, and each probe's rate."""
        out: dict[str, tuple[list[int], list, list]] = {}
        for key in ("vs_base", "vs_previous"):
            pts = [(r.round, r.win_rate[key]) for r in self.rounds if r.win_rate.get(key)]
            if pts:
                out[f"win rate {key.replace('_', ' ')}"] = ([x for x, _ in pts], [w["mean"] for _, w in pts],
                                                             [w["ci95"] for _, w in pts])
        for name in self.rounds[0].probes:
            pts = [(r.round, r.probes[name]) for r in self.rounds if name in r.probes]
            out[name] = ([x for x, _ in pts], [p["rate"] for _, p in pts], [p["ci95"] for _, p in pts])
        return out

    def table_rows(self) -> list[list[str]]:
        rows = []
        for r in self.rounds[1:]:
            for key, w in r.win_rate.items():
                if w is not None:
                    rows.append([f"round {r.round} ({r.agent}) win rate {key.replace('_', ' ')}", fmt(w["mean"]),
                                 fmt_ci(w["ci95"]), f"anchors {w['n_anchors']}, invalid votes {w['invalid_votes']}"])
        for r in self.rounds:
            for name, p in r.probes.items():
                rows.append([f"round {r.round} ({r.agent}) {name}", fmt(p["rate"]), fmt_ci(p["ci95"]),
                             f"n {p['n']}" + (f", Fisher p vs base {fmt(p['fisher_p_vs_base'])}"
                                              if p.get("fisher_p_vs_base") is not None else "")])
        return rows

    def metrics(self) -> dict[str, float]:
        out = {}
        for r in self.rounds:
            for key, w in r.win_rate.items():
                if w is not None and w["mean"] is not None:
                    out[f"round/{r.round}/win_rate_{key}"] = w["mean"]
            for name, p in r.probes.items():
                if p["rate"] is not None:
                    out[f"round/{r.round}/probe/{name}"] = p["rate"]
        return out
# ----------------------------------------------------------------------------- reliability (issue 11)
def _fmt_p(p, alpha: float = 0.05) -> str:
    return format_p(p, alpha, prefix="")


@dataclass
class ReliabilityResult:
    """How far the cell's audience and judges can be trusted.

    ``audience``: vote set label (``collect``, ``evaluate_<pair>``) → the reliability stage's
    reliability.json (position bias, Krippendorff's alpha, test-retest); ``judge_controls``: judge
    (``judge``, ``judge2``) → probe → ``ControlScore.to_dict()``; ``judge_agreement``: task probe →
    Cohen's kappa of judge and judge2 over all methods' outputs (``PairedAgreement.to_dict()``, None
    when the probe judged nothing).
    """

    audience: dict[str, dict] = field(default_factory=dict)
    judge_controls: dict[str, dict[str, dict]] = field(default_factory=dict)
    judge_agreement: dict[str, dict | None] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"audience": self.audience, "judge_controls": self.judge_controls,
                "judge_agreement": self.judge_agreement}

    @classmethod
    def from_json(cls, data: dict) -> "ReliabilityResult":
        return cls(data.get("audience", {}), data.get("judge_controls", {}), data.get("judge_agreement", {}))

    def table_rows(self) -> list[list[str]]:
        rows = []
        for votes, r in self.audience.items():
            pb, va, rt = r["position_bias"], r["voter_agreement"], r["test_retest"]
            chance = fmt(pb.get("chance")) if pb.get("chance") is not None else "0.5"
            rows.append([f"position bias ({votes})", fmt(pb["share"]), fmt_ci(pb["ci95"]),
                         f"first-shown chosen {pb['first_chosen']}/{pb['n']}, exact p {_fmt_p(pb['p'])} "
                         f"against chance {chance}"])
            rows.append([f"voter agreement α ({votes})", fmt(va["alpha"]), "",
                         f"Krippendorff nominal, {va['n_matches']} matches, {va['n_voters']} voters"])
            if rt:
                clusters = (f", interval clustered by match (design effect {fmt(rt.get('design_effect'))})"
                            if rt.get("n_clusters") is not None else "")
                rows.append([f"test-retest ({votes})", fmt(rt["agreement"]), fmt_ci(rt["ci95"]),
                             f"{rt['agree']}/{rt['n']} pairs agree, κ {fmt(rt['kappa'])}, {r['retest_matches']} "
                             f"matches re-asked{clusters}"])
            else:
                rows.append([f"test-retest ({votes})", "—", "", "no matches re-asked "
                             "(audience_reliability.retest_share=0 and retest_min_matches=0)"])
        for judge, scores in self.judge_controls.items():
            for probe, s in scores.items():
                flag = f"; below {s['min_accuracy']:g}: FLAGGED" if s["flagged"] else ""
                per_class = "".join(f"; {c} {d['correct']}/{d['n']} [{fmt_ci(d.get('ci95'))[1:-1]}]"
                                    for c, d in (s.get("per_class") or {}).items())
                rows.append([f"{judge} accuracy on {probe} controls", fmt(s["accuracy"]), fmt_ci(s["ci95"]),
                             f"{s['correct']}/{s['n']} correct, missing {s['missing']}{per_class}{flag}"])
        for probe, a in self.judge_agreement.items():
            rows.append([f"judge agreement κ {probe}", fmt(a["kappa"]) if a else "—", "",
                         f"judge vs judge2: {a['agree']}/{a['n']} outputs agree" if a else "no outputs judged by both"])
        return rows

    def sentences(self) -> list[str]:
        """What the summary says in words; a flagged judge first."""
        out = []
        for judge, scores in self.judge_controls.items():
            for probe, s in scores.items():
                if s["flagged"]:
                    acc = "labelled none" if s["accuracy"] is None else f"accuracy {s['accuracy']:.2f} (n={s['n']})"
                    out.append(f"**{judge} flagged on {probe}**: {acc} on its judge controls, below "
                               f"judge.min_control_accuracy={s['min_accuracy']:g}; the {probe} rates of this cell "
                               "rest on a judge that fails clear cases")
        for votes, r in self.audience.items():
            out.append(f"Audience ({votes}): {r['position_bias']['in_words']}")
        return out

    def metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for votes, r in self.audience.items():
            values = {"position_bias": r["position_bias"]["share"], "voter_alpha": r["voter_agreement"]["alpha"],
                      "retest_agreement": (r["test_retest"] or {}).get("agreement")}
            out.update({f"reliability/{votes}/{k}": v for k, v in values.items() if v is not None})
        for judge, scores in self.judge_controls.items():
            out.update({f"judge_controls/{judge}/{p}/accuracy": s["accuracy"] for p, s in scores.items()
                        if s["accuracy"] is not None})
        out.update({f"judge_agreement/{p}/kappa": a["kappa"] for p, a in self.judge_agreement.items()
                    if a and a["kappa"] is not None})
        return out

    def sweep_fields(self, probe: str) -> dict:
        """Per probe row of the sweep summary: the judge's control accuracy, its flag, judge kappa."""
        s = self.judge_controls.get("judge", {}).get(probe) or {}
        return {"control_accuracy": s.get("accuracy"), "judge_flagged": s.get("flagged"),
                "judge_kappa": (self.judge_agreement.get(probe) or {}).get("kappa")}

    def position_bias(self) -> dict[str, float | None]:
        return {votes: r["position_bias"]["share"] for votes, r in self.audience.items()}


@dataclass
class ProbeChangesResult:
    """The trained method's probe changes against base as one family: McNemar on the labels paired by
    anchor where they exist (task probes), else Fisher exact; Fisher beside it; Holm across the cell's
    probes (``moloch_exp.evaluation.probe_family.probe_changes``), each with its sentence."""

    method: str
    changes: dict[str, dict] = field(default_factory=dict)  # probe -> ProbeChange.to_dict() + in_words

    @classmethod
    def from_probes(cls, probes: dict[str, "ProbeResult"], method: str) -> "ProbeChangesResult":
        from moloch_exp.evaluation.probe_family import in_words, probe_changes

        counts = {n: c for n, r in probes.items() if (c := r.change_counts(method)) is not None}
        paired = {n: probes[n].paired_counts(method) for n in counts}
        return cls(method, {c.probe: c.to_dict() | {"in_words": in_words(c)} for c in probe_changes(counts, paired)})

    def to_json(self) -> dict:
        return {"method": self.method, "changes": self.changes}

    @classmethod
    def from_json(cls, data: dict) -> "ProbeChangesResult":
        return cls(data["method"], data.get("changes", {}))

    def table_rows(self) -> list[list[str]]:
        def tests(c: dict) -> str:
            mcnemar = f"McNemar p {_fmt_p(c.get('p_mcnemar'))}, " if c.get("p_mcnemar") is not None else ""
            family = {"mcnemar": "McNemar", "fisher": "Fisher"}.get(c.get("test") or "fisher", "Fisher")
            return (f"{mcnemar}Fisher p {_fmt_p(c.get('p_fisher', c['p']))}, Holm p {_fmt_p(c['p_holm'])} "
                    f"({family}, family of {c['family_size']})")

        return [[f"{p} change {self.method} − base", fmt(c["difference"]), "", tests(c)]
                for p, c in self.changes.items()]

    def sentences(self) -> list[str]:
        return [c["in_words"] for c in self.changes.values()]

    def metrics(self) -> dict[str, float]:
        return {f"probe_change/{p}/p_holm": c["p_holm"] for p, c in self.changes.items() if c["p_holm"] is not None}

    def sweep_fields(self, probe: str) -> dict:
        c = self.changes.get(probe) or {}
        return {"holm_p": c.get("p_holm"), "change_significant": c.get("significant"), "family_test": c.get("test")}
