"""Retries and rate limits around the HTTP attempts of one chat call.

Each attempt takes a slot of the client's :class:`~moloch_exp.llm.limits.Limits` (concurrency, the
explicit ``rpm``/``tpm`` buckets, and the :class:`~moloch_exp.llm.pacer.ServerPacer` that follows the
server's ``x-ratelimit-*`` headers), checks that the batch was not stopped and that a managed server is
alive (``liveness``), sends, and tells the limits how it was answered. Failed attempts are retried by
tenacity as :mod:`.http_errors` says: after the server's ``Retry-After`` (capped at
``max_retry_after_s``) or an exponential backoff with jitter, at most ``max_retries`` times; a stop of
the batch (a dead server, the budget) ends that wait at once, and nothing more is sent. After a
connection error the liveness check runs again, so a dead server stops the batch (``ServiceError``)
instead of being retried.

What happened is written into a :class:`Delivery` as it happens (attempts, the record, the last error),
so the metering layer can book it even when the call ends in an exception (a dead server, a budget
stop, a cancellation).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Callable

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter

from .http_errors import Fatal, Retryable
from .limits import Limits
from .transport import HttpTransport

log = logging.getLogger(__name__)


class Aborted(Exception):
    """The batch was stopped (a dead server, the budget) before this request was sent again."""


class StopSignal(asyncio.Event):
    """A batch's stop: once set, no attempt leaves. ``on_the_wire``: the tasks whose attempt was sent and
    is not answered yet; a dead server cancels every other task, and lets these finish (against a dead
    server they end at once; an answer already on its way is kept and cached)."""

    def __init__(self) -> None:
        super().__init__()
        self.on_the_wire: set[asyncio.Task] = set()


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5  # retries after the first attempt
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    max_retry_after_s: float = 300.0  # longest Retry-After honoured (longer ones are capped)

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")


class Delivery:
    """One call's progress: network ``attempts`` made, the ``record`` once one arrived, the last ``error``."""

    __slots__ = ("attempts", "record", "error")

    def __init__(self) -> None:
        self.attempts = 0
        self.record: dict | None = None
        self.error: str | None = None


class RetryingSender:
    """Sends a body through ``transport`` within ``limits``, retrying by ``policy``; ``liveness`` raises a
    ``ServiceError`` when the server behind the transport is gone (``None``: a remote endpoint)."""

    def __init__(self, transport: HttpTransport, limits: Limits, policy: RetryPolicy,
                 liveness: Callable[[], None] | None = None) -> None:
        self.transport, self.limits, self.policy, self.liveness = transport, limits, policy, liveness
        self._backoff = wait_exponential_jitter(initial=policy.backoff_initial_s, max=policy.backoff_max_s,
                                                jitter=policy.backoff_initial_s)

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["liveness"] = None  # a live process handle does not travel
        return state

    def _wait(self, rs: RetryCallState) -> float:
        exc = rs.outcome.exception() if rs.outcome is not None else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(float(retry_after), self.policy.max_retry_after_s)
        return self._backoff(rs)

    async def send(self, body: bytes, est_tokens: int, delivery: Delivery, abort: StopSignal | None = None,
                   before_first: Callable[[], Any] | None = None, label: str = "") -> None:
        """Deliver ``body`` into ``delivery``. ``before_first`` runs once, just before the first attempt
        leaves (the budget's reservation: it may raise ``BudgetExceeded``, and then nothing is sent).
        Returns with ``delivery.record`` set, or ``None`` and ``delivery.error`` once the retries are
        spent or the error is not retried; raises ``Aborted``, ``ServiceError``, what ``before_first`` raises."""
        retrying = AsyncRetrying(stop=stop_after_attempt(self.policy.max_retries + 1), wait=self._wait,
                                 retry=retry_if_exception_type(Retryable), reraise=True,
                                 sleep=lambda seconds: _pause(seconds, abort))
        try:
            async for attempt in retrying:
                with attempt:
                    if abort is not None and abort.is_set():
                        raise Aborted()  # stopped: do not queue for a rate limit's slot only to send nothing
                    async with self.limits.slot(est_tokens) as ticket:
                        if abort is not None and abort.is_set():
                            raise Aborted()  # the batch stopped (dead server, budget): no (re)try
                        if self.liveness is not None:
                            self.liveness()  # a dead managed server: ServiceError, nothing sent
                        if delivery.attempts == 0 and before_first is not None:
                            before_first()
                        delivery.attempts += 1
                        outcome = await self._attempt(body, abort)
                        self.limits.observe(ticket, outcome.status, outcome.headers, outcome.retry_after)
                        if outcome.error is not None:
                            delivery.error = str(outcome.error)
                            log.debug("%s attempt %d failed: %s", label or "call", delivery.attempts, outcome.error)
                            if self.liveness is not None and getattr(outcome.error, "connection", False):
                                self.liveness()  # refused because the server died: stop, do not retry
                            raise outcome.error
                        delivery.record = outcome.record
        except (Retryable, Fatal):
            pass  # retries spent, or not retried: delivery.error says why

    async def _attempt(self, body: bytes, abort: StopSignal | None) -> Any:
        """One attempt, noted on the wire while it is (no await between its answer and the cache write)."""
        if abort is None:
            return await self.transport.attempt(body)
        task = asyncio.current_task()
        abort.on_the_wire.add(task)
        try:
            return await self.transport.attempt(body)
        finally:
            abort.on_the_wire.discard(task)


async def _pause(seconds: float, abort: StopSignal | None) -> None:
    """Wait before a retry; a stop of the batch ends the wait at once (the retry then sees it, sends nothing)."""
    if abort is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(abort.wait(), seconds)
    except asyncio.TimeoutError:
        pass
