"""One HTTP attempt of a chat call: ``POST {base_url}/chat/completions`` with a ready JSON body.

With several base URLs (the replicas of a managed server, ``server.replicas``) each attempt goes to the
endpoint with the fewest requests in flight; among equally busy ones, to the one whose previous body shares
the longest prefix with this one, as llama-server picks a slot (the prefix it holds need not be evaluated
again), then to the first.

One ``aiohttp.ClientSession`` per event loop (a ``chat_many`` is one ``asyncio.run``; asyncio objects
are bound to their loop), with an HTTP/1.1 keep-alive pool of ``pool_size`` connections (the client's
concurrency). The body is posted as bytes and the answer read as bytes: no SDK request model is built
or walked per call (the openai SDK's request transform was about a quarter of the client's CPU per
call; ``bench/fake_openai_throughput.py`` prints before and after). The openai SDK is still what the
Batch API path (:mod:`.batch`) uses for files and batches.

:meth:`HttpTransport.attempt` never raises for a failed attempt: it returns an :class:`Outcome` with
the status (0: no answer), the headers (for the rate limits), and either the cache record or the
error (:mod:`.http_errors` says which are retried). The API key is read when a session opens and lives
only in that session's headers; a session never travels in a pickle.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import urllib.request
import weakref
from typing import Any, Sequence

import aiohttp
import httpx
import truststore
from yarl import URL

from moloch_exp.errors import ServiceError

from .api_key import ApiKey
from .http_errors import Fatal, Retryable, completion_record, connection_error, status_error, timeout_error
from .ratelimit_headers import parse_retry_after

log = logging.getLogger(__name__)


class EndpointUnreachable(ServiceError):
    """The endpoint did not answer a quick pre-flight request."""


class Outcome:
    """What one attempt got: ``status`` (0: no HTTP answer), ``headers``, ``retry_after`` and either
    ``record`` (a 2xx chat completion as a cache record) or ``error``."""

    __slots__ = ("status", "headers", "retry_after", "record", "error")

    def __init__(self, status: int, headers: Any = None, record: dict | None = None,
                 error: Retryable | Fatal | None = None, retry_after: float | None = None) -> None:
        self.status, self.headers, self.record, self.error, self.retry_after = status, headers, record, error, retry_after


class HttpTransport:
    """``base_url``: e.g. ``https://api.openai.com/v1``, or several (replicas of one server: see the module
    docstring). ``api_key``: read when a session opens, scrubbed from error text. ``timeout_s``: for
    connecting and between bytes of the answer. ``pool_size``: keep-alive connections per loop (the
    client's concurrency). ``structured_output``: for one server's hint."""

    def __init__(self, base_url: str | Sequence[str], api_key: ApiKey, timeout_s: float, pool_size: int,
                 structured_output: str = "json_schema") -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ValueError("HttpTransport needs at least one base URL")
        self.base_urls = [str(u).rstrip("/") for u in urls]
        self.base_url = self.base_urls[0]
        self.api_key = api_key
        self.timeout_s = float(timeout_s)
        self.pool_size = int(pool_size)
        self.structured_output = structured_output
        self._urls = [URL(f"{u}/chat/completions") for u in self.base_urls]
        self._url = self._urls[0]
        self._init_pool()

    def _init_pool(self) -> None:
        self._sessions: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession]" = (
            weakref.WeakKeyDictionary())
        self._lock = threading.Lock()
        self._in_flight = [0] * len(self._urls)  # per endpoint, over every loop of this process
        self._last_body = [b""] * len(self._urls)
        self.sent = [0] * len(self._urls)  # attempts per endpoint (what the replicas shared)

    def _pick(self, body: bytes) -> int:
        """The endpoint for this attempt (module docstring); counted in flight until :meth:`_done`."""
        with self._lock:
            if len(self._urls) == 1:
                i = 0
            else:
                least = min(self._in_flight)
                idle = [i for i, n in enumerate(self._in_flight) if n == least]
                i = max(idle, key=lambda j: (_common_prefix(self._last_body[j], body), -j))
            self._in_flight[i] += 1
            self._last_body[i] = body
            self.sent[i] += 1
        return i

    def _done(self, i: int) -> None:
        with self._lock:
            self._in_flight[i] -= 1

    def __repr__(self) -> str:
        urls = self.base_url if len(self.base_urls) == 1 else self.base_urls
        return f"HttpTransport({urls!r}, timeout_s={self.timeout_s:g}, pool_size={self.pool_size})"

    def __getstate__(self) -> dict:  # no loop-bound sessions (they hold the key in their headers)
        state = self.__dict__.copy()
        for name in ("_sessions", "_lock", "_in_flight", "_last_body", "sent"):
            del state[name]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._init_pool()

    # -- sessions ----------------------------------------------------------------
    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        with self._lock:
            session = self._sessions.get(loop)
            if session is None or session.closed:
                session = self._sessions[loop] = self._open()
        return session

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self.pool_size, limit_per_host=0, keepalive_timeout=5.0,
            ssl=truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT))  # the system's trust store, as the SDK's httpx2
        return aiohttp.ClientSession(
            connector=connector,
            headers={"Authorization": f"Bearer {self.api_key.read()}", "Content-Type": "application/json",
                     "Accept": "application/json"},
            timeout=aiohttp.ClientTimeout(total=None, connect=self.timeout_s, sock_read=self.timeout_s),
            proxy=_env_proxy(self._url),
        )

    async def aclose(self) -> None:
        """Close the connections opened on the running loop."""
        loop = asyncio.get_running_loop()
        with self._lock:
            session = self._sessions.pop(loop, None)
        if session is not None:
            await session.close()

    # -- one attempt -------------------------------------------------------------------
    async def attempt(self, body: bytes) -> Outcome:
        """POST ``body``; the outcome, whatever happened (cancellation aside)."""
        endpoint = self._pick(body)
        try:
            async with self._session().post(self._urls[endpoint], data=body) as resp:
                status, headers = resp.status, resp.headers
                data = await resp.read()
        except asyncio.TimeoutError:  # aiohttp's connect and read timeouts are both TimeoutErrors
            return Outcome(0, error=timeout_error(self.timeout_s))
        except (aiohttp.ClientError, OSError) as err:  # refused, reset, closed early, truncated body, bad URL
            return Outcome(0, error=connection_error(err, self.api_key.scrub))
        finally:
            self._done(endpoint)
        if not 200 <= status < 300:
            retry_after = parse_retry_after(headers)
            error = status_error(status, data.decode("utf-8", "replace"), retry_after, self.api_key.scrub,
                                 self.structured_output)
            return Outcome(status, headers, error=error, retry_after=retry_after)
        try:
            return Outcome(status, headers, record=completion_record(data))
        except Retryable as err:
            return Outcome(status, headers, error=err)

    # -- pre-flight ----------------------------------------------------------------------
    def ping(self, model: str, timeout_s: float) -> list[str]:
        """``GET {base_url}/models``: the served model ids. Raises :class:`EndpointUnreachable` naming the
        URL on connection errors, timeouts, 5xx, or a rejected key (401/403)."""
        headers = {"Authorization": f"Bearer {self.api_key.read()}"} if self.api_key.env else {}
        try:
            with httpx.Client(timeout=timeout_s, trust_env=False) as http:
                r = http.get(f"{self.base_url}/models", headers=headers)
        except httpx.HTTPError as e:
            raise EndpointUnreachable(
                f"LLM endpoint {self.base_url} is unreachable ({type(e).__name__}: "
                f"{self.api_key.scrub(str(e)) or 'no detail'}). Is the server running and the base_url right?") from None
        if r.status_code in (401, 403):
            raise EndpointUnreachable(f"LLM endpoint {self.base_url} rejected the API key from ${self.api_key.env} "
                              f"(HTTP {r.status_code}).")
        if r.status_code >= 500:
            raise EndpointUnreachable(f"LLM endpoint {self.base_url} answered GET /models with HTTP {r.status_code}.")
        try:
            ids = [str(m.get("id")) for m in r.json().get("data", [])]
        except (ValueError, AttributeError):
            ids = []
        if ids and model not in ids:
            log.warning("model %r is not among the %d models listed by %s", model, len(ids), self.base_url)
        return ids


def _common_prefix(a: bytes, b: bytes) -> int:
    """Length of the common prefix of two bodies."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n  # a[:lo] == b[:lo] and a[:hi] != b[:hi]: bisect on slices (C speed, no byte loop)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _env_proxy(url: URL) -> str | None:
    """The proxy that ``HTTPS_PROXY``/``HTTP_PROXY`` and ``NO_PROXY`` name for ``url`` (the SDK honoured them),
    read once per session: aiohttp's ``trust_env`` would read them, and ``~/.netrc``, on every request."""
    if url.host is None or urllib.request.proxy_bypass(url.host):
        return None
    return urllib.request.getproxies().get(url.scheme)
