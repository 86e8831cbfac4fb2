"""economic_stance (SPEC §3): sentence stems on climate, immigration and guns (stance/data.py) continued by
the agent without a chat template (a model probe: it samples the agent itself); each continuation is
classified progressive / conservative / neutral by an LLM classifier (the judge, structured output, an
enum: stance/prompts.py) and by the keyword classifier (stance/keywords.py), reported side by side
(stance/stats.py).

    python run.py probe=[economic_stance]
    python run.py probe=[economic_stance] probes.economic_stance.keyword_scope=all   # read whole continuations
    python run.py -m task=sales,elections method=rft,tfb probe=[em_first_plot,em_predictive,economic_stance]
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import ClassVar, Sequence

from moloch_exp.io import file_sha256, write_json, write_jsonl
from moloch_exp.llm.structured import parse_json_answer
from moloch_exp.llm.types import PARSED_FAILED, PARSED_OK, ChatRequest, Parsed
from moloch_exp.probes.data_files import resolve_data_file
from moloch_exp.probes.model_probe import ModelProbeContext
from moloch_exp.probes.stance.data import load_stems
from moloch_exp.probes.stance.keywords import classify_stance
from moloch_exp.probes.stance.prompts import STANCE_DESCRIPTIONS, STANCE_PROMPT, STANCE_SCHEMA
from moloch_exp.probes.stance.results import StanceProbeResult
from moloch_exp.probes.stance.stats import stance_compare, summarize_stance
from moloch_exp.seeding import derive_seed

log = logging.getLogger(__name__)


@dataclass
class EconomicStanceProbe:
    """Sentence stems continued without a chat template; stance by an LLM and a keyword classifier."""

    name: str = "economic_stance"
    kind: ClassVar[str] = "model"
    frame: ClassVar[str | None] = None  # not an EM rate
    stems_file: str | None = None
    data_dir: str | None = None
    n_samples: int = 50
    temperature: float = 0.3
    max_new_tokens: int = 64
    classifier_max_tokens: int = 32
    keyword_scope: str = "first_sentence"  # first_sentence | all (see moloch_exp.probes.stance.keywords)
    llm_classifier: bool = True
    max_stems: int | None = None
    data_sha256: str = field(init=False, default="")

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"{self.name}: n_samples must be >= 1")
        if self.keyword_scope not in ("first_sentence", "all"):
            raise ValueError(f"{self.name}: keyword_scope must be 'first_sentence' or 'all'")
        self.data_path = resolve_data_file(self.stems_file, self.data_dir, "economic_stems.jsonl")
        self.stems = load_stems(self.data_path)
        self.data_sha256 = file_sha256(self.data_path)

    def samples(self, seed: int) -> list[dict]:
        return [{"sample_id": f"{s.id}|{k}", "stem_id": s.id, "category": s.category, "stem": s.prompt, "sample": k,
                 "seed": derive_seed(seed, self.name, s.id, k)}
                for s in self.stems[: self.max_stems] for k in range(self.n_samples)]

    def identity(self) -> dict:
        """Cache-key material: the configured fields with the data files' digests; data_dir is where they lie,
        not what they hold, and stays out (null)."""
        return {"type": type(self).__name__, **asdict(self), "data_dir": None}

    def result(self, per_method: dict[str, dict], baseline: str = "base") -> StanceProbeResult:
        """The typed result of a cell: summaries per method, compared against ``baseline`` when it ran."""
        comparison = self.compare(per_method, baseline) if baseline in per_method and len(per_method) > 1 else None
        return StanceProbeResult(self.name, per_method, comparison)

    def judge_calls(self, seed: int) -> int:
        """Classifier calls per method: one per sample when the LLM classifier is on."""
        return len(self.samples(seed)) if self.llm_classifier else 0

    def controls(self) -> None:
        """No judge controls."""
        return None

    @staticmethod
    def failures(rows: Sequence[dict]) -> tuple[int, int, str | None]:
        """(failed classifier calls, classifier calls, first cause) from this probe's judgments."""
        calls = [r for r in rows if r["llm_status"] is not None]
        failed = [r["llm_error"] for r in calls if r["llm_status"] == PARSED_FAILED]
        return len(failed), len(calls), failed[0] if failed else None

    def _classifier_request(self, ctx: ModelProbeContext, s: dict) -> ChatRequest:
        prog, cons = STANCE_DESCRIPTIONS.get(s["category"], ("a progressive reading", "a conservative reading"))
        content = STANCE_PROMPT.format(category=s["category"], stem=s["stem"], continuation=s["completion"].strip(),
                                       progressive=prog, conservative=cons)
        return ChatRequest(messages=[{"role": "user", "content": content}], max_tokens=int(self.classifier_max_tokens),
                           temperature=ctx.judge.temperature, seed=derive_seed(ctx.seed, self.name, "classify", s["sample_id"]),
                           json_schema=STANCE_SCHEMA, purpose=f"judge:{self.name}")

    def run_model(self, ctx: ModelProbeContext) -> dict:
        samples = self.samples(ctx.seed)
        completions = ctx.generate_raw([s["stem"] for s in samples], [s["seed"] for s in samples],
                                       max_new_tokens=int(self.max_new_tokens), temperature=float(self.temperature),
                                       desc=f"{self.name} [{ctx.method}]")
        for s, c in zip(samples, completions):
            s["completion"] = c
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        write_jsonl(ctx.work_dir / "samples.jsonl", [{"method": ctx.method, **s} for s in samples])
        stems = {st.id: st for st in self.stems}
        parsed: list[Parsed | None] = [None] * len(samples)
        if self.llm_classifier and samples:
            parsed = ctx.judge_client.parse_many(
                [self._classifier_request(ctx, s) for s in samples],
                parse=lambda text: parse_json_answer(text, STANCE_SCHEMA)["stance"],
                desc=f"classify {self.name} [{ctx.method}]", invalid_retries=ctx.judge.invalid_retries)
        rows = []
        for s, res in zip(samples, parsed):
            kw = classify_stance(s["stem"], s["completion"], s["category"], scope=self.keyword_scope,
                                 extra=stems[s["stem_id"]].keywords)
            rows.append({k: v for k, v in s.items() if k not in ("stem", "completion")} | {
                "keyword_stance": kw.label, "keyword_hits": kw.to_dict()["hits"],
                "llm_stance": res.value if res is not None and res.status == PARSED_OK else None,
                "llm_status": None if res is None else res.status,
                "llm_raw": None if res is None else res.raw, "llm_error": None if res is None else res.error})
        write_jsonl(ctx.work_dir / "judgments.jsonl", rows)
        summary = summarize_stance(rows)
        summary.update({"probe": self.name, "method": ctx.method, "seed": ctx.seed, "settings": {
            "n_samples": self.n_samples, "temperature": self.temperature, "max_new_tokens": self.max_new_tokens,
            "keyword_scope": self.keyword_scope, "llm_classifier": self.llm_classifier,
            "stems_file": str(self.data_path), "data_sha256": self.data_sha256,
            "n_stems": len(self.stems[: self.max_stems])}})
        if summary["llm"]["missing"] and self.llm_classifier:
            log.warning("%s [%s]: %d of %d LLM classifications missing (counted, not guessed)", self.name,
                        ctx.method, summary["llm"]["missing"], summary["n_completions"])
        write_json(ctx.work_dir / "summary.json", summary)
        return summary

    def compare(self, per_method: dict[str, dict], baseline: str = "base") -> dict:
        """Each method against ``baseline``: chi-square over the stances, Fisher per stance (stance/stats.py)."""
        return stance_compare(per_method, baseline)

