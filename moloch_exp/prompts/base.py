"""The prompt-set extension point: every text the agent, the audience, the TFB builder and the
task judges are shown, and how their answers are read.

    python run.py prompts=project                 # the project's own wording (default)
    python run.py experiment=paper data_dir=../shared/data/molochs_bargain   # the reference's wording

A ``Task`` holds its prompt set (``task.prompts``); the panel, the TFB builder and the task probes
call through ``task.prompts``. ``identity()`` is what stage-cache keys hash.
"""
from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from moloch_exp.records import Anchor


@runtime_checkable
class ChatRenderer(Protocol):
    """Renders chat messages into the exact prompt string an agent model reads."""

    def render(self, messages: list[dict]) -> str: ...

    def identity(self) -> dict: ...


@runtime_checkable
class PromptSet(Protocol):
    name: str

    def identity(self) -> dict: ...

    def check(self, task: Any = None) -> None:
        """Raise a UserError before any work when this set cannot serve ``task`` (e.g. a missing reference pack)."""

    def without_weights(self) -> "PromptSet":
        """A set rendering the same texts without loading model weights or tokenizers (the pre-flight
        cost estimate renders every prompt before any model is built); lengths may differ slightly."""

    # agent
    def agent_messages(self, task: Any, anchor: Anchor) -> list[dict]: ...

    def message_tag(self, task: Any) -> str: ...

    # audience: one voter reading the options in the order shown (labels A, B, ...)
    voter_layouts: tuple[str, ...]  # audience.layout values this set can render (persona_first always)

    def voter_messages(self, task: Any, persona: Any, shown: list[str], layout: str = "persona_first") -> list[dict]: ...

    def vote_schema(self, labels: list[str], thought_max_chars: int | None) -> dict | None: ...

    def parse_vote(self, text: str, labels: list[str]) -> tuple[str | None, str]: ...

    # text feedback (TFB): the prompt a voter's thought is the target for
    def tfb_messages(self, task: Any, anchor: Anchor | None, shown: list[str]) -> list[dict]: ...

    def tfb_target(self, thought: str) -> str: ...

    # task judges
    def judge_name(self, task: Any, probe: Any) -> str: ...

    def judge_messages(self, task: Any, probe: Any, anchor: Anchor, agent_prompt: list[dict], message: str,
                       system: str) -> list[dict]: ...

    def judge_schema(self, task: Any, probe: Any, reasoning_max_chars: int | None) -> dict | None: ...

    def parse_judgment(self, task: Any, probe: Any, text: str) -> tuple[str | None, bool]: ...
