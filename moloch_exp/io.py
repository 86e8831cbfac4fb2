"""One place for file and JSON I/O and data paths.

    write_jsonl / read_jsonl   artifacts: one dataclass record (or dict) per line
    iter_jsonl                 the same, one record at a time (large artifacts)
    write_json / read_json     summaries (written atomically)
    finite_or_none             NaN/inf → None, for numbers a library hands over (e.g. TRL's log_history)

Both writers refuse NaN and infinities (strict JSON: a NaN is no result; say None where a measure
is undefined): a ValueError names the file and the first offending field.
    load_json                  a user's data file: missing or malformed → one DataError naming it
    bundled_path               a file shipped in moloch_exp/data/
    resolve_user_path          a user-given path: absolute as is, relative against data_dir
    file_sha256                content digest of a data file (part of cache keys)
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Iterator

from moloch_exp.errors import DataError


def _non_finite(obj: Any, where: str = "") -> str | None:
    """The path of the first NaN/inf inside ``obj`` (``$.a.b[2]``), or None."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return where or "$"
    if isinstance(obj, dict):
        items: Iterable = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        found = _non_finite(v, f"{where or '$'}{f'[{k}]' if isinstance(k, int) else f'.{k}'}")
        if found:
            return found
    return None


def _dumps(obj: Any, path: Path, **kwargs) -> str:
    try:
        return json.dumps(obj, ensure_ascii=False, allow_nan=False, **kwargs)
    except ValueError as err:
        if "not JSON compliant" not in str(err):
            raise
        raise ValueError(f"{path}: refusing to write NaN or infinity at {_non_finite(obj)} (strict JSON; "
                         "an undefined measure is None)") from None


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN/inf float replaced by None (lists, tuples and dicts walked)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_or_none(v) for v in obj]
    return obj


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(_dumps(asdict(row) if hasattr(row, "__dataclass_fields__") else row, path) + "\n")
            n += 1
    return n


def read_jsonl(path: str | os.PathLike, cls: type | None = None) -> list:
    return list(iter_jsonl(path, cls))


def iter_jsonl(path: str | os.PathLike, cls: type | None = None) -> Iterator:
    """The records of a JSONL file one at a time (a large artifact without holding every record)."""
    with Path(path).open(encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{line_no}: not valid JSON ({err.msg})") from None
            yield cls(**row) if cls else row


def write_json(path: str | os.PathLike, obj: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(_dumps(obj, path, indent=2, default=str), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def load_json(path: Path) -> Any:
    """Read a JSON data file; a missing or malformed file is one DataError naming it."""
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON (line {err.lineno}: {err.msg})") from None


def bundled_path(name: str) -> Path:
    return Path(str(resources.files("moloch_exp") / "data" / name))


def resolve_user_path(file: str | os.PathLike, data_dir: str | None) -> Path:
    """A user-given data path: absolute as is, relative against ``data_dir`` (else the working directory)."""
    p = Path(os.path.expanduser(str(file)))
    return p if p.is_absolute() or not data_dir else Path(os.path.expanduser(str(data_dir))) / p


def file_sha256(path: str | os.PathLike) -> str:
    """Content digest of a file, or "" when it does not exist (pre-flight reports the missing file)."""
    path = Path(path)
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
