"""A client that sends nothing: it counts each request's tokens as a hosted API bills them, for the
pre-flight cost estimate (moloch_exp/report/preflight.py).

The stages' own code builds the requests (``AudiencePanel.vote``, ``YesNoProbe.run``, a model
probe's ``run_model``); :class:`DryRunClient` stands in for ``LLMClient.parse_many``/``chat_many``
and answers every request with a typical answer (:class:`AnswerSizes`), so the callers go on as
after a real call and the answer's length is the output estimate.

Counting, as OpenAI bills chat completions: prompt tokens = characters / 4 over the message texts,
plus 3 per message and 3 to prime the reply; output tokens = the answer's characters / 4, at most
``max_tokens``. Cached input: :class:`PrefixCache` models the API's prompt cache as documented
(prompts of 1,024 tokens or more; the longest prefix sent before, in steps of 128 tokens).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from .types import PARSED_INVALID, PARSED_OK, ChatRequest, ChatResult, Parsed

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD_TOKENS = 3  # per message (role and separators)
REPLY_PRIMING_TOKENS = 3  # every reply is primed with <|start|>assistant<|message|>
CACHE_MIN_TOKENS = 1024  # shorter prompts are never cached
CACHE_STEP_TOKENS = 128  # cached prefixes grow in steps of this many tokens
FILLER = ("The quick brown fox jumps over the lazy dog while a careful writer weighs every claim, "
          "checks each number and keeps the reader's trust. ")


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def prompt_tokens(messages: Sequence[tuple[str, str]]) -> int:
    """Prompt tokens of a chat request as the API counts them (characters / 4 plus message overhead)."""
    return (text_tokens("".join(content for _, content in messages)) + MESSAGE_OVERHEAD_TOKENS * len(messages)
            + REPLY_PRIMING_TOKENS)


def filler(n_tokens: int, tag: str = "") -> str:
    """Placeholder text of about ``n_tokens`` tokens; ``tag`` first, so different placeholders share no prefix."""
    n_chars = max(0, int(n_tokens)) * CHARS_PER_TOKEN
    head = f"[{tag}] " if tag else ""
    body = FILLER * (n_chars // len(FILLER) + 1)
    return (head + body)[:max(n_chars, len(head))]


@dataclass(frozen=True)
class AnswerSizes:
    """The answers a dry run assumes (the real ones cannot be seen before the run)."""

    free_text_chars: int = 240  # a schema's free string (a voter's thought, a judge's reasoning), at most its maxLength
    unconstrained_tokens: int = 256  # an answer without a schema (the paper's chain of thought), at most max_tokens

    def answer(self, req: ChatRequest) -> str:
        if req.json_schema is not None:
            text = json.dumps(self._instance(req.json_schema))
        else:
            text = filler(self.unconstrained_tokens)
        if req.max_tokens is not None:
            text = text[: req.max_tokens * CHARS_PER_TOKEN]
        return text

    def _instance(self, schema: dict) -> Any:
        """A typical value of ``schema``: the first enum value, a number in range, free text of typical length."""
        if "enum" in schema:
            return schema["enum"][0]
        kind = schema.get("type")
        if kind == "object":
            return {k: self._instance(v) for k, v in (schema.get("properties") or {}).items()}
        if kind == "array":
            return [self._instance(schema.get("items") or {"type": "string"})] * int(schema.get("minItems", 1))
        if kind in ("integer", "number"):
            lo, hi = schema.get("minimum", 0), schema.get("maximum", 100)
            return (lo + hi) // 2 if kind == "integer" else (lo + hi) / 2
        if kind == "boolean":
            return False
        limit = schema.get("maxLength") or self.free_text_chars
        return filler(math.ceil(min(self.free_text_chars, limit) / CHARS_PER_TOKEN))[:limit]


class PrefixCache:
    """Every prompt prefix sent before is cached (in steps of 128 tokens, from 1,024 tokens on)."""

    def __init__(self) -> None:
        self._seen: set[int] = set()  # keys of every prefix seen (Python's hash: one process, one run)

    def cached_tokens(self, messages: Sequence[tuple[str, str]]) -> int:
        text = "".join(f"{role}\x1f{content}\x1e" for role, content in messages)
        first, step = CACHE_MIN_TOKENS * CHARS_PER_TOKEN, CACHE_STEP_TOKENS * CHARS_PER_TOKEN
        if len(text) < first:
            return 0
        key, cached, end = hash(text[:first]), 0, first  # a prefix's key chains its blocks' hashes
        while True:
            if key in self._seen:
                cached = end // CHARS_PER_TOKEN
            self._seen.add(key)
            if end + step > len(text):
                return cached
            key, end = hash((key, text[end:end + step])), end + step


@dataclass(frozen=True)
class Tally:
    """Calls and tokens of a set of requests."""

    calls: int = 0
    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0

    def __add__(self, other: "Tally") -> "Tally":
        return Tally(self.calls + other.calls, self.input_tokens + other.input_tokens,
                     self.cached_input_tokens + other.cached_input_tokens, self.output_tokens + other.output_tokens)

    def times(self, k: int) -> "Tally":
        return Tally(self.calls * k, self.input_tokens * k, self.cached_input_tokens * k, self.output_tokens * k)


class DryRunClient:
    """Answers requests with typical answers and tallies their tokens; ``take()`` returns the tally
    since the last ``take()`` and starts a new one (and a new prompt cache: one per stage)."""

    def __init__(self, structured_output: str = "json_schema", answers: AnswerSizes | None = None) -> None:
        self.structured_output = structured_output  # probes choose their request format by it
        self.answers = answers or AnswerSizes()
        self._tally, self._cache = Tally(), PrefixCache()

    def take(self) -> Tally:
        out, self._tally, self._cache = self._tally, Tally(), PrefixCache()
        return out

    def _result(self, req: ChatRequest) -> ChatResult:
        text = self.answers.answer(req)
        p_tok, c_tok = prompt_tokens(req.messages), text_tokens(text)
        self._tally += Tally(1, p_tok, self._cache.cached_tokens(req.messages), c_tok)
        return ChatResult(text, True, None, False, p_tok, c_tok, 1)

    def chat_many(self, reqs: Sequence[ChatRequest], desc: str = "") -> list[ChatResult]:
        return [self._result(r) for r in reqs]

    def parse_many(self, reqs: Sequence[ChatRequest], parse: Callable[[str], Any], desc: str = "",
                   invalid_retries: int = 0) -> list[Parsed]:
        out = []
        for req in reqs:
            res = self._result(req)
            try:
                out.append(Parsed(parse(res.text), PARSED_OK, res.text, None, 1, False, [res]))
            except (ValueError, LookupError, TypeError):  # e.g. a free-text format the filler does not follow
                out.append(Parsed(None, PARSED_INVALID, res.text, "dry run: no parseable answer", 1, False, [res]))
        return out
