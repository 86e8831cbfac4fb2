"""Chat renderers: the exact prompt string an agent reads, which the paper's judges are shown.

``TokenizerChatRenderer`` (real runs) applies the agent's own chat template, as the reference did
(``tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True,
enable_thinking=True)``). ``ReferenceChatTemplate`` is the reference pack's hand-written rendering
for Qwen3-8B / Llama-3.1-8B-Instruct (``prompts.yaml: agent.chat_templates``; it reproduces the
10,240 stored prompts), for checks without the tokenizers. ``PlainChatRenderer`` is a generic layout
for the cost estimate. ``LiteralPrompt`` puts a fixed text in
the slot (``scripts/render_prompts.py`` writes ``PROMPT_TEXT``).
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from typing import Any

from moloch_exp.errors import ConfigError


@dataclass
class LiteralPrompt:
    """Always the same text (``PROMPT_TEXT`` in the rendered goldens)."""

    text: str = "PROMPT_TEXT"

    def render(self, messages: list[dict]) -> str:
        return self.text

    def identity(self) -> dict:
        return {"type": "literal", "text": self.text}


@dataclass
class PlainChatRenderer:
    """A generic chat layout (role markers around each message): the pre-flight estimate's stand-in for
    a tokenizer's template, about as long, and needing no weights (``PromptSet.without_weights``)."""

    def render(self, messages: list[dict]) -> str:
        return "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages) + \
            "<|im_start|>assistant\n"

    def identity(self) -> dict:
        return {"type": "plain"}


@dataclass
class ReferenceChatTemplate:
    """The reference pack's rendering of ``[system, user]`` for one of its two agent models."""

    template: str
    model_id: str

    @classmethod
    def from_pack(cls, pack: dict, model_id: str) -> "ReferenceChatTemplate":
        templates = pack["agent"]["chat_templates"]
        if model_id not in templates or not isinstance(templates[model_id], dict):
            known = [k for k, v in templates.items() if isinstance(v, dict)]
            raise ConfigError(f"reference prompts.yaml has no chat template for {model_id!r} (has {known})")
        return cls(templates[model_id]["rendered"], model_id)

    def render(self, messages: list[dict]) -> str:
        roles = [m["role"] for m in messages]
        if roles != ["system", "user"]:
            raise ConfigError(f"the reference chat template renders [system, user], got {roles}")
        system, user = messages[0]["content"], messages[1]["content"]
        # Llama-3.1's template strips message content; Qwen3's keeps it verbatim.
        return self.template.format(system=system, user=user, system_stripped=system.strip(),
                                    user_stripped=user.strip())

    def identity(self) -> dict:
        return {"type": "reference", "model": self.model_id,
                "sha256": hashlib.sha256(self.template.encode()).hexdigest()}


@dataclass
class TokenizerChatRenderer:
    """The agent model's own chat template, with its ``chat_template_kwargs`` (Qwen3: enable_thinking)."""

    model: Any  # moloch_exp.agents.model_source.ModelSource
    cache_dir: str | None = None
    _tokenizer: Any = field(default=None, init=False, repr=False)

    def _load(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            if self.cache_dir is None:
                raise ConfigError("prompts.judge_prompt_renderer.cache_dir is not set (needs paths.cache_dir)")
            model_dir = self.model.materialize(os.path.expanduser(str(self.cache_dir)))
            self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        return self._tokenizer

    def render(self, messages: list[dict]) -> str:
        kwargs = dict(self.model.chat_template_kwargs or {})
        return self._load().apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True, **kwargs)

    def identity(self) -> dict:
        return {"type": "tokenizer", "model": self.model.to_dict() if hasattr(self.model, "to_dict") else str(self.model),
                "chat_template_kwargs": dict(self.model.chat_template_kwargs or {})}
