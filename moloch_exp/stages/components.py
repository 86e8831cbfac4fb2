"""What one cell is made of: the components ``pipeline.build(cfg)`` instantiates at the edge (typed; a
``typing.Protocol`` of moloch_exp/protocols.py where a component is an extension point) and the cell's
settings. Nothing below the pipeline sees a DictConfig.

    components = pipeline.build(cfg)        # CellComponents
    components.method.builders()            # tfb: {"tfb": TFBBuilder, "rft": RFTBuilder}
    plan_cell(components, settings)         # the cell's stages and their keys (stages/plan.py)
"""
from __future__ import annotations

from dataclasses import dataclass, field

from moloch_exp.agents.hf_generator import HFGenerator
from moloch_exp.agents.model_source import ModelSource
from moloch_exp.audience.polling import PollingRule
from moloch_exp.errors import ConfigError
from moloch_exp.evaluation.reliability import retest_size
from moloch_exp.probes.judge import Judge
from moloch_exp.protocols import AudienceBackend, Builder, ModelProbe, TaskProbe, Tracker, Trainer
from moloch_exp.stages.competition import Competition
from moloch_exp.tasks.task import Task


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


@dataclass(frozen=True)
class CellComponents:
    """Every configured object of one cell (conf/<group>/<option>.yaml, instantiated by pipeline.build)."""

    task: Task
    model: ModelSource
    generator: HFGenerator
    method: Method
    trainer: Trainer | None  # None: the method trains nothing (base)
    audience: AudienceBackend
    judge: Judge
    judge2: Judge | None  # judge@judge2=...: the task probes judged again, controls for it too
    probes: dict[str, TaskProbe | ModelProbe]  # the task's own probes and probe=[...]
    tracker: Tracker
    competition: Competition
    polling: PollingRule  # collect.polling; evaluation always polls every voter
    reliability: ReliabilitySettings

    def judges(self) -> dict[str, Judge]:
        """The cell's judges by role: judge, and judge2 when there is one."""
        return {"judge": self.judge} | ({"judge2": self.judge2} if self.judge2 is not None else {})
