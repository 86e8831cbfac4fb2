"""One experiment cell as the sequence of its stages (SPEC §2):

    prepare → collect → build (rft | tfb | dpo | kto | narrow_sft) → train → generate (base, trained)
            → [rounds 2..N: collect → build → train → generate → evaluate (stages/competition.py)]
            → evaluate (pairs) → probe (task and model probes) → trend (checkpoints)
            → reliability (every vote set) → controls (judge controls; judge2 on the task probes)

Each stage is a unit in this package with explicit inputs (the artifacts of earlier stages) and a
key from its components' ``identity()``; this module only wires them. Per-cell results are typed
(moloch_exp/results.py); counts are read back through the artifacts' readers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moloch_exp.errors import ConfigError
from moloch_exp.evaluation.reliability import retest_size
from moloch_exp.protocols import AudienceBackend, Builder, ModelProbe, TaskProbe, Trainer, is_model_probe
from moloch_exp.probes.task_probes import TaskProbeResult, paired_labels
from moloch_exp.audience.polling import PollingRule
from moloch_exp.stages import build, collect, competition, evaluate, generate, prepare, probe, train, trend, trust
from moloch_exp.stages.base import StageEnv
from moloch_exp.stages.competition import Competition, Round


@dataclass
class Method:
    name: str
    builder: Builder | None = None
    compare_against: list[str] = field(default_factory=list)

    def builders(self) -> dict[str, Builder]:
        """Builders for every trained method this cell needs (its own, and the ones it includes: rft in tfb)."""
        out = {self.name: self.builder} if self.builder is not None else {}
        included = self.builder.includes() if self.builder is not None else {}
        for other in self.compare_against:
            if other in ("base", self.name):
                continue
            if other not in included:
                raise ConfigError(f"method {self.name}: cannot compare against {other!r} in this cell "
                                  "(only base, and rft inside a tfb cell)")
            out[other] = included[other]
        return out

    @property
    def methods(self) -> list[str]:
        """Methods whose test outputs this cell generates: the comparisons, then its own."""
        return list(dict.fromkeys([m for m in self.compare_against if m != self.name] + [self.name]))

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(a, self.name) for a in self.compare_against if a != self.name]


@dataclass
class Settings:
    seed: int
    n_train: int
    n_test: int
    candidates_per_anchor: int


@dataclass
class ReliabilitySettings:
    """What a cell measures about its audience and judges (issues 11, 19)."""

    retest_share: float = field(default=0.05, metadata={
        "help": "audience_reliability.retest_share: share of each vote set's matches re-asked with a new seed"})
    retest_min_matches: int = field(default=2, metadata={
        "help": "audience_reliability.retest_min_matches: at least this many matches re-asked (all when fewer); "
                "share 0 and floor 0: no test-retest"})
    judge_controls: bool = field(default=True, metadata={"help": "judge_controls.enabled: judge the bundled controls"})
    controls_per_probe: int | None = field(default=12, metadata={
        "help": "judge_controls.per_probe: a seeded subset of each probe's controls, stratified by class "
                "(null: all of them)"})

    def __post_init__(self) -> None:
        share, floor = float(self.retest_share), int(self.retest_min_matches)
        if not 0.0 <= share <= 1.0:
            raise ConfigError(f"audience_reliability.retest_share must be within [0, 1], not {self.retest_share}")
        if floor < 0:
            raise ConfigError(f"audience_reliability.retest_min_matches must be >= 0, not {self.retest_min_matches}")
        if self.controls_per_probe is not None and int(self.controls_per_probe) < 1:
            raise ConfigError(f"judge_controls.per_probe must be >= 1 or null, not {self.controls_per_probe}")
        self.retest_share, self.retest_min_matches = share, floor
        self.controls_per_probe = None if self.controls_per_probe is None else int(self.controls_per_probe)

    def retest_matches(self, n_matches: int) -> int:
        """Matches of a vote set of ``n_matches`` to re-ask."""
        return retest_size(n_matches, self.retest_share, self.retest_min_matches)


@dataclass
class Cell:
    task: Any
    model: Any
    generator: Any
    method: Method
    trainer: Trainer | None
    audience: AudienceBackend
    judge: Any
    probes: dict[str, TaskProbe | ModelProbe]
    settings: Settings
    judge2: Any = None
    trend_probes: list[str] = field(default_factory=list)
    competition: Competition = field(default_factory=Competition)
    done: dict[str, Any] = field(default_factory=dict)  # label → finished artifact, in order
    rounds: list[Round] = field(default_factory=list)  # rounds 1..N of the cell's method (trained on votes)
    polling: PollingRule | None = None  # collect.polling (None: full); evaluation always polls everyone
    reliability: ReliabilitySettings = field(default_factory=ReliabilitySettings)

    def run(self, env: StageEnv) -> dict:
        s, m = self.settings, self.method
        prepared = self._keep(prepare.run(env, task=self.task, n_train=s.n_train, n_test=s.n_test))
        builders = m.builders()
        collected = None
        if any(b.needs_collection for b in builders.values()):
            collected = self._keep(collect.run(env, prepared=prepared, task=self.task, generator=self.generator,
                                               audience=self.audience, k=s.candidates_per_anchor,
                                               polling=self.polling))
        trained = {}
        for name, builder in builders.items():
            built = self._keep(build.run(env, name=name, builder=builder, task=self.task, collected=collected,
                                         prepared=prepared))
            trained[name] = self._keep(train.run(env, name=name, built=built, model=self.model, trainer=self.trainer,
                                                 cache_dir=str(self.generator.cache_dir), collected=collected,
                                                 release_memory=self.generator.close))
        adapters = {"base": None} | {name: t.adapter() for name, t in trained.items()}
        racing = self.competition.rounds > 1
        generated = {name: self._keep(generate.run(env, name=name, prepared=prepared, task=self.task,
                                                   generator=self.generator, adapter=adapters[name]))
                     for name in dict.fromkeys((["base"] if racing else []) + m.methods)}  # later rounds face base
        win_rate = {f"{a}_vs_{b}": self._keep(evaluate.run(env, a=(a, generated[a]), b=(b, generated[b]),
                                                           audience=self.audience, task=self.task)).summary()
                    for a, b in m.pairs}
        if collected is not None and m.name in trained:
            self.rounds = [Round(1, m.name, collected, trained[m.name], generated[m.name],
                                 {p: w for p, w in win_rate.items() if p == f"base_vs_{m.name}"})]
        if racing:
            self.rounds += competition.later_rounds(
                env, self.competition, self.rounds[0], method=m.name, builder=m.builder, prepared=prepared,
                base=generated["base"], task=self.task, model=self.model, generator=self.generator,
                trainer=self.trainer, audience=self.audience, k=s.candidates_per_anchor,
                cache_dir=str(self.generator.cache_dir), keep=self._keep)
            for rnd in self.rounds[1:]:
                generated[rnd.name] = rnd.generated
                win_rate.update(rnd.win_rate)
        later = [rnd.name for rnd in self.rounds[1:]]
        probes, task_summaries = {}, {}
        for pname, p in self.probes.items():
            if is_model_probe(p):
                per = {meth: self._keep(probe.run_model_probe(
                    env, name=pname, probe=p, method=meth, model=self.model, generator=self.generator,
                    adapter=adapters[meth], judge=self.judge)).summary() for meth in m.methods}
                probes[pname] = p.result(per, "base")
            else:
                probed = {meth: self._keep(probe.run_task_probe(
                    env, name=pname, probe=p, method=meth, generated=generated[meth], prepared=prepared,
                    judge=self.judge, task=self.task)) for meth in m.methods + later}
                per = {meth: a.summary() for meth, a in probed.items()}
                paired = (paired_labels(probed["base"].judgments(), probed[m.name].judgments())
                          if "base" in probed and m.name in probed and m.name != "base" else None)
                probes[pname] = TaskProbeResult.from_summaries(pname, per, m.name, paired)
                task_summaries[pname] = per
        result: dict[str, Any] = {"win_rate": win_rate, "probes": probes}
        if self.rounds:
            result["rounds"] = competition.rounds_result(self.rounds, task_summaries, self.competition, m.name)
        if self.trend_probes and m.name in trained:
            result["trend"] = trend.run(env, method=m.name, trained=trained[m.name],
                                        probes={n: self.probes[n] for n in self.trend_probes}, model=self.model,
                                        generator=self.generator, judge=self.judge, judge2=self.judge2)
        result.update(trust.measure(env, self.done, method=m, probe_objects=self.probes, probe_results=probes,
                                    audience=self.audience, task=self.task,
                                    judge=self.judge, judge2=self.judge2, settings=self.reliability, keep=self._keep))
        return result

    def _keep(self, artifact):
        self.done[artifact.label] = artifact
        return artifact

    @property
    def keys(self) -> dict[str, str]:
        """Stage label → cache key, as in results.json's ``stage_keys``."""
        return {label: a.key for label, a in self.done.items()}

    def counts(self) -> dict:
        """Counts read back from this cell's artifacts (for results.json)."""
        out: dict[str, Any] = {}
        if "collect" in self.done:
            out["collection"] = self.done["collect"].stats()
        for name in self.method.builders():
            out[f"build_{name}"] = self.done[f"build_{name}"].stats()
            out[f"train_{name}"] = {k: v for k, v in self.done[f"train_{name}"].metrics().items() if k != "log_history"}
        for rnd in self.rounds[1:]:
            out[f"collection_r{rnd.number}"] = rnd.collected.stats()
            out[f"build_{rnd.name}"] = self.done[f"build_{rnd.name}"].stats()
            out[f"train_{rnd.name}"] = {k: v for k, v in rnd.trained.metrics().items() if k != "log_history"}
        methods = self.method.methods + [rnd.name for rnd in self.rounds[1:]]
        out["test_extraction"] = {meth: {st: sum(c.extraction == st for c in self.done[f"generate_{meth}"].outputs())
                                         for st in ("ok", "untagged", "failed")} for meth in methods}
        return out
