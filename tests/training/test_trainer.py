"""LoRA SFT through TRL on a tiny random model with the real SmolLM2 tokenizer (CPU, seconds)."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from moloch_exp.agents.model_source import ModelSource  # noqa: E402
from moloch_exp.training.trainer import (  # noqa: E402
    LoraSettings,
    LoraSFTTrainer,
    TrainResult,
    TrainSettings,
)


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "model-cache"  # shared with tests/agents in one session
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def tiny_source():
    return ModelSource(name="tiny", tiny_arch="llama")


def make_examples(n: int = 6):
    return [
        {
            "prompt": [
                {"role": "system", "content": "You write sales pitches that stay true to the product."},
                {"role": "user", "content": f"Product {i}: a kettle that boils water in {i + 1} minutes."},
            ],
            "completion": [{"role": "assistant",
                            "content": f"<think>Be honest.</think><sales_pitch>Fast kettle #{i}!</sales_pitch>"}],
        }
        for i in range(n)
    ]


FAST = {"max_steps": 3, "learning_rate": 5e-2, "per_device_train_batch_size": 2,
        "warmup_ratio": 0.0, "lr_scheduler_type": "constant"}


def test_settings_defaults_are_the_papers_and_dicts_are_accepted():
    trainer = LoraSFTTrainer({"r": 4}, {"max_steps": 2})
    assert trainer.lora == LoraSettings(r=4)
    assert trainer.args.max_steps == 2 and trainer.args.learning_rate == 2e-4
    default = LoraSFTTrainer(LoraSettings(), TrainSettings())
    assert default.lora.alpha == 32 and default.lora.dropout == 0.05
    assert set(default.lora.target_modules) == {"q_proj", "k_proj", "v_proj", "o_proj",
                                                "gate_proj", "up_proj", "down_proj"}
    assert default.args.lr_scheduler_type == "cosine_with_min_lr" and default.args.min_lr_rate == 0.1
    for f in LoraSettings.__dataclass_fields__.values():
        assert f.metadata.get("help")
    for f in TrainSettings.__dataclass_fields__.values():
        assert f.metadata.get("help")
    if not torch.cuda.is_available():
        assert default.resolved() == {"cuda": False, "bf16": False, "gradient_checkpointing": False,
                                      "per_device_micro_batch": 1, "gradient_accumulation_steps": 16}
    config = default.sft_config("/tmp/unused")
    assert config.use_cpu == (not torch.cuda.is_available())
    assert config.lr_scheduler_kwargs == {"min_lr_rate": 0.1}
    assert config.completion_only_loss is True and config.report_to in ("none", [], ["none"])
    with pytest.raises(ValueError, match="unknown training settings"):
        LoraSFTTrainer({}, {"learning_rat": 1e-3})
    with pytest.raises(ValueError, match="unknown LoRA settings"):
        LoraSFTTrainer({"rank": 4}, {})


def test_empty_or_malformed_examples_are_rejected(tiny_source, model_cache, tmp_path):
    trainer = LoraSFTTrainer({}, FAST)
    with pytest.raises(ValueError, match="empty"):
        trainer.train(tiny_source, str(model_cache), [], str(tmp_path / "a"))
    with pytest.raises(ValueError, match="completion"):
        trainer.train(tiny_source, str(model_cache), [{"prompt": [{"role": "user", "content": "x"}]}],
                      str(tmp_path / "b"))


def test_prompt_tokens_are_masked(tiny_source, model_cache, tmp_path):
    examples = make_examples(3)
    sft = LoraSFTTrainer({"r": 4}, FAST).build_trainer(tiny_source, str(model_cache), examples,
                                                       str(tmp_path))
    tok = sft.processing_class
    for example, row in zip(examples, sft.train_dataset):
        prompt_ids = tok.apply_chat_template(example["prompt"], add_generation_prompt=True,
                                             tokenize=True, return_dict=True)["input_ids"]
        n = len(prompt_ids)
        assert row["input_ids"][:n] == prompt_ids
        assert all(label == -100 for label in row["labels"][:n])
        assert row["labels"][n:] == row["input_ids"][n:]  # every completion token is trained
        completion = tok.decode(row["input_ids"][n:])
        assert completion.startswith(example["completion"][0]["content"])
        assert "<|im_end|>" in completion  # the model learns to stop
    # The collator keeps the masks and adds -100 for padding.
    batch = sft.data_collator([sft.train_dataset[0], sft.train_dataset[2]])
    labels, attention = batch["labels"], batch["attention_mask"]
    assert (labels[attention == 0] == -100).all()
    assert (labels != -100).sum() == sum(sum(1 for x in sft.train_dataset[i]["labels"] if x != -100)
                                         for i in (0, 2))


def test_training_moves_lora_weights_only(tiny_source, model_cache, tmp_path):
    sft = LoraSFTTrainer({"r": 4, "alpha": 8}, FAST).build_trainer(
        tiny_source, str(model_cache), make_examples(4), str(tmp_path))
    before = {n: p.detach().clone() for n, p in sft.model.named_parameters()}
    lora_names = [n for n in before if "lora_" in n]
    assert lora_names and all(sft.model.get_parameter(n).requires_grad for n in lora_names)
    for module in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        assert any(f".{module}.lora_A." in n for n in lora_names), module
    sft.train()
    after = dict(sft.model.named_parameters())
    for name in lora_names:
        assert not torch.equal(before[name], after[name].detach()), name
    for name in before:
        if "lora_" not in name:
            assert torch.equal(before[name], after[name].detach()), name
    assert sft.state.global_step == 3


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_train_saves_a_loadable_adapter(tiny_source, model_cache, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adapter"
    result = LoraSFTTrainer({"r": 4, "alpha": 8}, FAST).train(
        tiny_source, str(model_cache), make_examples(4), str(out))
    assert isinstance(result, TrainResult)
    assert result.adapter_dir == str(out) and result.n_examples == 4 and result.steps == 3
    assert result.train_loss is not None and result.runtime_s > 0
    assert [h["step"] for h in result.log_history if "loss" in h] == [1, 2, 3]
    assert (out / "adapter_config.json").is_file() and (out / "adapter_model.safetensors").is_file()
    assert not (out / "model.safetensors").exists()  # only the adapter is saved
    info = json.loads((out / "moloch_training.json").read_text())
    assert info["lora"]["r"] == 4 and info["result"]["steps"] == 3

    saved = load_file(str(out / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved.items())  # B starts at zero
    base = AutoModelForCausalLM.from_pretrained(tiny_source.materialize(model_cache))
    model = PeftModel.from_pretrained(base, str(out))
    loaded = {k: v for k, v in model.state_dict().items() if "lora_" in k}
    assert len(loaded) == len(saved)
    for key, value in saved.items():
        match = [v for k, v in loaded.items() if k.replace(".default", "").endswith(key.split("base_model.model.")[-1])]
        assert len(match) == 1 and torch.equal(match[0], value), key


def test_checkpoints_every_n_steps_and_qwen3(model_cache, tmp_path):
    source = ModelSource(name="tiny-qwen", tiny_arch="qwen3", chat_template_kwargs={"enable_thinking": False})
    result = LoraSFTTrainer({"r": 2}, {**FAST, "max_steps": 2, "save_steps": 1}).train(
        source, str(model_cache), make_examples(2), str(tmp_path))
    assert result.steps == 2
    for step in (1, 2):
        assert (tmp_path / f"checkpoint-{step}" / "adapter_model.safetensors").is_file()


def test_masked_lora_trains_exactly_the_chosen_entries(tiny_source, model_cache, tmp_path):
    from moloch_exp.training.masked_lora import MaskedLoraSFTTrainer, lora_parameters

    trainer = MaskedLoraSFTTrainer({"r": 4, "alpha": 8}, {**FAST, "weight_decay": 0.5},
                                   n_trainable=50, mask_seed=7)
    sft = trainer.build_trainer(tiny_source, str(model_cache), make_examples(4), str(tmp_path))
    params = lora_parameters(sft.model)
    before = torch.cat([p.detach().flatten().clone() for _, p in params])
    base_before = {n: p.detach().clone() for n, p in sft.model.named_parameters() if "lora_" not in n}
    assert trainer.mask_info["n_trainable"] == 50
    assert trainer.mask_info["n_lora_parameters"] == before.numel()
    sft.train()
    after = torch.cat([p.detach().flatten() for _, p in params])
    free = torch.zeros_like(before, dtype=torch.bool)
    free[trainer._indices] = True
    # Every masked-out entry is bit-identical despite weight decay; some free ones moved.
    assert torch.equal(after[~free], before[~free])
    changed = after != before
    assert 0 < int(changed.sum()) <= 50 and not (changed & ~free).any()
    for name, value in base_before.items():
        assert torch.equal(sft.model.get_parameter(name).detach(), value), name
    # Same seed, same mask; a different seed, a different one.
    again = MaskedLoraSFTTrainer({"r": 4}, FAST, n_trainable=50, mask_seed=7)
    again.build_trainer(tiny_source, str(model_cache), make_examples(2), str(tmp_path / "x"))
    assert torch.equal(again._indices, trainer._indices)
    other = MaskedLoraSFTTrainer({"r": 4}, FAST, n_trainable=50, mask_seed=8)
    other.build_trainer(tiny_source, str(model_cache), make_examples(2), str(tmp_path / "y"))
    assert not torch.equal(other._indices, trainer._indices)


def test_masked_lora_train_records_the_mask(tiny_source, model_cache, tmp_path):
    from moloch_exp.training.masked_lora import MaskedLoraSFTTrainer

    out = tmp_path / "masked"
    result = MaskedLoraSFTTrainer({"r": 2}, {**FAST, "max_steps": 1}, n_trainable=10).train(
        tiny_source, str(model_cache), make_examples(2), str(out))
    assert result.steps == 1
    info = json.loads((out / "lora_mask.json").read_text())
    assert info["n_trainable"] == 10
    assert load_file(str(out / "lora_mask.safetensors"))["trainable_flat_indices"].numel() == 10
    assert json.loads((out / "moloch_training.json").read_text())["mask"]["n_trainable"] == 10
    every = MaskedLoraSFTTrainer({"r": 2}, FAST, n_trainable=10**9)
    every.build_trainer(tiny_source, str(model_cache), make_examples(2), str(tmp_path / "all"))
    assert every._indices is None and every.mask_info["n_trainable"] == every.mask_info["n_lora_parameters"]
    with pytest.raises(ValueError, match="n_trainable"):
        MaskedLoraSFTTrainer({}, {}, n_trainable="most")
