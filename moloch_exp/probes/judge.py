"""The judge: a model that labels outputs for a probe (``conf/judge/*.yaml``). How its yes/no answers are
read is the prompt set's (moloch_exp/prompts/judgments.py)."""
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
    # Not in identity(): it only decides when the judge's accuracy on the bundled controls is flagged.
    min_control_accuracy: float = 0.8

    def identity(self) -> dict:
        """Cache-key material: what determines the judge's answers."""
        return {"service": self.service.identity(), "max_tokens": self.max_tokens, "temperature": self.temperature,
                "system": self.system, "reasoning_max_chars": self.reasoning_max_chars,
                "invalid_retries": self.invalid_retries}
