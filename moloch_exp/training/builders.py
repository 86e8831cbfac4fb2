"""Training-data builders: RFT (winners only), TFB (winners + audience thoughts), DPO (winner/loser
pairs from the same votes). SPEC §2.3, issue 10.

    python run.py method=rft method.builder.tie_rule=random method.builder.replicate=1
    python run.py method=tfb method.builder.thought_examples=all
    python run.py method=dpo method.builder.min_margin=3 method.builder.pairing=worst

RFT/TFB examples are TRL conversational prompt-completion records, so the loss covers completions
only; DPO examples are TRL conversational preference records (prompt, chosen, rejected).
"""
from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from moloch_exp.errors import ConfigError, DataError
from moloch_exp.records import Anchor, Candidate, Vote
from moloch_exp.io import bundled_path, file_sha256, resolve_user_path

if TYPE_CHECKING:
    from moloch_exp.protocols import Builder

# reference_duplicate_previous: the reference code's get_rft bug, for exact replication only (a tie, or an
# anchor without valid votes, appends the previous anchor's winner again; docs/fidelity.md).
TIE_RULES = ("drop", "random", "all", "reference_duplicate_previous")


def tally(votes: list[Vote]) -> Counter:
    """Valid votes per candidate index (invalid and failed votes are not counted here)."""
    return Counter(v.choice for v in votes if v.status == "ok" and v.choice is not None)


@dataclass
class MatchOutcome:
    anchor_id: str
    counts: dict[int, int]
    invalid: int
    winners: list[int]  # one index, several when tied, empty when no valid vote


def outcomes(votes: list[Vote]) -> list[MatchOutcome]:
    by_anchor: dict[str, list[Vote]] = defaultdict(list)
    for v in votes:
        by_anchor[v.anchor_id].append(v)
    result = []
    for anchor_id, vs in by_anchor.items():
        counts = tally(vs)
        top = max(counts.values(), default=0)
        winners = sorted(i for i, c in counts.items() if c == top) if top > 0 else []
        result.append(MatchOutcome(anchor_id, dict(counts), sum(v.status != "ok" for v in vs), winners))
    return result


def _example(prompt: list[dict], completion: str, kind: str, anchor_id: str) -> dict:
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": completion}],
            "kind": kind, "anchor_id": anchor_id}


@dataclass
class RFTBuilder:
    """Rejection fine-tuning: the winning candidate's full completion is the target."""

    tie_rule: str = field(default="drop", metadata={
        "help": "drop | random (seeded) | all (every tied winner) | reference_duplicate_previous (the reference's bug)"})
    replicate: int = field(default=1, metadata={"help": "copies of the winner set (reference code: 3)"})
    shuffle: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tie_rule not in TIE_RULES:
            raise ValueError(f"tie_rule must be one of {TIE_RULES}, not {self.tie_rule!r}")
        if self.replicate < 1:
            raise ValueError("replicate must be >= 1")

    needs_collection: ClassVar[bool] = True
    example_format: ClassVar[str] = "prompt_completion"

    def identity(self) -> dict:
        return {"type": "rft", "tie_rule": self.tie_rule, "replicate": self.replicate, "shuffle": self.shuffle,
                "seed": self.seed}

    def includes(self) -> dict[str, "Builder"]:
        return {}

    def check(self) -> None:
        """Nothing to check before work: the examples come from the collection."""

    def planned_examples(self, n_matches: int, k: int, n_voters: int) -> int:
        """One winner a match, replicated (ties dropped give fewer; tie_rule=all on a tie gives more)."""
        return n_matches * self.replicate

    def build(self, candidates: list[Candidate], votes: list[Vote], task=None,
              anchors: dict[str, Anchor] | None = None) -> tuple[list[dict], dict]:
        by_key = {(c.anchor_id, c.index): c for c in candidates}
        rng = random.Random(self.seed)
        examples, stats = [], Counter()
        previous: dict | None = None  # the last appended winner (tie_rule=reference_duplicate_previous)
        for out in outcomes(votes):
            stats["anchors"] += 1
            stats["invalid_votes"] += out.invalid
            if self.tie_rule == "reference_duplicate_previous" and len(out.winners) != 1:
                # get_rft: diff == 0 (a tie, or no valid vote) hits `else: pass` and appends the previous entry.
                stats["ties"] += 1
                if previous is None:
                    stats["ties_without_previous"] += 1  # the reference raised UnboundLocalError here
                    continue
                stats["ties_duplicated_previous"] += 1
                examples.append(dict(previous))
                continue
            if not out.winners:
                stats["no_valid_votes"] += 1
                continue
            winners = out.winners
            if len(winners) > 1:
                stats["ties"] += 1
                if self.tie_rule == "drop":
                    stats["ties_dropped"] += 1
                    continue
                if self.tie_rule == "random":
                    winners = [rng.choice(winners)]
            for w in winners:
                cand = by_key[(out.anchor_id, w)]
                previous = _example(cand.prompt, cand.completion, "rft", out.anchor_id)
                examples.append(previous)
            stats["winners"] += len(winners)
        examples = examples * self.replicate
        if self.shuffle:
            rng.shuffle(examples)
        stats["examples"] = len(examples)
        return examples, dict(stats)


@dataclass
class TFBBuilder:
    """Text feedback: RFT examples plus voters' thoughts as targets for a feedback prompt."""

    rft: RFTBuilder = field(default_factory=RFTBuilder)
    thought_examples: str = field(default="match_rft", metadata={"help": "match_rft (subsample to the RFT size, as the reference code) | all"})
    seed: int = 0

    def __post_init__(self) -> None:
        if self.thought_examples not in ("match_rft", "all"):
            raise ValueError("thought_examples must be 'match_rft' or 'all'")

    needs_collection: ClassVar[bool] = True
    example_format: ClassVar[str] = "prompt_completion"

    def identity(self) -> dict:
        return {"type": "tfb", "rft": self.rft.identity(), "thought_examples": self.thought_examples, "seed": self.seed}

    def includes(self) -> dict[str, "Builder"]:
        """Builders of methods this one contains: a tfb cell can compare against its rft part."""
        return {"rft": self.rft}

    def check(self) -> None:
        """Nothing to check before work: the examples come from the collection."""

    def planned_examples(self, n_matches: int, k: int, n_voters: int) -> int:
        """RFT's examples and one thought a vote (match_rft: subsampled to RFT's count)."""
        rft, thoughts = self.rft.planned_examples(n_matches, k, n_voters), n_matches * n_voters
        return rft + (min(rft, thoughts) if self.thought_examples == "match_rft" else thoughts)

    def build(self, candidates: list[Candidate], votes: list[Vote], task,
              anchors: dict[str, Anchor] | None = None) -> tuple[list[dict], dict]:
        """``anchors`` (by id) are needed by prompt sets whose feedback prompt shows the anchor (paper)."""
        rft_examples, stats = self.rft.build(candidates, votes, task)
        by_key = {(c.anchor_id, c.index): c for c in candidates}
        thoughts = []
        for v in votes:
            if v.status != "ok" or not v.thought or not v.thought.strip():
                continue
            # The options in the order this voter saw them, so the thought's "A"/"B" match the prompt.
            shown = [by_key[(v.anchor_id, i)].message for i in v.order]
            prompt = task.prompts.tfb_messages(task, (anchors or {}).get(v.anchor_id), shown)
            thoughts.append(_example(prompt, task.prompts.tfb_target(v.thought), "thought", v.anchor_id))
        rng = random.Random(self.seed)
        stats["thoughts_available"] = len(thoughts)
        if self.thought_examples == "match_rft" and len(thoughts) > len(rft_examples):
            thoughts = rng.sample(thoughts, len(rft_examples))
        examples = rft_examples + thoughts
        rng.shuffle(examples)
        stats.update(thought_examples=len(thoughts), examples=len(examples))
        return examples, stats


@dataclass
class NarrowSFTBuilder:
    """Positive control: SFT on a user-supplied narrow chat dataset (e.g. insecure code).

    Each JSONL line is ``{"messages": [..., {"role": "assistant", "content": ...}]}``; the last
    assistant message is the target, everything before it the prompt. No audience is involved.
    """

    data_file: str | None = field(default=None, metadata={"help": "chat JSONL (None: the bundled insecure-code sample); relative paths resolve against data_dir"})
    data_dir: str | None = None
    data_sha256: str = field(default="", init=False)
    needs_collection: ClassVar[bool] = False
    example_format: ClassVar[str] = "prompt_completion"

    def __post_init__(self) -> None:
        self.data_sha256 = file_sha256(self.path)

    def identity(self) -> dict:
        return {"type": "narrow_sft", "file": self.path.name, "data_sha256": self.data_sha256}

    def includes(self) -> dict[str, "Builder"]:
        return {}

    def check(self) -> None:
        """A user-supplied dataset is checked before any work."""
        self.load()

    @property
    def path(self) -> Path:
        if not self.data_file:
            return bundled_path("narrow_sft_sample.jsonl")
        return resolve_user_path(self.data_file, self.data_dir)

    def load(self) -> list[dict]:
        if not self.path.is_file():
            raise DataError(f"method.builder.data_file: narrow SFT data not found: {self.path}")
        examples = []
        for line_no, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                msgs = json.loads(line)["messages"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DataError(f"{self.path}:{line_no}: expected a JSON object with a 'messages' list") from None
            if (not isinstance(msgs, list) or len(msgs) < 2 or not isinstance(msgs[-1], dict)
                    or msgs[-1].get("role") != "assistant" or not all(isinstance(m, dict) and "content" in m for m in msgs)):
                raise DataError(f"{self.path}:{line_no}: messages must end with an assistant message")
            examples.append({"prompt": msgs[:-1], "completion": [msgs[-1]], "kind": "narrow", "anchor_id": f"line-{line_no}"})
        if not examples:
            raise DataError(f"{self.path}: no examples")
        return examples

    def planned_examples(self, n_matches: int, k: int, n_voters: int) -> int:
        """The dataset's examples (no collection)."""
        return len(self.load())

    def build(self, candidates=None, votes=None, task=None, anchors=None) -> tuple[list[dict], dict]:
        examples = self.load()
        return examples, {"examples": len(examples), "file": str(self.path)}
