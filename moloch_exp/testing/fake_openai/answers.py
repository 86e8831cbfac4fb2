"""What the fake model answers: deterministic text from the request body, token counts, logprobs.

An answer depends only on the request body (messages, seed, schema, sampling fields): a re-run gets
equal answers whatever the timing. Kinds of answer, in order:

- ``response_format`` with a JSON schema (``json_schema`` or llama.cpp's ``json_object`` + schema): a
  valid instance of the schema (enums picked, strings of words within ``maxLength``, numbers within
  ``minimum``/``maximum``, local ``$ref``\\ s resolved);
- a prompt that asks for "your final X inside <X> … </X>" (the paper's XML protocol): ``<think>…</think>``
  then ``<X>value</X>``, the value one of the ``<X>Yes</X>``-style options the prompt quotes, else a
  ballot letter (``## A`` headings), else Yes/No;
- a prompt that asks for a score "0 to 100" / "between 0 and 100": the number first, then prose;
- anything else: prose.

Tokens are counted as OpenAI's would roughly be: ``ceil(chars / 4)`` per message plus 4 per message
and 3 for the reply's priming. An answer longer than ``max_tokens`` is cut there (``finish_reason``
``"length"``), as a real model's would be; ``invalid_share`` cuts that share of schema answers on purpose.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
from typing import Any

WORDS = (
    "the product seems useful and the price looks fair for what it offers while the other option "
    "reads vague so I lean toward the clearer choice given my budget needs habits values and what "
    "matters most to someone like me today honest details practical benefits trust quality simple"
).split()

_FINAL_TAG = re.compile(r"your final (\w+) inside <(\w+)>")
_BALLOT_LETTER = re.compile(r"^##\s+([A-Z])\s*$", re.MULTILINE)
_SCORE_ASK = re.compile(r"0 to 100|between 0 and 100|0-100")


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def body_digest(body: dict) -> str:
    """What a chat request is counted under at the server: sha256 of its canonical JSON body."""
    return hashlib.sha256(canonical(body).encode("utf-8")).hexdigest()


def rng_for(digest: str, salt: str = "") -> random.Random:
    return random.Random(int(digest[:16], 16) ^ int(hashlib.sha256(salt.encode()).hexdigest()[:16], 16))


def share_hit(digest: str, salt: str, share: float) -> bool:
    """A deterministic coin with probability ``share`` for (digest, salt)."""
    if share <= 0:
        return False
    h = hashlib.sha256(f"{digest}|{salt}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < share


def count_tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def prompt_tokens(messages: list[dict]) -> int:
    return sum(count_tokens(_content_text(m.get("content"))) + 4 for m in messages) + 3


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def prompt_text(messages: list[dict]) -> str:
    """The prompt as one string (role markers included): what the prefix cache hashes."""
    return "".join(f"<|{m.get('role')}|>{_content_text(m.get('content'))}" for m in messages)


def words(rng: random.Random, n_chars: int) -> str:
    out: list[str] = []
    size = 0
    while size < n_chars:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    text = " ".join(out)[: max(1, n_chars)].rstrip()
    return text[:1].upper() + text[1:]


# ----------------------------------------------------------------------------- JSON schema instances
def schema_of(response_format: dict | None) -> dict | None:
    if not isinstance(response_format, dict):
        return None
    if response_format.get("type") == "json_schema":
        js = response_format.get("json_schema") or {}
        return js.get("schema") if isinstance(js, dict) else None
    if response_format.get("type") == "json_object":
        return response_format.get("schema") or {"type": "object", "properties": {}}
    return None


def instance(schema: dict, rng: random.Random, root: dict | None = None, depth: int = 0) -> Any:
    """A valid instance of ``schema`` (the subset structured-output APIs accept)."""
    root = root if root is not None else schema
    if depth > 8:
        return None
    if "$ref" in schema:
        ref = schema["$ref"]
        node: Any = root
        for part in ref.lstrip("#/").split("/"):
            node = node.get(part, {}) if part else node
        return instance(node, rng, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(list(schema["enum"]))
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return instance(options[0], rng, root, depth + 1)
    t = schema.get("type", "object")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), "null")
    if t == "object":
        props = schema.get("properties", {})
        return {k: instance(v, rng, root, depth + 1) for k, v in props.items()}
    if t == "array":
        n = max(int(schema.get("minItems", 1)), min(int(schema.get("maxItems", 3)), rng.randint(1, 3)))
        return [instance(schema.get("items", {"type": "string"}), rng, root, depth + 1) for _ in range(n)]
    if t == "string":
        hi = int(schema.get("maxLength", 360))
        lo = min(hi, max(int(schema.get("minLength", 0)), 40))
        return words(rng, rng.randint(lo, max(lo, hi)))
    if t in ("integer", "number"):
        lo, hi = schema.get("minimum", 0), schema.get("maximum", 100)
        v = rng.randint(int(math.ceil(lo)), int(math.floor(hi)))
        return v if t == "integer" else float(v)
    if t == "boolean":
        return rng.random() < 0.5
    return None


# ----------------------------------------------------------------------------- free-text answers
def xml_answer(prompt: str, tag: str, rng: random.Random) -> str:
    quoted = re.findall(rf"<{re.escape(tag)}>(\w+)</{re.escape(tag)}>", prompt)
    options = sorted(set(quoted)) or sorted(set(_BALLOT_LETTER.findall(prompt))) or ["Yes", "No"]
    return f"<think>{words(rng, rng.randint(60, 300))}</think>\n<{tag}>{rng.choice(options)}</{tag}>"


def free_text(messages: list[dict], rng: random.Random) -> str:
    system = " ".join(_content_text(m.get("content")) for m in messages if m.get("role") == "system")
    last = _content_text(messages[-1].get("content")) if messages else ""
    ask = _FINAL_TAG.search(system) or _FINAL_TAG.search(last)
    if ask is not None:
        return xml_answer(system + "\n" + last, ask.group(2), rng)
    if _SCORE_ASK.search(last) or _SCORE_ASK.search(system):
        return f"{rng.randint(0, 100)}. {words(rng, rng.randint(40, 200))}."
    return words(rng, rng.randint(80, 400)) + "."


def answer_text(body: dict, digest: str, invalid_share: float = 0.0) -> tuple[str, str]:
    """``(text, finish_reason)`` for a chat request body, before the ``max_tokens`` cut."""
    rng = rng_for(digest, "answer")
    schema = schema_of(body.get("response_format"))
    if schema is None:
        return free_text(body.get("messages") or [], rng), "stop"
    text = json.dumps(instance(schema, rng), ensure_ascii=False)
    if share_hit(digest, "invalid", invalid_share):
        return text[: max(1, len(text) // 2)], "length"  # cut mid-JSON: unparseable, as a truncated answer is
    return text, "stop"


def cut_to(text: str, max_tokens: int | None) -> tuple[str, int, bool]:
    """``(text, completion_tokens, was_cut)`` under ``max_tokens``."""
    n = count_tokens(text)
    if max_tokens is not None and n > max_tokens:
        return text[: 4 * max_tokens], int(max_tokens), True
    return text, n, False


# ----------------------------------------------------------------------------- logprobs
_PIECE = re.compile(r"\s*\d{1,3}|\s*[A-Za-z]{1,4}|\s*[^\sA-Za-z\d]|\s+")


def logprobs(text: str, top_k: int, digest: str) -> dict:
    """``choices[0].logprobs`` for ``text``: per piece its logprob and ``top_k`` alternatives
    (a number's alternatives are nearby numbers, so a score can be read from the first position)."""
    rng = rng_for(digest, "logprobs")
    content = []
    for piece in _PIECE.findall(text):
        lp = -rng.uniform(0.01, 0.3)
        tops = [{"token": piece, "logprob": lp, "bytes": list(piece.encode())}]
        stripped = piece.strip()
        alts: list[str] = []
        if stripped.isdigit():
            n = int(stripped)
            alts = [str(v) for d in (5, 10, 15, 20, 25, 30, 40, 50) for v in (n - d, n + d) if 0 <= v <= 100]
        alts += [w for w in WORDS if w != stripped]
        for j, alt in enumerate(alts[: max(0, top_k - 1)]):
            tops.append({"token": alt, "logprob": lp - 2.0 - 0.5 * j, "bytes": list(alt.encode())})
        content.append({"token": piece, "logprob": lp, "bytes": list(piece.encode()), "top_logprobs": tops[:top_k]})
    return {"content": content, "refusal": None}
