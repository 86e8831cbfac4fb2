"""Metering of chat calls: the response cache, the budget and the ledger.

Per call: a cache hit is answered at once (and counted as one); otherwise the call's cost is estimated
(prompt characters / 4 plus the full ``max_tokens``, :mod:`.ledger`), reserved from the budget just
before its first attempt leaves, and, once it ended, booked: tokens and dollars of a call that got an
answer (the server's ``usage``, or the estimate where a server sends none), retries, failures; the
reservation is released and the actual spend booked; the explicit tokens-per-minute bucket is corrected
to the real usage. A successful answer is stored in the cache at once (a ``kill -9`` loses nothing
completed); a failure never is.
"""

from __future__ import annotations

import logging
from typing import Callable

from .cache import ResponseCache
from .ledger import Budget, Ledger, estimate_prompt_tokens
from .retrying import Delivery
from .types import ChatRequest, ChatResult

log = logging.getLogger(__name__)

# Rate-limit/budget estimate for a request without max_tokens (a free chain of thought, as the paper's voters).
UNLIMITED_COMPLETION_ESTIMATE = 1024


def result_from_record(rec: dict, cached: bool, attempts: int) -> ChatResult:
    """The :class:`ChatResult` of a cache record (the same for a fresh answer, a cached one, a batch line)."""
    tl = rec.get("top_logprobs")
    return ChatResult(
        text=rec.get("text"),
        ok=True,
        error=None,
        cached=cached,
        prompt_tokens=int(rec.get("prompt_tokens") or 0),
        completion_tokens=int(rec.get("completion_tokens") or 0),
        attempts=attempts,
        top_logprobs=None if tl is None else [[(t, lp) for t, lp in tok] for tok in tl],
        finish_reason=rec.get("finish_reason"),
        cached_prompt_tokens=int(rec.get("cached_prompt_tokens") or 0),
    )


class Estimate:
    """A call's estimated prompt and completion tokens and dollars, before it is sent."""

    __slots__ = ("prompt", "completion", "tokens", "usd")

    def __init__(self, prompt: int, completion: int, usd: float) -> None:
        self.prompt, self.completion, self.tokens, self.usd = prompt, completion, prompt + completion, usd


class Meter:
    """``model``: the name the ledger books under (its prices). ``settle_tokens(estimated, actual)``:
    corrects the rate limits' tokens bucket."""

    def __init__(self, model: str, cache: ResponseCache | None, ledger: Ledger, budget: Budget | None,
                 settle_tokens: Callable[[int, int], None]) -> None:
        self.model, self.cache, self.ledger, self.budget = model, cache, ledger, budget
        self.settle_tokens = settle_tokens

    def lookup(self, key: str) -> ChatResult | None:
        """The cached answer under ``key`` (a SQLite point read: microseconds, fine on the loop thread)."""
        if self.cache is None:
            return None
        rec = self.cache.get(key)
        if rec is None:
            return None
        self.ledger.record_cache_hit(self.model)
        return result_from_record(rec, cached=True, attempts=0)

    def estimate(self, req: ChatRequest) -> Estimate:
        prompt = estimate_prompt_tokens(req.prompt_chars(), len(req.messages))
        completion = req.max_tokens if req.max_tokens is not None else UNLIMITED_COMPLETION_ESTIMATE
        return Estimate(prompt, completion, self.ledger.cost(self.model, prompt, completion))

    def reserve(self, est: Estimate) -> None:
        """Raises ``BudgetExceeded`` before anything is sent when the call could pass the cap."""
        if self.budget is not None:
            self.budget.reserve(est.usd)

    def settle(self, est: Estimate, delivery: Delivery) -> None:
        """Book a call that was sent (``delivery.attempts > 0``), however it ended."""
        if delivery.attempts == 0:
            return
        rec = delivery.record
        if rec is not None:
            pt = rec["prompt_tokens"] if rec["prompt_tokens"] is not None else est.prompt
            ct = rec["completion_tokens"]
            if ct is None:
                ct = -(-len(rec["text"] or "") // 4)
            rec["prompt_tokens"], rec["completion_tokens"] = int(pt), int(ct)
            usd = self.ledger.record_call(self.model, pt, ct, cached_prompt_tokens=rec["cached_prompt_tokens"],
                                          batch=False)
            self.settle_tokens(est.tokens, pt + ct)
        else:
            usd = 0.0  # failed calls: assume not billed
            self.ledger.record_call(self.model, 0, 0)
        if delivery.attempts > 1:
            self.ledger.record_retries(self.model, delivery.attempts - 1)
        if self.budget is not None:
            self.budget.settle(est.usd, usd)

    def result(self, key: str, delivery: Delivery, label: str = "") -> ChatResult:
        """The call's result; a success is stored in the cache, a failure counted and logged."""
        n = delivery.attempts
        if delivery.record is None:
            self.ledger.record_failure(self.model)
            error = f"{delivery.error} (after {n} attempt{'s' if n != 1 else ''})"
            log.warning("LLM call %s failed: %s", label, error)
            return ChatResult(None, False, error, False, 0, 0, n)
        if self.cache is not None:
            self.cache.put(key, delivery.record)  # committed immediately: a kill -9 loses nothing completed
        return result_from_record(delivery.record, cached=False, attempts=n)
