"""What one HTTP attempt's failure means: retried (:class:`Retryable`) or not (:class:`Fatal`), and its wording.

- 429 (with ``Retry-After``/``retry-after-ms`` honoured), 408, 409 and 5xx: retryable;
- other 4xx (bad request, rejected key, unknown model): fatal, never retried;
- no answer (refused, reset, closed, a truncated body): retryable, marked ``connection`` so a managed
  server's liveness is checked before anything is retried against its port;
- no answer within the timeout: retryable;
- a 2xx whose body is not JSON, or not a chat completion: retryable.

Every message has the API key scrubbed (the caller passes its ``scrub``) and is one line, at most 300
characters of the server's body.
"""

from __future__ import annotations

import json
from typing import Callable

from .completion import MalformedCompletion, record_from_completion


class Retryable(Exception):
    def __init__(self, msg: str, retry_after: float | None = None, connection: bool = False) -> None:
        super().__init__(msg)
        self.retry_after = retry_after
        self.connection = connection  # no HTTP answer at all: refused, reset, closed


class Fatal(Exception):
    pass


def short(s: str, n: int = 300) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 3] + "..."


def status_error(status: int, body: str, retry_after: float | None, scrub: Callable[[str], str],
                 structured_output: str) -> Retryable | Fatal:
    """The error for a non-2xx answer."""
    msg = f"HTTP {status}: {short(scrub(body or f'Error code: {status}'))}"
    if status in (408, 409, 429) or status >= 500:
        return Retryable(msg, retry_after=retry_after)
    return Fatal(msg)


def timeout_error(timeout_s: float) -> Retryable:
    return Retryable(f"timeout: no response within {timeout_s:g}s")


def connection_error(err: BaseException, scrub: Callable[[str], str]) -> Retryable:
    return Retryable(f"connection error: {type(err).__name__}: {short(scrub(str(err)))}", connection=True)


def completion_record(data: bytes) -> dict:
    """The cache record of a 2xx body (:func:`~moloch_exp.llm.completion.record_from_completion`);
    raises :class:`Retryable` for a body that is not JSON or not a chat completion."""
    try:
        parsed = json.loads(data)
    except ValueError as e:
        raise Retryable(f"invalid JSON from server ({e}): {_head(data)!r}") from None
    try:
        return record_from_completion(parsed)
    except MalformedCompletion as e:
        raise Retryable(f"malformed response from server ({e}): {_head(data)!r}") from None


def _head(data: bytes) -> str:
    return short(data.decode("utf-8", "replace"), 120)
