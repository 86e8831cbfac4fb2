"""The one OpenAI-protocol client every audience vote and judge call goes through.

Per request: persistent cache lookup → budget reservation → concurrency/RPM/TPM slot →
HTTP call with its own retries (tenacity; 429 + ``Retry-After``, 408/409/5xx, timeouts,
connection errors, truncated bodies and malformed JSON are retried with exponential
backoff; other 4xx are not) → ledger → cache store. A request that still fails after the
retry budget comes back as ``ChatResult(ok=False, error=<cause>)``; nothing raises
except :class:`~moloch_exp.llm.ledger.BudgetExceeded` and a :class:`ServiceError` from the
``liveness`` check: for a managed server, ``liveness=server.check_alive`` is called before every
attempt and after every connection error, so a dead server stops the whole batch at once (the
other requests are cancelled, none is retried against the dead port) with one line naming it.

The API key is read from the environment variable named by ``api_key_env`` when a
connection is opened; it is never stored on the client, logged, or shown in ``repr``.
"""

from __future__ import annotations

from moloch_exp.errors import ServiceError

import asyncio
import dataclasses
import email.utils
import json
import logging
import os
import threading
import time
import weakref
from typing import Any, Awaitable, Callable, Sequence, TypeVar

import httpx
import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt, wait_exponential_jitter
from tqdm.auto import tqdm

from .cache import ResponseCache, cache_key, canonical_json
from .ledger import Budget, BudgetExceeded, Ledger, estimate_prompt_tokens
from .limits import Limits
from .structured import STRUCTURED_MODES, response_format_for
from .types import PARSED_FAILED, PARSED_INVALID, PARSED_OK, ChatRequest, ChatResult, Parsed

__all__ = ["LLMClient", "MissingAPIKey", "EndpointUnreachable", "BudgetExceeded"]

log = logging.getLogger(__name__)
T = TypeVar("T")

NO_KEY = "not-needed"  # local servers ignore the key, the openai SDK insists on one
# Rate-limit/budget estimate for a request without max_tokens (a free chain of thought, as the paper's voters).
UNLIMITED_COMPLETION_ESTIMATE = 1024


class MissingAPIKey(ServiceError):
    """``api_key_env`` names an environment variable that is unset or empty."""


class EndpointUnreachable(ServiceError):
    """The endpoint did not answer a quick pre-flight request."""


class _Retryable(Exception):
    def __init__(self, msg: str, retry_after: float | None = None, connection: bool = False) -> None:
        super().__init__(msg)
        self.retry_after = retry_after
        self.connection = connection  # no HTTP answer at all: refused, reset, closed


class _Fatal(Exception):
    pass


class _Aborted(Exception):
    """A batch was stopped (budget) before this request was sent."""


def _parse_retry_after(headers: Any) -> float | None:
    """Seconds from ``retry-after-ms`` / ``retry-after`` (seconds or HTTP date)."""
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
        dt = email.utils.parsedate_to_datetime(ra)
        return max(0.0, dt.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _short(s: str, n: int = 300) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[: n - 3] + "..."


class LLMClient:
    """Cached, retried, rate-limited, budgeted OpenAI-protocol chat client.

    Args:
        base_url: e.g. ``https://api.openai.com/v1`` or a ``ManagedServer.base_url``.
        model: model name sent with each request.
        api_key_env: name of the env var holding the key (``None``: local server, no key).
        structured_output: ``"json_schema"`` (OpenAI/vLLM), ``"llamacpp"`` (llama.cpp's
            ``llama-server``) or ``"none"``; how ``ChatRequest.json_schema`` is sent.
        timeout_s: per-request timeout. max_retries: retries after the first attempt.
        backoff_initial_s / backoff_max_s: exponential backoff with jitter between retries.
        max_retry_after_s: longest ``Retry-After`` honoured (longer ones are capped).
        concurrency / rpm / tpm: limits (``None``: unlimited).
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
    """

    def __init__(
        self,
        base_url: str,
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
    ) -> None:
        if structured_output not in STRUCTURED_MODES:
            raise ValueError(f"structured_output must be one of {STRUCTURED_MODES}, got {structured_output!r}")
        if max_tokens_param not in ("max_tokens", "max_completion_tokens"):
            raise ValueError(f"max_tokens_param must be 'max_tokens' or 'max_completion_tokens', got {max_tokens_param!r}")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = str(base_url).rstrip("/")
        self.model = str(model)
        self.api_key_env = api_key_env or None
        self._read_api_key()  # fail early, before any work, if the key is missing
        self.structured_output = structured_output
        self.timeout_s = float(timeout_s)
        self.max_retries = int(max_retries)
        self.backoff_initial_s = float(backoff_initial_s)
        self.backoff_max_s = float(backoff_max_s)
        self.max_retry_after_s = float(max_retry_after_s)
        self.limits = Limits(concurrency=concurrency, rpm=rpm, tpm=tpm)
        self.cache = ResponseCache(cache) if isinstance(cache, (str, os.PathLike)) else cache
        self._ledger = ledger if ledger is not None else Ledger(prices=dict(prices or {}))
        if prices and ledger is not None:
            self._ledger.prices.update(prices)
        self.budget = Budget(float(budget)) if isinstance(budget, (int, float)) else budget
        self.model_identity = model_identity or self.model
        self.max_tokens_param = max_tokens_param
        self.extra_body = dict(extra_body) if extra_body else None
        self.progress = bool(progress)
        self.liveness = liveness
        self._key_namespace = self.model_identity + (
            "|extra_body=" + canonical_json(self.extra_body) if self.extra_body else ""
        )
        self._clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, openai.AsyncOpenAI]" = (
            weakref.WeakKeyDictionary()
        )
        self._clients_lock = threading.Lock()

    # -- identity / secrets ----------------------------------------------------
    def __repr__(self) -> str:
        return (
            f"LLMClient(base_url={self.base_url!r}, model={self.model!r}, api_key_env={self.api_key_env!r}, "
            f"structured_output={self.structured_output!r}, concurrency={self.limits.concurrency}, "
            f"rpm={self.limits.rpm}, tpm={self.limits.tpm}, cache={self.cache!r})"
        )

    __str__ = __repr__

    def __getstate__(self) -> dict:  # picklable (no loop-bound clients, never a key)
        state = self.__dict__.copy()
        state["_clients"] = None
        state["_clients_lock"] = None
        state["liveness"] = None  # a live process handle does not travel
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._clients = weakref.WeakKeyDictionary()
        self._clients_lock = threading.Lock()

    def _read_api_key(self) -> str:
        if self.api_key_env is None:
            return NO_KEY
        value = os.environ.get(self.api_key_env, "")
        if not value.strip():
            raise MissingAPIKey(
                f"LLM endpoint {self.base_url} (model {self.model}) needs an API key in the environment "
                f"variable {self.api_key_env}, which is unset or empty. Export it (e.g. `export "
                f"{self.api_key_env}=...`) or set api_key_env to null for a local server."
            )
        return value

    def _scrub(self, text: str) -> str:
        """Remove the key value from any text that may end up in results or logs."""
        if self.api_key_env:
            key = os.environ.get(self.api_key_env, "")
            if len(key) >= 4:
                text = text.replace(key, "***")
        return text

    @property
    def ledger(self) -> Ledger:
        return self._ledger

    # -- connection ------------------------------------------------------------
    def _client(self) -> openai.AsyncOpenAI:
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            c = self._clients.get(loop)
            if c is None:
                c = openai.AsyncOpenAI(
                    base_url=self.base_url, api_key=self._read_api_key(), timeout=self.timeout_s, max_retries=0
                )
                self._clients[loop] = c
        return c

    async def aclose(self) -> None:
        """Close the HTTP connections opened on the running loop."""
        loop = asyncio.get_running_loop()
        with self._clients_lock:
            c = self._clients.pop(loop, None)
        if c is not None:
            await c.close()

    def ping(self, timeout_s: float = 3.0) -> list[str]:
        """Fast pre-flight: ``GET {base_url}/models``. Returns the served model ids.

        Raises :class:`EndpointUnreachable` naming the URL on connection errors, timeouts,
        5xx, or a rejected key (401/403).
        """
        url = f"{self.base_url}/models"
        headers = {}
        if self.api_key_env:
            headers["Authorization"] = f"Bearer {self._read_api_key()}"
        try:
            with httpx.Client(timeout=timeout_s, trust_env=False) as http:
                r = http.get(url, headers=headers)
        except httpx.HTTPError as e:
            raise EndpointUnreachable(
                f"LLM endpoint {self.base_url} is unreachable ({type(e).__name__}: {self._scrub(str(e)) or 'no detail'}). "
                "Is the server running and the base_url right?"
            ) from None
        if r.status_code in (401, 403):
            raise EndpointUnreachable(
                f"LLM endpoint {self.base_url} rejected the API key from ${self.api_key_env} (HTTP {r.status_code})."
            )
        if r.status_code >= 500:
            raise EndpointUnreachable(f"LLM endpoint {self.base_url} answered GET /models with HTTP {r.status_code}.")
        try:
            ids = [str(m.get("id")) for m in r.json().get("data", [])]
        except (ValueError, AttributeError):
            ids = []
        if ids and self.model not in ids:
            log.warning("model %r is not among the %d models listed by %s", self.model, len(ids), self.base_url)
        return ids

    check_reachable = ping

    # -- one request -------------------------------------------------------------
    def key_for(self, req: ChatRequest) -> str:
        """The cache key of ``req`` under this client's model identity."""
        return cache_key(self._key_namespace, req, self.structured_output)

    def _request_kwargs(self, req: ChatRequest) -> dict:
        kw: dict[str, Any] = {
            "model": self.model,
            "messages": req.messages_as_dicts(),
            "temperature": req.temperature,
        }
        if req.max_tokens is not None:
            kw[self.max_tokens_param] = req.max_tokens
        if req.top_p is not None:
            kw["top_p"] = req.top_p
        if req.seed is not None:
            kw["seed"] = req.seed
        if req.top_logprobs is not None:
            kw["logprobs"] = True
            kw["top_logprobs"] = req.top_logprobs
        rf = response_format_for(self.structured_output, req.json_schema)
        if rf is not None:
            kw["response_format"] = rf
        if self.extra_body:
            kw["extra_body"] = self.extra_body
        return kw

    async def _send_once(self, kw: dict) -> dict:
        """One HTTP attempt; returns the parsed cache record or raises _Retryable/_Fatal."""
        try:
            raw = await self._client().chat.completions.with_raw_response.create(**kw)
        except openai.APITimeoutError:
            raise _Retryable(f"timeout: no response within {self.timeout_s:g}s") from None
        except openai.APIConnectionError as e:
            cause = e.__cause__ or e
            raise _Retryable(f"connection error: {type(cause).__name__}: {_short(self._scrub(str(cause)))}",
                             connection=True) from None
        except openai.APIStatusError as e:
            status = e.status_code
            body = ""
            try:
                body = e.response.text
            except Exception:
                pass
            msg = f"HTTP {status}: {_short(self._scrub(body or str(e)))}"
            if status in (408, 409, 429) or status >= 500:
                raise _Retryable(msg, retry_after=_parse_retry_after(e.response.headers)) from None
            raise _Fatal(msg) from None
        except openai.APIResponseValidationError as e:
            raise _Retryable(f"malformed response: {_short(str(e))}") from None
        text = raw.http_response.text
        try:
            data = json.loads(text)
        except ValueError as e:
            raise _Retryable(f"invalid JSON from server ({e}): {_short(text, 120)!r}") from None
        try:
            choice = data["choices"][0]
            message = choice["message"]
            content = message.get("content")
            if content is not None and not isinstance(content, str):
                raise TypeError("message.content is not a string")
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            raise _Retryable(f"malformed response from server ({type(e).__name__}: {e}): {_short(text, 120)!r}") from None
        usage = data.get("usage") or {}
        return {
            "text": content,
            "prompt_tokens": usage.get("prompt_tokens"),
            "completion_tokens": usage.get("completion_tokens"),
            "top_logprobs": self._extract_logprobs(choice),
            "finish_reason": choice.get("finish_reason"),
            "served_model": data.get("model"),
        }

    @staticmethod
    def _extract_logprobs(choice: dict) -> list | None:
        lp = choice.get("logprobs")
        if not lp or not isinstance(lp, dict) or not lp.get("content"):
            return None
        out = []
        for tok in lp["content"]:
            tops = tok.get("top_logprobs") or [{"token": tok.get("token"), "logprob": tok.get("logprob")}]
            out.append([[t.get("token"), t.get("logprob")] for t in tops])
        return out

    def _wait(self, rs: RetryCallState) -> float:
        exc = rs.outcome.exception() if rs.outcome is not None else None
        ra = getattr(exc, "retry_after", None)
        if ra is not None:
            return min(float(ra), self.max_retry_after_s)
        return wait_exponential_jitter(initial=self.backoff_initial_s, max=self.backoff_max_s, jitter=self.backoff_initial_s)(rs)

    def _result_from_record(self, rec: dict, cached: bool, attempts: int) -> ChatResult:
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
        )

    async def achat(self, req: ChatRequest) -> ChatResult:
        """One chat call (cache → budget → limits → retried HTTP). Never raises except BudgetExceeded."""
        return await self._achat(req, None)

    async def _achat(self, req: ChatRequest, abort: asyncio.Event | None) -> ChatResult:
        key = self.key_for(req)
        if self.cache is not None:
            rec = self.cache.get(key)  # SQLite point lookup: microseconds, fine on the loop thread
            if rec is not None:
                self._ledger.record_cache_hit(self.model)
                return self._result_from_record(rec, cached=True, attempts=0)

        est_prompt = estimate_prompt_tokens(req.prompt_chars(), len(req.messages))
        est_completion = req.max_tokens if req.max_tokens is not None else UNLIMITED_COMPLETION_ESTIMATE
        est_tokens = est_prompt + est_completion
        est_usd = self._ledger.cost(self.model, est_prompt, est_completion)
        kw = self._request_kwargs(req)
        attempts = 0
        last_error: str | None = None

        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.max_retries + 1),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            reraise=True,
        )
        rec: dict | None = None
        try:
            async for attempt in retrying:
                with attempt:
                    async with self.limits.slot(est_tokens):
                        if attempts == 0 and abort is not None and abort.is_set():
                            raise _Aborted()
                        if abort is not None and abort.is_set() and attempts > 0:
                            raise _Aborted()  # the batch stopped (dead server, budget): no retry
                        if self.liveness is not None:
                            self.liveness()  # a dead managed server: ServiceError, nothing sent
                        if attempts == 0 and self.budget is not None:
                            self.budget.reserve(est_usd)  # raises BudgetExceeded before any spend
                        attempts += 1
                        try:
                            rec = await self._send_once(kw)
                        except (_Retryable, _Fatal) as e:
                            last_error = str(e)
                            log.debug("%s attempt %d failed: %s", req.purpose or "call", attempts, e)
                            if self.liveness is not None and getattr(e, "connection", False):
                                self.liveness()  # refused because the server died: stop, do not retry
                            raise
        except _Retryable:
            pass  # retry budget spent; reported below
        except _Fatal:
            pass
        finally:
            if attempts > 0:
                if rec is not None:
                    pt = rec["prompt_tokens"] if rec["prompt_tokens"] is not None else est_prompt
                    ct = rec["completion_tokens"]
                    if ct is None:
                        ct = -(-len(rec["text"] or "") // 4)
                    rec["prompt_tokens"], rec["completion_tokens"] = int(pt), int(ct)
                    usd = self._ledger.record_call(self.model, pt, ct)
                    self.limits.settle_tokens(est_tokens, pt + ct)
                else:
                    usd = 0.0  # failed calls: assume not billed
                    self._ledger.record_call(self.model, 0, 0)
                if attempts > 1:
                    self._ledger.record_retries(self.model, attempts - 1)
                if self.budget is not None:
                    self.budget.settle(est_usd, usd)

        if rec is None:
            self._ledger.record_failure(self.model)
            error = f"{last_error} (after {attempts} attempt{'s' if attempts != 1 else ''})"
            log.warning("LLM call %s failed: %s", req.purpose or "", error)
            return ChatResult(None, False, error, False, 0, 0, attempts)
        if self.cache is not None:
            self.cache.put(key, rec)  # committed immediately: a kill -9 loses nothing completed
        return self._result_from_record(rec, cached=False, attempts=attempts)

    # -- batches --------------------------------------------------------------
    def chat_many(self, reqs: Sequence[ChatRequest], desc: str = "llm") -> list[ChatResult]:
        """Run ``reqs`` concurrently (within the limits) from synchronous code; order preserved.

        Raises :class:`BudgetExceeded` (with ``.partial``: the results so far, ``None`` where
        missing) if the cap stops the batch; completed calls are in the cache either way.
        """
        reqs = list(reqs)

        async def one(req: ChatRequest, abort: asyncio.Event) -> ChatResult:
            return await self._achat(req, abort)

        return self._run_batch(reqs, one, desc)

    def parse_many(
        self,
        reqs: Sequence[ChatRequest],
        parse: Callable[[str], Any],
        desc: str = "llm",
        invalid_retries: int = 2,
    ) -> list[Parsed]:
        """Like :meth:`chat_many`, then ``parse`` each answer (``ValueError`` = invalid).

        An unparseable answer is re-asked with ``seed + k`` (k = 1..invalid_retries; a new
        cache key, so a real new call) and, if still unparseable, reported as ``"invalid"``.
        Transport failures are ``"failed"``. No value is ever guessed.
        """
        reqs = list(reqs)

        async def one(req: ChatRequest, abort: asyncio.Event) -> Parsed:
            return await self._aparse(req, parse, invalid_retries, abort)

        return self._run_batch(reqs, one, desc)

    async def aparse(self, req: ChatRequest, parse: Callable[[str], Any], invalid_retries: int = 2) -> Parsed:
        return await self._aparse(req, parse, invalid_retries, None)

    async def _aparse(
        self, req: ChatRequest, parse: Callable[[str], Any], invalid_retries: int, abort: asyncio.Event | None
    ) -> Parsed:
        results: list[ChatResult] = []
        last_error = None
        for k in range(int(invalid_retries) + 1):
            r = req if k == 0 else dataclasses.replace(req, seed=(req.seed or 0) + k)
            res = await self._achat(r, abort)
            results.append(res)
            cached = all(x.cached for x in results)
            if not res.ok:
                return Parsed(None, PARSED_FAILED, res.text, res.error, len(results), cached, results)
            try:
                value = parse(res.text if res.text is not None else "")
            except (ValueError, LookupError, TypeError) as e:
                last_error = f"unparseable answer ({type(e).__name__}: {_short(str(e), 200)})"
                continue
            return Parsed(value, PARSED_OK, res.text, None, len(results), cached, results)
        self._ledger.record_invalid(self.model)
        return Parsed(
            None, PARSED_INVALID, results[-1].text, last_error, len(results), all(x.cached for x in results), results
        )

    def _run_batch(self, reqs: list, worker: Callable[[Any, asyncio.Event], Awaitable[T]], desc: str) -> list[T]:
        async def main() -> list[T]:
            abort = asyncio.Event()
            out: list[Any] = [None] * len(reqs)
            budget_error: list[BudgetExceeded] = []
            service_error: list[ServiceError] = []
            tasks: list[asyncio.Task] = []
            n_cached = n_bad = 0
            bar = tqdm(total=len(reqs), desc=desc, unit="call", dynamic_ncols=True, disable=not self.progress)
            # Requests start in list order and each keeps its place through its re-asks: an invalid answer is
            # re-asked at once, not after the whole batch, so a caller's send order (shared prompt prefixes,
            # audience.layout=shared_prefix_first) holds on a one-slot server.
            in_order = asyncio.Semaphore(self.limits.concurrency)

            async def run(i: int, req: Any) -> None:
                nonlocal n_cached, n_bad
                try:
                    async with in_order:
                        res = await worker(req, abort)
                except BudgetExceeded as e:
                    abort.set()
                    budget_error.append(e)
                    return
                except ServiceError as e:  # the server died: stop every request now, retry none
                    abort.set()
                    service_error.append(e)
                    for t in tasks:
                        if t is not asyncio.current_task():
                            t.cancel()
                    return
                except _Aborted:
                    return
                out[i] = res
                n_cached += bool(getattr(res, "cached", False))
                n_bad += not (res.status == PARSED_OK if isinstance(res, Parsed) else res.ok)
                bar.update(1)
                if bar.n % 8 == 0 or bar.n == len(reqs):
                    bar.set_postfix(cached=n_cached, not_ok=n_bad, refresh=False)

            tasks.extend(asyncio.create_task(run(i, r)) for i, r in enumerate(reqs))
            try:
                settled = await asyncio.gather(*tasks, return_exceptions=True)
            finally:
                bar.close()
                await self.aclose()
            bug = next((e for e in settled if isinstance(e, BaseException)
                        and not isinstance(e, asyncio.CancelledError)), None)
            if bug is not None:
                raise bug
            if service_error:
                done = sum(x is not None for x in out)
                raise type(service_error[0])(
                    f"{service_error[0]} ({done}/{len(reqs)} results of '{desc}' completed and cached)")
            if budget_error:
                done = sum(x is not None for x in out)
                err = BudgetExceeded(f"{budget_error[0]} ({done}/{len(reqs)} results of '{desc}' completed and cached)")
                err.partial = out  # type: ignore[attr-defined]
                raise err
            return out

        return _run_sync(main)


def _run_sync(factory: Callable[[], Awaitable[T]]) -> T:
    """``asyncio.run`` from sync code; from inside a running loop (e.g. Jupyter) use a thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(factory())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["v"] = asyncio.run(factory())
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            box["e"] = e

    t = threading.Thread(target=target, name="moloch-llm-batch")
    t.start()
    t.join()
    if "e" in box:
        raise box["e"]
    return box["v"]
