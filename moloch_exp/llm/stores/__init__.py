"""Where the LLM response cache keeps its records (``llm/cache_backend=...``; the ``ResponseStore`` members
are in moloch_exp/protocols.py):

    sqlite   SqliteStore  one SQLite file (WAL) on a local disk: the jobs of one machine (default)
    files    FileStore    one file per key, written whole then linked into place: a network filesystem
    redis    RedisStore   a Redis server every node reaches

Every store keeps the first answer stored for a key (put-if-absent) and says whether a ``put`` won.
``open_store`` reads the spec strings of ``python -m moloch_exp.llm.cache_copy``:
``sqlite:PATH``, ``files:DIR``, ``redis://HOST:PORT/DB?namespace=NS&password_env=VAR``,
``redis+unix:///PATH/TO/SOCKET?db=0``.
"""
from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlparse

from moloch_exp.errors import ConfigError

from .codec import canonical_json
from .files import FileStore
from .redis import RedisStore
from .sqlite import SqliteStore

__all__ = ["FileStore", "RedisStore", "SqliteStore", "canonical_json", "open_store"]


def open_store(spec: str, must_exist: bool = False):
    """The store a spec string names (see the module docstring); a malformed spec is one ConfigError.

    ``must_exist``: a file or directory store that is not there is an error, not a new empty store."""
    kind, _, rest = spec.partition(":")
    if kind in ("sqlite", "files") and rest:
        if must_exist and not Path(rest).expanduser().exists():
            raise ConfigError(f"{spec}: {rest} does not exist")
        return SqliteStore(rest) if kind == "sqlite" else FileStore(rest)
    if kind in ("redis", "redis+unix") and rest.startswith("//"):
        url = urlparse(spec)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        unknown = set(query) - {"namespace", "password_env", "db"}
        if unknown:
            raise ConfigError(f"{spec}: unknown option(s) {sorted(unknown)} (namespace, password_env, db)")
        options = {"namespace": query.get("namespace", "moloch_exp"), "password_env": query.get("password_env")}
        try:
            if kind == "redis+unix":
                return RedisStore(unix_socket=url.path, db=int(query.get("db", 0)), **options)
            db = int(url.path.strip("/") or query.get("db", 0))
            return RedisStore(host=url.hostname or "127.0.0.1", port=url.port or 6379, db=db, **options)
        except ValueError as err:
            raise ConfigError(f"{spec}: {err}") from None
    raise ConfigError(f"{spec!r} names no response store: use sqlite:PATH, files:DIR, "
                      "redis://HOST:PORT/DB or redis+unix:///SOCKET")
