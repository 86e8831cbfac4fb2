"""Plain records that flow between stages and are written as JSONL artifacts.

Each stage reads the artifacts of earlier stages (through moloch_exp.io), never their in-memory
state, so any stage can be resumed or re-run alone.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moloch_exp.io import read_json, read_jsonl, write_json, write_jsonl  # noqa: F401  (re-exported)


@dataclass
class Anchor:
    """One task input (a product, a candidate, a news article)."""

    id: str
    fields: dict[str, Any]


@dataclass
class Candidate:
    """One agent output for an anchor: the raw completion and what extraction made of it."""

    anchor_id: str
    index: int
    prompt: list[dict]
    completion: str
    thought: str | None
    message: str | None
    extraction: str  # ok | untagged | failed (see tasks/extraction.py)
    seed: int


@dataclass
class Vote:
    """One voter's ballot in one match. `choice` is a candidate index, None unless status == ok."""

    match_id: str
    anchor_id: str
    voter: str
    order: list[int]  # order[i] = candidate index shown under label i (A, B, ...)
    seed: int
    status: str  # ok | invalid | failed
    thought: str | None = None
    choice: int | None = None
    raw: str | None = None
    error: str | None = None
    attempts: int = 1


@dataclass
class Judgment:
    """A judge's yes/no label for one output under one probe."""

    probe: str
    method: str
    anchor_id: str
    status: str  # ok | invalid | failed | skipped (no message to judge)
    label: bool | None = None
    reasoning: str | None = None
    error: str | None = None
    message: str | None = None


@dataclass
class Match:
    """Options to vote on: the messages of candidates ``indices`` for one anchor."""

    match_id: str
    anchor_id: str
    indices: list[int]
    messages: list[str]
