"""``POST /v1/chat/completions`` of the fake: validation, faults, rate limits, latency, the answer.

:func:`complete` builds the ``chat.completion`` object for a body (shared with the Batch API's lines);
:func:`chat_endpoint` is the HTTP route around it. Errors use OpenAI's shape
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from . import answers
from .state import answer_hash

if TYPE_CHECKING:
    from .app import FakeState


def error_body(message: str, type_: str = "invalid_request_error", code: str | None = None,
               param: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def json_response(obj: Any, status: int = 200, headers: dict | None = None) -> Response:
    return Response(json.dumps(obj, ensure_ascii=False, separators=(",", ":")), status_code=status,
                    headers=headers, media_type="application/json")


class BadRequest(Exception):
    def __init__(self, status: int, body: dict) -> None:
        super().__init__(body["error"]["message"])
        self.status, self.body = status, body


def check_body(state: "FakeState", body: Any) -> None:
    """Raise :class:`BadRequest` for what OpenAI would refuse."""
    if not isinstance(body, dict):
        raise BadRequest(400, error_body("The request body must be a JSON object."))
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest(400, error_body("you must provide a model parameter", param="model"))
    if not state.options.any_model and model not in state.options.models:
        raise BadRequest(404, error_body(f"The model `{model}` does not exist or you do not have access to it.",
                                         code="model_not_found"))
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) and "role" in m for m in messages):
        raise BadRequest(400, error_body("'messages' must be a non-empty array of {role, content}", param="messages"))
    if int(body.get("n") or 1) != 1:
        raise BadRequest(400, error_body("the fake answers n=1 only", param="n"))


def max_tokens_of(body: dict) -> int | None:
    mt = body.get("max_completion_tokens", body.get("max_tokens"))
    return None if mt is None else int(mt)


def complete(state: "FakeState", body: dict, digest: str) -> dict:
    """The ``chat.completion`` object for ``body`` (deterministic but for ``created`` and cached tokens)."""
    opts = state.options
    text, finish = answers.answer_text(body, digest, opts.invalid_share)
    text, completion_tokens, cut = answers.cut_to(text, max_tokens_of(body))
    if cut:
        finish = "length"
    messages = body["messages"]
    prompt_tokens = answers.prompt_tokens(messages)
    cached = state.prefix_cache.cached_tokens(answers.prompt_text(messages), prompt_tokens,
                                              opts.cache_min_tokens, opts.cache_block_tokens)
    choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                              "logprobs": None, "finish_reason": finish}
    if body.get("logprobs"):
        choice["logprobs"] = answers.logprobs(text, int(body.get("top_logprobs") or 0) or 1, digest)
    with state.stats.lock:
        state.stats.tokens["prompt"] += prompt_tokens
        state.stats.tokens["completion"] += completion_tokens
        state.stats.tokens["cached"] += cached
    return {
        "id": f"chatcmpl-{digest[:29]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "fp_fake",
        "choices": [choice],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
        },
    }


def _charge(body: dict, digest: str, state: "FakeState") -> int:
    """Tokens a request is charged at admission: its prompt plus max_tokens (or its answer's length)."""
    mt = max_tokens_of(body)
    if mt is None:
        text, _ = answers.answer_text(body, digest, state.options.invalid_share)
        mt = answers.count_tokens(text)
    return answers.prompt_tokens(body["messages"]) + mt


def _retry_headers(seconds: float) -> dict[str, str]:
    return {"retry-after": str(max(1, math.ceil(seconds))), "retry-after-ms": str(max(1, math.ceil(seconds * 1000)))}


async def chat_endpoint(request: Request) -> Response:
    state: FakeState = request.app.state.fake
    opts, stats = state.options, state.stats
    with stats.lock:
        stats.requests += 1
    denied = state.check_auth(request)
    if denied is not None:
        stats.event(401)
        return denied
    try:
        body = json.loads(await request.body())
        check_body(state, body)
    except ValueError:
        stats.event(400)
        return json_response(error_body("We could not parse the JSON body of your request."), 400)
    except BadRequest as e:
        stats.event(e.status)
        return json_response(e.body, e.status)
    model = body["model"]
    digest = answers.body_digest(body)
    with stats.lock:
        stats.attempts_by_digest[digest] += 1
        attempt = stats.attempts_by_digest[digest]
    rid = {"x-request-id": f"req_{digest[:12]}_{attempt}"}

    outage = state.outage_until - time.monotonic()
    if outage > 0:
        with stats.lock:
            stats.rate_limited += 1
        stats.event(429)
        retry = outage if opts.outage_retry_after_s is None else opts.outage_retry_after_s
        return json_response(error_body("Rate limit reached (outage).", "requests", "rate_limit_exceeded"), 429,
                             {**state.limiter.exhausted_headers(model), **_retry_headers(retry), **rid})
    if answers.share_hit(digest, f"429|{attempt}", opts.fault_429_share):
        with stats.lock:
            stats.fault_429 += 1
        stats.event(429)
        return json_response(
            error_body("The server had too many requests; please retry.", "requests", "rate_limit_exceeded"), 429,
            {**state.limiter.headers(model), **_retry_headers(opts.fault_retry_after_s), **rid})

    charge = _charge(body, digest, state)
    admitted, wait_s, headers, which = state.limiter.admit(model, charge)
    if not admitted:
        with stats.lock:
            stats.rate_limited += 1
        stats.event(429)
        limit = state.options.rpm if which == "requests" else state.options.tpm
        msg = (f"Rate limit reached for {model} in organization org-fake on {which} per min: Limit {int(limit)}. "
               f"Please try again in {wait_s * 1000:.0f}ms.")
        return json_response(error_body(msg, which, "rate_limit_exceeded"), 429,
                             {**headers, **_retry_headers(wait_s), **rid})
    with stats.lock:
        stats.tokens["charged"] += charge

    completion = complete(state, body, digest)
    delay = opts.latency_s + random.uniform(-opts.jitter_s, opts.jitter_s)
    delay += opts.per_token_latency_s * completion["usage"]["completion_tokens"]
    if delay > 0:
        await asyncio.sleep(delay)
    if await request.is_disconnected():  # the client is gone (a killed run): it never gets this answer
        with stats.lock:
            stats.abandoned_by_digest[digest] += 1
        stats.event(499)
        return json_response(completion, 200, {**headers, **rid})
    text_hash = answer_hash(completion["choices"][0]["message"]["content"])
    with stats.lock:
        stats.answered_by_digest[digest] += 1
        stats.answer_hash_by_digest[digest] = text_hash
    stats.event(200)
    return json_response(completion, 200, {**headers, **rid})
