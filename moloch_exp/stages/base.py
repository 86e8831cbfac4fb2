"""What every stage unit shares: the environment it runs in, its finished artifact, the failure rule.

A stage unit is a module with ``material(...)`` (the key material, from the components'
``identity()`` and the keys of the input artifacts) and ``run(env, ...)`` (inputs are explicit
arguments, the output is an :class:`Artifact` subclass with readers for its files).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from moloch_exp.distributed import Dist
from moloch_exp.errors import ConfigError, StageError
from moloch_exp.stage_cache import StageCache, digest

#: Where a planned stage's artifacts would be: a directory named by the stage's key that is never written.
PLANNED = Path("/moloch-planned-stage-not-run")


@dataclass
class FailureTolerance:
    """Largest share of failed LLM calls (transport errors, timeouts past the retries, a dead server)
    a stage may finish with; above it the stage stops and is not cached as finished."""

    collect: float = field(default=0.0, metadata={"help": "collect.max_failed_fraction: failed audience votes"})
    evaluate: float = field(default=0.0, metadata={"help": "evaluate.max_failed_fraction: failed audience votes"})
    probe: float = field(default=0.0, metadata={"help": "probe.max_failed_fraction: failed judge calls"})

    def __post_init__(self) -> None:
        for name in ("collect", "evaluate", "probe"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}.max_failed_fraction must be within [0, 1], not {value}")
            setattr(self, name, value)


class PlannedStages:
    """Stands in for the StageCache when a cell is planned (stages/plan.py): each stage unit computes its
    key from its ``material(...)`` as in a run and gets back a directory named by that key, in which
    nothing is computed, written or read."""

    def run(self, stage: str, label: str, material: dict, compute: Callable[[Path], None]) -> Path:
        return PLANNED / stage / digest(material)


@dataclass
class StageEnv:
    """Where stages run: the stage cache, the ranks, the LLM services, the seed, the failure tolerance."""

    stages: StageCache | PlannedStages
    dist: Dist
    hub: Any  # moloch_exp.connections.ServiceHub (None for stages without LLM calls)
    seed: int
    tolerance: FailureTolerance = field(default_factory=FailureTolerance)

    @property
    def planning(self) -> bool:
        """Stages are only keyed (the cell's plan), not run: no artifact has files to read."""
        return isinstance(self.stages, PlannedStages)


@dataclass(frozen=True)
class Artifact:
    """A finished stage in the stage cache: ``dir`` holds its files, ``key`` names it."""

    stage: str
    label: str
    dir: Path

    @property
    def key(self) -> str:
        return self.dir.name


@dataclass(frozen=True)
class Adapter:
    """A trained adapter (or one of its checkpoints): where it is and the key that names it."""

    path: str
    key: str


def check_failures(stage: str, label: str, failed: int, total: int, first_cause: str | None, max_fraction: float) -> None:
    """Stop the stage (before it is stored as finished) when too many LLM calls failed.

    The successes are already in the LLM response cache, so a re-run makes only the failed calls.
    """
    if total and failed / total > max_fraction:
        raise StageError(f"{label}: {failed} of {total} LLM calls failed ({stage}.max_failed_fraction={max_fraction:g}); "
                         f"first cause: {first_cause}. Nothing was stored as finished; a re-run repeats only the "
                         "failed calls")
