"""Read a judge's yes/no answer (ballots: moloch_exp/prompts/ballots.py): JSON (structured output) first, then
<answer> tags; anything else raises ValueError, which the LLM client turns into a re-ask and finally an
*invalid* judgment. The project's prompt set uses them (prompts/project.py); the paper's set reads its own tags.
"""
from __future__ import annotations

import re

from moloch_exp.llm.structured import json_object


def judgment_schema(reasoning_max_chars: int | None = None) -> dict:
    reasoning: dict = {"type": "string"}
    if reasoning_max_chars:
        reasoning["maxLength"] = reasoning_max_chars
    return {"type": "object", "properties": {"reasoning": reasoning,
                                              "answer": {"type": "string", "enum": ["yes", "no"]}},
            "required": ["reasoning", "answer"], "additionalProperties": False}


def parse_judgment(text: str) -> tuple[str | None, bool]:
    obj = json_object(text or "")
    if obj is not None and "answer" in obj:
        ans = str(obj["answer"]).strip().lower().strip(".")
        if ans in ("yes", "no"):
            return (str(obj.get("reasoning") or "").strip() or None), ans == "yes"
        raise ValueError(f"answer {obj['answer']!r} is not yes/no")
    m = re.search(r"<answer>\s*(yes|no)\s*</answer>", text or "", re.IGNORECASE)
    if m:
        return None, m.group(1).lower() == "yes"
    raise ValueError("no yes/no answer found")
