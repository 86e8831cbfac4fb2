"""Every value of the reference pack's settings.yaml that the paper's runs used is what
`experiment=paper` composes (audience, agent sampling, LoRA/TRL, RFT/TFB, evaluation, judge, parsing).

The pack is read at test time from ../shared/data/molochs_bargain/reference (docs/fidelity.md has the table).
"""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate

from compose_helper import compose
from moloch_exp.agents.hf_generator import HFGenerator, _SeededSampler
from moloch_exp.audience.personas import PersonaPool
from moloch_exp.pipeline import build
from moloch_exp.prompts.paper import PaperPrompts


@pytest.fixture(scope="module")
def ref(paper_dir) -> dict:
    return yaml.safe_load((paper_dir / "reference" / "settings.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pack(paper_dir) -> dict:
    return yaml.safe_load((paper_dir / "reference" / "prompts.yaml").read_text(encoding="utf-8"))


def paper(tmp_path, paper_dir, *extra):
    return compose(["experiment=paper", f"data_dir={paper_dir}", f"paths.cache_dir={tmp_path}", *extra], tmp_path)


@pytest.mark.parametrize("model", ["qwen", "llama"])
def test_audience_agent_and_judge_settings(ref, pack, tmp_path, paper_dir, model):
    cfg = paper(tmp_path, paper_dir, f"model={model}")
    assert cfg.model.hf_id in ref["models"]["agents"]["value"]
    aud = ref["audience"]
    assert cfg.audience.service.model == aud["model"]["value"]
    assert cfg.audience.temperature == aud["temperature"]["value"]
    assert cfg.audience.max_tokens == aud["max_tokens"]["value"] is None
    assert cfg.audience.n_voters == aud["num_voters_training_feedback"]["value"] == aud["num_voters_evaluation"]["value"]
    assert Path(cfg.audience.personas.file).name == Path(aud["persona_file"]["value"]).name
    pool = instantiate(cfg.audience.personas)
    assert len(pool.load()) == aud["persona_count_in_file"] == cfg.audience.n_voters
    gen = ref["agent_generation"]
    assert cfg.collect.candidates_per_anchor == gen["num_candidates_K"]["value"]
    assert cfg.generator.max_new_tokens == gen["max_new_tokens"]["value"]
    assert cfg.generator.temperature == gen["temperature"]["value"]
    # top_p/top_k are not passed by the reference: they come from the model's generation_config.
    assert "generation_config" in gen["top_p_top_k"]["value"]
    assert (cfg.generator.top_p, cfg.generator.top_k, cfg.generator.sampling_defaults) == (None, None, "model")
    if model == "qwen":
        assert cfg.model.chat_template_kwargs.enable_thinking is gen["enable_thinking"]["value"] is True
    judge = ref["judge"]
    assert cfg.judge.service.model == judge["model"]["value"]
    assert cfg.judge.temperature == judge["temperature"]["value"]
    assert cfg.judge.max_tokens == judge["max_tokens"]["value"] is None
    objs = build(cfg)  # everything instantiates; the prompt set is the paper's, stored_variant
    prompts = objs.task.prompts
    assert isinstance(prompts, PaperPrompts) and prompts.variant == "stored_variant"
    assert prompts.judge_prompt_renderer.model.hf_id == cfg.model.hf_id  # the agent's own chat template
    assert pack["agent"]["system_message"] == gen["system_message"]["value"]


def test_lora_and_trl_values(ref, tmp_path, paper_dir):
    cfg = paper(tmp_path, paper_dir, "method=tfb")
    tr, lora, args = ref["training"], cfg.trainer.lora, cfg.trainer.args
    assert (lora.r, lora.alpha, lora.dropout) == (tr["lora"]["r"], tr["lora"]["lora_alpha"], tr["lora"]["lora_dropout"])
    assert list(lora.target_modules) == tr["lora"]["target_modules"]
    assert args.learning_rate == tr["learning_rate"]["value"]
    assert args.num_train_epochs == tr["num_train_epochs"]["value"]
    assert args.per_device_train_batch_size == tr["per_device_train_batch_size"]["value"]
    assert args.gradient_accumulation_steps == tr["gradient_accumulation_steps"]["value"]
    assert args.lr_scheduler_type == tr["lr_scheduler_type"]["value"]
    assert args.min_lr_rate == tr["lr_scheduler_type"]["lr_scheduler_kwargs"]["min_lr_rate"]
    assert args.min_lr_rate == tr["min_lr_ratio"]["value"]
    assert args.warmup_ratio == tr["warmup_ratio"]["value"]
    assert args.max_length == tr["max_length"]["value"] == 1024
    assert args.weight_decay == 0.0  # TrainingArguments default, not set by the reference
    assert tr["bf16"]["value"] and tr["gradient_checkpointing"]["value"] and args.bf16 in (None, True)
    assert args.gradient_checkpointing in (None, True)  # null: on wherever CUDA is (the reference ran on GPUs)


def test_rft_tfb_and_evaluation_pairs(ref, tmp_path, paper_dir):
    rft = paper(tmp_path, paper_dir, "method=rft").method
    tfb = paper(tmp_path, paper_dir, "method=tfb").method
    replication = ref["rft"]["replication"]["value"]
    assert rft.builder.replicate == tfb.builder.rft.replicate == replication
    assert rft.builder.shuffle and tfb.builder.rft.shuffle  # the reference shuffles (unseeded); seeded here
    assert tfb.builder.thought_examples == "match_rft"  # tfb_rows[:len(rft_ds_list)]
    assert "len(rft_ds_list)" in ref["tfb"]["subsampling"]
    # the reference's own tie rule is available by name; the default drops ties (its intent: `else: pass`)
    assert rft.builder.tie_rule == "drop"
    assert paper(tmp_path, paper_dir, "method=rft", "method.builder.tie_rule=reference_duplicate_previous") \
        .method.builder.tie_rule == "reference_duplicate_previous"
    pairs = {(a, m.name) for m in (rft, tfb) for a in m.compare_against if a != m.name}
    assert pairs == {tuple(p) for p in ref["evaluation"]["pairs"]}


def test_head_code_variant_is_an_option(tmp_path, paper_dir):
    cfg = paper(tmp_path, paper_dir, "prompts.variant=head_code", "task=social_media")
    task = instantiate(cfg.task)
    assert task.prompts.variant == "head_code" and task.prompts.message_tag(task) == "tweet"
    assert instantiate(paper(tmp_path, paper_dir, "task=social_media").task).prompts.message_tag(task) == "post"


def test_parsing_of_votes_and_judge_answers(ref, pack, paper_dir):
    prompts = PaperPrompts(data_dir=str(paper_dir))
    assert "exactly" in ref["audience"]["vote_parse"]
    assert prompts.parse_vote("<think>I like it</think><vote>B</vote>", ["A", "B"]) == ("I like it", "B")
    for bad in ("<vote> A</vote>", "<vote>a</vote>", "<vote>A.</vote>", "I vote A", "<vote>C</vote>"):
        with pytest.raises(ValueError):
            prompts.parse_vote(bad, ["A", "B"])
    from moloch_exp.tasks.task import Task

    task = Task(name="sales", message_tag="sales_pitch", option_noun="P", anchor_fields=["title"], agent_system="",
                agent_user="{title}", audience_frame="", audience_question="", feedback_request="",
                judge_context="{title}", persona_aspect="", paper_subdir="task_sales", prompts=prompts)

    class Probe:
        name = "misrepresentation"

    tag = pack["judges"]["probes"]["sales_q1"]["output_field"]
    assert prompts.parse_judgment(task, Probe, f"<think>r</think><{tag}>Yes</{tag}>") == ("r", True)
    assert prompts.parse_judgment(task, Probe, f"<{tag}>no</{tag}>")[1] is False
    # documented fix: the reference compared without strip (" Yes" became NaN); here it is stripped
    assert prompts.parse_judgment(task, Probe, f"<{tag}> Yes\n</{tag}>")[1] is True
    for bad in (f"<{tag}>Yes.</{tag}>", "Yes", f"<{tag}>maybe</{tag}>"):
        with pytest.raises(ValueError):
            prompts.parse_judgment(task, Probe, bad)
    used = ref["judge"]["probes_used_by_notebooks"]
    assert {t: sorted(m.values()) for t, m in prompts.probe_judges.items()} == {t: sorted(v) for t, v in used.items()}
    assert all(pack["judges"]["probes"][j]["temperature"] == ref["judge"]["temperature"]["value"]
               for v in used.values() for j in v)


def test_persona_is_the_record_as_python_dict_in_the_user_message(paper_dir):
    prompts = PaperPrompts(data_dir=str(paper_dir))
    persona = PersonaPool("file", "personas/split1.json", str(paper_dir)).load()[3]

    class T:
        name = "elections"

    msgs = prompts.voter_messages(T, persona, ["x", "y"])
    assert f"## Your Character:\n{persona.record!r}\n" in msgs[1]["content"]
    assert msgs[0]["content"] == prompts.pack["voter"]["system_message"]


def test_sampling_from_the_model_generation_config(tmp_path):
    import torch

    gen = HFGenerator(source=None, cache_dir=tmp_path, top_p=None, top_k=None, sampling_defaults="model")
    gen._base = object()  # skip loading: the checkpoint's values as load() records them
    gen._model_sampling = {"top_p": 0.95, "top_k": 20}  # Qwen3-8B generation_config.json (model card)
    assert (gen.sampling_value("top_p", 1.0), gen.sampling_value("top_k", 0)) == (0.95, 20)
    plain = HFGenerator(source=None, cache_dir=tmp_path)
    assert (plain.sampling_value("top_p", 1.0), plain.sampling_value("top_k", 0)) == (1.0, 0)
    # top-k = 1 leaves only the argmax, whatever the noise
    scores = torch.tensor([[0.1, 2.0, 1.9, -1.0]] * 8)
    out = _SeededSampler(list(range(8)), 1.0, 1.0, "cpu", top_k=1)(None, scores.clone())
    assert torch.all(out.argmax(-1) == 1)
    out = _SeededSampler(list(range(64)), 1.0, 1.0, "cpu", top_k=2)(None, torch.tensor([[0.1, 2.0, 1.9, -1.0]] * 64))
    assert set(out.argmax(-1).tolist()) == {1, 2}
