"""The extension points, in one place: what a new builder, trainer, probe (and its judge controls),
audience backend, tracker or response store must offer.

Every member is used by the stages (moloch_exp/stages/) or pre-flight (moloch_exp/pipeline.py);
nothing there asks ``isinstance``/``hasattr`` of a component. ``identity()`` returns the JSON-able
material of the stage-cache keys: only configured settings and data digests, never state that a
run sets later. Where to add each kind: docs/architecture.md.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Iterator, Protocol, Sequence, runtime_checkable

from moloch_exp.records import Anchor, Candidate, Judgment, Match, Vote


@runtime_checkable
class Builder(Protocol):
    """Turns a collection (candidates + votes) into training examples (TRL prompt-completion dicts)."""

    needs_collection: ClassVar[bool]  # False: the examples come from elsewhere (e.g. a user dataset)
    example_format: ClassVar[str]  # prompt_completion (SFT) | preference (DPO) | unpaired_preference (KTO): the trainer's

    def identity(self) -> dict: ...

    def includes(self) -> dict[str, "Builder"]:
        """Builders of other methods contained in this one (tfb → {"rft": ...}), comparable in the same cell."""
        ...

    def check(self) -> None:
        """Raise a DataError before any work when the builder's own inputs are unusable."""
        ...

    def build(self, candidates: list[Candidate] | None, votes: list[Vote] | None, task: Any,
              anchors: dict[str, Any] | None = None) -> tuple[list[dict], dict]:
        """Return (examples, stats); stats are counts written as build_stats.json."""
        ...

    def planned_examples(self, n_matches: int, k: int, n_voters: int) -> int:
        """Before any work (the pre-flight's checkpoint trends): the examples ``build`` gives when every one of
        ``n_matches`` matches of ``k`` options has one winner and all ``n_voters`` votes are valid."""
        ...


@runtime_checkable
class Trainer(Protocol):
    """Fine-tunes an adapter of the agent model on examples."""

    example_format: ClassVar[str]  # the examples it trains on: prompt_completion | preference | unpaired_preference

    def checkpoint_steps(self, n_examples: int) -> list[int]:
        """Before any work (the pre-flight's checkpoint trends): the steps a run on ``n_examples`` saves."""
        ...

    def identity(self) -> dict: ...

    def train(self, source: Any, cache_dir: str, examples: list[dict], output_dir: str,
              init_adapter_dir: str | None = None) -> Any:
        """Save the adapter into ``output_dir`` and return a dataclass result (steps, loss, ...);
        ``init_adapter_dir``: continue that saved adapter (later rounds of a competition)."""
        ...

    def provenance(self) -> dict | None:
        """Extra facts about the last run merged into train_metrics.json (None: none)."""
        ...


@runtime_checkable
class ControlSet(Protocol):
    """A probe's judge controls: answers with known labels that the judge labels through the probe's own
    code, so the judge's accuracy can be reported (moloch_exp/probes/controls.py; the controls stage)."""

    path: Path  # the control file; its digest is in the controls stage's key

    def selected(self, per_probe: int | None) -> list:
        """The controls a cell judges (items with an ``id``): a seeded subset of ``per_probe``, or all (None)."""
        ...

    def judge(self, client: Any, judge: Any, chosen: list, seed: int, work_dir: Path) -> list:
        """The judge's answers on ``chosen``: the rows of the controls stage's judgments.jsonl."""
        ...

    def score(self, chosen: list, rows: Sequence[dict], min_accuracy: float) -> Any:
        """The judge's accuracy (a moloch_exp.probes.controls.ControlScore) from the rows read back."""
        ...


@runtime_checkable
class TaskProbe(Protocol):
    """Judges each test output of a method (yes/no with reasoning)."""

    name: str
    kind: ClassVar[str]  # "task"

    def identity(self) -> dict: ...

    def run(self, client: Any, judge: Any, task: Any, anchors: dict[str, Anchor], outputs: list[Candidate],
            method: str, seed: int) -> list[Judgment]: ...

    def failures(self, judgments: list[Judgment]) -> tuple[int, int, str | None]:
        """(failed calls, calls, first cause): the stage stops when failed/calls > max_failed_fraction."""
        ...

    def controls(self) -> ControlSet | None:
        """The probe's judge controls (None: it has none)."""
        ...


@runtime_checkable
class ModelProbe(Protocol):
    """Samples the agent itself (EM, stance) and judges its samples; see probes/model_probe.py."""

    name: str
    kind: ClassVar[str]  # "model"
    frame: ClassVar[str | None]  # "assistant" | "predictive": an EM rate in that frame (trends: their gap); None

    def identity(self) -> dict: ...

    def run_model(self, ctx: Any) -> dict:
        """Write samples.jsonl, judgments.jsonl and summary.json into ctx.work_dir; return the summary."""
        ...

    def result(self, per_method: dict[str, dict], baseline: str = "base") -> Any:
        """The typed result (a moloch_exp.results.ProbeResult) from each method's summary."""
        ...

    def judge_calls(self, seed: int) -> int:
        """Judge calls per method (pre-flight estimate)."""
        ...

    def failures(self, rows: Sequence[dict]) -> tuple[int, int, str | None]:
        """(failed calls, calls, first cause) from the rows of judgments.jsonl."""
        ...

    def controls(self) -> ControlSet | None:
        """The probe's judge controls (None: it has none)."""
        ...


@runtime_checkable
class AudienceBackend(Protocol):
    """Votes on matches; a failed call is a Vote with status "failed", an unparseable one "invalid"."""

    service: Any  # moloch_exp.connections.LLMService (pre-flight, client)
    n_voters: int
    max_tokens: int

    def identity(self) -> dict: ...

    def voters(self, seed: int) -> list: ...

    def check(self, task: Any) -> None:
        """Raise a ConfigError before any work when this audience cannot vote on ``task`` as configured."""

    def vote(self, client: Any, task: Any, matches: list[Match], seed: int, desc: str = "votes",
             polling: Any = None) -> list[Vote]:
        """Every voter's vote on every match; ``polling`` (moloch_exp.audience.polling) may stop a match early."""


@runtime_checkable
class Tracker(Protocol):
    """Where a finished cell's results are logged too (``logger=none|wandb``: moloch_exp/report/trackers.py)."""

    def start(self, name: str, config: dict, out_dir: Path) -> None: ...

    def log_results(self, results: dict) -> None: ...

    def finish(self) -> None: ...


@runtime_checkable
class ResponseStore(Protocol):
    """Where the LLM response cache keeps its records (moloch_exp/llm/stores/; ``llm/cache_backend=...``).

    Keys are moloch_exp.llm.cache.cache_key digests, the same in every store; values are JSON objects.
    A store is picklable (a worker reopens it) and safe to use from many processes at once."""

    def get(self, key: str) -> dict | None: ...

    def put(self, key: str, value: dict) -> bool:
        """Store ``value`` unless ``key`` is present (put-if-absent); True when this write was stored."""
        ...

    def contains(self, key: str) -> bool: ...

    def __len__(self) -> int: ...

    def iterate(self) -> Iterator[tuple[str, dict]]:
        """Every (key, value), without holding the store against writers."""
        ...

    def check(self) -> None:
        """Pre-flight: raise a UserError in seconds when the store cannot be used (e.g. no server)."""
        ...

    def describe(self) -> str:
        """The store's spec string (``sqlite:PATH``, ``files:DIR``, ``redis://…``), never a password."""
        ...

    def close(self) -> None: ...


def is_model_probe(probe: TaskProbe | ModelProbe) -> bool:
    return probe.kind == "model"


__all__ = ["AudienceBackend", "Builder", "ControlSet", "ModelProbe", "ResponseStore", "TaskProbe", "Tracker", "Trainer",
           "is_model_probe"]
