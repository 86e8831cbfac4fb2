"""A task: its anchors, the agent's prompt, message extraction and the audience's frame.

Configured by ``conf/task/{sales,elections,social_media}.yaml``; e.g.
    python run.py task=elections task.source=paper data_dir=../shared/data/molochs_bargain
"""
from __future__ import annotations

import ast
import string
from dataclasses import dataclass, field
from typing import Any

from moloch_exp.errors import ConfigError, DataError
from moloch_exp.io import file_sha256
from moloch_exp.prompts.project import ProjectPrompts
from moloch_exp.records import Anchor
from moloch_exp.tasks.extraction import Extraction, extract
from moloch_exp.tasks.sources import (FIELD_TYPES, SOURCES, load_split, paper_split_path, to_anchors,
                                       validate_records)

LABELS = "ABCDEFGH"


def _as_text(value: Any) -> str:
    """Render a field: lists (or their string repr, as in the paper's files) become ' > ' paths."""
    if isinstance(value, str) and value.startswith("[") and value.endswith("]"):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    if isinstance(value, (list, tuple)):
        return " > ".join(str(v) for v in value)
    return str(value)


@dataclass
class Task:
    name: str
    message_tag: str
    option_noun: str
    anchor_fields: list[str]
    agent_system: str
    agent_user: str
    audience_frame: str
    audience_question: str
    feedback_request: str
    judge_context: str
    persona_aspect: str
    paper_subdir: str
    id_field: str | None = None
    source: str = "bundled"
    data_dir: str | None = None
    hub: dict = field(default_factory=dict)
    probes: dict = field(default_factory=dict)
    prompts: Any = None  # a moloch_exp.prompts.PromptSet (conf/prompts/*.yaml); None: the project's own
    #: Expected type per anchor field: text (default) | long_text (may be truncated) | text_list.
    field_types: dict = field(default_factory=dict)
    #: Set by the pipeline once the agent's tokenizer is known (anchors.too_long); None: no length check.
    context_fit: Any = None

    def __post_init__(self) -> None:
        if self.prompts is None:
            self.prompts = ProjectPrompts()
        if self.source not in SOURCES:
            raise ConfigError(f"unknown task.source '{self.source}' (choose from {', '.join(SOURCES)})")
        self.field_types = dict(self.field_types or {})
        unknown = sorted(set(self.field_types) - set(self.anchor_fields))
        if unknown:
            raise ConfigError(f"task {self.name}: field_types names {unknown}, which are not anchor_fields "
                              f"{list(self.anchor_fields)}")
        bad = {f: t for f, t in self.field_types.items() if t not in FIELD_TYPES}
        if bad:
            raise ConfigError(f"task {self.name}: field_types {bad}: each must be one of {', '.join(FIELD_TYPES)}")
        for tmpl_name in ("agent_user", "judge_context"):
            names = {f for _, f, _, _ in string.Formatter().parse(getattr(self, tmpl_name)) if f}
            unknown = names - set(self.anchor_fields)
            if unknown:
                raise ConfigError(f"task {self.name}: {tmpl_name} uses unknown field(s) {sorted(unknown)}")

    def identity(self) -> dict:
        """Cache-key material for everything this task's prompts and extraction determine."""
        return {"name": self.name, "message_tag": self.message_tag, "option_noun": self.option_noun,
                "agent_system": self.agent_system, "agent_user": self.agent_user,
                "audience_frame": self.audience_frame, "audience_question": self.audience_question,
                "feedback_request": self.feedback_request, "judge_context": self.judge_context,
                "persona_aspect": self.persona_aspect, "prompts": self.prompts.identity()}

    def data_identity(self) -> dict:
        """Cache-key material for where the anchors come from: the source, and for the paper's splits the
        digests of the files (not data_dir: the same files elsewhere are the same anchors, and a file changed
        in place is not; the key stays, null, so bundled and hub keys are the earlier ones)."""
        paper = self.source == "paper"
        return {"task": self.name, "source": self.source, "data_dir": None,
                **({"splits_sha256": {split: file_sha256(paper_split_path(self.data_dir, self.paper_subdir, split))
                                      for split in ("train", "test")}} if paper and self.data_dir else {}),
                "paper_subdir": self.paper_subdir, "hub": dict(self.hub) if self.source == "hub" else None,
                "fields": list(self.anchor_fields), "id_field": self.id_field,
                # anchors.too_long=truncate changes the anchors themselves; reject or no fitting leaves them as they are
                **({"context_fit": self.context_fit.identity()}
                   if self.context_fit is not None and self.context_fit.identity() is not None else {})}

    # anchors -----------------------------------------------------------------------------
    def field_type(self, name: str) -> str:
        return self.field_types.get(name, "text")

    def load_anchors(self, split: str, n: int | None) -> tuple[list[Anchor], str]:
        """The first ``n`` anchors of ``split`` (the whole split validated: types, ids), fitted to the context budget."""
        records, where = load_split(self.name, self.source, split, data_dir=self.data_dir,
                                    paper_subdir=self.paper_subdir, hub=self.hub)
        validate_records(records, {f: self.field_type(f) for f in self.anchor_fields}, where, self.id_field)
        if n is not None and n > len(records):
            raise DataError(f"{where}: asked for {n} {split} anchors but the source has {len(records)}")
        records = records[:n] if n is not None else records
        fields = self.anchor_fields + ([self.id_field] if self.id_field and self.id_field not in self.anchor_fields else [])
        anchors = to_anchors(records, split, self.id_field, fields)
        if self.context_fit is not None:
            anchors = self.context_fit.apply(self, anchors, where)
        return anchors, where

    def text_fields(self, anchor: Anchor) -> dict[str, str]:
        """The anchor's fields as the text the prompt templates fill in."""
        return {k: _as_text(v) for k, v in anchor.fields.items()}

    # agent -------------------------------------------------------------------------------
    def agent_messages(self, anchor: Anchor) -> list[dict]:
        return self.prompts.agent_messages(self, anchor)

    def extract(self, completion: str) -> Extraction:
        return extract(completion, self.prompts.message_tag(self))

    # audience ----------------------------------------------------------------------------
    def options_block(self, messages: list[str]) -> str:
        return "\n\n".join(f"{self.option_noun} {LABELS[i]}:\n{m}" for i, m in enumerate(messages))

    def ballot(self, messages: list[str], answer_format: str) -> str:
        labels = ", ".join(LABELS[: len(messages)])
        return (f"{self.audience_frame.strip()}\n\n{self.options_block(messages)}\n\n"
                f"{self.audience_question.strip()} ({labels})\n\n{answer_format.format(labels=labels).strip()}")

    def feedback_prompt(self, messages: list[str]) -> list[dict]:
        """The TFB prompt whose target is a voter's thought about the options."""
        return [{"role": "user", "content": f"{self.audience_frame.strip()}\n\n{self.options_block(messages)}\n\n"
                                            f"{self.feedback_request.strip()}"}]

    # judges ------------------------------------------------------------------------------
    def judge_reference(self, anchor: Anchor) -> str:
        return self.judge_context.format(**self.text_fields(anchor)).strip()
