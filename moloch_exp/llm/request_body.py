"""A :class:`ChatRequest` → the JSON body of ``POST /chat/completions`` (the body the openai SDK sent for it).

Used by the synchronous transport (:mod:`.transport`) and by the Batch API files (:mod:`.batch`), so a
request is the same bytes of meaning on both paths. ``extra_body`` (``LLMClient(extra_body=...)``) is
merged into every body.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from .structured import response_format_for
from .types import ChatRequest


@dataclass(frozen=True)
class RequestMapping:
    """How this client's requests are spelled for its backend."""

    model: str
    structured_output: str = "json_schema"
    max_tokens_param: str = "max_tokens"  # or "max_completion_tokens" (newer OpenAI models)
    extra_body: dict | None = None

    def body(self, req: ChatRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": req.messages_as_dicts(),
            "temperature": req.temperature,
        }
        if req.max_tokens is not None:
            body[self.max_tokens_param] = req.max_tokens
        if req.top_p is not None:
            body["top_p"] = req.top_p
        if req.seed is not None:
            body["seed"] = req.seed
        if req.top_logprobs is not None:
            body["logprobs"] = True
            body["top_logprobs"] = req.top_logprobs
        rf = response_format_for(self.structured_output, req.json_schema)
        if rf is not None:
            body["response_format"] = rf
        if self.extra_body:
            body.update(self.extra_body)
        return body

    def encode(self, req: ChatRequest) -> bytes:
        """The body as sent: compact JSON, UTF-8."""
        return json.dumps(self.body(req), separators=(",", ":")).encode("utf-8")
