"""Structured output: map a backend-neutral JSON schema onto each backend's request field,
and parse/validate answers against it.

Modes (``LLMClient(structured_output=...)``):

- ``"json_schema"``: OpenAI / vLLM / OpenRouter:
  ``response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": s, "strict": True}}``.
  (OpenAI's strict mode wants every property required and ``additionalProperties: false``.)
- ``"llamacpp"``: llama.cpp's ``llama-server``: ``response_format={"type": "json_schema", "json_schema":
  {"schema": s}}``. The server compiles the schema to a grammar, so sampling is constrained to it; its
  converter handles everything the vote/judge schemas use (object properties, required,
  additionalProperties false, enum, string maxLength, integer minimum/maximum, also a bare integer
  schema, which OpenAI's strict mode refuses; ``tests/llm/test_llama_server.py``). Its chat endpoint's
  grammar also admits whitespace and a ```json fence around the JSON, which it strips from the answer
  (and :func:`parse_json_answer` strips from a cut-off one). A schema it cannot compile is answered with
  HTTP 400, which the client does not retry. (llama.cpp's own ``json_schema`` request field is not used:
  on the chat endpoint of this build it fails with "Failed to initialize samplers".)
- ``"none"``: no ``response_format``; callers parse tags / free text themselves.

:func:`parse_json_answer` is a strict parser for such answers (raises ``ValueError``), handling
the subset of JSON Schema that vote/judge schemas use: type, properties, required, enum,
additionalProperties, items, minimum/maximum, minLength/maxLength.
"""

from __future__ import annotations

import json
import re
from typing import Any, Callable

STRUCTURED_MODES = ("json_schema", "llamacpp", "none")


def response_format_for(mode: str, schema: dict | None) -> dict | None:
    """The ``response_format`` request field for ``schema`` under ``mode`` (None: send none)."""
    if mode not in STRUCTURED_MODES:
        raise ValueError(f"structured_output must be one of {STRUCTURED_MODES}, got {mode!r}")
    if schema is None or mode == "none":
        return None
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
    return {"type": "json_schema", "json_schema": {"schema": schema}}


_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}


def validate(value: Any, schema: dict, path: str = "$") -> None:
    """Raise ``ValueError`` naming the first place where ``value`` breaks ``schema``."""
    t = schema.get("type")
    if t is not None:
        types = t if isinstance(t, list) else [t]
        if not any(_TYPES.get(tt, lambda v: True)(value) for tt in types):
            raise ValueError(f"{path}: expected {t}, got {type(value).__name__}")
    if "enum" in schema and value not in schema["enum"]:
        raise ValueError(f"{path}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        raise ValueError(f"{path}: {value!r} != {schema['const']!r}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            raise ValueError(f"{path}: shorter than minLength {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            raise ValueError(f"{path}: longer than maxLength {schema['maxLength']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            raise ValueError(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            raise ValueError(f"{path}: {value} > maximum {schema['maximum']}")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            if k not in value:
                raise ValueError(f"{path}: missing required field {k!r}")
        if schema.get("additionalProperties") is False:
            extra = sorted(set(value) - set(props))
            if extra:
                raise ValueError(f"{path}: unexpected fields {extra}")
        for k, sub in props.items():
            if k in value:
                validate(value[k], sub, f"{path}.{k}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            validate(item, schema["items"], f"{path}[{i}]")


def parse_json_answer(text: str | None, schema: dict | None = None) -> Any:
    """Parse a JSON answer (tolerating surrounding whitespace and a ```json fence) and
    validate it against ``schema``. Raises ``ValueError`` when invalid; never guesses."""
    if text is None:
        raise ValueError("empty answer")
    s = text.strip()
    if s.startswith("```"):
        s = s.split("\n", 1)[1] if "\n" in s else ""
        if s.rstrip().endswith("```"):
            s = s.rstrip()[:-3]
    try:
        value = json.loads(s)
    except json.JSONDecodeError as e:
        raise ValueError(f"answer is not valid JSON ({e.msg} at char {e.pos})") from None
    if schema is not None:
        validate(value, schema)
    return value


def json_parser(schema: dict | None = None) -> Callable[[str], Any]:
    """A ``parse`` callable for :meth:`LLMClient.parse_many`."""
    return lambda text: parse_json_answer(text, schema)


def json_object(text: str) -> dict | None:
    """The first {...} object in a model answer (code fences stripped), or None."""
    text = re.sub(r"^```(?:json)?|```$", "", text.strip(), flags=re.MULTILINE).strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        obj = json.loads(text[start: end + 1])
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None
