"""The default response store: one SQLite file in WAL mode, for the jobs of one machine.

    python run.py llm/cache_backend=sqlite            # <cache_dir>/llm_cache.sqlite (the default)

Many processes (Hydra multirun jobs, accelerate ranks, joblib workers) may open the same file at once:
the database runs in WAL mode with a generous busy timeout, every ``put`` is its own committed
transaction (a ``kill -9`` loses no completed call), and a connection is never reused across ``fork``.
WAL needs shared memory between the processes, so the file must sit on a local disk: on a network
filesystem use the ``files`` or ``redis`` store (SQLite's documentation: "WAL does not work over a
network filesystem").
"""
from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

from .codec import canonical_json, decode

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


class SqliteStore:
    """Key → response record in one SQLite file; ``put`` keeps the first answer stored (INSERT OR IGNORE)."""

    def __init__(self, path: str | os.PathLike, busy_timeout_ms: int = 60_000) -> None:
        self.path = Path(path).expanduser()
        self.busy_timeout_ms = int(busy_timeout_ms)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._connect()

    def describe(self) -> str:
        return f"sqlite:{self.path}"

    def __repr__(self) -> str:
        return f"SqliteStore({str(self.path)!r})"

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

    def _execute(self, sql: str, args: tuple = (), result: str = "one"):
        """Run one statement and read its result under the lock (one connection, many threads)."""
        with self._lock:
            conn = self._connect()

            def once():
                cur = conn.execute(sql, args)
                return {"one": cur.fetchone, "all": cur.fetchall, "rowcount": lambda: cur.rowcount}[result]()

            return self._retry_locked(once)

    # -- the ResponseStore members -------------------------------------------
    def check(self) -> None:
        """The file opened in the constructor (a failure there names it)."""
    def get(self, key: str) -> dict | None:
        row = self._execute("SELECT value FROM responses WHERE key = ?", (key,))
        return None if row is None else decode(row[0])

    def put(self, key: str, value: dict) -> bool:
        return self._execute("INSERT OR IGNORE INTO responses(key, value, created) VALUES (?, ?, ?)",
                             (key, canonical_json(value), time.time()), "rowcount") == 1

    def contains(self, key: str) -> bool:
        return self._execute("SELECT 1 FROM responses WHERE key = ?", (key,)) is not None

    def __len__(self) -> int:
        return int(self._execute("SELECT COUNT(*) FROM responses")[0])

    def iterate(self, chunk: int = 1000) -> Iterator[tuple[str, dict]]:
        """Every record in insertion order, read in chunks (no lock or transaction held between them)."""
        last = 0
        while True:
            rows = self._execute("SELECT rowid, key, value FROM responses WHERE rowid > ? ORDER BY rowid LIMIT ?",
                                 (last, chunk), "all")
            if not rows:
                return
            for rowid, key, value in rows:
                yield key, decode(value)
            last = rows[-1][0]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __getstate__(self) -> dict:  # picklable for joblib / multiprocessing workers
        return {"path": str(self.path), "busy_timeout_ms": self.busy_timeout_ms}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"], state["busy_timeout_ms"])  # type: ignore[misc]
