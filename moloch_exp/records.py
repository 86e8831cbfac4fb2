"""Plain records that flow between stages and are written as JSONL artifacts.

Each stage reads the artifacts of earlier stages through these helpers, never their in-memory
state, so any stage can be resumed or re-run alone.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable


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


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(asdict(row) if hasattr(row, "__dataclass_fields__") else row, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike, cls: type | None = None) -> list:
    rows = []
    with Path(path).open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
            rows.append(cls(**row) if cls else row)
    return rows


def write_json(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))

