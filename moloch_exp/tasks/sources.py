"""Where anchors come from: ``bundled`` sample data, the ``paper``'s split files, or the ``hub``.

    bundled  moloch_exp/data/<task>.json  ({"train": [...], "test": [...]}; hand-written samples)
    paper    <data_dir>/<paper_subdir>/{train,test}.json  (e.g. ../shared/data/molochs_bargain)
    hub      rebuilt from the public datasets with the paper's filters (needs hub access)
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from moloch_exp.errors import DataError
from moloch_exp.io import bundled_path, load_json, resolve_user_path  # noqa: F401  (re-exported)
from moloch_exp.records import Anchor

SOURCES = ("bundled", "paper", "hub")


def _load_json_list(path: Path) -> list[dict]:
    data = load_json(path)
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


#: Expected type of an anchor field (``task.field_types``): ``text`` a non-empty string; ``long_text`` the
#: same, and the field ``anchors.too_long=truncate`` may shorten; ``text_list`` a non-empty list of non-empty
#: strings, or a string (the paper's sales ``categories`` are a list, some exports hold its string repr).
FIELD_TYPES = ("text", "long_text", "text_list")


def _kind_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({value})"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, str):
        return "an empty string" if not value.strip() else "text"
    if isinstance(value, (list, tuple)):
        return "an empty list" if not value else "a list"
    return f"a JSON {type(value).__name__}"


def field_problem(value: Any, field_type: str) -> str | None:
    """Why ``value`` is not a valid ``field_type`` value (None if it is)."""
    if field_type == "text_list":
        if isinstance(value, str) and value.strip():
            return None
        if isinstance(value, (list, tuple)) and value:
            bad = [v for v in value if not (isinstance(v, str) and v.strip())]
            return None if not bad else f"a list holding {_kind_of(bad[0])}, expected non-empty strings"
        return f"{_kind_of(value)} where a list of strings belongs"
    kind = _kind_of(value)
    return None if kind == "text" else f"{kind} where text belongs"


def validate_records(records: list[Any], field_types: dict[str, str], where: str,
                     id_field: str | None = None) -> None:
    """Every record an object with each field of the expected type; ids (if any) present and unique.

    The first problem is a DataError naming file, record (index, and id if any) and field."""
    seen: dict[str, int] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{where}: record {i} is {_kind_of(rec)}, expected an object with fields "
                            f"{list(field_types)}")
        record = f"record {i}"
        if id_field:
            rid = rec.get(id_field)
            if isinstance(rid, bool) or not isinstance(rid, (str, int)) or not str(rid).strip():
                raise DataError(f"{where}: {record}, field '{id_field}' (the id): {_kind_of(rid)}, "
                                "expected a non-empty string")
            if str(rid) in seen:
                raise DataError(f"{where}: {record}, field '{id_field}': id {rid!r} repeats record {seen[str(rid)]}")
            seen[str(rid)] = i
            record += f" (id {rid!r})"
        missing = [f for f in field_types if f not in rec]
        if missing:
            raise DataError(f"{where}: {record} lacks field(s) {missing} (needs {list(field_types)})")
        for name, field_type in field_types.items():
            problem = field_problem(rec[name], field_type)
            if problem:
                raise DataError(f"{where}: {record}, field '{name}': {problem}")


def paper_split_path(data_dir: str, paper_subdir: str, split: str) -> Path:
    """<data_dir>/<paper_subdir>/<split>.json"""
    return Path(os.path.expanduser(data_dir)) / paper_subdir / f"{split}.json"


def load_split(task: str, source: str, split: str, *, data_dir: str | None, paper_subdir: str,
               hub: dict | None = None) -> tuple[list[Any], str]:
    """Return (records, description of where they came from) for one split (not yet validated)."""
    if source == "bundled":
        path = bundled_path(f"{task}.json")
        data = json.loads(path.read_text(encoding="utf-8"))
        if split not in data:
            raise DataError(f"{path}: no '{split}' split")
        records, where = data[split], f"{path}[{split}]"
    elif source == "paper":
        if not data_dir:
            raise DataError(
                "task.source=paper needs data_dir=<directory holding the paper's splits> "
                "(e.g. data_dir=../shared/data/molochs_bargain, or set MOLOCH_DATA_DIR)")
        path = paper_split_path(data_dir, paper_subdir, split)
        records, where = _load_json_list(path), str(path)
    elif source == "hub":
        from moloch_exp.tasks.hub import load_hub_split

        records, where = load_hub_split(task, split, **(hub or {})), f"hub:{task}/{split}"
    else:
        raise DataError(f"unknown task.source '{source}' (choose from {', '.join(SOURCES)})")
    return records, where


def to_anchors(records: list[dict], split: str, id_field: str | None, fields: list[str]) -> list[Anchor]:
    anchors = []
    for i, rec in enumerate(records):
        anchor_id = str(rec[id_field]) if id_field and rec.get(id_field) else f"{split}-{i:05d}"
        anchors.append(Anchor(id=anchor_id, fields={f: rec[f] for f in fields}))
    return anchors
