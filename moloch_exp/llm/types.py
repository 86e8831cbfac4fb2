"""Plain data types exchanged with the LLM client.

``ChatRequest`` describes one chat call in backend-neutral terms (the client maps
``json_schema`` onto whatever structured-output format the backend speaks);
``ChatResult`` is what one call produced; ``Parsed`` is the outcome of a call whose
answer was run through a caller-supplied parser.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

Message = tuple[str, str]  # (role, content)

PARSED_OK = "ok"
PARSED_INVALID = "invalid"  # the model answered, but no answer parsed after all retries
PARSED_FAILED = "failed"  # transport failure after the retry budget


def normalize_messages(messages: Iterable[Any]) -> tuple[Message, ...]:
    """Return messages as a tuple of ``(role, content)`` pairs.

    Accepts ``[{"role": ..., "content": ...}, ...]`` (the OpenAI shape) or
    ``[(role, content), ...]``. Raises ``ValueError`` on anything else.
    """
    if isinstance(messages, (str, bytes, Mapping)):
        raise ValueError("messages must be a sequence of {role, content} dicts or (role, content) pairs")
    out: list[Message] = []
    for i, m in enumerate(messages):
        if isinstance(m, Mapping):
            if "role" not in m or "content" not in m:
                raise ValueError(f"message {i} lacks 'role' or 'content': keys={sorted(m)}")
            role, content = m["role"], m["content"]
        elif isinstance(m, (tuple, list)) and len(m) == 2:
            role, content = m
        else:
            raise ValueError(f"message {i} is neither a {{role, content}} dict nor a (role, content) pair")
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValueError(f"message {i}: role and content must be strings")
        out.append((role, content))
    if not out:
        raise ValueError("a chat request needs at least one message")
    return tuple(out)


@dataclass(frozen=True)
class ChatRequest:
    """One chat-completion call.

    ``messages`` is stored canonically as a tuple of ``(role, content)`` pairs; callers
    may pass the OpenAI ``list[dict(role, content)]`` shape and it is converted.
    ``json_schema`` is backend-neutral; ``purpose`` only labels the call (never part of
    the cache key).
    """

    messages: tuple[Message, ...]
    max_tokens: int | None  # None: not sent, the server's default applies (the paper's audience and judge)
    temperature: float = 0.0
    top_p: float | None = None
    seed: int | None = None
    json_schema: dict | None = None
    top_logprobs: int | None = None
    purpose: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", normalize_messages(self.messages))
        if self.max_tokens is not None and (not isinstance(self.max_tokens, int) or self.max_tokens <= 0):
            raise ValueError(f"max_tokens must be a positive int or None, got {self.max_tokens!r}")
        if self.top_logprobs is not None and not (0 <= int(self.top_logprobs) <= 20):
            raise ValueError(f"top_logprobs must be in 0..20, got {self.top_logprobs!r}")
        if self.json_schema is not None and not isinstance(self.json_schema, Mapping):
            raise ValueError("json_schema must be a dict (a JSON schema)")

    def messages_as_dicts(self) -> list[dict[str, str]]:
        return [{"role": r, "content": c} for r, c in self.messages]

    def prompt_chars(self) -> int:
        return sum(len(r) + len(c) for r, c in self.messages)

    def __hash__(self) -> int:  # json_schema is a dict, so hash a canonical rendering
        return hash(json.dumps(dataclasses.asdict(self), sort_keys=True, default=str))


@dataclass
class ChatResult:
    """Outcome of one chat call. ``ok=False`` carries the cause in ``error``."""

    text: str | None
    ok: bool
    error: str | None
    cached: bool
    prompt_tokens: int
    completion_tokens: int
    attempts: int  # network attempts made for this result (0 for a cache hit)
    top_logprobs: list | None = None  # per generated token: list of (token, logprob)
    finish_reason: str | None = None
    cached_prompt_tokens: int = 0  # prompt tokens served from the provider's prefix cache (usage.prompt_tokens_details)


@dataclass
class Parsed:
    """Outcome of a parsed call: ``status`` is ``"ok"``, ``"invalid"`` or ``"failed"``."""

    value: Any | None
    status: str
    raw: str | None
    error: str | None
    attempts: int  # how many times the question was asked (cache hits included)
    cached: bool  # True when every ask was answered from the cache
    results: list[ChatResult] = field(default_factory=list, repr=False)

    @property
    def ok(self) -> bool:
        return self.status == PARSED_OK
