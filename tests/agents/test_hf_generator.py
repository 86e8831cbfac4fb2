import pytest
import torch

from moloch_exp.agents.hf_generator import HFGenerator
from moloch_exp.agents.model_source import ModelSource
from moloch_exp.training.trainer import LoraSFTTrainer

PROMPTS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "You are a careful seller."},
     {"role": "user", "content": "Write a short sales pitch for a solar-powered phone charger "
                                 "that folds into a pocket and survives rain."}],
    [{"role": "user", "content": "Name one colour."}],
]


@pytest.fixture(scope="module")
def tiny_gen(model_cache, tiny_source):
    gen = HFGenerator(tiny_source, model_cache, batch_size=2, max_new_tokens=12, temperature=0.7)
    yield gen
    gen.close()


@pytest.fixture(scope="module")
def smol_gen(model_cache, smollm2_source):
    gen = HFGenerator(smollm2_source, model_cache, batch_size=4, max_new_tokens=10, temperature=0.0)
    yield gen
    gen.close()


def test_one_output_per_prompt_of_different_lengths(tiny_gen):
    out = tiny_gen.generate(PROMPTS, seeds=[1, 2, 3])
    assert len(out) == 3 and all(isinstance(o, str) and o for o in out)
    assert tiny_gen.last_stats["n_prompts"] == 3 and tiny_gen.last_stats["new_tokens"] > 0
    assert tiny_gen.tokenizer.padding_side == "left"
    assert tiny_gen.generate([], seeds=[]) == []
    with pytest.raises(ValueError, match="seeds"):
        tiny_gen.generate(PROMPTS, seeds=[1])


def test_same_seeds_same_outputs_and_seeds_are_per_prompt(tiny_gen):
    a = tiny_gen.generate(PROMPTS, seeds=[1, 2, 3])
    assert tiny_gen.generate(PROMPTS, seeds=[1, 2, 3]) == a
    assert tiny_gen.generate(PROMPTS, seeds=[4, 5, 6]) != a
    # A prompt's sample depends on its own seed, not on its neighbours or the batch size.
    assert tiny_gen.generate(PROMPTS[::-1], seeds=[3, 2, 1])[::-1] == a
    assert tiny_gen.generate(PROMPTS[1:2], seeds=[2]) == a[1:2]


def test_raw_generation_without_chat_template(tiny_gen):
    out = tiny_gen.generate_raw(["Transcript of a podcast. Host: If I ruled the world, I would",
                                 "Dear diary,"], seeds=[0, 1], max_new_tokens=5)
    assert len(out) == 2 and all(isinstance(o, str) for o in out)
    assert tiny_gen.last_stats["max_new_tokens"] == 5


def test_greedy_batched_equals_unbatched_on_smollm2(smol_gen):
    batched = smol_gen.generate(PROMPTS, seeds=[0, 0, 0])
    single = [smol_gen.generate([p], seeds=[0])[0] for p in PROMPTS]
    assert batched == single  # left padding is handled correctly
    assert batched[0].strip() and "<|im_end|>" not in batched[0]
    raw = smol_gen.generate_raw(["The capital of France is"], seeds=[0], max_new_tokens=4)
    assert "Paris" in raw[0]


def test_render_chat_applies_template_kwargs(model_cache):
    source = ModelSource(name="tiny", tiny_arch="qwen3", chat_template_kwargs={"enable_thinking": True})
    gen = HFGenerator(source, model_cache, max_new_tokens=3)
    text = gen.render_chat([PROMPTS[0]])[0]
    assert text.startswith("<|im_start|>system") and text.endswith("<|im_start|>assistant\n")
    out = gen.generate([PROMPTS[0]], seeds=[0])
    assert len(out) == 1


def _examples(target: str, n: int = 4):
    return [{"prompt": [{"role": "user", "content": f"Say something ({i})."}],
             "completion": [{"role": "assistant", "content": target}]} for i in range(n)]


# slow: 10-13 s training two adapters (the unit tier's 3 minutes, issue 20; CI runs it)
@pytest.mark.slow
def test_adapter_switching_does_not_leak(model_cache, tiny_source, tmp_path):
    trainer = LoraSFTTrainer({"r": 8, "alpha": 16, "dropout": 0.0},
                             {"max_steps": 6, "learning_rate": 5e-2, "per_device_train_batch_size": 4,
                              "warmup_ratio": 0.0, "lr_scheduler_type": "constant"})
    a_dir, b_dir = tmp_path / "adapter_a", tmp_path / "adapter_b"
    trainer.train(tiny_source, model_cache, _examples("apples apples apples"), str(a_dir))
    trainer.train(tiny_source, model_cache, _examples("zebra zebra zebra"), str(b_dir))

    gen = HFGenerator(tiny_source, model_cache, batch_size=3, max_new_tokens=8, temperature=0.0)
    prompts = [[{"role": "user", "content": "Say something (0)."}], PROMPTS[1]]
    seeds = [0, 0]
    base = gen.generate(prompts, seeds)
    with_a = gen.generate(prompts, seeds, adapter_dir=str(a_dir))
    assert with_a != base
    assert "apples" in with_a[0]
    assert gen.generate(prompts, seeds) == base  # base unchanged after using an adapter
    with_b = gen.generate(prompts, seeds, adapter_dir=str(b_dir))
    assert "zebra" in with_b[0] and with_b != with_a
    assert gen.generate(prompts, seeds, adapter_dir=str(a_dir)) == with_a
    assert gen.generate(prompts, seeds) == base
    # The same adapter through a fresh generator gives the same text (nothing cached wrongly).
    fresh = HFGenerator(tiny_source, model_cache, batch_size=1, max_new_tokens=8, temperature=0.0)
    assert fresh.generate(prompts, seeds, adapter_dir=str(a_dir)) == with_a
    with pytest.raises(FileNotFoundError):
        gen.generate(prompts, seeds, adapter_dir=str(tmp_path / "missing"))
    gen.close()
    fresh.close()


def test_generation_settings_are_validated(tiny_source, model_cache):
    with pytest.raises(ValueError):
        HFGenerator(tiny_source, model_cache, temperature=-1)
    with pytest.raises(ValueError):
        HFGenerator(tiny_source, model_cache, top_p=0)
    with pytest.raises(ValueError):
        HFGenerator(tiny_source, model_cache, batch_size=0)


def test_top_p_restricts_to_the_nucleus(tiny_gen):
    # With a tiny top_p only the most likely token survives: sampling equals greedy decoding.
    nucleus = tiny_gen.generate(PROMPTS, seeds=[1, 2, 3], top_p=1e-6)
    greedy = tiny_gen.generate(PROMPTS, seeds=[9, 9, 9], temperature=0.0)
    assert nucleus == greedy
    assert torch.get_num_threads() >= 1
