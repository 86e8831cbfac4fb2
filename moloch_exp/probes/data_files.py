"""The data files of the model probes (EM questions and frames, stance stems): where a configured file is
(bundled under moloch_exp/data/em/, or the user's, relative to ``data_dir``) and the checks every loader
makes, so bad input is one ``ProbeDataError`` line naming the file, the record and the field.

    python run.py probe=[em_first_plot] probes.em_first_plot.questions_file=../team_shard/first_plot_questions.json \
        data_dir=../shared/data/molochs_bargain

The loaders themselves sit with their probes: moloch_exp/probes/em/data.py (questions, frames) and
moloch_exp/probes/stance/data.py (stems).
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from moloch_exp.errors import DataError
from moloch_exp.io import resolve_user_path

BUNDLED_DIR = Path(__file__).resolve().parents[1] / "data" / "em"


class ProbeDataError(DataError):
    """A probe data file is missing or malformed (the message names the file and the record)."""


def resolve_data_file(file: str | None, data_dir: str | None, default_name: str) -> Path:
    """``None`` → the bundled file; an absolute path as is; a relative path against ``data_dir``
    (or the working directory when ``data_dir`` is unset)."""
    if file is None:
        path = BUNDLED_DIR / default_name
    else:
        path = resolve_user_path(file, data_dir)
    if not path.is_file():
        where = f" (relative to data_dir={data_dir})" if file is not None and data_dir is not None and not Path(str(file)).is_absolute() else ""
        raise ProbeDataError(f"probe data file not found: {path}{where}")
    return path


def load_json_list(path: Path) -> list:
    """A non-empty JSON list of records."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ProbeDataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, list) or not data:
        raise ProbeDataError(f"{path}: expected a non-empty JSON list of records")
    return data


def require_str(path: Path, i: int, rec: Any, key: str, optional: bool = False) -> str | None:
    """Record ``i``'s non-empty string field ``key`` (None when ``optional`` and absent)."""
    if not isinstance(rec, dict):
        raise ProbeDataError(f"{path}: record {i} is not an object")
    v = rec.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v.strip():
        raise ProbeDataError(f"{path}: record {i} lacks a non-empty string field {key!r}")
    return v


def require_unique_ids(path: Path, ids: list[str]) -> None:
    dup = [k for k, c in Counter(ids).items() if c > 1]
    if dup:
        raise ProbeDataError(f"{path}: duplicate ids {dup}")
