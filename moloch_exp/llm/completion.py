"""One ``chat.completion`` object → the response-cache record, the same for a synchronous answer and
a Batch API output line (so both land in the cache under the same key in the same shape).

Record fields: ``text``, ``prompt_tokens``, ``completion_tokens``, ``cached_prompt_tokens``
(``usage.prompt_tokens_details.cached_tokens``: the prompt prefix the provider served from its cache,
billed at a discount), ``top_logprobs`` (per generated token, ``[[token, logprob], ...]``),
``finish_reason``, ``served_model``. Records written before ``cached_prompt_tokens`` existed read as 0.
"""

from __future__ import annotations

from typing import Any


class MalformedCompletion(ValueError):
    """The body is not a chat completion with a string (or null) message content."""


def extract_logprobs(choice: dict) -> list | None:
    lp = choice.get("logprobs")
    if not lp or not isinstance(lp, dict) or not lp.get("content"):
        return None
    out = []
    for tok in lp["content"]:
        tops = tok.get("top_logprobs") or [{"token": tok.get("token"), "logprob": tok.get("logprob")}]
        out.append([[t.get("token"), t.get("logprob")] for t in tops])
    return out


def record_from_completion(data: Any) -> dict:
    """The cache record of a chat completion body; raises :class:`MalformedCompletion`."""
    try:
        choice = data["choices"][0]
        message = choice["message"]
        content = message.get("content")
        if content is not None and not isinstance(content, str):
            raise TypeError("message.content is not a string")
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise MalformedCompletion(f"{type(e).__name__}: {e}") from None
    usage = data.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    return {
        "text": content,
        "prompt_tokens": usage.get("prompt_tokens"),
        "completion_tokens": usage.get("completion_tokens"),
        "cached_prompt_tokens": int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0,
        "top_logprobs": extract_logprobs(choice),
        "finish_reason": choice.get("finish_reason"),
        "served_model": data.get("model"),
    }
