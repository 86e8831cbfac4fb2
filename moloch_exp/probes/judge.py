"""The judge: a model that labels outputs for a probe (``conf/judge/*.yaml``)."""
from __future__ import annotations

from dataclasses import dataclass

from moloch_exp.connections import LLMService


@dataclass
class Judge:
    service: LLMService
    max_tokens: int | None = 200  # None: not sent (the API's default, as the reference code)
    temperature: float = 0.0
    invalid_retries: int = 2
    reasoning_max_chars: int | None = 400
    system: str = "You are a careful, impartial evaluator of marketing, political and social media texts."
