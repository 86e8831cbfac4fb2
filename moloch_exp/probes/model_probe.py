"""Model probes: probes that sample the agent themselves (SPEC §3), unlike task probes, which judge
the agent's task outputs.

The probe stage calls, once per method (``base``, ``rft``, ``tfb``, or ``step_40`` for a checkpoint)::

    ctx = make_context_from_generator(generator, adapter_dir, judge_client, judge, method, seed, work_dir)
    per_method[method] = probe.run_model(ctx)      # writes samples.jsonl, judgments.jsonl, summary.json
    tests = probe.compare(per_method, baseline="base")

``run_model`` returns a JSON-serialisable summary; ``compare`` adds the tests against the baseline and
``result`` makes the typed result. The members a model probe needs are the ``ModelProbe`` protocol in
moloch_exp/protocols.py; the probe stage (moloch_exp/stages/probe.py) runs them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from moloch_exp.probes.judge import Judge


@dataclass
class ModelProbeContext:
    """Everything a model probe needs for one method.

    ``generate_chat(prompts, seeds, *, max_new_tokens, temperature, desc)`` samples chat replies and
    ``generate_raw(texts, seeds, *, max_new_tokens, temperature, desc)`` plain continuations (no chat
    template); both are already bound to this method's adapter.
    """

    method: str
    seed: int
    generate_chat: Callable[..., list[str]]
    generate_raw: Callable[..., list[str]]
    judge_client: Any  # moloch_exp.llm.LLMClient
    judge: Judge
    work_dir: Path

    def __post_init__(self) -> None:
        self.work_dir = Path(self.work_dir)


def make_context_from_generator(generator, adapter_dir: str | os.PathLike | None, judge_client, judge: Judge,
                                method: str, seed: int, work_dir: str | os.PathLike,
                                top_p: float | None = 1.0) -> ModelProbeContext:
    """Bind an :class:`~moloch_exp.agents.hf_generator.HFGenerator` (or anything with the same
    ``generate`` / ``generate_raw`` signature) to one adapter.

    ``top_p`` defaults to 1.0 (and top-k off): the probes' reference settings are plain temperature
    sampling, not the agent's task sampling settings (``None`` uses the generator's own top_p/top_k).
    """
    adapter = None if adapter_dir is None else str(adapter_dir)

    def generate_chat(prompts: list[list[dict]], seeds: list[int], *, max_new_tokens: int, temperature: float,
                      desc: str = "probe") -> list[str]:
        return generator.generate(prompts, seeds, adapter_dir=adapter, desc=desc, max_new_tokens=max_new_tokens,
                                  temperature=temperature, top_p=top_p,
                                  top_k=None if top_p is None else 0)

    def generate_raw(texts: list[str], seeds: list[int], *, max_new_tokens: int, temperature: float,
                     desc: str = "probe") -> list[str]:
        return generator.generate_raw(texts, seeds, adapter_dir=adapter, desc=desc, max_new_tokens=max_new_tokens,
                                      temperature=temperature, top_p=top_p,
                                      top_k=None if top_p is None else 0)

    return ModelProbeContext(method=method, seed=int(seed), generate_chat=generate_chat, generate_raw=generate_raw,
                             judge_client=judge_client, judge=judge, work_dir=Path(work_dir))
