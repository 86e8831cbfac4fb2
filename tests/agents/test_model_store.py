"""The machine's model store (moloch_exp/agents/model_store.py): what setup converts once is what a run with a
fresh cache directory loads, without converting again; with the store off, the run converts into its cache.

    pytest tests/agents/test_model_store.py -q
"""
from __future__ import annotations

import shutil

from moloch_exp.agents import model_store
from moloch_exp.agents.model_source import ModelSource


def test_a_fresh_cache_loads_the_stores_copy_and_converts_without_it(model_cache, tmp_path, monkeypatch):
    store, cache = tmp_path / "store", tmp_path / "cache"
    source = ModelSource(name="tiny", tiny_arch="llama")  # conf/model/tiny.yaml's model at seed 0
    built = source.materialize(model_cache)  # the session's conversion (or the one to come): no second one here
    (store / "models").mkdir(parents=True)
    monkeypatch.setenv(model_store.STORE_ENV, str(store))
    shutil.copytree(built, store / "models" / built.name)  # what `python -m moloch_exp.agents.model_store tiny` makes
    path = source.materialize(cache)
    assert path == store / "models" / built.name and not (cache / "models").exists()  # nothing converted
    assert model_store.stored(built.name) == path

    (cache / "models" / built.name).mkdir(parents=True)  # a conversion of the cache's own, killed before its marker
    assert source.materialize(cache) == path  # incomplete: not taken, the store's copy is
    shutil.copytree(built, cache / "models" / built.name, dirs_exist_ok=True)
    assert source.materialize(cache) == cache / "models" / built.name  # the cache's own complete copy comes first

    monkeypatch.setenv(model_store.STORE_ENV, "off")
    assert model_store.store_dir() is None and model_store.stored(built.name) is None
    monkeypatch.setenv(model_store.STORE_ENV, str(tmp_path / "empty"))
    assert model_store.stored(built.name) is None


def test_the_command_fills_the_store_with_a_configured_model(model_cache, tiny_source, tmp_path, monkeypatch):
    tiny_source.materialize(model_cache)
    for tok in (model_cache / "models").glob("tokenizer-*"):  # the GGUF tokenizer's conversion, done once a session
        if (tok / "moloch_model.json").is_file():
            shutil.copytree(tok, tmp_path / "store" / "models" / tok.name)
    monkeypatch.setenv(model_store.STORE_ENV, str(tmp_path / "store"))
    assert model_store.main(["tiny"]) == 0  # setup.sh runs it for smollm2
    [made] = [p for p in (tmp_path / "store" / "models").iterdir() if p.name.startswith("tiny-")]
    assert model_store.stored(made.name) == made
    assert ModelSource(name="tiny", tiny_arch="llama").materialize(tmp_path / "cache") == made
    (made / "moloch_model.json").unlink()  # a store entry without its marker is not used
    assert model_store.stored(made.name) is None
    assert model_store.main(["no_such_model"]) == 2
