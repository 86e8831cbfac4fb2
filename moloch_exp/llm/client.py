"""The one OpenAI-protocol client every audience vote and judge call goes through, composed of layers:

- transport (:mod:`.transport`, :mod:`.request_body`, :mod:`.http_errors`, :mod:`.api_key`): one HTTP
  attempt: the request's JSON body, ``POST /chat/completions`` on a keep-alive pool per event loop,
  the answer as a cache record or a classified error (retryable or not);
- retry and rate limits (:mod:`.retrying`, :mod:`.limits`, :mod:`.pacer`): tenacity with
  ``Retry-After``, concurrency/RPM/TPM slots, pacing by the server's ``x-ratelimit-*`` headers, the
  managed server's liveness;
- metering (:mod:`.metering`): response cache, budget reservation, ledger;
- re-asking (:mod:`.reasking`): ``parse_many``'s unparseable answers asked again with new seeds;
- many calls (:mod:`.run_many`): the async bridge, the progress bar, stopping on a dead server or the
  budget; or, with ``batch``, the OpenAI Batch API (:mod:`.batch`) into the same cache.

Per request: cache → budget → limits → HTTP with retries → ledger → cache. A request that still fails
after the retry budget comes back as ``ChatResult(ok=False, error=<cause>)``; nothing raises except
:class:`~moloch_exp.llm.ledger.BudgetExceeded` and a :class:`ServiceError` from the ``liveness`` check
(``ManagedServer.check_alive``, before every attempt and after every connection error), which stops the
whole batch at once with one line naming the server (an answer already on its way is still kept).

The API key is read from the environment variable named by ``api_key_env`` when a connection is
opened; it is never stored on the client, logged, or shown in ``repr``.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

from .api_key import ApiKey, MissingAPIKey
from .batch import BatchSettings, batch_chat_many, batch_parse_many
from .cache import ResponseCache, cache_key, canonical_json
from .ledger import Budget, BudgetExceeded, Ledger
from .limits import Limits
from .metering import Meter
from .pacer import ServerPacer
from .reasking import ask_until_parsed
from .request_body import RequestMapping
from .retrying import Delivery, RetryingSender, RetryPolicy, StopSignal
from .run_many import run_many
from .structured import STRUCTURED_MODES
from .transport import EndpointUnreachable, HttpTransport
from .types import ChatRequest, ChatResult, Parsed

__all__ = ["LLMClient", "MissingAPIKey", "EndpointUnreachable", "BudgetExceeded"]


class LLMClient:
    """Cached, retried, rate-limited, budgeted OpenAI-protocol chat client.

    Args:
        base_url: e.g. ``https://api.openai.com/v1`` or a ``ManagedServer.base_url``; a list: replicas of one
            server, each request to the least busy (:mod:`.transport`); the first names the client.
        model: model name sent with each request.
        api_key_env: name of the env var holding the key (``None``: local server, no key).
        structured_output: ``"json_schema"`` (OpenAI/vLLM), ``"llamacpp"`` (llama.cpp's
            ``llama-server``) or ``"none"``; how ``ChatRequest.json_schema`` is sent.
        timeout_s: per-request timeout. max_retries: retries after the first attempt.
        backoff_initial_s / backoff_max_s: exponential backoff with jitter between retries.
        max_retry_after_s: longest ``Retry-After`` honoured (longer ones are capped).
        concurrency / rpm / tpm: limits (``None``: unlimited).
        pace_by_headers: also pace by the server's ``x-ratelimit-*`` headers and pause every request
            after a 429 that shows an empty bucket (:mod:`.pacer`).
        cache: a :class:`ResponseCache`, a path to one, or ``None``.
        ledger: a :class:`Ledger` (default: a new one with ``prices``).
        budget: a :class:`Budget`, a USD cap, or ``None``.
        model_identity: cache namespace (default ``model``); set it when the same name may
            mean different weights (e.g. a local GGUF path + quantisation).
        max_tokens_param: ``"max_tokens"`` or ``"max_completion_tokens"`` (newer OpenAI models).
        extra_body: extra JSON fields sent with every request (part of the cache key).
        progress: show tqdm bars in ``chat_many`` / ``parse_many``.
        liveness: a check that raises :class:`ServiceError` when the server behind ``base_url`` is
            gone (``ManagedServer.check_alive``); ``None`` for remote endpoints.
        batch: :class:`~moloch_exp.llm.batch.BatchSettings` to send ``chat_many``/``parse_many`` through
            the Batch API (needs ``cache``); ``None``: synchronous calls.
    """

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        api_key_env: str | None = None,
        structured_output: str = "json_schema",
        timeout_s: float = 60.0,
        max_retries: int = 5,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        max_retry_after_s: float = 300.0,
        concurrency: int = 8,
        rpm: int | None = None,
        tpm: int | None = None,
        cache: ResponseCache | str | os.PathLike | None = None,
        ledger: Ledger | None = None,
        budget: Budget | float | None = None,
        model_identity: str | None = None,
        prices: dict | None = None,
        max_tokens_param: str = "max_tokens",
        extra_body: dict | None = None,
        progress: bool = True,
        liveness: Callable[[], None] | None = None,
        pace_by_headers: bool = True,
        batch: BatchSettings | None = None,
    ) -> None:
        if structured_output not in STRUCTURED_MODES:
            raise ValueError(f"structured_output must be one of {STRUCTURED_MODES}, got {structured_output!r}")
        if max_tokens_param not in ("max_tokens", "max_completion_tokens"):
            raise ValueError(f"max_tokens_param must be 'max_tokens' or 'max_completion_tokens', got {max_tokens_param!r}")
        policy = RetryPolicy(int(max_retries), float(backoff_initial_s), float(backoff_max_s), float(max_retry_after_s))
        base_urls = [base_url] if isinstance(base_url, str) else list(base_url)
        self.base_url = str(base_urls[0]).rstrip("/")
        self.model = str(model)
        self.api_key = ApiKey(api_key_env, f"{self.base_url} (model {self.model})")
        self.api_key.read()  # fail early, before any work, if the key is missing
        self.api_key_env = self.api_key.env
        self.structured_output = structured_output
        self.timeout_s = float(timeout_s)
        self.max_retries = policy.max_retries
        pacer = ServerPacer(first_wait_s=min(10.0, self.timeout_s), max_pause_s=policy.max_retry_after_s)
        self.limits = Limits(concurrency=concurrency, rpm=rpm, tpm=tpm, pacer=pacer if pace_by_headers else None)
        self.cache = ResponseCache(cache) if isinstance(cache, (str, os.PathLike)) else cache
        if batch is not None and self.cache is None:
            raise ValueError("batch mode writes every answer into the response cache: give the client a cache")
        self.batch = batch
        self._ledger = ledger if ledger is not None else Ledger(prices=dict(prices or {}))
        if prices and ledger is not None:
            self._ledger.prices.update(prices)
        self.budget = Budget(float(budget)) if isinstance(budget, (int, float)) else budget
        self.model_identity = model_identity or self.model
        self.progress = bool(progress)
        self.mapping = RequestMapping(self.model, structured_output, max_tokens_param,
                                      dict(extra_body) if extra_body else None)
        self._key_namespace = self.model_identity + (
            "|extra_body=" + canonical_json(self.mapping.extra_body) if self.mapping.extra_body else "")
        self.transport = HttpTransport(base_urls, self.api_key, self.timeout_s, self.limits.concurrency,
                                       structured_output)
        self.sender = RetryingSender(self.transport, self.limits, policy, liveness)
        self.meter = Meter(self.model, self.cache, self._ledger, self.budget, self.limits.settle_tokens)

    # -- identity / secrets ----------------------------------------------------
    def __repr__(self) -> str:
        return (
            f"LLMClient(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
            f"structured_output={self.structured_output!r}, concurrency={self.limits.concurrency}, "
            f"rpm={self.limits.rpm}, tpm={self.limits.tpm}, cache={self.cache!r})"
        )

    __str__ = __repr__

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    @property
    def max_tokens_param(self) -> str:
        return self.mapping.max_tokens_param

    @property
    def extra_body(self) -> dict | None:
        return self.mapping.extra_body

    def ping(self, timeout_s: float = 3.0) -> list[str]:
        """Fast pre-flight: ``GET {base_url}/models``. Returns the served model ids.

        Raises :class:`EndpointUnreachable` naming the URL on connection errors, timeouts,
        5xx, or a rejected key (401/403).
        """
        return self.transport.ping(self.model, timeout_s)

    check_reachable = ping

    async def aclose(self) -> None:
        """Close the HTTP connections opened on the running loop."""
        await self.transport.aclose()

    # -- one request -------------------------------------------------------------
    def key_for(self, req: ChatRequest) -> str:
        """The cache key of ``req`` under this client's model identity."""
        return cache_key(self._key_namespace, req, self.structured_output)

    def request_body(self, req: ChatRequest) -> dict:
        """The JSON body sent for ``req`` (the Batch API files carry the same)."""
        return self.mapping.body(req)

    _request_kwargs = request_body  # its name before the layers (tests/llm/test_batch_api.py)

    async def achat(self, req: ChatRequest) -> ChatResult:
        """One chat call (cache → budget → limits → retried HTTP). Never raises except BudgetExceeded."""
        return await self._achat(req, None)

    async def _achat(self, req: ChatRequest, abort: StopSignal | None) -> ChatResult:
        key = self.key_for(req)
        hit = self.meter.lookup(key)
        if hit is not None:
            return hit
        est = self.meter.estimate(req)
        delivery = Delivery()
        try:
            await self.sender.send(self.mapping.encode(req), est.tokens, delivery, abort,
                                   before_first=lambda: self.meter.reserve(est), label=req.purpose)
        finally:
            self.meter.settle(est, delivery)
        return self.meter.result(key, delivery, req.purpose)

    async def aparse(self, req: ChatRequest, parse: Callable[[str], Any], invalid_retries: int = 2) -> Parsed:
        return await self._aparse(req, parse, invalid_retries, None)

    async def _aparse(self, req: ChatRequest, parse: Callable[[str], Any], invalid_retries: int,
                      abort: StopSignal | None) -> Parsed:
        return await ask_until_parsed(lambda r: self._achat(r, abort), req, parse, invalid_retries,
                                      lambda: self._ledger.record_invalid(self.model))

    # -- many requests ----------------------------------------------------------
    def chat_many(self, reqs: Sequence[ChatRequest], desc: str = "llm") -> list[ChatResult]:
        """Run ``reqs`` concurrently (within the limits) from synchronous code; order preserved.

        Raises :class:`BudgetExceeded` (with ``.partial``: the results so far, ``None`` where
        missing) if the cap stops the batch; completed calls are in the cache either way.
        """
        if self.batch is not None:  # the Batch API: uploads, polls, fills the same cache
            return batch_chat_many(self, list(reqs), desc)
        return run_many(reqs, self._achat, desc, self.limits.concurrency, self.progress, self.aclose)

    def parse_many(self, reqs: Sequence[ChatRequest], parse: Callable[[str], Any], desc: str = "llm",
                   invalid_retries: int = 2) -> list[Parsed]:
        """Like :meth:`chat_many`, then ``parse`` each answer (``ValueError`` = invalid).

        An unparseable answer is re-asked with ``seed + k`` (k = 1..invalid_retries; a new
        cache key, so a real new call) and, if still unparseable, reported as ``"invalid"``.
        Transport failures are ``"failed"``. No value is ever guessed.
        """
        if self.batch is not None:  # re-asks of unparseable answers are further batch rounds
            return batch_parse_many(self, list(reqs), parse, desc, invalid_retries)
        return run_many(reqs, lambda req, abort: self._aparse(req, parse, invalid_retries, abort), desc,
                        self.limits.concurrency, self.progress, self.aclose)
