"""Call ledger (calls, cache hits, tokens, failures, USD per model) and budget cap.

Prices come from a :class:`~moloch_exp.llm.prices.PriceBook` (genai-prices, ``llm.prices``, local
servers free). A model without a known price is *unpriced*: its ``usd`` is ``None`` in
``to_dict()``, and so is the total, never $0. A call is priced with its cached prompt tokens
(``cached_prompt_tokens``, part of ``prompt_tokens``) and whether it went through the Batch API.

:class:`Budget` refuses a call *before* it could push the spend past the cap, using a conservative
estimate of that call's cost (prompt characters / 4 tokens, plus the full ``max_tokens``), and keeps
that estimate reserved while the call is in flight so concurrent calls cannot overshoot together.
"""

from __future__ import annotations

from moloch_exp.errors import BudgetError

import math
import threading
from dataclasses import dataclass, field
from typing import Mapping

from .prices import Price, PriceBook

CHARS_PER_TOKEN = 4.0
MESSAGE_OVERHEAD_TOKENS = 8  # role markers / template tokens per message, counted conservatively
REQUEST_OVERHEAD_TOKENS = 32  # chat templates may add a default system prompt (SmolLM2 does: ~20 tokens)

# calls: requests sent to the network (a retried request counts once; its extra attempts
# are in "retries"); failures: requests that failed after all retries; invalid: parsed
# calls whose answer never parsed; cached_prompt_tokens: the part of prompt_tokens the API
# served from its prompt cache; batch_calls: calls answered through the Batch API.
_COUNTERS = ("calls", "cache_hits", "prompt_tokens", "cached_prompt_tokens", "completion_tokens", "failures",
             "invalid", "retries", "batch_calls")


class BudgetExceeded(BudgetError):
    """A call was refused because it could push the estimated spend past the budget cap."""


def estimate_prompt_tokens(prompt_chars: int, n_messages: int = 1) -> int:
    """Conservative token estimate for a prompt of ``prompt_chars`` characters (the budget's guard)."""
    return (
        int(math.ceil(prompt_chars / CHARS_PER_TOKEN))
        + MESSAGE_OVERHEAD_TOKENS * max(1, n_messages)
        + REQUEST_OVERHEAD_TOKENS
    )


@dataclass
class _ModelStats:
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    failures: int = 0
    invalid: int = 0
    retries: int = 0
    batch_calls: int = 0
    usd: float | None = 0.0  # None: unpriced
    price: str | None = None  # where the price comes from (Price.source)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in (*_COUNTERS, "usd", "price")}


@dataclass
class Ledger:
    """Per-model counters. ``calls`` counts network calls made (retries of one request
    count once; cache hits do not count as calls).

    ``prices``: a :class:`PriceBook` or a ``llm.prices`` mapping. ``bind(name, price)`` prices the
    name a client sends (a managed server's alias) as the service it belongs to.
    """

    prices: PriceBook | Mapping | None = None
    _bound: dict[str, Price | None] = field(default_factory=dict, init=False, repr=False)
    _per_model: dict[str, _ModelStats] = field(default_factory=dict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.prices, PriceBook):
            self.prices = PriceBook(dict(self.prices or {}))

    def __getstate__(self) -> dict:  # picklable for worker processes
        return {"prices": self.prices, "bound": dict(self._bound), "counts": self.to_dict()}

    def __setstate__(self, state: dict) -> None:
        self.__init__(prices=state["prices"])  # type: ignore[misc]
        self._bound.update(state.get("bound") or {})
        self.merge(state["counts"])

    def bind(self, model: str, price: Price | None) -> None:
        """Calls recorded under ``model`` cost ``price`` (None: unpriced)."""
        with self._lock:
            self._bound[model] = price

    def price_of(self, model: str) -> Price | None:
        if model in self._bound:
            return self._bound[model]
        return self.prices.lookup(model)

    def _stats(self, model: str) -> _ModelStats:
        s = self._per_model.get(model)
        if s is None:
            price = self.price_of(model)
            s = self._per_model[model] = _ModelStats(usd=None if price is None else 0.0,
                                                     price=None if price is None else price.source)
        return s

    def cost(self, model: str, prompt_tokens: float, completion_tokens: float, cached_prompt_tokens: float = 0,
             batch: bool = False) -> float:
        """USD for one call; 0 for an unpriced model (the budget guard: a cap with an unpriced model is
        refused at pre-flight and when a service is opened)."""
        price = self.price_of(model)
        return 0.0 if price is None else price.usd(prompt_tokens, completion_tokens, cached_prompt_tokens, batch)

    # -- recording -----------------------------------------------------------
    def record_call(self, model: str, prompt_tokens: int, completion_tokens: int, cached_prompt_tokens: int = 0,
                    batch: bool = False) -> float:
        """Book one call; returns its USD (0 when unpriced, and then the model's ``usd`` stays None)."""
        usd = self.cost(model, prompt_tokens, completion_tokens, cached_prompt_tokens, batch)
        with self._lock:
            s = self._stats(model)
            s.calls += 1
            s.prompt_tokens += int(prompt_tokens)
            s.cached_prompt_tokens += int(cached_prompt_tokens)
            s.completion_tokens += int(completion_tokens)
            s.batch_calls += int(bool(batch))
            if s.usd is not None:
                s.usd += usd
        return usd

    def record_cache_hit(self, model: str) -> None:
        with self._lock:
            self._stats(model).cache_hits += 1

    def record_failure(self, model: str) -> None:
        with self._lock:
            self._stats(model).failures += 1

    def record_retries(self, model: str, n: int) -> None:
        with self._lock:
            self._stats(model).retries += int(n)

    def record_invalid(self, model: str) -> None:
        with self._lock:
            self._stats(model).invalid += 1

    # -- views ---------------------------------------------------------------
    @property
    def usd(self) -> float | None:
        """Total USD; None when any model in the ledger is unpriced."""
        return self.to_dict()["usd"]

    def to_dict(self) -> dict:
        with self._lock:
            per_model = {m: s.to_dict() for m, s in sorted(self._per_model.items())}
        out: dict = {k: sum(pm[k] for pm in per_model.values()) for k in _COUNTERS}
        unpriced = [m for m, pm in per_model.items() if pm["usd"] is None]
        out["usd"] = None if unpriced else sum(pm["usd"] for pm in per_model.values())
        out["unpriced"] = unpriced
        out["per_model"] = per_model
        return out

    def merge(self, other: Mapping) -> "Ledger":
        """Add another ledger's ``to_dict()`` (e.g. from a worker process) into this one."""
        per_model = other.get("per_model") or {}
        with self._lock:
            for model, d in per_model.items():
                s = self._stats(model)
                for k in _COUNTERS:
                    setattr(s, k, getattr(s, k) + int(d.get(k, 0)))
                if d.get("usd", 0.0) is None or s.usd is None:
                    s.usd, s.price = None, None
                else:
                    s.usd += float(d.get("usd", 0.0))
        return self

    @classmethod
    def from_dict(cls, d: Mapping, prices: PriceBook | Mapping | None = None) -> "Ledger":
        return cls(prices=prices).merge(d)


def usd_text(usd: float | None, unpriced: list[str] | tuple[str, ...] = ()) -> str:
    """Dollars for people: "$0.0123", or "unpriced (model, ...)" when a model has no price."""
    if usd is None or unpriced:
        return f"unpriced ({', '.join(unpriced)})" if unpriced else "unpriced"
    return f"${usd:,.4f}" if usd < 100 else f"${usd:,.2f}"


class Budget:
    """Optional USD cap. ``max_usd=None`` means unlimited.

    ``reserve(est)`` raises :class:`BudgetExceeded` when ``spent + in-flight + est``
    would pass the cap; ``settle(est, actual)`` releases the reservation and books the
    actual cost. ``spent_usd`` may be seeded from an earlier run's ledger.
    """

    def __init__(self, max_usd: float | None = None, spent_usd: float = 0.0) -> None:
        if max_usd is not None and max_usd < 0:
            raise ValueError(f"max_usd must be >= 0 or None, got {max_usd}")
        self.max_usd = None if max_usd is None else float(max_usd)
        self.spent_usd = float(spent_usd)
        self.reserved_usd = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Budget(max_usd={self.max_usd}, spent_usd={self.spent_usd:.6f}, reserved_usd={self.reserved_usd:.6f})"

    def __getstate__(self) -> dict:
        return {"max_usd": self.max_usd, "spent_usd": self.spent_usd}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_usd"], state["spent_usd"])  # type: ignore[misc]

    @property
    def remaining_usd(self) -> float | None:
        if self.max_usd is None:
            return None
        return self.max_usd - self.spent_usd - self.reserved_usd

    def check(self, est_usd: float) -> None:
        """Raise if a call estimated at ``est_usd`` could pass the cap (reserves nothing)."""
        if self.max_usd is None:
            return
        with self._lock:
            self._check_locked(est_usd)

    def _check_locked(self, est_usd: float) -> None:
        assert self.max_usd is not None
        if self.spent_usd + self.reserved_usd + est_usd > self.max_usd + 1e-12:
            raise BudgetExceeded(
                f"LLM budget cap reached: spent ${self.spent_usd:.6f} + in flight ${self.reserved_usd:.6f} "
                f"+ next call up to ${est_usd:.6f} would exceed max_usd=${self.max_usd:.6f}. "
                "Completed calls are cached; raise the cap (or set it to null) and re-run to continue."
            )

    def reserve(self, est_usd: float) -> None:
        if self.max_usd is None:
            return
        with self._lock:
            self._check_locked(est_usd)
            self.reserved_usd += est_usd

    def settle(self, est_usd: float, actual_usd: float) -> None:
        with self._lock:
            if self.max_usd is not None:
                self.reserved_usd = max(0.0, self.reserved_usd - est_usd)
            self.spent_usd += actual_usd
