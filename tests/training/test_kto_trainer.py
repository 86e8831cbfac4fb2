"""LoRA KTO through TRL's KTOTrainer on a tiny random model with the real SmolLM2 tokenizer (CPU, seconds):
the first-step loss TRL's KTO loss gives when policy = reference, LoRA-only updates, the reference is the
base (or the adapter continued), the adapter saves and loads; settings and micro-batches."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

from moloch_exp.agents.model_source import ModelSource  # noqa: E402
from moloch_exp.errors import ConfigError, DataError, StageError  # noqa: E402
from moloch_exp.training.kto import KTOSettings, LoraKTOTrainer, weight_balance  # noqa: E402
from moloch_exp.training.trainer import LoraSettings, LoraSFTTrainer, TrainResult  # noqa: E402


@pytest.fixture(scope="module")
def model_cache(tmp_path_factory):
    path = tmp_path_factory.getbasetemp() / "model-cache"  # shared with tests/agents and tests/training
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="module")
def tiny_source():
    return ModelSource(name="tiny", tiny_arch="llama")


def example(i: int, label: bool) -> dict:
    prompt = [{"role": "system", "content": "You write sales pitches."},
              {"role": "user", "content": f"Product {i}: a kettle."}]
    text = f"<think>Be bold.</think><sales_pitch>Best kettle #{i}!</sales_pitch>" if label else \
        f"<think>Meh.</think><sales_pitch>A kettle {i}.</sales_pitch>"
    return {"prompt": prompt, "completion": [{"role": "assistant", "content": text}], "label": label,
            "kind": "kto", "anchor_id": f"a{i}", "votes": 3 if label else 1}


def make_examples(labels: str) -> list[dict]:
    """``"DDDU..."``: D desirable, U undesirable, in this order (TRL samples KTO data sequentially)."""
    return [example(i, ch == "D") for i, ch in enumerate(labels)]


FAST = {"max_steps": 2, "learning_rate": 5e-2, "per_device_train_batch_size": 4, "max_micro_batch_size": 2,
        "warmup_ratio": 0.0, "lr_scheduler_type": "constant"}
LORA = {"r": 4, "alpha": 8}


def first_loss(desirable_weight: float, undesirable_weight: float, labels: str) -> float:
    """TRL's KTO loss when policy = reference: log-ratios 0 and KL estimate 0, so each example's loss is
    w * (1 - sigmoid(0)) = w / 2, averaged over the step's examples (equal micro-batches)."""
    n_d, n_u = labels.count("D"), labels.count("U")
    return (desirable_weight * n_d + undesirable_weight * n_u) / (2 * (n_d + n_u))


def test_settings_help_validation_and_cpu_micro_batching():
    for f in KTOSettings.__dataclass_fields__.values():
        assert f.metadata.get("help"), f.name
    t = LoraKTOTrainer({}, {})
    assert t.lora == LoraSettings() and t.args.beta == 0.1 and t.args.loss_type == "kto"
    assert (t.args.desirable_weight, t.args.undesirable_weight) == (1.0, 1.0)
    assert t.identity()["type"] == "lora_kto" and t.identity()["args"]["beta"] == 0.1
    assert LoraKTOTrainer({}, {"desirable_weight": 2.0}).identity() != t.identity()
    json.dumps(t.identity())
    for bad, match in (({"loss_type": "sigmoid"}, "loss_type"), ({"beta": 0}, "beta"),
                       ({"undesirable_weight": 0}, "undesirable_weight"),
                       ({"per_device_train_batch_size": 8, "max_micro_batch_size": 1}, "KL term.*at least 2"),
                       ({"per_device_train_batch_size": 5}, "KL term.*micro-batches of 1")):
        with pytest.raises(ConfigError, match=match):
            LoraKTOTrainer({}, bad)
    with pytest.raises(ValueError, match="unknown KTO training settings"):
        LoraKTOTrainer({}, {"betta": 0.1})
    # without the KL term a micro-batch of 1 is fine
    assert LoraKTOTrainer({}, {"loss_type": "apo_zero_unpaired", "max_micro_batch_size": 1}).micro_batches(False) == (1, 16)
    # CPU: the SFT/DPO rule with a cap of 4 (TRL's recommended KL batch), not 1
    assert LoraKTOTrainer({}, {"per_device_train_batch_size": 16}).micro_batches(False) == (4, 4)
    assert LoraKTOTrainer({}, {"per_device_train_batch_size": 16, "max_micro_batch_size": 2}).micro_batches(False) == (2, 8)
    assert LoraKTOTrainer({}, {"per_device_train_batch_size": 6}).micro_batches(False) == (3, 2)
    assert LoraSFTTrainer({}, {"per_device_train_batch_size": 16}).micro_batches(False) == (1, 16)  # unchanged
    if not torch.cuda.is_available():
        config = LoraKTOTrainer({}, {"beta": 0.3, "per_device_train_batch_size": 8, "desirable_weight": 2.0}
                                ).kto_config("/tmp/unused", 40)
        assert (config.per_device_train_batch_size, config.gradient_accumulation_steps) == (4, 2)
        assert config.beta == 0.3 and config.loss_type == "kto" and config.use_cpu
        assert (config.desirable_weight, config.undesirable_weight) == (2.0, 1.0)
        assert config.train_sampling_strategy == "sequential"  # TRL's KL pairs need the examples in order


def test_weight_balance_follows_trls_recommended_range():
    assert weight_balance(10, 10, 1.0, 1.0)["in_trl_range"] and weight_balance(10, 10, 1.0, 1.0)["weighted_ratio"] == 1.0
    k3 = weight_balance(10, 20, 1.0, 1.0)  # K = 3, each_loser: two losers per winner
    assert k3["weighted_ratio"] == 0.5 and not k3["in_trl_range"]
    assert weight_balance(10, 20, 2.0, 1.0)["in_trl_range"] and weight_balance(10, 20, 8 / 3, 1.0)["in_trl_range"]
    assert not weight_balance(10, 20, 3.0, 1.0)["in_trl_range"]  # 3:2 is past 4:3
    assert weight_balance(30, 20, 1.0, 1.0)["in_trl_range"] is False  # winners commoner, weighted 3:2
    assert weight_balance(3, 0, 1.0, 1.0) == {"desirable": 3, "undesirable": 0, "desirable_weight": 1.0,
                                              "undesirable_weight": 1.0, "weighted_ratio": None, "in_trl_range": False}


def test_bad_examples_are_rejected_before_loading(tiny_source, model_cache, tmp_path):
    trainer = LoraKTOTrainer(LORA, FAST)
    with pytest.raises(StageError, match="empty"):
        trainer.train(tiny_source, str(model_cache), [], str(tmp_path / "a"))
    bad = make_examples("DU")
    bad[1]["label"] = "no"
    with pytest.raises(DataError, match="KTO example 1: 'label'"):
        trainer.train(tiny_source, str(model_cache), bad, str(tmp_path / "b"))
    bad = make_examples("DU")
    bad[0]["completion"] = []
    with pytest.raises(DataError, match="KTO example 0: 'completion'"):
        trainer.train(tiny_source, str(model_cache), bad, str(tmp_path / "c"))


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_first_step_loss_lora_only_updates_reference_is_the_base_and_the_adapter_loads(tiny_source, model_cache,
                                                                                      tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    labels = "DDDUDUUU"  # step 1 sees 3 desirable and 1 undesirable: the weights show in its loss
    weights = {"desirable_weight": 2.0, "undesirable_weight": 0.5}
    trainer = LoraKTOTrainer(LORA, FAST | weights)
    kto = trainer.build_trainer(tiny_source, str(model_cache), make_examples(labels), str(tmp_path / "unused"))
    assert kto.ref_model is None and "ref" not in kto.model.peft_config  # reference = adapter disabled
    assert kto.args.per_device_train_batch_size == 2 and kto.args.gradient_accumulation_steps == 2
    assert trainer.provenance()["kto"] == {
        "reference": "base (adapter disabled)", "micro_batch": 2, "gradient_accumulation_steps": 2,
        **weight_balance(4, 4, 2.0, 0.5)}
    before = {n: p.detach().clone() for n, p in kto.model.named_parameters()}
    lora_names = [n for n in before if "lora_" in n]
    assert lora_names and all(kto.model.get_parameter(n).requires_grad for n in lora_names)
    out = kto.train()
    after = dict(kto.model.named_parameters())
    moved = [n for n in lora_names if not torch.equal(before[n], after[n].detach())]
    assert len(moved) == len(lora_names)
    for name in before:
        if "lora_" not in name:
            assert torch.equal(before[name], after[name].detach()), name  # the base (= the reference) is frozen
    assert kto.state.global_step == 2 and out.training_loss is not None
    logged = [h for h in kto.state.log_history if "loss" in h]
    # Before the first update policy == reference (LoRA B starts at zero): log-ratios and KL are 0 and the loss
    # is TRL's closed form (2.0 * 3 + 0.5 * 1) / 8, not the balanced (2.0 + 0.5) / 4 nor ln 2.
    assert logged[0]["loss"] == pytest.approx(first_loss(2.0, 0.5, labels[:4]), abs=1e-4)
    assert first_loss(2.0, 0.5, labels[:4]) == pytest.approx(0.8125)
    assert logged[0]["kl"] == 0 and logged[0]["rewards/chosen"] == 0 and logged[0]["rewards/rejected"] == 0
    # After one update the winners' implicit reward rises above the losers'.
    assert logged[1]["rewards/margins"] > 0

    # The reference pass (adapter disabled) gives the base model's logits exactly.
    base = AutoModelForCausalLM.from_pretrained(tiny_source.materialize(model_cache))
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad(), kto.model.disable_adapter():
        ref_logits = kto.model(input_ids=ids).logits
    with torch.no_grad():
        assert torch.allclose(ref_logits, base(input_ids=ids).logits)
        assert not torch.allclose(kto.model(input_ids=ids).logits, ref_logits)  # the policy moved

    # train(): saved like the SFT trainer, adapter only, and it loads back into the base model.
    adapter = tmp_path / "adapter"
    result = LoraKTOTrainer(LORA, FAST).train(tiny_source, str(model_cache), make_examples("DUDUDUDU"), str(adapter))
    assert isinstance(result, TrainResult) and result.steps == 2 and result.n_examples == 8
    first = next(h for h in result.log_history if "loss" in h)
    assert first["loss"] == pytest.approx(0.5, abs=1e-4)  # equal weights: 1 - sigmoid(0)
    assert (adapter / "adapter_config.json").is_file() and not (adapter / "model.safetensors").exists()
    info = json.loads((adapter / "moloch_training.json").read_text())
    assert info["train"]["beta"] == 0.1 and info["kto"]["reference"] == "base (adapter disabled)"
    assert info["kto"]["desirable"] == info["kto"]["undesirable"] == 4 and info["kto"]["in_trl_range"]
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in saved.items())  # B starts at zero
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_source.materialize(model_cache)),
                                       str(adapter))
    state = {k.replace(".default", ""): v for k, v in loaded.state_dict().items() if "lora_" in k}
    assert len(state) == len(saved)
    for key, value in saved.items():
        assert torch.equal(state[key], value), key


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")
def test_continuing_a_saved_adapter_the_reference_is_that_adapter(tiny_source, model_cache, tmp_path):
    first = tmp_path / "round1"
    LoraSFTTrainer(LORA, FAST).train(tiny_source, str(model_cache),
                                     [{"prompt": e["prompt"], "completion": e["completion"]} for e in make_examples("DD")],
                                     str(first))
    start = load_file(str(first / "adapter_model.safetensors"))
    second = tmp_path / "round2"
    trainer = LoraKTOTrainer(LORA, FAST)
    result = trainer.train(tiny_source, str(model_cache), make_examples("DUUD"), str(second), init_adapter_dir=str(first))
    assert result.steps == 2 and not (second / "ref").exists()
    # policy = round 1's adapter = the reference at the first step: the same closed form, not a moved policy
    assert next(h for h in result.log_history if "loss" in h)["loss"] == pytest.approx(0.5, abs=1e-4)
    assert trainer.provenance()["kto"]["reference"] == "initial adapter"
    end = load_file(str(second / "adapter_model.safetensors"))
    assert set(end) == set(start) and any(not torch.equal(end[k], start[k]) for k in start)
