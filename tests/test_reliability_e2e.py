"""Issue 11 through the real entry point on the tiny model with the local llama.cpp audience and judges:
results.json carries the audience reliability of every vote set, the win-rate test, the probe-change
family and the judges' accuracy on their controls; adaptive polling asks fewer voters than full
polling and keeps every winner."""
from __future__ import annotations

import json

import pytest

from moloch_exp.audience.polling import outcome
from moloch_exp.probes.controls import control_subset, load_yes_no_controls
from test_pipeline_e2e import TINY, results, run_app

pytestmark = [pytest.mark.e2e, pytest.mark.server]

@pytest.mark.slow
def test_cell_reports_reliability_win_test_probe_family_and_control_accuracy(cache_dir, tmp_path):
    p = run_app(TINY + ["task=elections", "method=rft", "judge@judge2=local", "judge2.temperature=0.7"],
                cache_dir, tmp_path, timeout=1500)
    assert p.returncode == 0, p.stderr[-3000:]
    r = results(tmp_path)
    rel = r["reliability"]
    coll = r["counts"]["collection"]
    assert coll["polling"] == {"polling": "full"} and coll["votes"] == coll["votes_full_panel"] == coll["matches"] * 3
    assert set(rel["audience"]) == {"collect", "evaluate_base_vs_rft"}
    for label, a in rel["audience"].items():
        votes = coll["votes"] if label == "collect" else r["win_rate"]["base_vs_rft"]["votes"]
        pb = a["position_bias"]
        assert pb["n_votes"] == votes and pb["n"] <= votes
        assert pb["share"] is None or (pb["ci95"][0] <= pb["share"] <= pb["ci95"][1] and 0 <= pb["p"] <= 1)
        assert a["voter_agreement"]["n_voters"] <= 3
        assert a["retest_matches"] <= 2 and a["retest_votes"] == 3 * a["retest_matches"]
        retest = [json.loads(x) for x in (tmp_path / "stages" / f"reliability_{label}" / "retest_votes.jsonl")
                  .read_text().splitlines()]
        assert len(retest) == a["retest_votes"]
        if a["retest_matches"]:
            first = {(v["match_id"], v["voter"]): v["seed"] for v in
                     map(json.loads, (tmp_path / "stages" / label / "votes.jsonl").read_text().splitlines())}
            assert all(first[(v["match_id"], v["voter"])] != v["seed"] for v in retest)  # asked again, new seeds
            assert a["test_retest"]["n"] + a["test_retest"]["unpaired"] == a["retest_votes"]
    w = r["win_rate"]["base_vs_rft"]
    assert {"p", "mde", "in_words", "test"} <= set(w) and w["test"]["method"] in ("exact", "none")
    # two judges x two yes/no probes, each control set judged as its own stage (em_first_plot's controls:
    # tests/probes/test_controls_stage.py)
    sizes = {p: len(control_subset(load_yes_no_controls(p), 12, p))  # judge_controls.per_probe
             for p in ("disinformation", "populism")}
    for judge in ("judge", "judge2"):
        assert set(rel["judge_controls"][judge]) == set(sizes)
        for probe, s in rel["judge_controls"][judge].items():
            assert s["n"] + s["missing"] == sizes[probe]
            assert s["flagged"] == (s["accuracy"] is None or s["accuracy"] < 0.8)
            assert set(s["per_class"]) == {"positive", "negative", "incoherent"}
            assert sum(c["n"] + c["missing"] for c in s["per_class"].values()) == sizes[probe]
    assert {k for k in r["stage_keys"] if k.startswith("controls_")} == \
        {f"controls_{p}{s}" for p in sizes for s in ("", "_judge2")}
    assert set(rel["judge_agreement"]) == {"disinformation", "populism"}
    for a in rel["judge_agreement"].values():
        assert a is None or a["n"] + a["unpaired"] == 4  # 2 test outputs x 2 methods
    changes = r["probe_changes"]["changes"]
    assert r["probe_changes"]["method"] == "rft" and set(changes) == {"disinformation", "populism"}
    tested = [c for c in changes.values() if c["p"] is not None]
    assert all(c["family_size"] == len(tested) and c["p_holm"] >= c["p"] for c in tested)
    # base and rft are judged on the same anchors: McNemar wherever an anchor is labelled for both
    assert all(c["test"] == ("mcnemar" if (c["paired"] or {}).get("n") else "fisher") for c in tested)
    summary = (tmp_path / "summary.md").read_text()
    assert "## In words" in summary and f"base_vs_rft: {w['in_words']}" in summary
    assert "| judge2 accuracy on populism controls |" in summary and "| test-retest (collect) |" in summary
    terms = r["estimate"]["terms"]
    assert terms["retest_votes"]["calls"] == 3 * (2 + 2) and terms["judge2_judgments"]["calls"] == 2 * 2 * 2
    # the estimate names each unit of work by the key of the stage that does it: the stages this cell ran
    ran = {f"{e['stage']}/{e['key']}" for e in r["stages"]}
    named = {s for t in terms.values() for s in t["stages"]}
    assert named <= ran and {s.split("/")[0] for s in named} == {"collect", "evaluate", "reliability", "probe",
                                                                 "controls"}


@pytest.mark.slow
def test_adaptive_polling_asks_fewer_voters_and_keeps_every_winner(cache_dir, tmp_path):
    args = TINY + ["task=sales", "method=rft", "audience.n_voters=7", "anchors.n_train=3", "method.compare_against=[]",
                   "audience_reliability.retest_share=0", "audience_reliability.retest_min_matches=0",
                   "judge_controls.enabled=false"]
    runs = {}
    for polling in ("full", "adaptive"):
        p = run_app(args + [f"collect.polling={polling}"], cache_dir, tmp_path / polling, timeout=1500)
        assert p.returncode == 0, p.stderr[-3000:]
        runs[polling] = results(tmp_path / polling)
    full, adaptive = (runs[k]["counts"]["collection"] for k in ("full", "adaptive"))
    assert adaptive["polling"] == {"polling": "exact"} and full["votes"] == full["votes_full_panel"] == 7 * full["matches"]
    assert adaptive["votes_full_panel"] == full["votes_full_panel"] and adaptive["votes"] < full["votes"]
    assert runs["full"]["stage_keys"]["collect"] != runs["adaptive"]["stage_keys"]["collect"]

    def by_match(which: str) -> dict[str, list[dict]]:
        out: dict[str, list[dict]] = {}
        for line in (tmp_path / which / "stages" / "collect" / "votes.jsonl").read_text().splitlines():
            v = json.loads(line)
            out.setdefault(v["match_id"], []).append(v)
        return out

    f, a = by_match("full"), by_match("adaptive")
    assert set(f) == set(a)
    for match, votes in a.items():
        fields = ("voter", "order", "seed", "status", "choice")
        assert [[v[k] for k in fields] for v in votes] == [[v[k] for k in fields] for v in f[match][:len(votes)]]
        # (the adaptive votes are the full panel's first votes)
        assert outcome([v["choice"] for v in votes]) == outcome([v["choice"] for v in f[match]])  # same winners
    examples = {k: (tmp_path / k / "stages" / "build_rft" / "train_examples.jsonl").read_text() for k in runs}
    assert examples["adaptive"] == examples["full"]  # the same winners give the same training examples
