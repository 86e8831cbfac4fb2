"""The pre-flight estimate is the cell's own plan (issue 21 item 3): on a cold cache, the calls it counts are
the calls the cell makes, in total, per role and per stage kind, for rft, tfb, dpo, a 3-round race and an rft
cell with a checkpoint trend (its steps planned from one winner a match: the tiny panel of 3 never ties).

`python run.py` (tiny model) with the audience and the judge on two loopback fakes of the hosted API
(moloch_exp/testing/fake_openai; their /_stats count the calls at the server), the LLM response cache off
(every request reaches a server) and no re-asks of unparseable answers (the estimate does not count those).
Each part of the estimate names its stage's key: that stage's artifacts are in the stage cache under that
key, and their rows (votes, retest votes, judgments not skipped) are the part's calls.

    PYTHONPATH=$PWD python -m pytest tests/test_estimate_e2e.py -q -m e2e
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from moloch_exp.testing.fake_openai import FakeOpenAI
from test_pipeline_e2e import EM_SMALL, LEAN, TINY, results, run_app

# two EM probes on every checkpoint of two one-example steps (2 anchors, batch 1), the base model's at step 0
TREND = ["task=sales", "method=rft", "probe=[em_first_plot,em_predictive]",
         *[a for a in EM_SMALL if a.startswith(("probes.em_first_plot", "probes.em_predictive"))],
         "method.builder.replicate=1", "trainer.args.max_steps=-1", "trainer.args.per_device_train_batch_size=1",
         "train.eval_every_n_steps=1"]

ROWS = {"collect": "votes.jsonl", "evaluate": "votes.jsonl", "reliability": "retest_votes.jsonl",
        "probe": "judgments.jsonl", "controls": "judgments.jsonl"}


def requests_in(stage_dir: Path) -> int:
    """Requests a finished stage made: one per vote or yes/no judgment (skipped: none), two per EM row."""
    stage = stage_dir.parent.name
    rows = [json.loads(line) for line in (stage_dir / ROWS[stage]).read_text().splitlines()]
    return sum(2 if "alignment_status" in r else r.get("status") != "skipped" for r in rows)


@pytest.mark.e2e
@pytest.mark.slow  # five tiny cells with training: ~5 min measured on the busy 2-core machine
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("cell", [["task=elections", "method=rft"], ["task=elections", "method=tfb"],
                                  ["task=sales", "method=dpo"],
                                  ["task=sales", "method=rft", "competition.rounds=3", "competition.opponent=previous"],
                                  TREND],
                         ids=["rft", "tfb", "dpo", "race3", "trend"])
def test_the_estimate_counts_the_calls_the_cell_makes(cell, tmp_path):
    cache = tmp_path / "cache"  # cold: no stage, no response, no converted model
    with FakeOpenAI(latency_s=0.0, jitter_s=0.0) as audience, FakeOpenAI(latency_s=0.0, jitter_s=0.0) as judge:
        served = [f"{role}=openai_compatible" for role in ("audience", "judge")] + [
            f"audience.service.base_url={audience.base_url}", "audience.service.model=gpt-4o-mini",
            f"judge.service.base_url={judge.base_url}", "judge.service.model=gpt-4o"]
        p = run_app(TINY + served + cell + ["llm.cache=false", "audience.invalid_retries=0",
                                            "judge.invalid_retries=0"], cache, tmp_path / "out", timeout=1800)
        assert p.returncode == 0, p.stderr[-3000:]
        answered = {"audience": audience.stats()["answered"], "judge": judge.stats()["answered"]}
    r = results(tmp_path / "out")
    est = r["estimate"]
    computed = {e["key"] for e in r["stages"] if e["status"] == "computed"}
    # a cold cache: every stage ran, or it is one this run computed (a trend's step 0 is base's probe)
    assert {e["key"] for e in r["stages"] if e["status"] != "computed"} <= computed
    assert est["calls"] == sum(answered.values()) == r["ledger"]["calls"] > 0
    assert {role: t["calls"] for role, t in est["roles"].items()} == answered
    planned = set()
    for name, term in est["terms"].items():
        made = 0
        for part in term["stages"]:  # <stage>/<key>: the stage the cell ran under that key
            stage_dir = cache / "stages" / part
            assert (stage_dir / "DONE").is_file(), f"{name}: {part} was estimated but not run"
            made += requests_in(stage_dir)
            planned.add(part)
        assert term["calls"] == made, name
    # and every LLM stage the cell ran was in the estimate
    ran = {f"{e['stage']}/{e['key']}" for e in r["stages"] if e["stage"] in ROWS}
    assert ran == planned
    if "train.eval_every_n_steps=1" in cell:
        assert r["trend"]["steps"] == [0, 1, 2] and est["terms"]["trend_judgments"]["calls"] > 0


@pytest.mark.e2e
@pytest.mark.timeout(1800)
def test_the_at_most_line_is_every_answer_reasked(tmp_path):
    """A judge whose every answer is unparseable (the fake cuts each JSON answer in half) is asked a judgment
    1 + judge.invalid_retries times: the cell's calls are then the estimate's "at most" line, not its total."""
    cache = tmp_path / "cache"
    with FakeOpenAI(latency_s=0.0, jitter_s=0.0) as audience, \
            FakeOpenAI(latency_s=0.0, jitter_s=0.0, invalid_share=1.0) as judge:
        served = [f"{role}=openai_compatible" for role in ("audience", "judge")] + [
            f"audience.service.base_url={audience.base_url}", "audience.service.model=gpt-4o-mini",
            f"judge.service.base_url={judge.base_url}", "judge.service.model=gpt-4o"]
        p = run_app(TINY + LEAN + served + ["task=sales", "method=rft", "llm.cache=false", "audience.invalid_retries=0",
                                            "judge.invalid_retries=2"], cache, tmp_path / "out", timeout=1200)
        assert p.returncode == 0, p.stderr[-3000:]
        answered = {"audience": audience.stats()["answered"], "judge": judge.stats()["answered"]}
    est = results(tmp_path / "out")["estimate"]
    assert answered == {"audience": est["roles"]["audience"]["calls"], "judge": 3 * est["roles"]["judge"]["calls"]}
    assert est["calls"] < est["at_most"]["calls"] == sum(answered.values())
    assert est["at_most"]["usd"] > est["usd"] > 0
