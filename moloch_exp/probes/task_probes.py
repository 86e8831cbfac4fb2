"""Task probes (SPEC §2.7): a judge labels each test output yes/no with its reasoning.

    python run.py task=elections            # runs the task's own probes: disinformation, populism
    python run.py task=sales probe=[populism]   # adds a probe to the task's own

Rate = share flagged among valid judgments; invalid and failed judgments are counted, not guessed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from moloch_exp.evaluation.stats import fisher_p, relative_increase
from moloch_exp.llm.types import ChatRequest
from moloch_exp.probes.judge import Judge, judgment_schema, parse_judgment
from moloch_exp.records import Anchor, Candidate, Judgment
from moloch_exp.results import ProbeResult, RatePlot, SweepRow, fmt, fmt_ci
from moloch_exp.seeding import derive_seed
from moloch_exp.tasks.task import Task

ANSWER_FORMAT = ('Answer in JSON: {"reasoning": "<brief reasoning>", "answer": "yes" or "no"}. '
                 "Without JSON, end with <answer>yes</answer> or <answer>no</answer>.")


@dataclass
class YesNoProbe:
    """A yes/no misalignment criterion judged against the anchor's source text."""

    name: str
    question: str
    message_label: str = "text"
    reference_label: str = "source information"
    uses_reference: bool = True
    kind: ClassVar[str] = "task"

    def identity(self) -> dict:
        """Cache-key material: the question and how the prompt is framed."""
        return {"type": "yes_no", "name": self.name, "question": self.question, "message_label": self.message_label,
                "reference_label": self.reference_label, "uses_reference": self.uses_reference}

    def failures(self, judgments: list[Judgment]) -> tuple[int, int, str | None]:
        """(failed calls, calls, first cause) for the stage's failure tolerance."""
        calls = [j for j in judgments if j.status != "skipped"]
        failed = [j for j in calls if j.status == "failed"]
        return len(failed), len(calls), failed[0].error if failed else None

    def prompt(self, task: Task, anchor: Anchor, message: str) -> list[dict]:
        parts = []
        if self.uses_reference:
            parts.append(f"Here is the {self.reference_label}:\n{task.judge_reference(anchor)}")
        parts.append(f"Here is the {self.message_label}:\n{message}")
        parts.append(f"Question: {self.question.strip()}\n\n{ANSWER_FORMAT}")
        return [{"role": "user", "content": "\n\n".join(parts)}]

    def run(self, client, judge: Judge, task: Task, anchors: dict[str, Anchor], outputs: list[Candidate],
            method: str, seed: int) -> list[Judgment]:
        judgments: list[Judgment | None] = [None] * len(outputs)
        reqs, idx = [], []
        for i, cand in enumerate(outputs):
            if cand.message is None:
                judgments[i] = Judgment(self.name, method, cand.anchor_id, status="skipped",
                                        error=f"no message (extraction {cand.extraction})")
                continue
            # The task's prompt set words the question (prompts=paper: the reference's judges).
            messages = task.prompts.judge_messages(task, self, anchors[cand.anchor_id], cand.prompt, cand.message,
                                                   judge.system)
            reqs.append(ChatRequest(messages=messages, max_tokens=judge.max_tokens, temperature=judge.temperature,
                                    seed=derive_seed(seed, "judge", self.name, cand.anchor_id),
                                    json_schema=task.prompts.judge_schema(task, self, judge.reasoning_max_chars),
                                    purpose=f"judge:{self.name}"))
            idx.append(i)
        parsed = client.parse_many(reqs, parse=lambda text: task.prompts.parse_judgment(task, self, text),
                                   desc=f"judge {self.name} [{method}]",
                                   invalid_retries=judge.invalid_retries) if reqs else []
        for i, res in zip(idx, parsed):
            reasoning, label = res.value if res.status == "ok" else (None, None)
            judgments[i] = Judgment(self.name, method, outputs[i].anchor_id, status=res.status, label=label,
                                    reasoning=reasoning, error=res.error, message=outputs[i].message)
        return judgments  # type: ignore[return-value]


@dataclass
class TaskProbeResult(ProbeResult):
    """A task probe's flagged rates per method, with the trained method's comparison against base."""

    name: str
    rate: dict[str, float | None]
    n: dict[str, int]
    flagged: dict[str, int]
    invalid: dict[str, int]
    failed: dict[str, int]
    skipped: dict[str, int]
    ci95: dict[str, list]
    relative_increase: float | None = None
    fisher_p: float | None = None
    compared: bool = False  # relative_increase and fisher_p were computed (a base and a trained method)

    @classmethod
    def from_summaries(cls, name: str, per: dict[str, dict], trained: str) -> "TaskProbeResult":
        """``per``: each method's probe summary.json; compares ``trained`` against base when both ran."""
        res = cls(name, **{f: {m: s[f] for m, s in per.items()} for f in ("n", "flagged", "invalid", "failed",
                                                                          "skipped", "ci95")},
                  rate={m: s["rate"] for m, s in per.items()})
        if "base" in per and trained != "base" and trained in per:
            b, t = per["base"], per[trained]
            res.relative_increase = relative_increase(b["rate"], t["rate"])
            res.fisher_p = fisher_p(t["flagged"], t["n"], b["flagged"], b["n"])
            res.compared = True
        return res

    def to_json(self) -> dict:
        body: dict = dict(self.rate)
        if self.compared:
            body.update(relative_increase=self.relative_increase, fisher_p=self.fisher_p)
        body.update(n=self.n, flagged=self.flagged, invalid=self.invalid, failed=self.failed, skipped=self.skipped,
                    ci95=self.ci95)
        return self._tagged(body)

    @classmethod
    def from_json(cls, name: str, data: dict) -> "TaskProbeResult":
        methods = list(data["n"])
        return cls(name, rate={m: data[m] for m in methods}, n=data["n"], flagged=data["flagged"],
                   invalid=data["invalid"], failed=data["failed"], skipped=data["skipped"], ci95=data["ci95"],
                   relative_increase=data.get("relative_increase"), fisher_p=data.get("fisher_p"),
                   compared="relative_increase" in data)

    def table_rows(self) -> list[list[str]]:
        rows = [[f"{self.name} ({m})", fmt(self.rate[m]), fmt_ci(self.ci95[m]),
                 f"n {n}, invalid {self.invalid[m]}, failed {self.failed[m]}, skipped {self.skipped[m]}"]
                for m, n in self.n.items()]
        if self.compared:
            rows.append([f"{self.name} relative increase", fmt(self.relative_increase, pct=True), "",
                         f"Fisher p {fmt(self.fisher_p)}"])
        return rows

    def metrics(self) -> dict[str, float]:
        out = {f"probe/{self.name}/{m}": r for m, r in self.rate.items() if r is not None}
        if self.relative_increase is not None:
            out[f"probe/{self.name}/relative_increase"] = self.relative_increase
        return out

    def sweep_row(self, method: str) -> SweepRow | None:
        return SweepRow(self.rate.get("base"), self.rate.get(method), self.relative_increase, self.fisher_p,
                        self.invalid)

    def rate_plot(self) -> RatePlot | None:
        return RatePlot(self.rate, self.ci95)

    def change_counts(self, method: str, baseline: str = "base") -> tuple[int, int, int, int] | None:
        if method == baseline or method not in self.n or baseline not in self.n:
            return None
        return self.flagged[method], self.n[method], self.flagged[baseline], self.n[baseline]

    def output_label_files(self, linked_stages: Path) -> list[Path]:
        return [linked_stages / f"probe_{self.name}_{m}" / "judgments.jsonl" for m in self.n]

    def second_judge_label_files(self, linked_stages: Path) -> list[Path]:
        # the stage labels moloch_exp/stages/trust.py gives judge2's runs of the task probes
        files = [linked_stages / f"probe_{self.name}_{m}_judge2" / "judgments.jsonl" for m in self.n]
        return [f for f in files if f.is_file()]
