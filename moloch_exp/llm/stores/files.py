"""A content-addressed file store for the response cache, safe on a network filesystem (NFS, Lustre, GPFS).

    python run.py llm/cache_backend=files llm.cache_backend.root=/shared/moloch/responses

One file per key, ``<root>/<k[0:2]>/<k[2:4]>/<key>.json`` (two fan-out levels by default: 65,536
directories, about 11 files each at 720,000 responses), holding ``{"key": ..., "value": ...}`` as
canonical JSON. A writer writes the record to a temporary name in the same directory, flushes and
fsyncs it, then gives it the final name with ``link()`` and removes the temporary name. ``link`` is
the rename that refuses to replace: the first writer of a key wins and a later one is told so
(put-if-absent, like ``INSERT OR IGNORE``), and a reader opens only final names, which appear
whole or not at all. On NFS a retried ``link`` whose first reply was lost reports EEXIST although it
succeeded; the temporary file's link count (2) tells that case apart (the classic NFS lock-file recipe).
Temporary names start with ``.tmp-``; a writer killed mid-write leaves one behind, which no reader sees.
"""
from __future__ import annotations

import errno
import json
import os
import socket
import uuid
from pathlib import Path
from typing import Iterator

from moloch_exp.errors import ConfigError, DataError

from .codec import check_key, decode, encode

_MANIFEST = "STORE.json"
_FORMAT = "moloch_exp response store (files)"


class FileStore:
    """Key → response record, one file per key under ``root``; see the module docstring."""

    def __init__(self, root: str | os.PathLike, fanout: int = 2, fsync: bool = True) -> None:
        self.root = Path(root).expanduser()
        self.fanout = int(fanout)
        self.fsync = bool(fsync)
        if not 0 <= self.fanout <= 4:
            raise ConfigError(f"llm.cache_backend.fanout must be 0..4 directory levels, not {fanout}")
        self.root.mkdir(parents=True, exist_ok=True)
        self._check_manifest()

    def describe(self) -> str:
        return f"files:{self.root}"

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r}, fanout={self.fanout})"

    def _check_manifest(self) -> None:
        """The layout is fixed when the store is created; a reader with another fan-out would miss every key."""
        manifest = self.root / _MANIFEST
        if not manifest.is_file():
            self._publish(manifest, encode({"format": _FORMAT, "version": 1, "fanout": self.fanout}))
        try:
            found = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"{manifest}: not a response-store manifest ({err})") from None
        if found.get("fanout") != self.fanout:
            raise ConfigError(f"{manifest}: the store was created with fanout {found.get('fanout')}, "
                              f"not {self.fanout}: set llm.cache_backend.fanout={found.get('fanout')}")

    def path_of(self, key: str) -> Path:
        check_key(key)
        parts = [key[2 * i:2 * i + 2] for i in range(self.fanout)]
        return self.root.joinpath(*parts, f"{key}.json")

    # -- the ResponseStore members -------------------------------------------
    def check(self) -> None:
        """The root exists and takes files (the manifest was read or written in the constructor)."""
        if not os.access(self.root, os.W_OK):
            raise ConfigError(f"response cache {self.root}: not writable")

    def get(self, key: str) -> dict | None:
        path = self.path_of(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        return self._value(path, key, data)

    def put(self, key: str, value: dict) -> bool:
        path = self.path_of(key)
        if path.exists():
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        return self._publish(path, encode({"key": key, "value": value}))

    def contains(self, key: str) -> bool:
        return self.path_of(key).exists()

    def __len__(self) -> int:
        return sum(1 for _ in self._files())

    def iterate(self) -> Iterator[tuple[str, dict]]:
        for path in self._files():
            key = path.name[:-len(".json")]
            yield key, self._value(path, key, path.read_bytes())

    def close(self) -> None:
        pass

    def __getstate__(self) -> dict:
        return {"root": str(self.root), "fanout": self.fanout, "fsync": self.fsync}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"], state["fanout"], state["fsync"])  # type: ignore[misc]

    # -- files ---------------------------------------------------------------
    def _publish(self, path: Path, data: bytes) -> bool:
        """Write ``data`` under ``path`` unless something is there already; True when this write won."""
        tmp = path.parent / f".tmp-{path.name[:16]}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                if self.fsync:
                    os.fsync(fh.fileno())
            try:
                os.link(tmp, path)
                won = True
            except FileExistsError:
                won = os.stat(tmp).st_nlink > 1  # NFS: our link was made, its reply lost, the retry saw it
            except OSError as err:
                if err.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                    raise ConfigError(f"{self.root}: this filesystem refuses hard links ({err.strerror}); the "
                                      "files store needs them for put-if-absent: use llm/cache_backend=redis") from None
                raise
        finally:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        if won and self.fsync:
            self._fsync_dir(path.parent)
        return won

    @staticmethod
    def _fsync_dir(directory: Path) -> None:
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        except OSError:  # some network filesystems refuse fsync on a directory; their metadata is synchronous
            pass
        finally:
            os.close(fd)

    def _value(self, path: Path, key: str, data: bytes) -> dict:
        try:
            record = decode(data)
            if record["key"] != key or not isinstance(record["value"], dict):
                raise ValueError(f"holds key {str(record['key'])[:16]}…")
        except (ValueError, KeyError, TypeError) as err:
            raise DataError(f"{path}: not a response record ({err}); delete the file to make the call again") from None
        return record["value"]

    def _files(self) -> Iterator[Path]:
        def walk(directory: Path, depth: int) -> Iterator[Path]:
            with os.scandir(directory) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    if entry.name.startswith("."):
                        continue
                    if depth < self.fanout:
                        if entry.is_dir():
                            yield from walk(Path(entry.path), depth + 1)
                    elif entry.name.endswith(".json") and entry.name != _MANIFEST and entry.is_file():
                        yield Path(entry.path)

        yield from walk(self.root, 0)
