"""Request builders shared by the LLM tests and their subprocess workers."""

from __future__ import annotations

import sys
from pathlib import Path

_REPO = str(Path(__file__).resolve().parents[2])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

from moloch_exp.llm import ChatRequest  # noqa: E402

VOTE_SCHEMA = {
    "type": "object",
    "properties": {
        "thought": {"type": "string", "maxLength": 40},
        "vote": {"type": "string", "enum": ["A", "B"]},
    },
    "required": ["thought", "vote"],
    "additionalProperties": False,
}


def vote_request(i: int, max_tokens: int = 64, **kw) -> ChatRequest:
    """A voter prompt whose answer must follow VOTE_SCHEMA."""
    return ChatRequest(
        messages=[
            {"role": "system", "content": "You are a shopper. Answer in JSON with a short thought and a vote."},
            {"role": "user", "content": f"Product A: a red mug #{i}. Product B: a blue lamp #{i}. Which do you buy, A or B?"},
        ],
        max_tokens=max_tokens,
        json_schema=VOTE_SCHEMA,
        purpose="vote",
        **kw,
    )


def small_request(i: int, max_tokens: int = 8, **kw) -> ChatRequest:
    """A cheap free-text request, distinct per ``i``."""
    return ChatRequest(
        messages=[{"role": "user", "content": f"Say a word about the number {i}."}], max_tokens=max_tokens, **kw
    )
