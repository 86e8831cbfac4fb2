"""The stages of one experiment cell and their artifacts (SPEC §2):

    prepare → collect → build (rft | tfb) → train → generate (base, trained) → evaluate → probe → report

Every stage reads the artifacts of earlier stages from disk and is keyed in the stage cache by
everything that determines its output, so a re-run skips finished stages and the rft and tfb cells
of a task share one collection. Artifacts are linked into ``<output_dir>/stages/<label>/``.
"""
from __future__ import annotations

from moloch_exp.errors import StageError

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from moloch_exp.audience.panel import AudiencePanel, Match
from moloch_exp.connections import ServiceHub
from moloch_exp.distributed import Dist
from moloch_exp.evaluation.head_to_head import matches_for, summarize
from moloch_exp.evaluation.stats import fisher_p, relative_increase, wilson
from moloch_exp.probes.judge import Judge
from moloch_exp.probes.model_probe import is_model_probe, make_context_from_generator
from moloch_exp.records import Anchor, Candidate, Vote, read_json, read_jsonl, write_json, write_jsonl
from moloch_exp.seeding import derive_seed
from moloch_exp.stage_cache import StageCache
from moloch_exp.tasks.task import Task
from moloch_exp.training.builders import TFBBuilder

log = logging.getLogger(__name__)


class ExperimentError(StageError):
    """A stage cannot go on; the message names the cause. Finished stages stay cached."""


@dataclass
class Method:
    name: str
    builder: Any = None
    compare_against: list[str] = field(default_factory=list)

    def builders(self) -> dict[str, Any]:
        """Builders for every trained method this cell needs (its own, and rft inside tfb)."""
        out = {self.name: self.builder} if self.builder is not None else {}
        for other in self.compare_against:
            if other in ("base", self.name):
                continue
            if other == "rft" and isinstance(self.builder, TFBBuilder):
                out["rft"] = self.builder.rft
            else:
                raise ExperimentError(f"method {self.name}: cannot compare against {other!r} in this cell "
                                      "(only base, and rft inside a tfb cell)")
        return out


@dataclass
class Settings:
    seed: int
    n_train: int
    n_test: int
    candidates_per_anchor: int


def _describe(obj: Any) -> Any:
    """Key material for an object: its type and public fields, recursively (services by identity)."""
    if isinstance(obj, type) or not hasattr(obj, "__dict__"):
        return obj
    names = obj.__dataclass_fields__ if hasattr(obj, "__dataclass_fields__") else vars(obj)
    return {"type": type(obj).__name__, **{k: _describe(getattr(obj, k)) for k in names if not k.startswith("_")}}


class Experiment:
    def __init__(self, *, task: Task, model, generator, method: Method, trainer, audience: AudiencePanel,
                 judge: Judge, probes: dict, settings: Settings, hub: ServiceHub, stages: StageCache,
                 dist: Dist, output_dir: Path, judge2: Judge | None = None, trend_probes: list[str] | None = None) -> None:
        self.task, self.model, self.generator, self.method = task, model, generator, method
        self.trainer, self.audience, self.judge, self.probes = trainer, audience, judge, probes
        self.s, self.hub, self.stages, self.dist, self.out = settings, hub, stages, dist, Path(output_dir)
        self.judge2: Judge | None = judge2
        self.trend_probes: list[str] = list(trend_probes or [])
        self.keys: dict[str, str] = {}

    # ------------------------------------------------------------------ helpers
    @property
    def methods(self) -> list[str]:
        ms = [m for m in self.method.compare_against if m != self.method.name] + [self.method.name]
        return list(dict.fromkeys(ms))

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(a, self.method.name) for a in self.method.compare_against if a != self.method.name]

    def _gen_identity(self) -> dict:
        g = self.generator
        return {"model": _describe(self.model), "batch_size": g.batch_size, "max_new_tokens": g.max_new_tokens,
                "temperature": g.temperature, "top_p": g.top_p}

    def _audience_identity(self) -> dict:
        a = self.audience
        return {"service": a.service.identity(), "personas": _describe(a.personas), "n_voters": a.n_voters,
                "max_tokens": a.max_tokens, "temperature": a.temperature, "thought_max_chars": a.thought_max_chars,
                "invalid_retries": a.invalid_retries, "system": a.system_template}

    def _task_identity(self) -> dict:
        t = self.task
        return {k: getattr(t, k) for k in ("name", "message_tag", "option_noun", "agent_system", "agent_user",
                                            "audience_frame", "audience_question", "feedback_request", "persona_aspect")}

    def _generate(self, prompts: list[list[dict]], seeds: list[int], adapter: str | None, desc: str) -> list[str]:
        """Generate on every rank (whole batches each), gathered in prompt order."""
        mine = self.dist.shard_batches(len(prompts), self.generator.batch_size)
        texts = self.generator.generate([prompts[i] for i in mine], [seeds[i] for i in mine],
                                        adapter_dir=adapter, desc=desc) if mine else []
        return self.dist.gather_indexed(list(zip(mine, texts)))

    def _candidates(self, anchors: list[Anchor], k: int, phase: str, adapter: str | None, desc: str) -> list[Candidate]:
        jobs = [(a, i) for a in anchors for i in range(k)]
        prompts = [self.task.agent_messages(a) for a, _ in jobs]
        seeds = [derive_seed(self.s.seed, phase, a.id, i) for a, i in jobs]
        texts = self._generate(prompts, seeds, adapter, desc)
        out = []
        for (a, i), prompt, seed, text in zip(jobs, prompts, seeds, texts):
            ex = self.task.extract(text)
            out.append(Candidate(a.id, i, prompt, text, ex.thought, ex.message, ex.status, seed))
        return out

    # ------------------------------------------------------------------ stages
    def prepare(self) -> Path:
        t = self.task
        material = {"task": t.name, "source": t.source, "data_dir": t.data_dir if t.source == "paper" else None,
                    "paper_subdir": t.paper_subdir, "hub": t.hub if t.source == "hub" else None,
                    "fields": t.anchor_fields, "n_train": self.s.n_train, "n_test": self.s.n_test}
        if t.context_fit is not None and t.context_fit.identity() is not None:  # truncated anchors differ
            material["context_fit"] = t.context_fit.identity()

        def compute(work: Path) -> None:
            if not self.dist.is_main:
                return
            info = {}
            for split, n in (("train", self.s.n_train), ("test", self.s.n_test)):
                anchors, where = t.load_anchors(split, n)
                write_jsonl(work / f"anchors_{split}.jsonl", anchors)
                info[split] = {"n": len(anchors), "from": where}
            write_json(work / "source.json", info)

        d = self.stages.run("prepare", "prepare", material, compute)
        self.keys["prepare"] = d.name
        return d

    def anchors(self, split: str) -> list[Anchor]:
        return read_jsonl(self.stages.root / "prepare" / self.keys["prepare"] / f"anchors_{split}.jsonl", Anchor)

    def collect(self) -> Path:
        material = {"prepare": self.keys["prepare"], "generator": self._gen_identity(), "task": self._task_identity(),
                    "k": self.s.candidates_per_anchor, "audience": self._audience_identity(), "seed": self.s.seed}

        def compute(work: Path) -> None:
            cands = self._candidates(self.anchors("train"), self.s.candidates_per_anchor, "collect", None,
                                     "collect: agent candidates")
            if not self.dist.is_main:
                return
            write_jsonl(work / "candidates.jsonl", cands)
            matches, too_few = [], 0
            by_anchor: dict[str, list[Candidate]] = {}
            for c in cands:
                by_anchor.setdefault(c.anchor_id, []).append(c)
            for anchor_id, cs in by_anchor.items():
                ok = [c for c in cs if c.message is not None]
                if len(ok) < 2:
                    too_few += 1
                    continue
                matches.append(Match(f"collect:{anchor_id}", anchor_id, [c.index for c in ok], [c.message for c in ok]))
            client = self.hub.open(self.audience.service)
            votes = self.audience.vote(client, self.task, matches, self.s.seed, desc="collect: audience votes")
            write_jsonl(work / "votes.jsonl", votes)
            write_json(work / "collection_stats.json", {
                "anchors": len(by_anchor), "candidates": len(cands),
                "extraction": {s: sum(c.extraction == s for c in cands) for s in ("ok", "untagged", "failed")},
                "matches": len(matches), "anchors_with_fewer_than_2_messages": too_few,
                "voters": [p.id for p in self.audience.voters(self.s.seed)],
                "votes": len(votes), "invalid_votes": sum(v.status == "invalid" for v in votes),
                "failed_votes": sum(v.status == "failed" for v in votes)})

        d = self.stages.run("collect", "collect", material, compute)
        self.keys["collect"] = d.name
        return d

    def build_and_train(self, name: str, builder) -> str:
        material = {"collect": self.keys.get("collect"), "builder": _describe(builder)}

        def build(work: Path) -> None:
            if not self.dist.is_main:
                return
            cands = votes = None
            if getattr(builder, "needs_collection", True):
                collect_dir = self.stages.root / "collect" / self.keys["collect"]
                cands = read_jsonl(collect_dir / "candidates.jsonl", Candidate)
                votes = read_jsonl(collect_dir / "votes.jsonl", Vote)
            examples, stats = builder.build(cands, votes, self.task)
            write_jsonl(work / "train_examples.jsonl", examples)
            write_json(work / "build_stats.json", stats)

        build_dir = self.stages.run("build", f"build_{name}", material, build)
        self.keys[f"build_{name}"] = build_dir.name
        tmaterial = {"build": build_dir.name, "model": _describe(self.model), "trainer": _describe(self.trainer)}

        def train(work: Path) -> None:
            examples = read_jsonl(build_dir / "train_examples.jsonl")
            if not examples:
                stats = read_json(build_dir / "build_stats.json")
                raise ExperimentError(f"{name}: no training examples from the collection ({stats}); "
                                      "more anchors or voters, or builder.tie_rule=random, would give some")
            if hasattr(self.generator, "close"):  # memory: the generator reloads (seconds) after training
                self.generator.close()
            result = self.trainer.train(self.model, self.generator.cache_dir, examples, str(work / "adapter"))
            if self.dist.is_main:
                mask = getattr(self.trainer, "mask_info", None)
                mask = {k: v for k, v in mask.items() if k not in ("parameter_order", "parameter_sizes")} if mask else None
                write_json(work / "train_metrics.json", asdict(result) | {"adapter_dir": "adapter", "mask": mask})

        train_dir = self.stages.run("train", f"train_{name}", tmaterial, train)
        self.keys[f"train_{name}"] = train_dir.name
        return str(train_dir / "adapter")

    def generate(self, name: str, adapter: str | None) -> Path:
        material = {"prepare": self.keys["prepare"], "generator": self._gen_identity(), "task": self._task_identity(),
                    "adapter": self.keys.get(f"train_{name}") if adapter else None, "seed": self.s.seed}

        def compute(work: Path) -> None:
            # Same seeds for every method: differences come from the weights, not the dice.
            outs = self._candidates(self.anchors("test"), 1, "test", adapter, f"generate: {name} test outputs")
            if self.dist.is_main:
                write_jsonl(work / "outputs.jsonl", outs)

        d = self.stages.run("generate", f"generate_{name}", material, compute)
        self.keys[f"generate_{name}"] = d.name
        return d

    def outputs(self, name: str) -> list[Candidate]:
        return read_jsonl(self.stages.root / "generate" / self.keys[f"generate_{name}"] / "outputs.jsonl", Candidate)

    def evaluate(self, a: str, b: str) -> dict:
        pair = f"{a}_vs_{b}"
        material = {"a": self.keys[f"generate_{a}"], "b": self.keys[f"generate_{b}"],
                    "audience": self._audience_identity(), "task": self._task_identity(), "seed": self.s.seed}

        def compute(work: Path) -> None:
            if not self.dist.is_main:
                return
            matches, missing = matches_for(self.outputs(a), self.outputs(b), pair)
            client = self.hub.open(self.audience.service)
            votes = self.audience.vote(client, self.task, matches, self.s.seed, desc=f"evaluate: {pair}")
            write_jsonl(work / "votes.jsonl", votes)
            write_json(work / "summary.json", summarize(votes, missing, seed=self.s.seed))

        d = self.stages.run("evaluate", f"evaluate_{pair}", material, compute)
        return read_json(d / "summary.json")

    def probe(self, probe_name: str, probe, method: str) -> dict:
        material = {"outputs": self.keys[f"generate_{method}"], "probe": _describe(probe),
                    "judge": {"service": self.judge.service.identity(), "max_tokens": self.judge.max_tokens,
                              "temperature": self.judge.temperature, "system": self.judge.system,
                              "reasoning_max_chars": self.judge.reasoning_max_chars,
                              "invalid_retries": self.judge.invalid_retries},
                    "seed": self.s.seed}

        def compute(work: Path) -> None:
            if not self.dist.is_main:
                return
            anchors = {a.id: a for a in self.anchors("test")}
            client = self.hub.open(self.judge.service)
            js = probe.run(client, self.judge, self.task, anchors, self.outputs(method), method, self.s.seed)
            write_jsonl(work / "judgments.jsonl", js)
            ok = [j for j in js if j.status == "ok"]
            flagged = sum(bool(j.label) for j in ok)
            write_json(work / "summary.json", {
                "rate": flagged / len(ok) if ok else None, "ci95": wilson(flagged, len(ok)), "flagged": flagged,
                "n": len(ok), "invalid": sum(j.status == "invalid" for j in js),
                "failed": sum(j.status == "failed" for j in js), "skipped": sum(j.status == "skipped" for j in js)})

        d = self.stages.run("probe", f"probe_{probe_name}_{method}", material, compute)
        return read_json(d / "summary.json")

    def model_probe(self, probe_name: str, probe, method: str, adapter: str | None, adapter_key: str | None = None,
                    judge: Judge | None = None, label: str | None = None) -> dict:
        """A probe that samples the agent itself (EM, stance): run on rank 0 with the method's adapter."""
        judge = judge or self.judge
        if adapter and adapter_key is None:
            adapter_key = self.keys.get(f"train_{method}")
        material = {"model": _describe(self.model), "adapter": adapter_key if adapter else None,
                    "probe": _describe(probe), "judge": judge.service.identity(),
                    "judge_settings": {"max_tokens": judge.max_tokens, "temperature": judge.temperature,
                                       "invalid_retries": judge.invalid_retries},
                    "seed": self.s.seed}

        def compute(work: Path) -> None:
            if not self.dist.is_main:
                return
            client = self.hub.open(judge.service)
            ctx = make_context_from_generator(self.generator, adapter, client, judge, method, self.s.seed, work)
            write_json(work / "summary.json", probe.run_model(ctx))

        d = self.stages.run("probe", label or f"probe_{probe_name}_{method}", material, compute)
        return read_json(d / "summary.json")

    def trends(self, method: str, adapter_dir: str, probe_names: list[str]) -> dict:
        """Model probes at step 0 (the base model) and at every saved checkpoint of ``method``."""
        ckpts = sorted(Path(adapter_dir).glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
        steps: list[tuple[int, str | None]] = [(0, None)] + [(int(p.name.split("-")[1]), str(p)) for p in ckpts]
        key = self.keys[f"train_{method}"]
        out: dict[str, Any] = {"method": method, "steps": [s for s, _ in steps], "em_rate": {}, "missing": {},
                               "first_step_em_at_least_5pct": {}, "judge_agreement": {}}
        per_step_flags: dict[str, dict[str, list]] = {}
        for name in probe_names:
            probe = self.probes[name]
            rates, missing = [], []
            for step, path in steps:
                summ = self.model_probe(name, probe, method, path, f"{key}@{step}" if path else None,
                                        label=f"trend_{name}_{method}_step{step}")
                rates.append(summ.get("em_rate"))
                missing.append(summ.get("missing"))
                if self.judge2 is not None:
                    self.model_probe(name, probe, method, path, f"{key}@{step}" if path else None, judge=self.judge2,
                                     label=f"trend_{name}_{method}_step{step}_judge2")
                    per_step_flags.setdefault(name, {})[step] = [
                        self._em_flags(f"trend_{name}_{method}_step{step}", probe),
                        self._em_flags(f"trend_{name}_{method}_step{step}_judge2", probe)]
            out["em_rate"][name] = rates
            out["missing"][name] = missing
            out["first_step_em_at_least_5pct"][name] = next(
                (s for (s, _), r in zip(steps, rates) if r is not None and r >= 0.05), None)
            if name in per_step_flags:
                agree = []
                for step, _ in steps:
                    a, b = per_step_flags[name][step]
                    both = [k for k in a if k in b and a[k] is not None and b[k] is not None]
                    agree.append(sum(a[k] == b[k] for k in both) / len(both) if both else None)
                out["judge_agreement"][name] = agree
        if {"em_first_plot", "em_predictive"} <= set(probe_names):
            out["assistant_minus_predictive"] = [
                None if a is None or p is None else a - p
                for a, p in zip(out["em_rate"]["em_first_plot"], out["em_rate"]["em_predictive"])]
        return out

    def _em_flags(self, label: str, probe) -> dict[str, bool | None]:
        """Per-response EM flags (None when a score is missing) from a probe stage's judgments."""
        flags = {}
        for j in read_jsonl(self.out / "stages" / label / "judgments.jsonl"):
            a, c = j.get("alignment"), j.get("coherence")
            flags[j["sample_id"]] = (None if a is None or c is None else
                                     bool(a < probe.alignment_threshold and c > probe.coherence_threshold))
        return flags

    # ------------------------------------------------------------------ the cell
    def run(self) -> dict:
        self.prepare()
        adapters: dict[str, str | None] = {"base": None}
        builders = self.method.builders()
        if any(getattr(b, "needs_collection", True) for b in builders.values()):
            self.collect()
        for name, builder in builders.items():
            adapters[name] = self.build_and_train(name, builder)
        for name in self.methods:
            self.generate(name, adapters[name])
        win_rate = {f"{a}_vs_{b}": self.evaluate(a, b) for a, b in self.pairs}
        probes: dict[str, dict] = {}
        for pname, probe in self.probes.items():
            if is_model_probe(probe):
                per = {m: self.model_probe(pname, probe, m, adapters[m]) for m in self.methods}
                probes[pname] = {"kind": "model", **per}
                if "base" in per and len(per) > 1:
                    probes[pname]["comparison"] = probe.compare(per, "base")
                continue
            per = {m: self.probe(pname, probe, m) for m in self.methods}
            entry: dict[str, Any] = {"kind": "task", **{m: per[m]["rate"] for m in self.methods}}
            if "base" in per and self.method.name != "base":
                b, t = per["base"], per[self.method.name]
                entry["relative_increase"] = relative_increase(b["rate"], t["rate"])
                entry["fisher_p"] = fisher_p(t["flagged"], t["n"], b["flagged"], b["n"])
            for field_name in ("n", "flagged", "invalid", "failed", "skipped", "ci95"):
                entry[field_name] = {m: per[m][field_name] for m in self.methods}
            probes[pname] = entry
        result: dict[str, Any] = {"win_rate": win_rate, "probes": probes}
        if self.trend_probes and self.method.name in builders:
            result["trend"] = self.trends(self.method.name, adapters[self.method.name], self.trend_probes)
        return result

    def counts(self) -> dict:
        """Counts read back from the artifacts of this cell (for results.json)."""
        out: dict[str, Any] = {}
        if "collect" in self.keys:
            out["collection"] = read_json(self.stages.root / "collect" / self.keys["collect"] / "collection_stats.json")
        for name in self.method.builders():
            out[f"build_{name}"] = read_json(self.stages.root / "build" / self.keys[f"build_{name}"] / "build_stats.json")
            out[f"train_{name}"] = {k: v for k, v in read_json(self.stages.root / "train" / self.keys[f"train_{name}"] / "train_metrics.json").items()
                                    if k != "log_history"}
        out["test_extraction"] = {m: {s: sum(c.extraction == s for c in self.outputs(m)) for s in ("ok", "untagged", "failed")}
                                  for m in self.methods}
        return out
