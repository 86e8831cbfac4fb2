"""Anchors whose agent prompt cannot fit the context: rejected up front, or truncated with a count.

The agent's prompt (chat template, system message, the anchor's fields) plus ``generator.max_new_tokens``
must fit the model's context and, for trained methods, the trainer's ``max_length``; otherwise the
generator silently overflows, or TRL truncates the completion away and training dies with no examples.
``anchors.too_long`` decides what happens to an anchor over the budget:

    python run.py                                         # reject (default): one line naming file/record
    python run.py anchors.too_long=truncate               # shorten the task's long_text field, log a count
    python run.py anchors.max_prompt_tokens=512           # a tighter budget than the derived one

The budget is ``min(model context, trainer max_length) - max_new_tokens - reserve`` (reserve: the tokens
the chat template wraps around the completion), unless ``anchors.max_prompt_tokens`` sets it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any, Protocol

from moloch_exp.errors import ConfigError, DataError
from moloch_exp.records import Anchor

log = logging.getLogger(__name__)

POLICIES = ("reject", "truncate")
#: Tokens kept free for what the chat template adds around the completion (``<|im_end|>\n`` and the like).
COMPLETION_WRAP_TOKENS = 8


class PromptTokens(Protocol):
    """Counts the agent's prompt in the agent's own tokens, and cuts a text to a number of tokens."""

    def count(self, messages: list[dict]) -> int: ...

    def text_tokens(self, text: str) -> int: ...

    def head(self, text: str, n_tokens: int) -> str: ...


class ChatTemplateTokens:
    """:class:`PromptTokens` for a transformers tokenizer, with the model's chat template and kwargs."""

    def __init__(self, tokenizer: Any, chat_template_kwargs: dict | None = None) -> None:
        self.tokenizer = tokenizer
        self.kwargs = dict(chat_template_kwargs or {})

    def count(self, messages: list[dict]) -> int:
        text = self.tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True,
                                                  **self.kwargs)
        return self.text_tokens(text)

    def text_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def head(self, text: str, n_tokens: int) -> str:
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: max(0, n_tokens)]
        return self.tokenizer.decode(ids, skip_special_tokens=True)


def prompt_token_budget(model_context: int, max_new_tokens: int, train_max_length: int | None = None) -> int:
    """Tokens the agent's prompt may use so that prompt + completion fit generation and training."""
    limit = min(model_context, train_max_length) if train_max_length else model_context
    return limit - max_new_tokens - COMPLETION_WRAP_TOKENS


@dataclass
class ContextFit:
    """What to do with anchors whose agent prompt is over ``max_prompt_tokens`` (``anchors.too_long``)."""

    policy: str
    max_prompt_tokens: int
    tokens: PromptTokens
    why: str = ""  # how the budget was derived, for the messages

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"anchors.too_long must be one of {', '.join(POLICIES)}, not {self.policy!r}")
        if self.max_prompt_tokens < 1:
            raise ConfigError(f"no room for the agent's prompt: the budget is {self.max_prompt_tokens} tokens "
                              f"({self.why}); lower generator.max_new_tokens or raise trainer.args.max_length")

    def identity(self) -> dict | None:
        """What changes the anchors, for stage keys: None when rejecting (anchors pass unchanged)."""
        return None if self.policy == "reject" else {"too_long": self.policy, "max_prompt_tokens": self.max_prompt_tokens}

    def apply(self, task: Any, anchors: list[Anchor], where: str) -> list[Anchor]:
        """``anchors`` with every over-long one truncated, or a DataError naming the first over-long one."""
        out, n_truncated = [], 0
        for i, anchor in enumerate(anchors):
            n = self.tokens.count(task.agent_messages(anchor))
            if n <= self.max_prompt_tokens:
                out.append(anchor)
                continue
            record = f"record {i}" + (f" (id {anchor.id!r})" if task.id_field else "")
            if self.policy == "reject":
                raise DataError(f"{where}: {record}: the agent prompt is {n} tokens, over the budget of "
                                f"{self.max_prompt_tokens} ({self.why}); shorten the record, or set "
                                f"anchors.too_long=truncate")
            out.append(self._truncate(task, anchor, n, f"{where}: {record}"))
            n_truncated += 1
        if n_truncated:
            log.warning("%s: %d of %d anchors truncated to fit %d prompt tokens (%s; anchors.too_long=truncate)",
                        where, n_truncated, len(anchors), self.max_prompt_tokens, self.why)
        return out

    def _truncate(self, task: Any, anchor: Anchor, n: int, what: str) -> Anchor:
        """Cut the anchor's longest ``long_text`` field until the prompt fits."""
        long_fields = [f for f in task.anchor_fields if task.field_type(f) == "long_text" and f in anchor.fields]
        if not long_fields:
            raise DataError(f"{what}: the agent prompt is {n} tokens, over the budget of {self.max_prompt_tokens}, "
                            f"and task {task.name} has no long_text field that may be truncated")
        name = max(long_fields, key=lambda f: self.tokens.text_tokens(str(anchor.fields[f])))
        text = str(anchor.fields[name])
        for _ in range(4):  # decode/re-encode can shift a token or two: re-check
            keep = self.tokens.text_tokens(text) - (n - self.max_prompt_tokens)
            if keep < 1:
                raise DataError(f"{what}: the agent prompt does not fit {self.max_prompt_tokens} tokens even with "
                                f"field '{name}' empty ({self.why})")
            text = self.tokens.head(text, keep).rstrip()
            anchor = replace(anchor, fields={**anchor.fields, name: text})
            n = self.tokens.count(task.agent_messages(anchor))
            if n <= self.max_prompt_tokens:
                return anchor
        raise DataError(f"{what}: could not truncate field '{name}' to fit {self.max_prompt_tokens} tokens")


def context_fit_for_model(model_dir: Any, chat_template_kwargs: dict | None, policy: str, max_new_tokens: int,
                          train_max_length: int | None = None, max_prompt_tokens: int | None = None) -> ContextFit:
    """The :class:`ContextFit` of a materialised model directory (its tokenizer and context length)."""
    from transformers import AutoConfig, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    config = AutoConfig.from_pretrained(str(model_dir))
    context = getattr(config, "max_position_embeddings", None) or getattr(tokenizer, "model_max_length", None)
    if max_prompt_tokens is not None:
        budget, why = int(max_prompt_tokens), "anchors.max_prompt_tokens"
    else:
        budget = prompt_token_budget(int(context), int(max_new_tokens), train_max_length)
        limit = (f"min(model context {context}, trainer max_length {train_max_length})" if train_max_length
                 else f"model context {context}")
        why = f"{limit} - max_new_tokens {max_new_tokens} - {COMPLETION_WRAP_TOKENS}"
    return ContextFit(policy=policy, max_prompt_tokens=budget, tokens=ChatTemplateTokens(tokenizer, chat_template_kwargs),
                      why=why)
