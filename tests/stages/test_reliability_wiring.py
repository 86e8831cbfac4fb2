"""Issue 11 wired into the cell: collect.polling from the config into the collect key, the TFB refusal,
the pre-flight counts of retest votes and control judgments, and the typed reliability and
probe-change results rendered into summary.md, report.html, tracker metrics and the sweep summary
(constructed votes and judgments whose right answers are known)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hydra.errors import InstantiationException

from compose_helper import compose
from moloch_exp.audience.polling import ExactPolling, FullPolling, SequentialPolling
from moloch_exp.errors import ConfigError
from moloch_exp.evaluation.head_to_head import summarize
from moloch_exp.evaluation.reliability import audience_reliability, judge_agreement
from moloch_exp.io import write_json
from moloch_exp.llm.prices import PriceBook
from moloch_exp.pipeline import build as build_objects, preflight, user_error_in
from moloch_exp.probes import controls as ctl
from moloch_exp.probes.task_probes import TaskProbeResult
from moloch_exp.records import Judgment, Vote
from moloch_exp.report.cell import write_cell_report
from moloch_exp.report.preflight import estimate_cell
from moloch_exp.report.sweep import summarize_sweep
from moloch_exp.report.trackers import flat_metrics
from moloch_exp.results import ProbeChangesResult, ReliabilityResult
from moloch_exp.stage_cache import digest
from moloch_exp.stages import collect
from moloch_exp.stages.components import Settings
from moloch_exp.stages.prepare import Prepared


def collect_key(o: dict, cfg, polling) -> str:
    prep = Prepared("prepare", "prepare", Path("/nonexistent/p"))
    return digest(collect.material(prep, o.task, o.generator, o.audience, 2, cfg.seed, polling=polling))


def test_collect_polling_option_builds_the_rule_and_keys_the_collection(tmp_path):
    full_cfg = compose(["model=tiny"], tmp_path)
    full = build_objects(full_cfg)
    assert full.polling == FullPolling()
    # full polling keeps the key a collection always had
    assert collect_key(full, full_cfg, full.polling) == collect_key(full, full_cfg, None)
    keys = {}
    for name in ("adaptive", "exact"):
        cfg = compose(["model=tiny", f"collect.polling={name}"], tmp_path)
        o = build_objects(cfg)
        assert o.polling == ExactPolling()
        keys[name] = collect_key(o, cfg, o.polling)
    assert keys["adaptive"] == keys["exact"] != collect_key(full, full_cfg, None)
    cfg = compose(["model=tiny", "collect.polling=sequential", "collect.polling_rule.confidence=0.99",
                   "collect.polling_rule.min_votes=6"], tmp_path)
    o = build_objects(cfg)
    assert o.polling == SequentialPolling(confidence=0.99, min_votes=6)
    assert collect_key(o, cfg, o.polling) not in set(keys.values())
    for bad, words in ((["collect.polling=sometimes"], "collect.polling='sometimes'"),
                       (["collect.polling=sequential", "collect.polling_rule.confidence=1.5"], "confidence")):
        with pytest.raises((ConfigError, InstantiationException)) as err:
            build_objects(compose(["model=tiny", *bad], tmp_path))
        assert isinstance(user_error_in(err.value), ConfigError) and words in str(user_error_in(err.value))


def test_tfb_refuses_adaptive_polling_before_any_work(tmp_path):
    cfg = compose(["model=tiny", "method=tfb", "collect.polling=adaptive"], tmp_path)
    o = build_objects(cfg)
    with pytest.raises(ConfigError, match="method tfb trains on every voter's thought: use collect.polling=full"):
        preflight(o, Settings(seed=0, n_train=2, n_test=2, candidates_per_anchor=2))
    ok = build_objects(compose(["model=tiny", "method=rft", "collect.polling=adaptive"], tmp_path))
    preflight(ok, Settings(seed=0, n_train=2, n_test=2, candidates_per_anchor=2))


def test_preflight_counts_retest_votes_control_and_judge2_judgments(tmp_path, paper_dir):
    settings = Settings(seed=0, n_train=4, n_test=3, candidates_per_anchor=2)
    base = estimate_cell(build_objects(compose(["model=tiny", "task=elections"], tmp_path)), settings, PriceBook())
    # rft cell: one collection and one pair; 5 voters; retest 5% of each vote set's matches, at least 2
    assert base.calls_of("retest_votes") == 5 * (2 + 2)
    # the default cell judges 12 controls of each probe (a stratified subset)
    assert base.calls_of("control_judgments") == 12 + 12
    assert base.calls_of("judge2_judgments") == 0
    more = estimate_cell(build_objects(compose(
        ["model=tiny", "task=elections", "judge@judge2=local", "audience_reliability.retest_min_matches=10",
         "probe=[em_first_plot]", "judge_controls.per_probe=null"], tmp_path)), settings, PriceBook())
    assert more.calls_of("retest_votes") == 5 * (4 + 3)  # at most every match
    every = len(ctl.load_yes_no_controls("disinformation")) + len(ctl.load_yes_no_controls("populism"))
    # two judges; EM: two calls each
    assert more.calls_of("control_judgments") == more.calls_of("judge2_control_judgments") == \
        every + 2 * len(ctl.load_em_controls())
    assert more.calls_of("judge2_judgments") == 3 * 2 * 2  # test anchors x task probes x methods
    # the share grows with the cell: at 1,024 + 1,024 anchors 5% is 52 matches of each vote set
    paper = Settings(seed=0, n_train=1024, n_test=1024, candidates_per_anchor=2)
    big = estimate_cell(build_objects(compose(["model=tiny", "task=elections", "task.source=paper",
                                               f"data_dir={paper_dir}"], tmp_path)), paper, PriceBook())
    assert big.calls_of("retest_votes") == 5 * (52 + 52)
    off = estimate_cell(build_objects(compose(["model=tiny", "task=elections", "audience_reliability.retest_share=0",
                                               "audience_reliability.retest_min_matches=0",
                                               "judge_controls.enabled=false"], tmp_path)), settings, PriceBook())
    assert off.calls_of("retest_votes") == 0 and off.calls_of("control_judgments") == 0
    assert off.calls == base.calls - base.calls_of("retest_votes") - base.calls_of("control_judgments")


def test_paper_experiment_judges_every_control_and_retests_a_share_with_a_floor(tmp_path):
    o = build_objects(compose(["model=tiny", "experiment=paper", "task=elections"], tmp_path))
    rel = o.reliability
    assert (rel.retest_share, rel.retest_min_matches, rel.controls_per_probe) == (0.05, 10, None)
    assert [rel.retest_matches(n) for n in (4, 100, 1024, 4096)] == [4, 10, 52, 205]
    default = build_objects(compose(["model=tiny"], tmp_path)).reliability
    assert default.controls_per_probe == 12 and default.retest_matches(4) == 2
    for bad, words in ((["audience_reliability.retest_share=1.5"], "retest_share must be within [0, 1]"),
                       (["audience_reliability.retest_min_matches=-1"], "retest_min_matches must be >= 0"),
                       (["judge_controls.per_probe=0"], "per_probe must be >= 1 or null")):
        with pytest.raises((ConfigError, InstantiationException), match=re.escape(words)):
            build_objects(compose(["model=tiny", *bad], tmp_path))


def first_shown_votes(n_matches: int, voters: int, prefer_second: int) -> list[Vote]:
    """Two-option matches; every voter picks the option shown first, and the order shows the second
    method (index 1) first for ``prefer_second`` voters of each match."""
    out = []
    for m in range(n_matches):
        for v in range(voters):
            order = [1, 0] if v < prefer_second else [0, 1]
            out.append(Vote(f"m{m}", f"a{m}", f"v{v}", order, seed=m * 100 + v, status="ok", choice=order[0]))
    return out


def cell_results(flag_judge: bool) -> dict:
    votes = first_shown_votes(4, 5, prefer_second=3)  # 3 of 5 per anchor prefer the second method: 0.6
    rel = audience_reliability(votes, votes[:10])  # the retest repeats the same votes: agreement 1.0
    controls = ctl.load_yes_no_controls("populism")
    judged = [Judgment("populism", "judge_controls", c.id, "ok", label=(not c.label) if flag_judge and i < 14 else c.label)
              for i, c in enumerate(controls)]
    score = ctl.score_yes_no("populism", controls, judged, min_accuracy=0.8)
    per = {"base": {"rate": 0.0, "ci95": [0, 0.5], "flagged": 0, "n": 4, "invalid": 0, "failed": 0, "skipped": 0},
           "rft": {"rate": 0.5, "ci95": [0.1, 0.9], "flagged": 2, "n": 4, "invalid": 0, "failed": 0, "skipped": 0}}
    probe = TaskProbeResult.from_summaries("populism", per, "rft")
    a = [Judgment("populism", "rft", f"a{i}", "ok", label=bool(i % 2)) for i in range(4)]
    reliability = ReliabilityResult({"evaluate_base_vs_rft": {"source": "evaluate_base_vs_rft", "retest_matches": 2,
                                                              "retest_votes": 10, **rel.to_dict()}},
                                    {"judge": {"populism": score.to_dict()}},
                                    {"populism": judge_agreement(a, a)["populism"].to_dict()})
    return json.loads(json.dumps({
        "cell": {"task": "elections", "model": "tiny", "method": "rft", "seed": 0},
        "win_rate": {"base_vs_rft": summarize(votes, 0)},
        "probes": {"populism": probe.to_json()},
        "probe_changes": ProbeChangesResult.from_probes({"populism": probe}, "rft").to_json(),
        "reliability": reliability.to_json(), "ledger": {"calls": 1, "cache_hits": 0}, "stages": []}))


def test_reliability_and_probe_changes_reach_summary_html_metrics(tmp_path):
    r = cell_results(flag_judge=True)
    pb = r["reliability"]["audience"]["evaluate_base_vs_rft"]["position_bias"]
    assert pb["share"] == 1.0 and pb["p"] < 0.001  # an audience that always picks the first-shown option
    assert r["reliability"]["audience"]["evaluate_base_vs_rft"]["test_retest"]["agreement"] == 1.0
    assert r["reliability"]["judge_agreement"]["populism"]["kappa"] == 1.0
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "evaluate_base_vs_rft").mkdir()
    (tmp_path / "stages" / "evaluate_base_vs_rft" / "votes.jsonl").write_text("")
    for m in ("base", "rft"):
        (tmp_path / "stages" / f"generate_{m}").mkdir()
        (tmp_path / "stages" / f"generate_{m}" / "outputs.jsonl").write_text("")
    write_cell_report(tmp_path, r)
    summary = (tmp_path / "summary.md").read_text()
    words = summary.split("## In words")[1].split("| metric")[0]
    lines = [x for x in words.splitlines() if x.startswith("- ")]
    assert lines[0].startswith("- **judge flagged on populism**: accuracy 0.65 (n=40)")
    assert "base_vs_rft: win rate 0.60" in words and "4 anchors cannot reach p<0.05" in words
    assert "populism: 0.50 vs 0.00 (difference +0.50) is indistinguishable from zero (Holm p=0.43" in words
    assert "first-shown option chosen in 1.00" in words and ": position bias (p<0.001, n=20)" in words
    for row in ("position bias (evaluate_base_vs_rft)", "voter agreement α (evaluate_base_vs_rft)",
                "test-retest (evaluate_base_vs_rft)", "judge accuracy on populism controls", "judge agreement κ populism",
                "populism change rft − base"):
        assert f"| {row} |" in summary, row
    assert "FLAGGED" in summary
    html = (tmp_path / "report.html").read_text()
    assert "In words" in html and "judge flagged on populism" in html
    m = flat_metrics(r)
    assert m["reliability/evaluate_base_vs_rft/position_bias"] == 1.0
    assert m["judge_controls/judge/populism/accuracy"] == pytest.approx(26 / 40)
    assert m["judge_agreement/populism/kappa"] == 1.0 and 0 < m["probe_change/populism/p_holm"] <= 1


def test_sweep_summary_carries_win_test_holm_and_control_accuracy(tmp_path):
    for name, flag in (("0", True), ("1", False)):
        (tmp_path / name).mkdir()
        write_json(tmp_path / name / "results.json", cell_results(flag))
    s = summarize_sweep(tmp_path)
    rows = sorted(s["rows"], key=lambda x: x["control_accuracy"])
    assert [x["judge_flagged"] for x in rows] == [True, False]
    assert rows[1]["control_accuracy"] == 1.0 and rows[0]["control_accuracy"] == pytest.approx(26 / 40)
    assert all(x["holm_p"] is not None and x["win_rate_p"] == 0.125 for x in rows)
    assert all(x["position_bias"] == {"evaluate_base_vs_rft": 1.0} for x in rows)
    md = (tmp_path / "sweep_summary.md").read_text()
    assert "Holm p" in md and "judge acc. on controls" in md and "0.650 FLAGGED" in md
