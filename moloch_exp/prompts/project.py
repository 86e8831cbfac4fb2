"""The project's own prompts (``conf/prompts/project.yaml``, the default): the wording in
``conf/task/*.yaml`` and ``conf/probe/*.yaml``, JSON answers with a short thought, the persona
described in the system message. ``python run.py prompts=project``
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from moloch_exp.prompts.ballots import ANSWER_FORMAT, parse_ballot, vote_schema
from moloch_exp.prompts.judgments import judgment_schema, parse_judgment
from moloch_exp.records import Anchor


@dataclass
class ProjectPrompts:
    """Today's prompts; the texts themselves live on the task and probe configs."""

    voter_system: str = "You are role-playing this person. {persona}\nAnswer as this person would."
    # audience.layout=shared_prefix_first: what every voter of a match reads comes first, the persona last
    # (nothing after it, so the tail a server must compute per voter is the persona alone).
    shared_prefix_system: str = "You are role-playing one member of an audience, described at the end of the message."
    persona_last: str = "Answer as the person described next would.\nWho you are: {persona}"
    name: str = "project"
    voter_layouts: tuple[str, ...] = ("persona_first", "shared_prefix_first")

    def identity(self) -> dict:
        return {"name": self.name, "voter_system": self.voter_system,
                "shared_prefix_system": self.shared_prefix_system, "persona_last": self.persona_last}

    def check(self, task: Any = None) -> None:
        """The project's prompts ship with the package: nothing to check."""

    def without_weights(self) -> "ProjectPrompts":
        return self  # no text here needs a tokenizer

    def agent_messages(self, task: Any, anchor: Anchor) -> list[dict]:
        fields = task.text_fields(anchor)
        return [{"role": "system", "content": task.agent_system.format(tag=task.message_tag).strip()},
                {"role": "user", "content": task.agent_user.format(**fields).strip()}]

    def message_tag(self, task: Any) -> str:
        return task.message_tag

    def voter_messages(self, task: Any, persona: Any, shown: list[str], layout: str = "persona_first") -> list[dict]:
        described = persona.describe(task.persona_aspect)
        if layout == "shared_prefix_first":  # a server or API reuses the shared ballot across voters
            return [{"role": "system", "content": self.shared_prefix_system},
                    {"role": "user", "content": f"{task.ballot(shown, ANSWER_FORMAT)}\n\n"
                                                f"{self.persona_last.format(persona=described)}"}]
        return [{"role": "system", "content": self.voter_system.format(persona=described)},
                {"role": "user", "content": task.ballot(shown, ANSWER_FORMAT)}]

    def vote_schema(self, labels: list[str], thought_max_chars: int | None) -> dict | None:
        return vote_schema(labels, thought_max_chars)

    def parse_vote(self, text: str, labels: list[str]) -> tuple[str | None, str]:
        return parse_ballot(text, labels)

    def tfb_messages(self, task: Any, anchor: Anchor | None, shown: list[str]) -> list[dict]:
        return task.feedback_prompt(shown)

    def tfb_target(self, thought: str) -> str:
        return thought

    def judge_name(self, task: Any, probe: Any) -> str:
        return probe.name

    def judge_messages(self, task: Any, probe: Any, anchor: Anchor, agent_prompt: list[dict], message: str,
                       system: str) -> list[dict]:
        return [{"role": "system", "content": system}] + probe.prompt(task, anchor, message)

    def judge_schema(self, task: Any, probe: Any, reasoning_max_chars: int | None) -> dict | None:
        return judgment_schema(reasoning_max_chars)

    def parse_judgment(self, task: Any, probe: Any, text: str) -> tuple[str | None, bool]:
        return parse_judgment(text)
