"""The fake's rate limits: a requests bucket and a tokens bucket per model, and OpenAI's headers.

Each bucket holds ``per_minute * burst_s / 60`` (``burst_s`` 60: a whole minute, as OpenAI's limits
read) and refills continuously at ``per_minute / 60`` per second. A chat request is charged 1 request
and ``prompt_tokens + max_tokens`` tokens (the completion's length when there is no ``max_tokens``), as
OpenAI charges at admission. Every answer carries::

    x-ratelimit-limit-requests: 600          x-ratelimit-limit-tokens: 150000
    x-ratelimit-remaining-requests: 598      x-ratelimit-remaining-tokens: 149500
    x-ratelimit-reset-requests: 200ms        x-ratelimit-reset-tokens: 6m0s

(reset: the time until the bucket is full again, in OpenAI's Go-style durations). With ``enforce``
a request that does not fit is answered 429 with ``retry-after`` (whole seconds, rounded up) and
``retry-after-ms``; without it the buckets only feed the headers (remaining stops at 0).
"""

from __future__ import annotations

import math
import threading
import time


def fmt_duration(seconds: float) -> str:
    """OpenAI's reset format: ``20ms``, ``1s``, ``1.5s``, ``6m0s``, ``1h2m3s``."""
    s = max(0.0, float(seconds))
    if s < 1.0:
        return f"{int(math.ceil(s * 1000))}ms"
    if s < 60.0:
        return f"{round(s, 3):g}s"
    h, rest = divmod(s, 3600)
    m, sec = divmod(rest, 60)
    sec_s = f"{round(sec, 3):g}s"
    return (f"{int(h)}h" if h else "") + f"{int(m)}m{sec_s}"


class Bucket:
    def __init__(self, per_minute: float, burst_s: float) -> None:
        self.per_minute = float(per_minute)
        self.rate = self.per_minute / 60.0
        self.capacity = max(1.0, self.rate * float(burst_s))
        self.level = self.capacity
        self.t = time.monotonic()

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    def wait_for(self, n: float, now: float) -> float:
        self._refill(now)
        need = min(n, self.capacity)
        return 0.0 if self.level >= need else (need - self.level) / self.rate

    def take(self, n: float, now: float, floor: float | None = None) -> None:
        self._refill(now)
        self.level -= n
        if floor is not None:
            self.level = max(floor, self.level)

    def remaining(self) -> int:
        return max(0, int(self.level))

    def reset_s(self) -> float:
        return max(0.0, (self.capacity - self.level) / self.rate)


class RateLimiter:
    """Per-model buckets; ``admit`` decides one request and returns ``(ok, retry_after_s, headers)``."""

    def __init__(self, rpm: float, tpm: float, burst_s: float, enforce: bool) -> None:
        self.rpm, self.tpm, self.burst_s, self.enforce = rpm, tpm, burst_s, enforce
        self._buckets: dict[str, tuple[Bucket, Bucket]] = {}
        self._lock = threading.Lock()

    def _pair(self, model: str) -> tuple[Bucket, Bucket]:
        pair = self._buckets.get(model)
        if pair is None:
            pair = self._buckets[model] = (Bucket(self.rpm, self.burst_s), Bucket(self.tpm, self.burst_s))
        return pair

    def headers(self, model: str) -> dict[str, str]:
        with self._lock:
            req, tok = self._pair(model)
            now = time.monotonic()
            req._refill(now)
            tok._refill(now)
            return self._headers(req, tok)

    @staticmethod
    def _headers(req: Bucket, tok: Bucket) -> dict[str, str]:
        return {
            "x-ratelimit-limit-requests": str(int(req.per_minute)),
            "x-ratelimit-limit-tokens": str(int(tok.per_minute)),
            "x-ratelimit-remaining-requests": str(req.remaining()),
            "x-ratelimit-remaining-tokens": str(tok.remaining()),
            "x-ratelimit-reset-requests": fmt_duration(req.reset_s()),
            "x-ratelimit-reset-tokens": fmt_duration(tok.reset_s()),
        }

    def admit(self, model: str, tokens: int) -> tuple[bool, float, dict[str, str], str]:
        """Charge one request of ``tokens``; ``(admitted, retry_after_s, headers, exhausted)``."""
        with self._lock:
            req, tok = self._pair(model)
            now = time.monotonic()
            wait_r, wait_t = req.wait_for(1, now), tok.wait_for(tokens, now)
            if self.enforce and (wait_r > 0 or wait_t > 0):
                which = "requests" if wait_r >= wait_t else "tokens"
                return False, max(wait_r, wait_t), self._headers(req, tok), which
            floor = None if self.enforce else 0.0  # headers only: remaining stops at 0
            req.take(1, now, floor)
            tok.take(tokens, now, floor)
            return True, 0.0, self._headers(req, tok), ""

    def exhausted_headers(self, model: str) -> dict[str, str]:
        """Headers of an outage: nothing remains."""
        with self._lock:
            req, tok = self._pair(model)
            h = self._headers(req, tok)
        h["x-ratelimit-remaining-requests"] = "0"
        h["x-ratelimit-remaining-tokens"] = "0"
        return h
