"""Pull the reasoning and the message out of an agent completion.

The agent is asked for `<think>…</think>` followed by `<TAG>message</TAG>`. Small and fine-tuned
models break that format in every possible way, so extraction is explicit about what it did:

- ``ok``: the message was inside the task tag (an unclosed closing tag is tolerated);
- ``untagged``: no task tag, but non-empty text remained after removing the reasoning — that
  text is used as the message and the record says so;
- ``failed``: nothing usable; ``message`` is None and the failure is counted downstream.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

THINK_RE = re.compile(r"<think>(.*?)(?:</think>|$)", re.DOTALL | re.IGNORECASE)


@dataclass(frozen=True)
class Extraction:
    thought: str | None
    message: str | None
    status: str  # ok | untagged | failed


def _clean(text: str | None) -> str | None:
    if text is None:
        return None
    text = text.strip()
    return text or None


def extract(completion: str, tag: str) -> Extraction:
    """Split ``completion`` into (thought, message) for task tag ``tag`` (e.g. ``sales_pitch``)."""
    text = completion or ""
    thought = None
    # Qwen3's native thinking may emit "...reasoning</think>" without the opening tag.
    if "</think>" in text.lower() and "<think>" not in text.lower():
        head, _, text = re.split(r"(</think>)", text, maxsplit=1, flags=re.IGNORECASE)
        thought = _clean(head)
    else:
        m = THINK_RE.search(text)
        if m:
            thought = _clean(m.group(1))
            closed = m.group(0).lower().endswith("</think>")
            rest = text[: m.start()] + text[m.end():]
            if not closed:
                # An unclosed think block swallows the rest; a task tag inside it still counts.
                tagged = _tagged(m.group(1), tag)
                if tagged:
                    return Extraction(_clean(m.group(1).split(f"<{tag}>")[0]), tagged, "ok")
                return Extraction(thought, None, "failed")
            text = rest
    tagged = _tagged(text, tag)
    if tagged:
        return Extraction(thought, tagged, "ok")
    leftover = _clean(re.sub(r"</?[a-zA-Z_]+>", "", text))
    if leftover:
        return Extraction(thought, leftover, "untagged")
    return Extraction(thought, None, "failed")


def _tagged(text: str, tag: str) -> str | None:
    m = re.search(rf"<{tag}>(.*?)(?:</{tag}>|$)", text, re.DOTALL | re.IGNORECASE)
    return _clean(m.group(1)) if m else None
