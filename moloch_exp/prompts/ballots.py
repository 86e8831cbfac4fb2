"""Parse a voter's answer (judge answers: moloch_exp/prompts/judgments.py): JSON (structured output) first, then tags; never guess.

A ballot is valid only when it names exactly one of the offered labels. Anything else raises
ValueError, which the LLM client turns into a retry and finally an *invalid* vote.
"""
from __future__ import annotations

import re

from moloch_exp.llm.structured import json_object


def vote_schema(labels: list[str], thought_max_chars: int | None) -> dict:
    thought: dict = {"type": "string"}
    if thought_max_chars:
        thought["maxLength"] = thought_max_chars
    return {"type": "object", "properties": {"thought": thought, "vote": {"type": "string", "enum": labels}},
            "required": ["thought", "vote"], "additionalProperties": False}


ANSWER_FORMAT = ('Answer in JSON: {{"thought": "<one or two sentences on your reaction>", "vote": "<one of {labels}>"}}. '
                 "Without JSON, write <thought>...</thought><vote>X</vote>.")


def parse_ballot(text: str, labels: list[str]) -> tuple[str | None, str]:
    """Return (thought, label); raise ValueError when no single valid label can be read."""
    obj = json_object(text or "")
    if obj is not None and "vote" in obj:
        vote = str(obj["vote"]).strip().strip(".").upper()
        if vote in labels:
            thought = obj.get("thought")
            return (str(thought).strip() if thought else None), vote
        raise ValueError(f"vote {obj['vote']!r} is not one of {labels}")
    m = re.search(r"<vote>\s*([A-Za-z])\s*</vote>", text or "")
    if m and m.group(1).upper() in labels:
        t = re.search(r"<thought>(.*?)</thought>", text, re.DOTALL)
        return (t.group(1).strip() if t else None), m.group(1).upper()
    raise ValueError("no vote found (neither JSON with 'vote' nor <vote>X</vote>)")
