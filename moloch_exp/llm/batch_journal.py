"""The batch journal: one small JSON file per submitted batch, under ``<cache_dir>/batches/``.

Written (atomically, fsynced) at every step, before the next one can cost anything::

    prepared → uploaded (file_id) → creating → <the batch's status> (batch_id) → collected

(a collected entry moves to ``batches/collected/``, the record of what was paid for).
so a run killed at any point resumes on re-run instead of paying twice: an entry with a ``batch_id``
is polled again; one that was ``creating`` looks for a batch made from its ``file_id`` first; one
with only a ``file_id`` creates its batch from the uploaded file. An entry is named by the sha256 of
the sorted cache keys it holds (``<digest>.json``, its request file ``<digest>.jsonl``), so the same
requests map to the same entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

DONE = "collected"
TERMINAL = ("completed", "failed", "expired", "cancelled")


@dataclass
class JournalEntry:
    digest: str
    model: str                    # the client's model identity (cache namespace)
    keys: list[str]               # cache keys = custom_ids, in file order
    round: int = 0                # 0: first submission; k: k-th resubmission of failed lines
    status: str = "prepared"
    file_id: str | None = None
    batch_id: str | None = None
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)

    @property
    def n(self) -> int:
        return len(self.keys)

    @property
    def pending(self) -> bool:
        return self.status != DONE


def keys_digest(keys: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(keys)).encode("utf-8")).hexdigest()


class BatchJournal:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / f"{digest}.json"

    def jsonl_path(self, digest: str) -> Path:
        return self.root / f"{digest}.jsonl"

    def _write(self, entry: JournalEntry) -> None:
        entry.updated = time.time()
        tmp = self.path(entry.digest).with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "w") as fh:
            json.dump(asdict(entry), fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path(entry.digest))

    def load(self, digest: str) -> JournalEntry | None:
        try:
            return JournalEntry(**json.loads(self.path(digest).read_text()))
        except FileNotFoundError:
            return None

    def open(self, model: str, keys: list[str], round_: int, lines: bytes) -> JournalEntry:
        """The pending entry for exactly ``keys`` (an earlier run's, to resume), or a new one with its
        request file written."""
        digest = keys_digest(keys)
        entry = self.load(digest)
        if entry is not None and entry.pending:
            return entry
        jsonl = self.jsonl_path(digest)
        tmp = jsonl.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(lines)
        os.replace(tmp, jsonl)
        entry = JournalEntry(digest=digest, model=model, keys=list(keys), round=round_)
        self._write(entry)
        return entry

    def update(self, entry: JournalEntry, **changes) -> None:
        for k, v in changes.items():
            setattr(entry, k, v)
        self._write(entry)

    def pending(self, model: str) -> list[JournalEntry]:
        """Entries of ``model`` not yet collected, oldest first."""
        out = []
        for p in sorted(self.root.glob("*.json")):
            try:
                entry = JournalEntry(**json.loads(p.read_text()))
            except (ValueError, TypeError):
                continue  # a foreign or half-written file: not ours to resume
            if entry.pending and entry.model == model:
                out.append(entry)
        return sorted(out, key=lambda e: e.created)

    def collected(self, entry: JournalEntry, keep_jsonl: bool) -> None:
        self.update(entry, status=DONE)
        done = self.root / DONE
        done.mkdir(exist_ok=True)
        os.replace(self.path(entry.digest), done / f"{entry.digest}.json")  # pending() reads only the open ones
        if not keep_jsonl:
            self.jsonl_path(entry.digest).unlink(missing_ok=True)
