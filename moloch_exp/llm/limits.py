"""Async concurrency and rate limits: a semaphore plus requests- and tokens-per-minute buckets.

Token buckets refill continuously at ``per_minute / 60`` per second and hold at most
``burst_s`` seconds' worth (default 10 s), so bursts stay small (providers often enforce
per-minute limits over shorter windows) and the long-run rate is the configured one. ``None`` means unlimited. asyncio primitives are bound
to an event loop, so they are created lazily per running loop: the same
:class:`Limits` object works across repeated ``asyncio.run`` calls (the concurrency cap
holds per loop; the RPM/TPM buckets are shared by all loops and threads). A ``pacer``
(:class:`~moloch_exp.llm.pacer.ServerPacer`) adds the server's own limits, read from its headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from typing import Any, AsyncIterator


class TokenBucket:
    """Continuous-refill token bucket: ``per_minute`` long-run rate, ``burst_s`` seconds of burst."""

    def __init__(self, per_minute: float, burst_s: float = 10.0, clock=time.monotonic) -> None:
        if per_minute <= 0:
            raise ValueError(f"rate must be > 0 per minute, got {per_minute}")
        self.per_minute = float(per_minute)
        self.burst_s = float(burst_s)
        self.rate_per_s = float(per_minute) / 60.0
        self.capacity = max(1.0, self.rate_per_s * self.burst_s)
        self._clock = clock
        self._tokens = self.capacity
        self._t = clock()
        self._locks: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock]" = weakref.WeakKeyDictionary()
        self._guard = threading.Lock()  # the bucket itself may be shared by loops in several threads

    def __getstate__(self) -> dict:  # loop-bound lock and clock are not picklable
        return {"per_minute": self.per_minute, "burst_s": self.burst_s}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["per_minute"], state["burst_s"])  # type: ignore[misc]

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._t) * self.rate_per_s)
        self._t = now

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        with self._guard:
            lock = self._locks.get(loop)
            if lock is None:
                lock = self._locks[loop] = asyncio.Lock()
        return lock

    def wait_time(self, n: float) -> float:
        """Seconds until ``n`` tokens would be available (0 if now)."""
        with self._guard:
            self._refill()
            n = min(float(n), self.capacity)
            return 0.0 if self._tokens >= n else (n - self._tokens) / self.rate_per_s

    def _try_take(self, n: float) -> float:
        need = min(n, self.capacity)  # an oversized request waits for a full bucket, then is charged in full
        with self._guard:
            self._refill()
            if self._tokens >= need:
                self._tokens -= n
                return 0.0
            return (need - self._tokens) / self.rate_per_s

    async def acquire(self, n: float = 1.0) -> None:
        """Wait until ``n`` tokens (at most a full bucket) are available, then take ``n``."""
        n = float(n)
        async with self._get_lock():  # FIFO: one waiter drains the bucket at a time
            while True:
                w = self._try_take(n)
                if w <= 0:
                    return
                await asyncio.sleep(w)

    def debit(self, n: float) -> None:
        """Take ``n`` tokens after the fact (may go negative: later callers wait longer)."""
        with self._guard:
            self._refill()
            self._tokens -= float(n)

    def credit(self, n: float) -> None:
        """Give back tokens that were over-reserved."""
        with self._guard:
            self._refill()
            self._tokens = min(self.capacity, self._tokens + float(n))

    def set_level(self, level: float) -> None:
        """Set the level outright (a server's remaining count): at most a full bucket, may go negative."""
        with self._guard:
            self._refill()
            self._tokens = min(self.capacity, float(level))

    @property
    def level(self) -> float:
        with self._guard:
            self._refill()
            return self._tokens


class Limits:
    """``async with limits.slot(est_tokens) as ticket:`` around every network call, then
    ``limits.observe(ticket, status, headers, retry_after)`` with the answer.

    ``pacer``: a :class:`~moloch_exp.llm.pacer.ServerPacer` that paces by the server's
    ``x-ratelimit-*`` headers (``None``: only the explicit limits)."""

    def __init__(self, concurrency: int = 8, rpm: int | None = None, tpm: int | None = None, pacer=None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.concurrency = int(concurrency)
        self.rpm, self.tpm = rpm, tpm
        self.pacer = pacer
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None
        # one semaphore per event loop (asyncio primitives are loop-bound); the cap holds per loop
        self._sems: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()
        self._guard = threading.Lock()

    def __getstate__(self) -> dict:
        return {"concurrency": self.concurrency, "rpm": self.rpm, "tpm": self.tpm, "pacer": self.pacer}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"Limits(concurrency={self.concurrency}, rpm={self.rpm}, tpm={self.tpm})"

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        with self._guard:
            sem = self._sems.get(loop)
            if sem is None:
                sem = self._sems[loop] = asyncio.Semaphore(self.concurrency)
        return sem

    @contextlib.asynccontextmanager
    async def slot(self, est_tokens: int = 0) -> AsyncIterator[Any]:
        async with self._semaphore():
            if self.requests is not None:
                await self.requests.acquire(1)
            if self.tokens is not None and est_tokens > 0:
                await self.tokens.acquire(est_tokens)
            ticket = None if self.pacer is None else await self.pacer.before_send(est_tokens)
            try:
                yield ticket
            finally:
                if ticket is not None:
                    self.pacer.forget(ticket)  # no-op once observe() has seen its answer

    def observe(self, ticket: Any, status: int, headers: Any = None, retry_after: float | None = None) -> None:
        """Tell the pacer how the request sent with ``ticket`` was answered (status 0: no answer)."""
        if self.pacer is not None:
            self.pacer.observe(ticket, status, headers, retry_after)

    def settle_tokens(self, est_tokens: int, actual_tokens: int) -> None:
        """Correct the TPM bucket once the real usage of a call is known."""
        if self.tokens is None:
            return
        diff = actual_tokens - est_tokens
        if diff > 0:
            self.tokens.debit(diff)
        elif diff < 0:
            self.tokens.credit(-diff)
