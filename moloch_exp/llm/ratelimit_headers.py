"""Reading a provider's rate-limit headers: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``
and ``retry-after-ms`` / ``retry-after``.

OpenAI (and vLLM, OpenRouter, Together, … in its format) sends on every answer::

    x-ratelimit-limit-requests: 5000        x-ratelimit-limit-tokens: 2000000
    x-ratelimit-remaining-requests: 4999    x-ratelimit-remaining-tokens: 1999400
    x-ratelimit-reset-requests: 12ms        x-ratelimit-reset-tokens: 6m0s

Durations are Go-style (``1h2m3.5s``, ``6m0s``, ``1s``, ``20ms``); a bare number is seconds.
:func:`parse_duration` and :meth:`RateLimitHeaders.from_headers` never raise: what cannot be read is ``None``.
"""

from __future__ import annotations

import email.utils
import re
import time
from dataclasses import dataclass
from typing import Any, Mapping

_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")


def parse_duration(text: str | None) -> float | None:
    """Seconds in a Go-style duration (``6m0s``, ``1.5s``, ``20ms``) or a bare number of seconds."""
    if text is None:
        return None
    s = str(text).strip()
    if not s:
        return None
    try:
        return max(0.0, float(s))
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _PART.finditer(s):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return total if pos == len(s) and pos > 0 else None


def parse_retry_after(headers: Mapping[str, str] | Any | None) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = headers.get("retry-after")
    if not ra:
        return None
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(ra).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _number(headers: Any, name: str) -> float | None:
    v = headers.get(name)
    if v is None:
        return None
    try:
        return float(v)
    except ValueError:
        return None


@dataclass(frozen=True)
class RateLimitHeaders:
    """The six ``x-ratelimit-*`` values of one answer (``None``: not sent or unreadable)."""

    limit_requests: float | None = None
    remaining_requests: float | None = None
    reset_requests_s: float | None = None
    limit_tokens: float | None = None
    remaining_tokens: float | None = None
    reset_tokens_s: float | None = None

    @classmethod
    def from_headers(cls, headers: Mapping[str, str] | Any | None) -> "RateLimitHeaders":
        if headers is None:
            return cls()
        return cls(
            limit_requests=_number(headers, "x-ratelimit-limit-requests"),
            remaining_requests=_number(headers, "x-ratelimit-remaining-requests"),
            reset_requests_s=parse_duration(headers.get("x-ratelimit-reset-requests")),
            limit_tokens=_number(headers, "x-ratelimit-limit-tokens"),
            remaining_tokens=_number(headers, "x-ratelimit-remaining-tokens"),
            reset_tokens_s=parse_duration(headers.get("x-ratelimit-reset-tokens")),
        )

    @property
    def present(self) -> bool:
        return self.remaining_requests is not None or self.remaining_tokens is not None

    def exhausted(self, tokens_needed: float = 0.0) -> bool:
        """True when a remaining count shows the bucket cannot take another request of ``tokens_needed``."""
        return ((self.remaining_requests is not None and self.remaining_requests < 1)
                or (self.remaining_tokens is not None and self.remaining_tokens < max(1.0, tokens_needed)))

    def time_to_one_request(self) -> float | None:
        """Seconds until one request's worth refills (from the limit), for a 429 without Retry-After."""
        if self.limit_requests:
            return 60.0 / self.limit_requests
        return self.reset_requests_s
