"""Async concurrency and rate limits: a semaphore plus requests- and tokens-per-minute buckets.

Token buckets refill continuously at ``per_minute / 60`` per second and hold at most
one minute's worth, so a fresh client may burst up to the per-minute allowance, then
settles at the configured rate. ``None`` means unlimited. asyncio primitives are bound
to an event loop, so they are created lazily per running loop: the same
:class:`Limits` object works across repeated ``asyncio.run`` calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import AsyncIterator


class TokenBucket:
    """Continuous-refill token bucket holding up to ``per_minute`` tokens."""

    def __init__(self, per_minute: float, clock=time.monotonic) -> None:
        if per_minute <= 0:
            raise ValueError(f"rate must be > 0 per minute, got {per_minute}")
        self.capacity = float(per_minute)
        self.rate_per_s = float(per_minute) / 60.0
        self._clock = clock
        self._tokens = self.capacity
        self._t = clock()
        self._lock: asyncio.Lock | None = None
        self._lock_loop: asyncio.AbstractEventLoop | None = None

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._t) * self.rate_per_s)
        self._t = now

    def _get_lock(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._lock is None or self._lock_loop is not loop:
            self._lock, self._lock_loop = asyncio.Lock(), loop
        return self._lock

    def wait_time(self, n: float) -> float:
        """Seconds until ``n`` tokens would be available (0 if now)."""
        self._refill()
        n = min(float(n), self.capacity)
        return 0.0 if self._tokens >= n else (n - self._tokens) / self.rate_per_s

    async def acquire(self, n: float = 1.0) -> None:
        """Wait until ``n`` tokens (clamped to the capacity) can be taken, then take them."""
        n = min(float(n), self.capacity)  # a single oversized request must not wait forever
        async with self._get_lock():  # FIFO: one waiter drains the bucket at a time
            while True:
                w = self.wait_time(n)
                if w <= 0:
                    self._tokens -= n
                    return
                await asyncio.sleep(w)

    def debit(self, n: float) -> None:
        """Take ``n`` tokens after the fact (may go negative: later callers wait longer)."""
        self._refill()
        self._tokens -= float(n)

    def credit(self, n: float) -> None:
        """Give back tokens that were over-reserved."""
        self._refill()
        self._tokens = min(self.capacity, self._tokens + float(n))


class Limits:
    """``async with limits.slot(est_tokens):`` around every network call."""

    def __init__(self, concurrency: int = 8, rpm: int | None = None, tpm: int | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.concurrency = int(concurrency)
        self.rpm, self.tpm = rpm, tpm
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None
        self._sem: asyncio.Semaphore | None = None
        self._sem_loop: asyncio.AbstractEventLoop | None = None

    def __repr__(self) -> str:
        return f"Limits(concurrency={self.concurrency}, rpm={self.rpm}, tpm={self.tpm})"

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._sem is None or self._sem_loop is not loop:
            self._sem, self._sem_loop = asyncio.Semaphore(self.concurrency), loop
        return self._sem

    @contextlib.asynccontextmanager
    async def slot(self, est_tokens: int = 0) -> AsyncIterator[None]:
        async with self._semaphore():
            if self.requests is not None:
                await self.requests.acquire(1)
            if self.tokens is not None and est_tokens > 0:
                await self.tokens.acquire(est_tokens)
            yield

    def settle_tokens(self, est_tokens: int, actual_tokens: int) -> None:
        """Correct the TPM bucket once the real usage of a call is known."""
        if self.tokens is None:
            return
        diff = actual_tokens - est_tokens
        if diff > 0:
            self.tokens.debit(diff)
        elif diff < 0:
            self.tokens.credit(-diff)
