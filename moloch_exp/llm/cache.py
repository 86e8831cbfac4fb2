"""The LLM response cache: content-addressed, shared by all jobs of a sweep, on a choice of stores.

    python run.py                                         # llm/cache_backend=sqlite: <cache_dir>/llm_cache.sqlite
    python run.py llm/cache_backend=files llm.cache_backend.root=/shared/responses   # network filesystem
    python run.py llm/cache_backend=redis llm.cache_backend.host=cachehost           # a Redis server
    python -m moloch_exp.llm.cache_copy --from sqlite:.cache/moloch_exp/llm_cache.sqlite --to files:/shared/responses

Only successful responses are stored. The key is the sha256 of the canonical JSON of
everything that changes the answer (see :func:`cache_key`); where the server lives and
which API key reached it are deliberately not part of it, and it is the same in every store.
A key keeps the first answer stored (put-if-absent): two jobs that make the same call at once
both get an answer, and every later read of that key returns the one that was stored first.
The stores (moloch_exp/llm/stores/) and what each is for: see their module docstrings.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Iterator

from .stores.codec import canonical_json
from .stores.sqlite import SqliteStore
from .types import ChatRequest

__all__ = ["ResponseCache", "cache_key", "canonical_json"]


def cache_key(model_identity: str, req: ChatRequest, structured_output: str | None = None) -> str:
    """sha256 over the answer-determining fields of ``req`` for model ``model_identity``.

    ``structured_output`` (the client's mode) only enters when a schema is requested,
    because the same schema is enforced differently (or not at all) per mode.
    """
    payload: dict[str, Any] = {
        "v": 1,
        "model": model_identity,
        "messages": [[r, c] for r, c in req.messages],
        "max_tokens": req.max_tokens,
        "temperature": float(req.temperature),
        "top_p": None if req.top_p is None else float(req.top_p),
        "seed": req.seed,
        "json_schema": req.json_schema,
        "top_logprobs": req.top_logprobs,
    }
    if req.json_schema is not None and structured_output is not None:
        payload["structured_output"] = structured_output
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


class ResponseCache:
    """``get(key) -> dict | None`` and ``put(key, value: dict)`` over one response store (default: SQLite).

    ``ResponseCache(path)`` opens the SQLite file at ``path``; ``ResponseCache(store)`` wraps any
    ``ResponseStore`` (moloch_exp/protocols.py). Picklable: a worker process reopens the same store.
    """

    def __init__(self, store: Any, busy_timeout_ms: int = 60_000) -> None:
        if isinstance(store, (str, os.PathLike)):
            store = SqliteStore(store, busy_timeout_ms)
        self.store = store

    def __repr__(self) -> str:
        return f"ResponseCache({self.store.describe()})"

    def get(self, key: str) -> dict | None:
        return self.store.get(key)

    def put(self, key: str, value: dict) -> bool:
        """Store ``value`` unless ``key`` already holds an answer; True when this write was the one stored."""
        return self.store.put(key, value)

    def __contains__(self, key: str) -> bool:
        return self.store.contains(key)

    def __len__(self) -> int:
        return len(self.store)

    def items(self) -> Iterator[tuple[str, dict]]:
        return self.store.iterate()

    def close(self) -> None:
        self.store.close()

    def __getstate__(self) -> dict:  # picklable for joblib / multiprocessing workers
        return {"store": self.store}

    def __setstate__(self, state: dict) -> None:
        self.store = state["store"]
