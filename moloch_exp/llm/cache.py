"""Content-addressed persistent response cache (SQLite, WAL) shared by all jobs of a sweep.

Many processes (Hydra multirun jobs, accelerate ranks, joblib workers) may open the
same file at once: the database runs in WAL mode with a generous busy timeout, every
``put`` is its own committed transaction (a ``kill -9`` loses no completed call), and a
connection is never reused across ``fork``.

Only successful responses are stored. The key is the sha256 of the canonical JSON of
everything that changes the answer (see :func:`cache_key`); where the server lives and
which API key reached it are deliberately not part of it.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from .types import ChatRequest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def canonical_json(obj: Any) -> str:
    """Deterministic JSON: sorted keys, no whitespace, unicode kept, NaN refused."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


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
    """``get(key) -> dict | None`` and ``put(key, value: dict)`` over one SQLite file."""

    def __init__(self, path: str | os.PathLike, busy_timeout_ms: int = 60_000) -> None:
        self.path = Path(path).expanduser()
        self.busy_timeout_ms = int(busy_timeout_ms)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._connect()

    def __repr__(self) -> str:
        return f"ResponseCache(path={str(self.path)!r})"

    # -- connection handling -------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # After a fork the parent's connection must not be touched; open a fresh one.
        conn = sqlite3.connect(
            str(self.path),
            timeout=self.busy_timeout_ms / 1000.0,
            isolation_level=None,  # autocommit: each statement is its own transaction
            check_same_thread=False,
        )
        conn.execute(f"PRAGMA busy_timeout={self.busy_timeout_ms}")
        self._retry_locked(lambda: conn.execute("PRAGMA journal_mode=WAL"))
        conn.execute("PRAGMA synchronous=NORMAL")
        self._retry_locked(lambda: conn.execute(_SCHEMA))
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _retry_locked(self, fn, tries: int = 50):
        # busy_timeout covers most contention; switching journal mode / creating the
        # table can still report "locked" when many processes start together.
        for i in range(tries):
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise
                if i == tries - 1:
                    raise
                time.sleep(0.05 * (i + 1))

    # -- public API ---------------------------------------------------------
    def get(self, key: str) -> dict | None:
        with self._lock:
            conn = self._connect()
            row = self._retry_locked(
                lambda: conn.execute("SELECT value FROM responses WHERE key = ?", (key,)).fetchone()
            )
        return None if row is None else json.loads(row[0])

    def put(self, key: str, value: dict) -> None:
        data = canonical_json(value)
        with self._lock:
            conn = self._connect()
            self._retry_locked(
                lambda: conn.execute(
                    "INSERT OR REPLACE INTO responses(key, value, created) VALUES (?, ?, ?)",
                    (key, data, time.time()),
                )
            )

    def __contains__(self, key: str) -> bool:
        return self.get(key) is not None

    def __len__(self) -> int:
        with self._lock:
            conn = self._connect()
            return int(conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __getstate__(self) -> dict:  # picklable for joblib / multiprocessing workers
        return {"path": str(self.path), "busy_timeout_ms": self.busy_timeout_ms}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["busy_timeout_ms"])  # type: ignore[misc]
