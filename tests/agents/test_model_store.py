"""The machine's model store (moloch_exp/agents/model_store.py): what setup converts once is what a run with a
fresh cache directory loads, without converting again; with the store off, the run converts into its cache.

    pytest tests/agents/test_model_store.py -q
"""
from __future__ import annotations

from transformers import AutoModelForCausalLM

from moloch_exp.agents import model_store
from moloch_exp.agents.model_source import ModelSource


def test_a_fresh_cache_loads_the_stores_copy_and_converts_without_it(tmp_path, monkeypatch):
    store, cache = tmp_path / "store", tmp_path / "cache"
    monkeypatch.setenv(model_store.STORE_ENV, str(store))
    assert model_store.main(["tiny"]) == 0  # what setup.sh does for smollm2
    source = ModelSource(name="tiny", tiny_arch="llama")  # conf/model/tiny.yaml's model
    path = source.materialize(cache)
    assert path.parent == store / "models" and (path / "moloch_model.json").is_file()
    assert not (cache / "models").exists()  # nothing converted, nothing copied
    assert AutoModelForCausalLM.from_pretrained(path).config.num_hidden_layers == 2

    monkeypatch.setenv(model_store.STORE_ENV, "off")
    assert model_store.store_dir() is None and model_store.stored(path.name) is None
    built = source.materialize(cache)
    assert built == cache / "models" / path.name and (built / "moloch_model.json").is_file()
    monkeypatch.setenv(model_store.STORE_ENV, str(store))
    assert source.materialize(cache) == built  # the cache's own copy comes first


def test_an_incomplete_store_entry_is_not_used(tmp_path, monkeypatch):
    store = tmp_path / "store"
    monkeypatch.setenv(model_store.STORE_ENV, str(store))
    source = ModelSource(name="tiny", tiny_arch="llama", tiny_seed=7)
    key = source.materialize(tmp_path / "elsewhere").name
    (store / "models" / key).mkdir(parents=True)  # a conversion killed before its marker
    assert model_store.stored(key) is None
    assert source.materialize(tmp_path / "cache") == tmp_path / "cache" / "models" / key
