"""One experiment cell (SPEC §2): its stages run in the order of its plan (stages/plan.py), then its
results are read from the typed record of its artifacts (stages/artifacts.py):

    prepare → collect → build (rft | tfb | dpo | kto | narrow_sft) → train → generate (base, trained)
            → [rounds 2..N: collect → build → train → generate → evaluate (stages/competition.py)]
            → evaluate (pairs) → probe (task and model probes) → trend (checkpoints)
            → reliability (every vote set) → controls (judge controls; judge2 on the task probes)

    cell = Cell(components, settings)          # pipeline.build(cfg), pipeline.settings_of(cfg)
    metrics = cell.run(env)                    # win rates, probes, rounds, trend, reliability, probe changes
    cell.counts(), cell.keys                   # results.json's counts and stage_keys

Per-cell results are typed (moloch_exp/results.py); counts are read back through the artifacts' readers.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from moloch_exp.probes.task_probes import TaskProbeResult, paired_labels
from moloch_exp.protocols import is_model_probe
from moloch_exp.stages import competition, trend, trust
from moloch_exp.stages.artifacts import CellArtifacts
from moloch_exp.stages.base import StageEnv
from moloch_exp.stages.components import CellComponents, Settings
from moloch_exp.stages.plan import run_stages


@dataclass
class Cell:
    components: CellComponents
    settings: Settings
    trend_probes: list[str] = field(default_factory=list)  # model probes run on every checkpoint
    done: CellArtifacts = field(default_factory=CellArtifacts)  # filled by run()

    def run(self, env: StageEnv) -> dict:
        self.done = run_stages(env, self.components, self.settings, self.trend_probes)
        return self.results()

    def results(self) -> dict:
        """Win rates, probe results, the rounds of a race, the trend, reliability and the probe changes."""
        c, m, done = self.components, self.components.method, self.done
        win_rate = {f"{a}_vs_{b}": e.summary() for (a, b), e in done.evaluated.items()}  # pairs, then rounds'
        later = [rnd.name for rnd in done.later_rounds]
        probes, task_summaries = {}, {}
        for pname, p in c.probes.items():
            if is_model_probe(p):
                probes[pname] = p.result({meth: done.model_probed[(pname, meth)].summary() for meth in m.methods},
                                         "base")
                continue
            probed = {meth: done.task_probed[(pname, meth)] for meth in m.methods + later}
            per = {meth: a.summary() for meth, a in probed.items()}
            paired = (paired_labels(probed["base"].judgments(), probed[m.name].judgments())
                      if "base" in probed and m.name in probed and m.name != "base" else None)
            probes[pname] = TaskProbeResult.from_summaries(pname, per, m.name, paired)
            task_summaries[pname] = per
        result: dict[str, Any] = {"win_rate": win_rate, "probes": probes}
        if done.rounds:
            result["rounds"] = competition.rounds_result(done.rounds, win_rate, task_summaries, c.competition, m.name)
        if done.trend:
            result["trend"] = trend.result(m.name, done.trend, c.probes)
        result.update(trust.measure(c, done, probes))
        return result

    @property
    def keys(self) -> dict[str, str]:
        """Stage label → cache key, as in results.json's ``stage_keys``."""
        return self.done.keys

    def counts(self) -> dict:
        """Counts read back from this cell's artifacts (for results.json)."""
        done, out = self.done, {}
        if done.collected is not None:
            out["collection"] = done.collected.stats()
        for name in self.components.method.builders():
            out[f"build_{name}"] = done.built[name].stats()
            out[f"train_{name}"] = {k: v for k, v in done.trained[name].metrics().items() if k != "log_history"}
        for rnd in done.later_rounds:
            out[f"collection_r{rnd.number}"] = rnd.collected.stats()
            out[f"build_{rnd.name}"] = done.built[rnd.name].stats()
            out[f"train_{rnd.name}"] = {k: v for k, v in rnd.trained.metrics().items() if k != "log_history"}
        methods = self.components.method.methods + [rnd.name for rnd in done.later_rounds]
        out["test_extraction"] = {meth: {st: sum(c.extraction == st for c in done.generated[meth].outputs())
                                         for st in ("ok", "untagged", "failed")} for meth in methods}
        return out
