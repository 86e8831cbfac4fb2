"""The labellers' answers: SQLite in the run directory (RUN_DIR/labels/labels.sqlite), WAL mode.

    from moloch_exp.label.store import LabelStore
    store = LabelStore(sample.db_path)
    store.put("3fa2c1d09e7b", "ann", "yes", note="adds a warranty", via="page")
    store.answers()          # the current answer of every (item, labeller)

Every answer is one transaction, committed before the page hears back (synchronous=FULL), so a
closed browser or a killed server loses nothing. ``answers`` holds each labeller's current answer
per item; ``history`` keeps every answer ever given (a changed answer or an import never erases
one). One connection per call: the page's threads and concurrent processes each write through
SQLite's own locking (``BEGIN IMMEDIATE`` and a busy timeout), so no answer is lost to a race.
"""
from __future__ import annotations

import sqlite3
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path

ANSWERS = ("yes", "no", "unsure")
_ALIASES = {"y": "yes", "yes": "yes", "n": "no", "no": "no", "u": "unsure", "unsure": "unsure", "?": "unsure"}
MAX_NOTE = 4000
SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
  item_id TEXT NOT NULL, labeller TEXT NOT NULL,
  answer TEXT NOT NULL CHECK (answer IN ('yes', 'no', 'unsure')), note TEXT NOT NULL DEFAULT '',
  via TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (item_id, labeller));
CREATE TABLE IF NOT EXISTS history (
  id INTEGER PRIMARY KEY AUTOINCREMENT, item_id TEXT NOT NULL, labeller TEXT NOT NULL, answer TEXT NOT NULL,
  note TEXT NOT NULL, via TEXT NOT NULL, at REAL NOT NULL);
"""


def parse_answer(text: str) -> str:
    """yes / no / unsure (also y, n, u, ?; any case); ValueError otherwise."""
    ans = _ALIASES.get(str(text).strip().lower())
    if ans is None:
        raise ValueError(f"{text!r} is not yes, no or unsure")
    return ans


def check_labeller(name: str) -> str:
    """A labeller's name, stripped: 1 to 64 printable characters; ValueError otherwise."""
    name = str(name).strip()
    if not name or len(name) > 64:
        raise ValueError("a labeller's name has 1 to 64 characters")
    if any(unicodedata.category(c).startswith("C") for c in name):
        raise ValueError("a labeller's name has no control characters")
    return name


@dataclass(frozen=True)
class Answer:
    item_id: str
    labeller: str
    answer: str
    note: str = ""
    via: str = "page"  # page | csv:<file name>
    at: float = 0.0


class LabelStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = self._connect()
        try:
            con.execute("PRAGMA journal_mode=WAL")  # readers never wait on the writer; kept in the file
            con.executescript(SCHEMA)
        finally:
            con.close()

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        con.execute("PRAGMA busy_timeout=60000")
        con.execute("PRAGMA synchronous=FULL")
        return con

    def put(self, item_id: str, labeller: str, answer: str, note: str = "", via: str = "page") -> Answer:
        """Store one answer now (one transaction); returns it as stored."""
        return self.put_many([Answer(item_id, labeller, answer, note, via)])[0]

    def put_many(self, answers: list[Answer]) -> list[Answer]:
        """Store answers in one transaction: all or none."""
        now = time.time()
        rows = [Answer(a.item_id, check_labeller(a.labeller), parse_answer(a.answer), (a.note or "")[:MAX_NOTE],
                       a.via, now) for a in answers]
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE")
            for a in rows:
                con.execute("INSERT INTO history (item_id, labeller, answer, note, via, at) VALUES (?, ?, ?, ?, ?, ?)",
                            (a.item_id, a.labeller, a.answer, a.note, a.via, a.at))
                con.execute("INSERT INTO answers (item_id, labeller, answer, note, via, at) VALUES (?, ?, ?, ?, ?, ?) "
                            "ON CONFLICT (item_id, labeller) DO UPDATE SET answer = excluded.answer, "
                            "note = excluded.note, via = excluded.via, at = excluded.at",
                            (a.item_id, a.labeller, a.answer, a.note, a.via, a.at))
            con.execute("COMMIT")
        except BaseException:
            if con.in_transaction:
                con.execute("ROLLBACK")
            raise
        finally:
            con.close()
        return rows

    def answers(self, labeller: str | None = None) -> list[Answer]:
        """Current answers (one per item and labeller), of one labeller or of all."""
        sql, args = "SELECT item_id, labeller, answer, note, via, at FROM answers", ()
        if labeller is not None:
            sql, args = sql + " WHERE labeller = ?", (labeller,)
        con = self._connect()
        try:
            return [Answer(*row) for row in con.execute(sql + " ORDER BY at, item_id", args)]
        finally:
            con.close()

    def history_count(self) -> int:
        con = self._connect()
        try:
            return con.execute("SELECT COUNT(*) FROM history").fetchone()[0]
        finally:
            con.close()

    def labellers(self) -> list[str]:
        return sorted({a.labeller for a in self.answers()})
