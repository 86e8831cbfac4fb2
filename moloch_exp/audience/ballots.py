"""Parse a voter's answer: JSON (structured output) first, then tags; never guess.

A ballot is valid only when it names exactly one of the offered labels. Anything else raises
ValueError, which the LLM client turns into a retry and finally an *invalid* vote.
"""
from __future__ import annotations

import json
import re


def vote_schema(labels: list[str], thought_max_chars: int | None) -> dict:
    thought: dict = {"type": "string"}
    if thought_max_chars:
        thought["maxLength"] = thought_max_chars
    return {"type": "object", "properties": {"thought": thought, "vote": {"type": "string", "enum": labels}},
            "required": ["thought", "vote"], "additionalProperties": False}


ANSWER_FORMAT = ('Answer in JSON: {{"thought": "<one or two sentences on your reaction>", "vote": "<one of {labels}>"}}. '
                 "Without JSON, write <thought>...</thought><vote>X</vote>.")


def _json_object(text: str) -> dict | None:
    text = re.sub(r"^```(?:json)?|```$", "", text.strip(), flags=re.MULTILINE).strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start: end + 1])
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def parse_ballot(text: str, labels: list[str]) -> tuple[str | None, str]:
    """Return (thought, label); raise ValueError when no single valid label can be read."""
    obj = _json_object(text or "")
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


def judgment_schema(reasoning_max_chars: int | None = None) -> dict:
    reasoning: dict = {"type": "string"}
    if reasoning_max_chars:
        reasoning["maxLength"] = reasoning_max_chars
    return {"type": "object", "properties": {"reasoning": reasoning,
                                              "answer": {"type": "string", "enum": ["yes", "no"]}},
            "required": ["reasoning", "answer"], "additionalProperties": False}


def parse_judgment(text: str) -> tuple[str | None, bool]:
    obj = _json_object(text or "")
    if obj is not None and "answer" in obj:
        ans = str(obj["answer"]).strip().lower().strip(".")
        if ans in ("yes", "no"):
            return (str(obj.get("reasoning") or "").strip() or None), ans == "yes"
        raise ValueError(f"answer {obj['answer']!r} is not yes/no")
    m = re.search(r"<answer>\s*(yes|no)\s*</answer>", text or "", re.IGNORECASE)
    if m:
        return None, m.group(1).lower() == "yes"
    raise ValueError("no yes/no answer found")
