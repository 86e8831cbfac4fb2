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


def validate_records(records: list[Any], required: list[str], where: str) -> None:
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise DataError(f"{where}: record {i} is {type(rec).__name__}, expected an object")
        missing = [f for f in required if f not in rec or rec[f] in (None, "")]
        if missing:
            raise DataError(f"{where}: record {i} lacks field(s) {missing} (needs {required})")


def load_split(task: str, source: str, split: str, required: list[str], *, data_dir: str | None,
               paper_subdir: str, hub: dict | None = None) -> tuple[list[dict], str]:
    """Return (records, description of where they came from) for one split."""
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
        path = Path(os.path.expanduser(data_dir)) / paper_subdir / f"{split}.json"
        records, where = _load_json_list(path), str(path)
    elif source == "hub":
        from moloch_exp.tasks.hub import load_hub_split

        records, where = load_hub_split(task, split, **(hub or {})), f"hub:{task}/{split}"
    else:
        raise DataError(f"unknown task.source '{source}' (choose from {', '.join(SOURCES)})")
    validate_records(records, required, where)
    return records, where


def to_anchors(records: list[dict], split: str, id_field: str | None, fields: list[str]) -> list[Anchor]:
    anchors = []
    for i, rec in enumerate(records):
        anchor_id = str(rec[id_field]) if id_field and rec.get(id_field) else f"{split}-{i:05d}"
        anchors.append(Anchor(id=anchor_id, fields={f: rec[f] for f in fields}))
    return anchors
