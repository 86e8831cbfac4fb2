"""Pacing by the server's own rate-limit headers (``LLMClient(pace_by_headers=True)``, the default).

Beside the explicit ``client.rpm``/``client.tpm`` buckets (:mod:`.limits`), a :class:`ServerPacer` keeps
a requests bucket and a tokens bucket that mirror the server's:

- their rates come from ``x-ratelimit-limit-*`` (less ``margin``, 3%), created on the first answer
  that carries them;
- their levels follow ``x-ratelimit-remaining-*``: after an answer to a request sent at ``t``, the
  server's level now is about ``remaining - (sent since t) + (now - t) * rate``, and the local level is
  set to that, so requests of other processes on the same key, and in-flight requests, are counted;
- a 429 whose headers show an empty bucket (or that carries none) pauses *every* request of the client
  until its ``Retry-After`` has passed, not only the one that got it: no retry storm. A 429 while the
  headers show room left (an overloaded server) only sends that request back to its own backoff;
- the very first request, and the first after a pause, goes alone and the others wait for its answer
  (at most ``first_wait_s``): the first burst already knows the limits, and a pause does not end in a
  herd of retries meeting a still-empty bucket.

One pacer serves every event loop of a client (a ``chat_many`` is an ``asyncio.run``); its state is
guarded by a thread lock, its waits are ``asyncio.sleep``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .limits import TokenBucket
from .ratelimit_headers import RateLimitHeaders


@dataclass
class Ticket:
    """What the pacer knew when a request left: when, how much had been sent before it, and in which
    epoch (a pause starts a new one). ``settled``: its answer (or its not being sent) was accounted for."""

    t: float
    sent_before: int
    tokens_before: float
    est_tokens: float
    epoch: int
    settled: bool = field(default=False, compare=False)


class ServerPacer:
    def __init__(self, margin: float = 0.03, burst_s: float = 10.0, first_wait_s: float = 10.0,
                 max_pause_s: float = 300.0) -> None:
        if not 0 <= margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {margin}")
        self.margin, self.burst_s, self.first_wait_s, self.max_pause_s = margin, burst_s, first_wait_s, max_pause_s
        self.requests: TokenBucket | None = None
        self.tokens: TokenBucket | None = None
        self._server_rate = {"requests": 0.0, "tokens": 0.0}  # per second, without the margin
        self._pause_until = 0.0
        self._sent = 0
        self._sent_tokens = 0.0
        self._epoch = 0  # +1 at every new pause
        self._probe_sent_at: float | None = None  # the lone request of this epoch left then
        self._informed = False  # an answer to a request of this epoch came back
        self.pauses = 0  # 429s that paused every request
        self.in_flight = 0  # requests sent and not yet answered
        self.pause_log: list[list[float]] = []  # [monotonic start, end, requests in flight then], the last 100
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"margin": self.margin, "burst_s": self.burst_s, "first_wait_s": self.first_wait_s,
                "max_pause_s": self.max_pause_s}

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)  # type: ignore[misc]

    def __repr__(self) -> str:
        rpm = None if self.requests is None else self.requests.per_minute
        tpm = None if self.tokens is None else self.tokens.per_minute
        return f"ServerPacer(rpm={rpm}, tpm={tpm}, pauses={self.pauses})"

    # -- before a request ------------------------------------------------------
    async def _wait_probe(self) -> None:
        """The first request of an epoch goes alone; the others wait for an answer to it."""
        while True:
            with self._lock:
                if self._informed:
                    return
                if self._probe_sent_at is None:
                    self._probe_sent_at = time.monotonic()
                    return  # this one is the lone first request: it goes now
                if time.monotonic() - self._probe_sent_at >= self.first_wait_s:
                    return  # no answer in time: stop holding the others back
                epoch = self._epoch
            await asyncio.sleep(0.01)
            if self._epoch != epoch:
                return  # a new pause began: back to waiting it out

    async def _wait_pause(self) -> None:
        while (wait := self._pause_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)

    async def before_send(self, est_tokens: float) -> Ticket:
        while True:
            await self._wait_pause()
            await self._wait_probe()
            if self.requests is not None:
                await self.requests.acquire(1)
            if self.tokens is not None and est_tokens > 0:
                await self.tokens.acquire(est_tokens)
            if self._pause_until <= time.monotonic():
                break  # a pause began while this one waited: wait it out too
        with self._lock:
            ticket = Ticket(time.monotonic(), self._sent, self._sent_tokens, float(est_tokens), self._epoch)
            self._sent += 1
            self._sent_tokens += float(est_tokens)
            self.in_flight += 1
        return ticket

    def forget(self, ticket: Ticket | None) -> None:
        """The request of ``ticket`` was never sent (stopped, cancelled): if it was an epoch's lone
        first request, let another one go in its place."""
        if ticket is None or ticket.settled:
            return
        with self._lock:
            ticket.settled = True
            self.in_flight -= 1
            if ticket.epoch == self._epoch and not self._informed:
                self._probe_sent_at = None

    # -- after an answer ---------------------------------------------------------
    def _bucket(self, kind: str, per_minute: float) -> TokenBucket:
        bucket = getattr(self, kind)
        rate = per_minute * (1.0 - self.margin)
        if bucket is None or abs(bucket.per_minute - rate) > 1e-9:
            bucket = TokenBucket(rate, burst_s=self.burst_s)
            setattr(self, kind, bucket)
            self._server_rate[kind] = per_minute / 60.0
        return bucket

    def observe(self, ticket: Ticket | None, status: int, headers: Any, retry_after: float | None) -> None:
        """Learn from one answer (any status) to the request that left with ``ticket``."""
        if ticket is None or ticket.settled:
            return
        h = RateLimitHeaders.from_headers(headers)
        now = time.monotonic()
        with self._lock:
            ticket.settled = True
            self.in_flight -= 1
            if ticket.epoch == self._epoch:
                self._informed = True
            sent_after = self._sent - ticket.sent_before - 1
            tokens_after = self._sent_tokens - ticket.tokens_before - ticket.est_tokens
            elapsed = now - ticket.t
            if h.limit_requests and h.limit_requests > 0:
                bucket = self._bucket("requests", h.limit_requests)
                if h.remaining_requests is not None:
                    bucket.set_level(h.remaining_requests - sent_after + elapsed * self._server_rate["requests"])
            if h.limit_tokens and h.limit_tokens > 0:
                bucket = self._bucket("tokens", h.limit_tokens)
                if h.remaining_tokens is not None:
                    bucket.set_level(h.remaining_tokens - tokens_after + elapsed * self._server_rate["tokens"])
            if status == 429 and (not h.present or h.exhausted(ticket.est_tokens)):
                pause = retry_after if retry_after is not None else (h.time_to_one_request() or 1.0)
                until = now + min(float(pause), self.max_pause_s)
                if until > self._pause_until:
                    if self._pause_until < now or not self.pause_log:  # a new pause
                        self.pause_log = self.pause_log[-99:] + [[now, until, self.in_flight]]
                    else:  # the current pause, made longer
                        self.pause_log[-1][1] = until
                    self._pause_until = until
                    self.pauses += 1
                    # after it, one request goes first again (answers to requests of before do not count)
                    self._epoch += 1
                    self._informed = False
                    self._probe_sent_at = None
