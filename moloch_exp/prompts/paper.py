"""The paper's prompts (El & Zou 2025, reference code batu-el/molochs-bargain @ 5b5bd99), read at run
time from the reference pack ``<data_dir>/reference/prompts.yaml`` (never copied into the repository).

    python run.py experiment=paper data_dir=../shared/data/molochs_bargain               # stored_variant
    python run.py experiment=paper prompts.variant=head_code data_dir=../shared/data/molochs_bargain
    python scripts/render_prompts.py experiment=paper task=sales data_dir=../shared/data/molochs_bargain out=/tmp/p

What is verbatim: the agent's system and user text (variant ``stored_variant``, the text in the
committed prompt files the paper's generations read, or ``head_code``, what ``artsco/data/utils.py``
writes at the pinned commit); the voter's system message and user prompt (persona as ``str(dict)``
after "## Your Character:"); the TFB prompt and its ``<think> … </think>`` target; the five judges
(``sales_q1``, ``elections_q1``, ``elections_q2``, ``sm_q1``, ``sm_q2``) with the agent prompt in the
judges' ``{prompt}`` slot rendered by the agent's chat template. Where the reference is buggy this
module does the documented right thing (docs/fidelity.md): judge answers are stripped and
case-folded before yes/no (the reference keeps " Yes" as a string that later becomes NaN); a missing
answer tag is an invalid judgment, counted (the reference's AttributeError aborted the whole batch);
TFB options are listed in the order the voter saw them (A first), since the thought that is the
target refers to those labels (the reference listed them in player order under random labels).
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from moloch_exp.errors import ConfigError, DataError
from moloch_exp.prompts.project import ProjectPrompts
from moloch_exp.prompts.renderers import PlainChatRenderer
from moloch_exp.records import Anchor
from moloch_exp.io import resolve_user_path

log = logging.getLogger(__name__)

VARIANTS = ("stored_variant", "head_code")
LABELS = "AB"
# Project task probe -> reference judge, per task (the judges the reference notebooks ran).
DEFAULT_PROBE_JUDGES = {"sales": {"misrepresentation": "sales_q1"},
                        "elections": {"disinformation": "elections_q1", "populism": "elections_q2"},
                        "social_media": {"disinformation": "sm_q1", "harmful": "sm_q2"}}


def extract_xml_field(text: str | None, name: str) -> str | None:
    """The reference's ``extract_xml_field``: ``text.split("<f>")[1].split("</f>")[0]``, else None."""
    try:
        return (text or "").split(f"<{name}>")[1].split(f"</{name}>")[0]
    except IndexError:
        return None


def _categories(value: Any, variant: str) -> str:
    if isinstance(value, str):
        return value
    # stored_variant: ", ".join(categories); head_code: the f-string of the list (its repr).
    return ", ".join(value) if variant == "stored_variant" else str(value)


@dataclass
class PaperPrompts:
    """The reference's prompts from ``<data_dir>/<reference_dir>/prompts.yaml`` (loaded on first use)."""

    data_dir: str | None = None
    reference_dir: str = field(default="reference", metadata={"help": "the reference pack, relative to data_dir"})
    variant: str = field(default="stored_variant", metadata={"help": "stored_variant (the paper's data) | head_code"})
    judge_prompt_renderer: Any = field(default=None, metadata={
        "help": "renders the agent prompt for the judges' {prompt} slot (the agent's chat template)"})
    probe_judges: dict = field(default_factory=lambda: {k: dict(v) for k, v in DEFAULT_PROBE_JUDGES.items()})
    name: str = "paper"
    voter_layouts: tuple[str, ...] = ("persona_first",)  # the reference's ballot: persona inside the user message
    _pack: dict | None = field(default=None, init=False, repr=False)
    _sha256: str = field(default="", init=False, repr=False)

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ConfigError(f"prompts.variant must be one of {VARIANTS}, not {self.variant!r}")
        self.probe_judges = {str(t): dict(m) for t, m in (self.probe_judges or {}).items()}
        self._fallback = ProjectPrompts()

    # ---------------------------------------------------------------- the pack
    @property
    def path(self) -> Path:
        if not self.data_dir:
            raise ConfigError("prompts=paper reads the reference pack under data_dir: set "
                              "data_dir=../shared/data/molochs_bargain (or MOLOCH_DATA_DIR)")
        return resolve_user_path(Path(self.reference_dir) / "prompts.yaml", self.data_dir)

    @property
    def pack(self) -> dict:
        if self._pack is None:
            path = self.path
            if not path.is_file():
                raise DataError(f"reference prompts not found: {path} (prompts=paper needs the reference pack)")
            raw = path.read_bytes()
            try:
                pack = yaml.safe_load(raw.decode("utf-8"))
            except yaml.YAMLError as err:
                raise DataError(f"{path}: not valid YAML ({err})") from None
            for key in ("agent", "voter", "tfb", "judges"):
                if not isinstance(pack, dict) or key not in pack:
                    raise DataError(f"{path}: no '{key}' section")
            self._pack, self._sha256 = pack, hashlib.sha256(raw).hexdigest()
        return self._pack

    def check(self, task: Any = None) -> None:
        """Pre-flight: the pack loads and covers the task."""
        pack = self.pack
        if task is not None and task.name not in pack["agent"]["tasks"]:
            raise ConfigError(f"prompts=paper: the reference has no task {task.name!r} "
                              f"(has {sorted(pack['agent']['tasks'])})")

    def without_weights(self) -> "PaperPrompts":
        """The judges' {prompt} slot rendered by a plain chat layout instead of the agent's tokenizer."""
        if self.judge_prompt_renderer is None:
            return self
        return dataclasses.replace(self, judge_prompt_renderer=PlainChatRenderer())

    def identity(self) -> dict:
        renderer = self.judge_prompt_renderer
        self.pack  # noqa: B018  (loads the file, which sets its digest)
        return {"name": self.name, "variant": self.variant, "prompts_sha256": self._sha256,
                "probe_judges": self.probe_judges,
                "judge_prompt_renderer": renderer.identity() if renderer is not None else None}

    def _task(self, section: str, task: Any) -> dict:
        tasks = self.pack[section]["tasks"]
        if task.name not in tasks:
            raise ConfigError(f"prompts=paper: the reference has no {section} prompt for task {task.name!r}")
        return tasks[task.name]

    # ---------------------------------------------------------------- agent
    def _agent(self, task: Any) -> dict:
        return self._task("agent", task)[self.variant]

    def agent_messages(self, task: Any, anchor: Anchor) -> list[dict]:
        spec = self._agent(task)
        fields = dict(anchor.fields)
        if "categories" in fields:
            fields["categories"] = _categories(fields["categories"], self.variant)
        try:
            user = spec["user_template"].format(**fields)
        except KeyError as err:
            raise DataError(f"anchor {anchor.id}: the paper's {task.name} prompt needs field {err}") from None
        return [{"role": "system", "content": self.pack["agent"]["system_message"]},
                {"role": "user", "content": user}]

    def message_tag(self, task: Any) -> str:
        return self._agent(task)["output_tag"]

    # ---------------------------------------------------------------- audience
    def voter_messages(self, task: Any, persona: Any, shown: list[str], layout: str = "persona_first") -> list[dict]:
        if layout not in self.voter_layouts:
            raise ConfigError(f"the paper's prompts have no audience.layout={layout} (only {', '.join(self.voter_layouts)})")
        if len(shown) != 2:
            raise ConfigError(f"the paper's ballot shows exactly 2 options, got {len(shown)}")
        voter = self.pack["voter"]
        user = self._task("voter", task)["user_template_k2"].format(
            persona=str(persona.record), option_A=shown[0], option_B=shown[1])
        return [{"role": "system", "content": voter["system_message"]}, {"role": "user", "content": user}]

    def vote_schema(self, labels: list[str], thought_max_chars: int | None) -> dict | None:
        return None  # free text: a chain of thought in <think>, the letter in <vote>

    def parse_vote(self, text: str, labels: list[str]) -> tuple[str | None, str]:
        """As the reference: the text inside the first <vote>…</vote> must be exactly "A" or "B"."""
        vote = extract_xml_field(text, "vote")
        if vote is None:
            raise ValueError("no <vote> tag")
        if vote not in labels:
            raise ValueError(f"vote {vote[:40]!r} is not exactly one of {labels}")
        return extract_xml_field(text, "think"), vote

    # ---------------------------------------------------------------- TFB
    def tfb_messages(self, task: Any, anchor: Anchor | None, shown: list[str]) -> list[dict]:
        if anchor is None:
            raise ConfigError("the paper's TFB prompt shows the anchor: the builder must be given the anchors")
        if len(shown) != 2:
            raise ConfigError(f"the paper's TFB prompt shows exactly 2 options, got {len(shown)}")
        fields = dict(anchor.fields)
        if "categories" in fields:
            fields["categories"] = _categories(fields["categories"], "stored_variant")  # ", ".join in step2.1
        try:
            user = self._task("tfb", task)["user_template_k2"].format(
                **fields, option_1=shown[0].strip(), option_2=shown[1].strip())
        except KeyError as err:
            raise DataError(f"anchor {anchor.id}: the paper's {task.name} TFB prompt needs field {err}") from None
        return [{"role": "system", "content": self.pack["tfb"]["system_message"]}, {"role": "user", "content": user}]

    def tfb_target(self, thought: str) -> str:
        return self.pack["tfb"]["target"]["template"].format(think=thought.strip())

    # ---------------------------------------------------------------- judges
    def _judge(self, task: Any, probe: Any) -> dict | None:
        name = self.probe_judges.get(task.name, {}).get(probe.name)
        if name is None:
            return None
        probes = self.pack["judges"]["probes"]
        if name not in probes:
            raise ConfigError(f"prompts.probe_judges: the reference has no judge {name!r} (has {sorted(probes)})")
        return probes[name]

    def judge_name(self, task: Any, probe: Any) -> str:
        return self.probe_judges.get(task.name, {}).get(probe.name) or probe.name

    def judge_messages(self, task: Any, probe: Any, anchor: Anchor, agent_prompt: list[dict], message: str,
                       system: str) -> list[dict]:
        spec = self._judge(task, probe)
        if spec is None:
            log.warning("prompts=paper: no reference judge for probe %r of task %r; the project's wording is used",
                        probe.name, task.name)
            return self._fallback.judge_messages(task, probe, anchor, agent_prompt, message, system)
        slots: dict[str, str] = {"generation": message}
        if "prompt" in spec["slots"]:
            if self.judge_prompt_renderer is None:
                raise ConfigError("prompts.judge_prompt_renderer is not set (the judges are shown the agent prompt)")
            slots["prompt"] = self.judge_prompt_renderer.render(agent_prompt)
        unknown = set(spec["slots"]) - set(slots)
        if unknown:
            raise ConfigError(f"reference judge for {probe.name!r} needs slots {sorted(unknown)} this project cannot fill")
        return [{"role": "system", "content": spec["system_message"]},
                {"role": "user", "content": spec["user_template"].format(**slots)}]

    def judge_schema(self, task: Any, probe: Any, reasoning_max_chars: int | None) -> dict | None:
        if self._judge(task, probe) is None:
            return self._fallback.judge_schema(task, probe, reasoning_max_chars)
        return None

    def parse_judgment(self, task: Any, probe: Any, text: str) -> tuple[str | None, bool]:
        """The answer inside <output_field>…</output_field>, stripped and case-folded, must be yes or no."""
        spec = self._judge(task, probe)
        if spec is None:
            return self._fallback.parse_judgment(task, probe, text)
        answer = extract_xml_field(text, spec["output_field"])
        if answer is None:
            raise ValueError(f"no <{spec['output_field']}> tag")
        label = answer.strip().lower()
        if label not in ("yes", "no"):
            raise ValueError(f"<{spec['output_field']}> holds {answer[:40]!r}, not yes/no")
        return extract_xml_field(text, "think"), label == "yes"
