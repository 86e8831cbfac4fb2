"""Re-asking unparseable answers (``parse_many``/``aparse``): an answer the caller's ``parse`` rejects is
asked again with ``seed + k`` (k = 1..``invalid_retries``: a new cache key, so a real new call) and, if
still unparseable, reported as ``"invalid"`` with the last parse error; a transport failure is
``"failed"``. No value is ever guessed. The Batch API path (:mod:`.batch`) asks the same questions in
rounds, with the same :func:`reask` and :func:`unparseable` wording.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Awaitable, Callable

from .http_errors import short
from .types import PARSED_FAILED, PARSED_INVALID, PARSED_OK, ChatRequest, ChatResult, Parsed

#: what a ``parse`` may raise for an answer it rejects
PARSE_ERRORS = (ValueError, LookupError, TypeError)


def reask(req: ChatRequest, k: int) -> ChatRequest:
    """The ``k``-th asking of ``req`` (``k = 0``: the request itself)."""
    return req if k == 0 else dataclasses.replace(req, seed=(req.seed or 0) + k)


def unparseable(err: BaseException) -> str:
    return f"unparseable answer ({type(err).__name__}: {short(str(err), 200)})"


async def ask_until_parsed(ask: Callable[[ChatRequest], Awaitable[ChatResult]], req: ChatRequest,
                           parse: Callable[[str], Any], invalid_retries: int,
                           on_invalid: Callable[[], None]) -> Parsed:
    """Ask ``req`` (through ``ask``) until ``parse`` accepts an answer, at most ``1 + invalid_retries``
    times; ``on_invalid`` is called once when none did (the ledger's count)."""
    results: list[ChatResult] = []
    last_error = None
    for k in range(int(invalid_retries) + 1):
        res = await ask(reask(req, k))
        results.append(res)
        if not res.ok:
            return Parsed(None, PARSED_FAILED, res.text, res.error, len(results), all(x.cached for x in results),
                          results)
        try:
            value = parse(res.text if res.text is not None else "")
        except PARSE_ERRORS as e:
            last_error = unparseable(e)
            continue
        return Parsed(value, PARSED_OK, res.text, None, len(results), all(x.cached for x in results), results)
    on_invalid()
    return Parsed(None, PARSED_INVALID, results[-1].text, last_error, len(results), all(x.cached for x in results),
                  results)
