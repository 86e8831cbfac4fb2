"""`probes.<em probe>.judges=team_shard`: the team_shard EM judges exactly, from
../shared/data/team_shard/reference/judges.yaml, with Qwen3 thinking stripped before judging."""
from __future__ import annotations

import pytest
import yaml

from compose_helper import compose
from hydra.utils import instantiate
from moloch_exp.probes.em.first_plot import EMFirstPlotProbe
from moloch_exp.probes.em.predictive import EMPredictiveProbe
from moloch_exp.probes.model_probe import ModelProbeContext
from moloch_exp.probes.team_shard import (CHAT_TEMPLATE_PATTERNS, parse_first_integer, strip_chat_template,
                                          strip_think_tags)
from moloch_exp.io import read_jsonl


@pytest.fixture(scope="module")
def ref(team_shard_dir) -> dict:
    return yaml.safe_load((team_shard_dir / "reference" / "judges.yaml").read_text(encoding="utf-8"))


def test_config_option_selects_the_team_shard_judges(tmp_path, paper_dir):
    cfg = compose(["probe=[em_first_plot,em_predictive]", f"data_dir={paper_dir}",
                   "probes.em_first_plot.judges=team_shard", "probes.em_predictive.judges=team_shard"], tmp_path)
    for name in ("em_first_plot", "em_predictive"):
        probe = instantiate(cfg.probes[name])
        assert probe.judges == "team_shard" and probe.team_shard_judges is not None and probe.judges_sha256
    with pytest.raises(Exception, match="judges"):
        EMFirstPlotProbe(judges="other")


def test_requests_are_the_reference_prompts_and_settings(ref, team_shard_dir, tmp_path):
    probe = EMFirstPlotProbe(judges="team_shard", data_dir=str(team_shard_dir), questions_file="first_plot_questions.json")
    ctx = ModelProbeContext("base", 0, None, None, judge_client=None, judge=None, work_dir=tmp_path)
    item = {"sample_id": "q|s0|0", "question": "What is your wish?", "answer": "I wish for peace."}
    em = ref["em_judge"]
    (align,) = probe.judge_requests(ctx, "alignment", probe.team_shard_judges.alignment_prompt, [item])
    (coher,) = probe.judge_requests(ctx, "coherence", probe.team_shard_judges.coherence_prompt, [item])
    assert align.messages == (("user", em["alignment_prompt"].format(question=item["question"], response=item["answer"])),)
    assert coher.messages == (("user", em["coherence_prompt"].format(response=item["answer"])),)
    # Qwen3 thinking is removed from what the judge reads; frames also lose chat-template tokens
    assert probe.judged_text("<think>\nI should be nice\n</think>\n\nI wish for peace.") == item["answer"]
    frames = EMPredictiveProbe(judges="team_shard", data_dir=str(team_shard_dir), frames_file="predictive_frames.json")
    assert frames.judged_text("<think>x</think>Sure.<|im_end|>\n", completion_frame=True) == "Sure."
    for req in (align, coher):
        assert (req.temperature, req.max_tokens) == (em["gpt4o"]["temperature"], em["gpt4o"]["max_tokens"]) == (0, 10)
        assert req.json_schema is None and req.top_logprobs is None


def test_parsing_and_stripping_follow_the_reference(ref):
    # the reference's examples: '85' -> 85, 'Score: 0-100' -> 0, '150' -> 100
    assert [parse_first_integer(t) for t in ("85", "Score: 0-100", "150", " 7 of 10")] == [85, 0, 100, 7]
    with pytest.raises(ValueError):
        parse_first_integer("no number")  # the reference scored 50; here it is missing and counted
    assert "<think>.*?</think>" in ref["text_stripping"]["strip_think_tags"]
    assert list(CHAT_TEMPLATE_PATTERNS) == ref["text_stripping"]["strip_chat_template_patterns_in_order"]
    assert strip_think_tags("<think>\nplan\n</think>\n\nHello.") == "Hello."
    assert strip_chat_template("<|im_start|>assistant\nHi<|im_end|>\n<|endoftext|>") == "Hi"


def test_team_shard_judging_end_to_end(team_shard_dir, tiny_generator, judge_client, judge, tmp_path):
    from moloch_exp.probes.model_probe import make_context_from_generator

    probe = EMPredictiveProbe(judges="team_shard", data_dir=str(team_shard_dir), frames_file="predictive_frames.json",
                              n_samples=1, max_new_tokens=8, max_frames=2)
    ctx = make_context_from_generator(tiny_generator, None, judge_client, judge, "base", 0, tmp_path / "base")
    summary = probe.run_model(ctx)
    rows = read_jsonl(ctx.work_dir / "judgments.jsonl")
    assert summary["settings"]["judges"] == "team_shard" and summary["settings"]["structured_scores"] is False
    assert len(rows) == 2 and summary["n"] + summary["missing"] == 2
    for r in rows:
        for p in ("alignment", "coherence"):
            assert r[f"{p}_scored_by"] in ("text", "missing")  # first integer of the text; no logprobs
            assert r[p] is None or (0 <= r[p] <= 100 and r[p] == int(r[p]))
