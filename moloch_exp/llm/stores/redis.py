"""A server-backed response store: every job of a sweep, on any node, talks to one Redis server.

    python run.py llm/cache_backend=redis llm.cache_backend.host=cachehost llm.cache_backend.port=6379
    REDIS_PASSWORD=... python run.py llm/cache_backend=redis llm.cache_backend.password_env=REDIS_PASSWORD

The records live in one Redis hash, ``<namespace>:responses`` (field = the cache key, value = the
response as canonical JSON): ``HSETNX`` stores a key only if absent and says whether this write won,
``HLEN`` counts in O(1), ``HSCAN`` iterates without blocking the server. Connection errors and timeouts
are retried with exponential backoff (redis-py's ``Retry``); a server that stays unreachable stops
the run at pre-flight with one line. Durability is the server's (``appendonly yes`` keeps every
write; Debian's default config snapshots periodically). The password is read from the environment
variable named by ``password_env`` and never enters a config dump.
"""
from __future__ import annotations

import os
from typing import Iterator

from moloch_exp.errors import ConfigError, ServiceError

from .codec import decode, encode


class RedisStore:
    """Key → response record in a Redis hash; see the module docstring."""

    def __init__(self, host: str = "127.0.0.1", port: int = 6379, db: int = 0, unix_socket: str | None = None,
                 namespace: str = "moloch_exp", password_env: str | None = None, username: str | None = None,
                 timeout_s: float = 30.0, retries: int = 8) -> None:
        self.host, self.port, self.db = host, int(port), int(db)
        self.unix_socket = unix_socket
        self.namespace = namespace
        self.password_env = password_env
        self.username = username
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.hash = f"{namespace}:responses"
        self._client = None
        self._pid: int | None = None

    def describe(self) -> str:
        where = f"unix:{self.unix_socket}" if self.unix_socket else f"{self.host}:{self.port}"
        return f"redis://{where}/{self.db}?namespace={self.namespace}"

    def __repr__(self) -> str:
        return f"RedisStore({self.describe()!r})"

    def _redis(self):
        if self._client is not None and self._pid == os.getpid():
            return self._client
        import redis
        from redis.backoff import ExponentialWithJitterBackoff
        from redis.retry import Retry

        password = None
        if self.password_env:
            password = os.environ.get(self.password_env)
            if password is None:
                raise ConfigError(f"llm.cache_backend.password_env: environment variable {self.password_env} is not set")
        self._client = redis.Redis(
            host=self.host, port=self.port, db=self.db, unix_socket_path=self.unix_socket, username=self.username,
            password=password, socket_timeout=self.timeout_s, socket_connect_timeout=self.timeout_s,
            retry=Retry(ExponentialWithJitterBackoff(base=0.1, cap=10.0), retries=self.retries))
        self._pid = os.getpid()  # a client is never shared across fork: each process opens its own
        return self._client

    def check(self) -> None:
        """Pre-flight: the server answers (one line naming it otherwise)."""
        import redis

        try:
            self._redis().ping()
        except redis.RedisError as err:
            raise ServiceError(f"response cache {self.describe()}: Redis server unreachable ({err})") from None

    # -- the ResponseStore members -------------------------------------------
    def get(self, key: str) -> dict | None:
        data = self._redis().hget(self.hash, key)
        return None if data is None else decode(data)

    def put(self, key: str, value: dict) -> bool:
        return bool(self._redis().hsetnx(self.hash, key, encode(value)))

    def contains(self, key: str) -> bool:
        return bool(self._redis().hexists(self.hash, key))

    def __len__(self) -> int:
        return int(self._redis().hlen(self.hash))

    def iterate(self, chunk: int = 1000) -> Iterator[tuple[str, dict]]:
        for key, data in self._redis().hscan_iter(self.hash, count=chunk):
            yield key.decode("utf-8"), decode(data)

    def close(self) -> None:
        if self._client is not None and self._pid == os.getpid():
            self._client.close()
        self._client = None

    def __getstate__(self) -> dict:
        return {"host": self.host, "port": self.port, "db": self.db, "unix_socket": self.unix_socket,
                "namespace": self.namespace, "password_env": self.password_env, "username": self.username,
                "timeout_s": self.timeout_s, "retries": self.retries}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)  # type: ignore[misc]
