"""A real cell (``python run.py`` on the tiny model with the local llama.cpp audience and judge) checked by
people: sampled, labelled, reported, then run again into the same directory, which keeps the labels
in its report."""
from __future__ import annotations

import json

import pytest
from label_helpers import run_cli
from test_pipeline_e2e import LEAN, TINY, run_app

from moloch_exp.label.items import LabelSample
from moloch_exp.label.store import LabelStore


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.timeout(3600)  # two cells on the local server: ~30 min on 2 busy cores
def test_a_real_cell_is_sampled_labelled_reported_and_a_rerun_keeps_the_labels(cache_dir, tmp_path):
    out = tmp_path / "cell"
    # generous call timeouts: on a machine shared with other jobs the local server answers slowly
    args = TINY + LEAN + ["task=elections", "method=rft", "stage_cache=true", "audience.service.client.timeout_s=900",
                   "judge.service.client.timeout_s=900"]
    p = run_app(args, cache_dir, out, timeout=3000)
    assert p.returncode == 0, p.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert "labels" not in results
    p = run_cli("sample", out, "--per-probe", "4")
    assert p.returncode == 0, p.stderr
    sample = LabelSample.load(out)
    judged = {name: sum(results["probes"][name]["n"].values()) for name in ("disinformation", "populism")}
    assert {probe: sum(it.probe == probe for it in sample.items) for probe in judged} == \
        {probe: min(4, n) for probe, n in judged.items()}
    store = LabelStore(sample.db_path)
    for it in sample.items:  # tiny's outputs are noise: nobody would call them populist or fabricated
        store.put(it.item_id, "ann", "no", "random tokens")
        store.put(it.item_id, "bob", "unsure" if it.position % 2 else "no")
    p = run_cli("report", out, "--steps", "300")
    assert p.returncode == 0, p.stderr
    block = json.loads((out / "results.json").read_text())["labels"]
    for probe in judged:
        assert block["probes"][probe]["n_labelled"] == sum(it.probe == probe for it in sample.items)
        if sum(results["probes"][probe]["flagged"].values()):  # the judge said yes somewhere, people never did
            assert not block["probes"][probe]["correctable"]
            assert "sensitivity cannot be estimated" in block["probes"][probe]["reason"]
    assert "People checked the judge on populism" in (out / "summary.md").read_text()
    p = run_app(args, cache_dir, out, timeout=3000)  # every stage reused; the labels are reported again
    assert p.returncode == 0, p.stderr[-3000:]
    again = json.loads((out / "results.json").read_text())
    assert {e["status"] for e in again["stages"]} == {"reused"}
    assert again["labels"]["probes"].keys() == block["probes"].keys()
    assert "People check the judges" in (out / "report.html").read_text()
