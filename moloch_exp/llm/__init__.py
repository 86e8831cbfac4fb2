"""The one OpenAI-protocol client for audience votes and judge calls.

:class:`LLMClient` (``client.py``) is a thin composition of layers, one concern a module:

- transport: ``transport.py`` (one ``POST /chat/completions`` on a keep-alive aiohttp pool per event loop:
  :class:`HttpTransport`, :class:`EndpointUnreachable` from ``ping``), ``request_body.py`` (a request → its JSON
  body), ``http_errors.py`` (which failures are retried, and their wording), ``api_key.py`` (the key, read from the environment, scrubbed from all text);
- retry and rate limits: ``retrying.py`` (tenacity, ``Retry-After``, liveness of a managed server),
  :class:`Limits` (``limits.py``: concurrency, requests/min, tokens/min), :class:`ServerPacer` (``pacer.py``,
  reading ``ratelimit_headers.py``: pacing by the server's ``x-ratelimit-*`` headers);
- metering: ``metering.py`` (cache → budget → ledger per call); :class:`ResponseCache` (``cache.py``:
  content-addressed, shared by all jobs, on a store of ``stores/``: SQLite, one file per key, Redis);
  :class:`Ledger`, :class:`Budget`, :class:`BudgetExceeded` (``ledger.py``: calls, tokens, USD, cap);
  :class:`PriceBook`, :class:`Price` (``prices.py``: USD per token from genai-prices or ``llm.prices``);
- re-asking: ``reasking.py`` (``parse_many``'s unparseable answers, asked again with new seeds);
- many calls: ``run_many.py`` (the async bridge, progress, stopping on a dead server or the budget), or
  :class:`BatchSettings` (``batch.py``, ``batch_files.py``, ``batch_journal.py``): the OpenAI Batch API
  behind ``chat_many``/``parse_many``; ``completion.py``: a chat completion → the cache record.

Besides: :class:`ManagedServer`, :func:`smollm2_gguf_path` (``server.py``): local llama.cpp / vLLM server;
:func:`response_format_for`, :func:`parse_json_answer`, :func:`json_parser` (``structured.py``);
:class:`ChatRequest`, :class:`ChatResult`, :class:`Parsed` (``types.py``).

    client = LLMClient("https://api.openai.com/v1", "gpt-4o-mini", api_key_env="OPENAI_API_KEY",
                       cache=".cache/moloch_exp/llm_cache.sqlite", concurrency=64)
    parsed = client.parse_many(requests, json_parser(schema))
"""

from .batch import BatchSettings
from .cache import ResponseCache, cache_key
from .client import EndpointUnreachable, LLMClient, MissingAPIKey
from .ledger import Budget, BudgetExceeded, Ledger
from .limits import Limits, TokenBucket
from .pacer import ServerPacer
from .prices import Price, PriceBook
from .server import ManagedServer, ServerDied, ServerStartError, smollm2_gguf_path
from .structured import STRUCTURED_MODES, json_parser, parse_json_answer, response_format_for, validate
from .types import ChatRequest, ChatResult, Parsed

__all__ = [
    "BatchSettings",
    "Budget",
    "BudgetExceeded",
    "ChatRequest",
    "ChatResult",
    "EndpointUnreachable",
    "LLMClient",
    "Ledger",
    "Limits",
    "ManagedServer",
    "MissingAPIKey",
    "Parsed",
    "Price",
    "PriceBook",
    "ResponseCache",
    "STRUCTURED_MODES",
    "ServerDied",
    "ServerPacer",
    "ServerStartError",
    "TokenBucket",
    "cache_key",
    "json_parser",
    "parse_json_answer",
    "response_format_for",
    "smollm2_gguf_path",
    "validate",
]
