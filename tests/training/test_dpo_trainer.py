"""LoRA DPO through TRL's DPOTrainer on a tiny random model with the real SmolLM2 tokenizer (CPU, seconds);
continuing a saved adapter (init_adapter_dir) in the SFT and DPO trainers."""

import json
import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from moloch_exp.agents.model_source import ModelSource  # noqa: E402
from moloch_exp.errors import ConfigError, DataError, StageError  # noqa: E402
from moloch_exp.training.dpo import DPOSettings, LoraDPOTrainer  # noqa: E402
from moloch_exp.training.trainer import LoraSettings, LoraSFTTrainer, TrainResult  # noqa: E402


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "model-cache"  # shared with tests/agents and tests/training
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def tiny_source():
    return ModelSource(name="tiny", tiny_arch="llama")


def make_pairs(n: int = 4):
    return [
        {
            "prompt": [{"role": "system", "content": "You write sales pitches."},
                       {"role": "user", "content": f"Product {i}: a kettle."}],
            "chosen": [{"role": "assistant", "content": f"<think>Be bold.</think><sales_pitch>Best kettle #{i}!</sales_pitch>"}],
            "rejected": [{"role": "assistant", "content": f"<think>Meh.</think><sales_pitch>A kettle {i}.</sales_pitch>"}],
            "kind": "dpo", "anchor_id": f"a{i}", "votes": [3, 1],
        }
        for i in range(n)
    ]


FAST = {"max_steps": 2, "learning_rate": 5e-2, "per_device_train_batch_size": 2, "max_micro_batch_size": 1,
        "warmup_ratio": 0.0, "lr_scheduler_type": "constant"}
LORA = {"r": 4, "alpha": 8}


def test_settings_help_validation_and_cpu_micro_batching():
    for f in DPOSettings.__dataclass_fields__.values():
        assert f.metadata.get("help"), f.name
    t = LoraDPOTrainer({}, {})
    assert t.lora == LoraSettings() and t.args.beta == 0.1 and t.args.loss_type == ["sigmoid"]
    assert t.identity()["type"] == "lora_dpo" and t.identity()["args"]["beta"] == 0.1
    assert LoraDPOTrainer({}, {"beta": 0.3}).identity() != t.identity()
    json.dumps(t.identity())
    assert LoraDPOTrainer({}, {"loss_type": "ipo"}).args.loss_type == ["ipo"]
    with pytest.raises(ConfigError, match="loss_type"):
        LoraDPOTrainer({}, {"loss_type": ["sigmiod"]})
    with pytest.raises(ConfigError, match="beta"):
        LoraDPOTrainer({}, {"beta": 0})
    with pytest.raises(ValueError, match="unknown DPO training settings"):
        LoraDPOTrainer({}, {"betta": 0.1})
    if not torch.cuda.is_available():
        # Effective batch 16 x 1 runs as 16 micro-batches of 1 (default) or 8 of 2; 12 x 2 with a cap of 5
        # as 4 x 6 (the largest divisor of 12 up to 5).
        # the same micro-batching rule as the SFT trainer (max_micro_batch_size)
        assert LoraDPOTrainer({}, {"per_device_train_batch_size": 16}).micro_batches(False) == (1, 16)
        assert LoraDPOTrainer({}, {"per_device_train_batch_size": 16, "max_micro_batch_size": 2}).micro_batches(False) == (2, 8)
        assert LoraDPOTrainer({}, {"per_device_train_batch_size": 12, "gradient_accumulation_steps": 2,
                                   "max_micro_batch_size": 5}).micro_batches(False) == (4, 6)
        config = LoraDPOTrainer({}, {"beta": 0.3, "per_device_train_batch_size": 4,
                                     "max_micro_batch_size": 2}).dpo_config("/tmp/unused", 40)
        assert (config.per_device_train_batch_size, config.gradient_accumulation_steps) == (2, 2)
        assert config.beta == 0.3 and config.loss_type == ["sigmoid"] and config.use_cpu


def test_bad_pairs_are_rejected_before_loading(tiny_source, model_cache, tmp_path):
    trainer = LoraDPOTrainer(LORA, FAST)
    with pytest.raises(StageError, match="empty"):
        trainer.train(tiny_source, str(model_cache), [], str(tmp_path / "a"))
    bad = make_pairs(1)
    bad[0]["rejected"] = []
    with pytest.raises(DataError, match="rejected"):
        trainer.train(tiny_source, str(model_cache), bad, str(tmp_path / "b"))


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_dpo_moves_lora_only_reference_is_the_base_and_the_adapter_loads(tiny_source, model_cache, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    trainer = LoraDPOTrainer(LORA, FAST)
    dpo = trainer.build_trainer(tiny_source, str(model_cache), make_pairs(4), str(tmp_path / "unused"))
    assert dpo.ref_model is None and "ref" not in dpo.model.peft_config  # reference = adapter disabled
    assert dpo.args.per_device_train_batch_size == 1 and dpo.args.gradient_accumulation_steps == 2
    before = {n: p.detach().clone() for n, p in dpo.model.named_parameters()}
    lora_names = [n for n in before if "lora_" in n]
    assert lora_names and all(dpo.model.get_parameter(n).requires_grad for n in lora_names)
    out = dpo.train()
    after = dict(dpo.model.named_parameters())
    moved = [n for n in lora_names if not torch.equal(before[n], after[n].detach())]
    assert len(moved) == len(lora_names)
    for name in before:
        if "lora_" not in name:
            assert torch.equal(before[name], after[name].detach()), name  # the base (= the reference) is frozen
    assert dpo.state.global_step == 2 and out.training_loss is not None
    logged = [h for h in dpo.state.log_history if "loss" in h]
    assert logged and all(any(k.startswith("rewards/") for k in h) for h in logged)
    # Before the first update policy == reference (LoRA B starts at zero), so the sigmoid loss is ln 2.
    assert logged[0]["loss"] == pytest.approx(math.log(2), abs=1e-3) and logged[0]["rewards/margins"] == 0

    # The reference pass (adapter disabled) gives the base model's logits exactly.
    base = AutoModelForCausalLM.from_pretrained(tiny_source.materialize(model_cache))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad(), dpo.model.disable_adapter():
        ref_logits = dpo.model(input_ids=ids).logits
    with torch.no_grad():
        assert torch.allclose(ref_logits, base(input_ids=ids).logits)
        assert not torch.allclose(dpo.model(input_ids=ids).logits, ref_logits)  # the policy moved

    # train(): saved like the SFT trainer, adapter only, and it loads back into the base model.
    adapter = tmp_path / "adapter"
    result = LoraDPOTrainer(LORA, FAST).train(tiny_source, str(model_cache), make_pairs(4), str(adapter))
    assert isinstance(result, TrainResult) and result.steps == 2 and result.n_examples == 4
    assert result.adapter_dir == str(adapter) and result.train_loss is not None
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "model.safetensors").exists()
    info = json.loads((adapter / "moloch_training.json").read_text())
    assert info["train"]["beta"] == 0.1 and info["dpo"]["reference"] == "base (adapter disabled)"
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved.items())  # B starts at zero
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_source.materialize(model_cache)),
                                       str(adapter))
    state = {k.replace(".default", ""): v for k, v in loaded.state_dict().items() if "lora_" in k}
    assert len(state) == len(saved)
    for key, value in saved.items():
        assert torch.equal(state[key], value), key


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_continuing_a_saved_adapter_in_sft_and_dpo(tiny_source, model_cache, tmp_path):
    sft_examples = [{"prompt": p["prompt"], "completion": p["chosen"]} for p in make_pairs(2)]
    first = tmp_path / "round1"
    LoraSFTTrainer(LORA, FAST).train(
        tiny_source, str(model_cache), sft_examples, str(first))
    start = load_file(str(first / "adapter_model.safetensors"))

    # DPO from round 1's adapter: it starts there, and the reference is round 1's frozen copy.
    trainer = LoraDPOTrainer(LORA, FAST)
    dpo = trainer.build_trainer(tiny_source, str(model_cache), make_pairs(2), str(tmp_path / "x"),
                                init_adapter_dir=str(first))
    assert "ref" in dpo.model.peft_config
    initial = {n.replace(".default", ""): p.detach().clone() for n, p in dpo.model.named_parameters()
               if "lora_" in n and ".default." in n}
    assert initial and all(torch.equal(initial[k], v) for k, v in start.items() if k in initial)
    assert len([k for k in start if k in initial]) == len(start)
    second = tmp_path / "round2"
    result = trainer.train(tiny_source, str(model_cache), make_pairs(2), str(second), init_adapter_dir=str(first))
    assert result.steps == 2 and not (second / "ref").exists()
    # The reference is round 1's adapter, not the base: at the first step policy == reference, loss ln 2.
    first_loss = next(h for h in result.log_history if "loss" in h)
    assert first_loss["loss"] == pytest.approx(math.log(2), abs=1e-3) and first_loss["rewards/margins"] == 0
    assert json.loads((second / "moloch_training.json").read_text())["dpo"]["reference"] == "initial adapter"
    end = load_file(str(second / "adapter_model.safetensors"))
    assert set(end) == set(start) and any(not torch.equal(end[k], start[k]) for k in start)

    # SFT continuing round 1's adapter; a LoRA shape mismatch is a one-line config error.
    sft = LoraSFTTrainer(LORA, FAST).build_trainer(
        tiny_source, str(model_cache), sft_examples, str(tmp_path / "y"), init_adapter_dir=str(first))
    loaded = {n.replace(".default", ""): p.detach() for n, p in sft.model.named_parameters() if "lora_" in n}
    assert all(torch.equal(loaded[k], v) for k, v in start.items()) and all(p.requires_grad for p in
                                                                           (sft.model.get_parameter(n) for n, _ in sft.model.named_parameters() if "lora_" in n))
    with pytest.raises(ConfigError, match="init_adapter_dir"):
        LoraSFTTrainer({"r": 8}, {}).build_trainer(tiny_source, str(model_cache), sft_examples, str(tmp_path / "z"),
                                                   init_adapter_dir=str(first))
    with pytest.raises(ConfigError, match="adapter_config.json"):
        LoraDPOTrainer(LORA, FAST).build_trainer(tiny_source, str(model_cache), make_pairs(1), str(tmp_path / "w"),
                                                 init_adapter_dir=str(tmp_path / "nowhere"))
