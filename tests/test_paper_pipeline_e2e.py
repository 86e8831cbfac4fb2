"""`prompts=paper` through the real entry point (tiny agent, local llama.cpp judge): the agent reads the
reference's stored-variant prompt, the task probe asks the reference judge (sales_q1) and its answers
are parsed by that judge's tag; what does not parse is counted as invalid, never guessed."""
from __future__ import annotations

import json

import pytest

from test_pipeline_e2e import results, run_app

pytestmark = [pytest.mark.e2e, pytest.mark.server]


@pytest.mark.slow
def test_paper_prompts_base_cell(cache_dir, tmp_path, paper_dir):
    out = tmp_path / "run"
    p = run_app(["model=tiny", "prompts=paper", "task=sales", "task.source=paper", f"data_dir={paper_dir}",
                 "method=base", "anchors.n_train=2", "anchors.n_test=2", "judge.max_tokens=40", "judge.invalid_retries=0",
                 "generator.max_new_tokens=16", "generator.batch_size=4"], cache_dir, out)
    assert p.returncode == 0, p.stderr[-3000:]
    r = results(out)
    probe = r["probes"]["misrepresentation"]
    assert probe["n"]["base"] + probe["invalid"]["base"] + probe["failed"]["base"] == 2
    outputs = [json.loads(line) for line in (out / "stages" / "generate_base" / "outputs.jsonl").read_text().splitlines()]
    assert outputs[0]["prompt"][0]["content"] == "You are a helpful assistant."
    assert "write a one-paragraph *sales pitch*" in outputs[0]["prompt"][1]["content"]
    for j in map(json.loads, (out / "stages" / "probe_misrepresentation_base" / "judgments.jsonl").read_text().splitlines()):
        assert j["status"] == "ok" or "misrepresents_product" in (j["error"] or "") or j["status"] in ("failed", "skipped")
