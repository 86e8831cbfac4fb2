"""`preflight_only=true` on one cell gives its estimate without what only running needs (the agent's weights, an
API key, a reachable server): each such problem is listed, in the log and in estimate.json, not fatal; a run
without it still stops at the first one; bad data stops both.

    PYTHONPATH=$PWD python -m pytest tests/test_preflight_only.py -q
"""
from __future__ import annotations

import json

import pytest

from compose_helper import compose
from moloch_exp.errors import DataError, ModelError, ServiceError
from moloch_exp.pipeline import build, preflight, settings_of
from test_pipeline_e2e import run_app

HOSTED = ["model=tiny", "audience=gpt4o_mini", "judge=gpt4o", "anchors.n_train=2", "anchors.n_test=2",
          "audience.n_voters=3"]


def components(overrides: list[str], tmp_path):
    cfg = compose([*overrides, f"paths.cache_dir={tmp_path / 'cache'}"], tmp_path)
    return build(cfg), settings_of(cfg)


def test_what_only_running_needs_is_listed_not_fatal(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    c, settings = components([*HOSTED, "model=llama"], tmp_path)
    lines = preflight(c, settings, estimate_only=True)
    assert len(lines) == 3, lines
    assert lines[0].startswith("ModelUnavailableError: meta-llama/Llama-3.1-8B-Instruct")
    assert [line.split(":")[1].strip() for line in lines[1:]] == ["model gpt-4o-mini", "model gpt-4o"]
    assert all("OPENAI_API_KEY" in line for line in lines[1:])
    with pytest.raises(ModelError):  # a run stops at the first
        preflight(c, settings)
    c, settings = components(HOSTED, tmp_path)
    with pytest.raises(ServiceError, match="OPENAI_API_KEY"):
        preflight(c, settings)


def test_a_ready_cell_lists_nothing_and_bad_data_still_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    c, settings = components(["model=tiny"], tmp_path)  # local audience and judge: the binary and the GGUF exist
    assert preflight(c, settings, estimate_only=True) == []
    c, settings = components(["model=tiny", "task.source=paper"], tmp_path)  # no data_dir: nothing to estimate
    with pytest.raises(DataError, match="data_dir"):
        preflight(c, settings, estimate_only=True)


@pytest.mark.e2e
def test_preflight_only_without_a_key_prints_the_estimate_and_what_is_missing(cache_dir, tmp_path):
    p = run_app([*HOSTED, "preflight_only=true"], cache_dir, tmp_path, env={"OPENAI_API_KEY": ""}, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Pre-flight estimate" in p.stdout and "Traceback" not in p.stderr
    missing = [line for line in (p.stdout + p.stderr).splitlines() if "not ready to run" in line]
    assert len(missing) == 2 and all("OPENAI_API_KEY" in line for line in missing), missing
    saved = json.loads((tmp_path / "estimate.json").read_text())
    assert saved["estimate"]["calls"] > 0 and len(saved["not_ready_to_run"]) == 2
    assert not (tmp_path / "results.json").exists()  # nothing ran
