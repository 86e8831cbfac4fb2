"""How every response store writes a record: canonical JSON, so the same answer is the same bytes in each."""
from __future__ import annotations

import json
import re
from typing import Any

#: A response-cache key: the sha256 hex digest of moloch_exp.llm.cache.cache_key.
KEY_PATTERN = re.compile(r"^[0-9a-f]{64}$")


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, unicode kept, NaN refused."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def encode(value: dict) -> bytes:
    return canonical_json(value).encode("utf-8")


def decode(data: bytes | str) -> dict:
    return json.loads(data)


def check_key(key: str) -> str:
    """A key that is not a sha256 hex digest would escape a file store's directory layout."""
    if not isinstance(key, str) or not KEY_PATTERN.match(key):
        raise ValueError(f"response-cache key must be 64 lowercase hex characters, not {key!r:.80}")
    return key
