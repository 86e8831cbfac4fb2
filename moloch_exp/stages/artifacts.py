"""Every artifact of one cell, by what it is: the typed record the cell's stages fill (stages/plan.py) and
its results and counts read (stages/cell.py, stages/trust.py), and the pre-flight estimate iterates
(planned artifacts: keys, no files). Agents are named base, the methods (rft, tfb, ...) and the later
rounds of a race (rft_r2, ...: stages/competition.agent_name).

    done.generated["rft"].outputs()              done.evaluated[("base", "rft")].summary()
    done.task_probed[("populism", "tfb")]        done.controlled[("judge2", "populism")]
    done.keys                                    # label -> key, as results.json's stage_keys
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from moloch_exp.stages.base import Artifact
from moloch_exp.stages.build import Built
from moloch_exp.stages.collect import Collected
from moloch_exp.stages.controls import Controlled
from moloch_exp.stages.evaluate import Evaluated
from moloch_exp.stages.generate import Generated
from moloch_exp.stages.prepare import Prepared
from moloch_exp.stages.probe import ModelProbed, TaskProbed
from moloch_exp.stages.reliability import Reliable
from moloch_exp.stages.train import Trained

A = TypeVar("A", bound=Artifact)


@dataclass
class Round:
    """One round of collect → build → train → generate of the cell's method (round 1: the cell's own stages)."""

    number: int
    name: str  # the round's agent: rft, rft_r2, ...
    collected: Collected
    options: int  # candidates per match in its collection (K; 2 against the previous agent)
    trained: Trained
    generated: Generated


@dataclass(frozen=True)
class TrendPoint:
    """A model probe on one checkpoint of the trained method (step 0: the base model)."""

    step: int
    probed: ModelProbed  # by the judge
    second: ModelProbed | None = None  # by judge2


@dataclass
class CellArtifacts:
    prepared: Prepared | None = None
    collected: Collected | None = None  # round 1's collection (None: no method trains on votes)
    built: dict[str, Built] = field(default_factory=dict)  # method or later round's agent → its build
    trained: dict[str, Trained] = field(default_factory=dict)  # the same names → its adapter
    generated: dict[str, Generated] = field(default_factory=dict)  # agent → its test outputs
    evaluated: dict[tuple[str, str], Evaluated] = field(default_factory=dict)  # (a, b) → b against a
    rounds: list[Round] = field(default_factory=list)  # rounds 1..N of a method trained on votes
    task_probed: dict[tuple[str, str], TaskProbed] = field(default_factory=dict)  # (probe, agent)
    model_probed: dict[tuple[str, str], ModelProbed] = field(default_factory=dict)  # (probe, method)
    trend: dict[str, list[TrendPoint]] = field(default_factory=dict)  # model probe → its checkpoints in step order
    collection_reliability: Reliable | None = None  # the audience on round 1's collection
    pair_reliability: dict[tuple[str, str], Reliable] = field(default_factory=dict)  # on each pair's votes
    controlled: dict[tuple[str, str], Controlled] = field(default_factory=dict)  # (judge role, probe)
    second_judged: dict[tuple[str, str], TaskProbed] = field(default_factory=dict)  # judge2 on (probe, method)
    in_order: list[Artifact] = field(default_factory=list)  # every artifact, in the order its stage ran

    def keep(self, artifact: A) -> A:
        self.in_order.append(artifact)
        return artifact

    @property
    def keys(self) -> dict[str, str]:
        """Stage label → cache key, in the order the stages ran (results.json's ``stage_keys``)."""
        return {a.label: a.key for a in self.in_order}

    @property
    def later_rounds(self) -> list[Round]:
        return self.rounds[1:]
