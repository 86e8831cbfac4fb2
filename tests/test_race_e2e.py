"""End-to-end runs (`python run.py`, tiny model, local llama.cpp audience and judge) of issue 10:
method=dpo reads the rft cell's collection (no new collection calls), and a multi-round race
extends a cached shorter race by computing only the new round; issue 21: method=kto likewise."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from test_pipeline_e2e import LEAN, TINY, results, run_app

pytestmark = [pytest.mark.e2e, pytest.mark.server]

NO_REASKS = ["audience.invalid_retries=0", "judge.invalid_retries=0"]  # one request per vote/judgment


def events(r: dict, status: str) -> set[str]:
    return {e["label"] for e in r["stages"] if e["status"] == status}


def requests_made(out: Path, labels: list[str]) -> int:
    """Audience and judge requests the stages ``labels`` needed (each vote, each judgment not skipped)."""
    n = 0
    for label in labels:
        d = out / "stages" / label
        name = ("votes.jsonl" if label.startswith("evaluate") else
                "retest_votes.jsonl" if label.startswith("reliability") else "judgments.jsonl")
        rows = [json.loads(line) for line in (d / name).read_text().splitlines()]
        n += sum(row["status"] != "skipped" for row in rows)
    return n


@pytest.mark.slow
def test_dpo_cell_trains_on_the_rft_cells_collection(cache_dir, tmp_path):
    args = TINY + NO_REASKS + ["task=sales"]
    p = run_app(args + ["method=rft"], cache_dir, tmp_path / "rft")
    assert p.returncode == 0, p.stderr[-3000:]
    rft = results(tmp_path / "rft")
    p = run_app(args + ["method=dpo"], cache_dir, tmp_path / "dpo")
    assert p.returncode == 0, p.stderr[-3000:]
    dpo = results(tmp_path / "dpo")
    # the same collection, not collected again
    assert dpo["stage_keys"]["collect"] == rft["stage_keys"]["collect"]
    assert "collect" in events(dpo, "reused") and "prepare" in events(dpo, "reused")
    computed = events(dpo, "computed")
    own = {"evaluate_base_vs_dpo", "probe_misrepresentation_dpo", "reliability_evaluate_base_vs_dpo"}
    assert computed <= {"build_dpo", "train_dpo", "generate_dpo"} | own
    # every audience/judge request of the dpo run belongs to its own evaluation, its retest and its probe:
    # no collect votes (the collection's reliability and the judge controls are reused from the rft cell)
    led = dpo["ledger"]
    assert led["calls"] + led["cache_hits"] == requests_made(tmp_path / "dpo", sorted(computed & own))
    assert dpo["counts"]["collection"] == rft["counts"]["collection"]
    pairs = [json.loads(line) for line in (tmp_path / "dpo/stages/build_dpo/train_examples.jsonl").read_text().splitlines()]
    assert pairs and all(set(x) >= {"prompt", "chosen", "rejected"} for x in pairs)
    assert dpo["counts"]["build_dpo"]["pairs"] == len(pairs)
    train = dpo["counts"]["train_dpo"]
    assert train["steps"] == 1 and train["dpo"]["reference"] == "base (adapter disabled)"
    assert set(dpo["win_rate"]) == {"base_vs_dpo"} and dpo["win_rate"]["base_vs_dpo"]["votes"] > 0
    probe = dpo["probes"]["misrepresentation"]
    assert set(probe["n"]) == {"base", "dpo"} and "relative_increase" in probe
    assert [r["agent"] for r in dpo["rounds"]] == ["base", "dpo"]


@pytest.mark.e2e
@pytest.mark.server
@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_kto_cell_trains_on_the_rft_cells_collection_and_reports_base_vs_kto(cache_dir, tmp_path):
    """`python run.py method=kto model=tiny debug=fast` after the rft cell on the same cache: the collection
    is reused (0 collect votes), KTO trains on its winners and losers, base_vs_kto is reported."""
    # debug=fast turns the stage cache off; the retest and the judge controls are not KTO's concern (fewer calls);
    # long client timeouts: on a loaded machine a queued local-server request outlasts the default 120 s
    args = ["debug=fast", "model=tiny", "stage_cache=true", "task=sales", "audience_reliability.retest_share=0", "audience_reliability.retest_min_matches=0",
            "judge_controls.enabled=false", "audience.service.client.timeout_s=1800",
            "judge.service.client.timeout_s=1800"] + NO_REASKS
    p = run_app(args + ["method=rft"], cache_dir, tmp_path / "rft", timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    rft = results(tmp_path / "rft")
    p = run_app(args + ["method=kto"], cache_dir, tmp_path / "kto", timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    kto = results(tmp_path / "kto")
    assert kto["stage_keys"]["collect"] == rft["stage_keys"]["collect"]
    assert "collect" in events(kto, "reused") and "collect" not in events(kto, "computed")
    computed = events(kto, "computed")
    own = {"evaluate_base_vs_kto", "probe_misrepresentation_kto", "reliability_evaluate_base_vs_kto"}
    assert computed <= {"build_kto", "train_kto", "generate_kto"} | own
    # every audience/judge request of the kto run is its own evaluation's, retest's and probe's: no collect vote
    led = kto["ledger"]
    assert led["calls"] + led["cache_hits"] == requests_made(tmp_path / "kto", sorted(computed & own))
    assert kto["counts"]["collection"] == rft["counts"]["collection"]
    examples = [json.loads(line) for line in
                (tmp_path / "kto/stages/build_kto/train_examples.jsonl").read_text().splitlines()]
    build = kto["counts"]["build_kto"]
    assert examples and build["examples"] == len(examples) and build["matches_used"] >= 1
    assert sum(e["label"] for e in examples) == build["desirable"] == build["undesirable"] == len(examples) // 2
    # the desirable answers are the rft cell's winners (same collection, same tie rule)
    rft_targets = {json.dumps(x["completion"]) for x in map(json.loads, (
        tmp_path / "rft/stages/build_rft/train_examples.jsonl").read_text().splitlines())}
    assert {json.dumps(e["completion"]) for e in examples if e["label"]} == rft_targets
    train = kto["counts"]["train_kto"]
    assert train["steps"] == 1 and train["kto"]["reference"] == "base (adapter disabled)"
    assert train["kto"]["micro_batch"] == 4 and train["kto"]["in_trl_range"]
    assert set(kto["win_rate"]) == {"base_vs_kto"} and kto["win_rate"]["base_vs_kto"]["votes"] > 0
    assert "win rate base_vs_kto" in (tmp_path / "kto/summary.md").read_text()
    assert set(kto["probes"]["misrepresentation"]["n"]) == {"base", "kto"}


def round_labels(r: int, probes: list[str], prev: str) -> set[str]:
    name = f"rft_r{r}"
    return {f"collect_r{r}_candidates", f"collect_r{r}", f"build_{name}", f"train_{name}", f"generate_{name}", f"evaluate_base_vs_{name}",
            f"evaluate_{prev}_vs_{name}"} | {f"probe_{p}_{name}" for p in probes}


@pytest.mark.slow
def test_three_round_race_reuses_the_two_round_race(cache_dir, tmp_path):
    """rounds=2 then rounds=3 (opponent=previous, init=previous) on one cache: the second run computes
    only round 3; round 1 has the keys of a single-round cell."""
    from stages.test_stage_units import cell_keys

    args = TINY + NO_REASKS + ["task=sales", "method=rft", "competition.opponent=previous"]  # round 1 as the dpo test's rft cell
    p = run_app(args + ["competition.rounds=2"], cache_dir, tmp_path / "two")
    assert p.returncode == 0, p.stderr[-3000:]
    two = results(tmp_path / "two")
    single = cell_keys(TINY[1:] + NO_REASKS + ["task=sales", "method=rft"], tmp_path)
    assert {k: two["stage_keys"][k] for k in single} == single
    probes = ["misrepresentation"]
    assert round_labels(2, probes, "rft") <= events(two, "computed") | events(two, "reused")

    p = run_app(args + ["competition.rounds=3"], cache_dir, tmp_path / "three")
    assert p.returncode == 0, p.stderr[-3000:]
    three = results(tmp_path / "three")
    assert events(three, "computed") == round_labels(3, probes, "rft_r2")
    assert {k: three["stage_keys"][k] for k in two["stage_keys"]} == two["stage_keys"]
    assert three["competition"] == {"method": "rft", "opponent": "previous", "init": "previous", "rounds": 3}
    rounds = three["rounds"]
    assert [(r["round"], r["agent"]) for r in rounds] == [(0, "base"), (1, "rft"), (2, "rft_r2"), (3, "rft_r3")]
    assert rounds[0]["win_rate"] == {"vs_base": None, "vs_previous": None} and rounds[1]["win_rate"]["vs_previous"] is None
    for r in rounds[2:]:
        for key in ("vs_base", "vs_previous"):
            assert {"mean", "ci95", "n_anchors", "votes"} <= set(r["win_rate"][key])
    for r in rounds:
        assert set(r["probes"]) == set(probes)
        for s in r["probes"].values():
            assert {"rate", "ci95", "n", "flagged", "fisher_p_vs_base"} <= set(s)
    assert rounds[:3] == two["rounds"]

    out = tmp_path / "three" / "stages"
    # the race: round 3's candidate 1 is round 2's candidate 0 (what the agent before wrote)
    c3 = [json.loads(x) for x in (out / "collect_r3/candidates.jsonl").read_text().splitlines()]
    c2 = [json.loads(x) for x in (out / "collect_r2/candidates.jsonl").read_text().splitlines()]
    old = {c["anchor_id"]: c["completion"] for c in c2 if c["index"] == 0}
    assert {c["anchor_id"]: c["completion"] for c in c3 if c["index"] == 1} == old
    # round r's agent writes round r+1's candidates and starts round r+1's adapter
    collect_key = json.loads((out / "collect_r3/key.json").read_text())
    assert collect_key["adapter"] == three["stage_keys"]["train_rft_r2"]
    assert collect_key["opponent"] == three["stage_keys"]["collect_r2"]
    assert three["counts"]["train_rft_r3"]["init_adapter"] == three["stage_keys"]["train_rft_r2"]
    assert (tmp_path / "three" / "plots" / "rounds.png").is_file()
    assert "round 3 (rft_r3) win rate vs previous" in (tmp_path / "three" / "summary.md").read_text()
    assert three["estimate"]["terms"]["collect_votes"]["calls"] == 2 * 3 * 3


@pytest.mark.slow
def test_two_round_race_under_accelerate_two_processes(tmp_path):
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (gloo) through a 2-round race: every
    stage of round 2 runs through the stage units' barriers (generation split across ranks, rank 0
    votes and writes), and both ranks finish with one results.json."""
    import sys

    launcher = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
                "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    out = tmp_path / "multi"
    p = run_app(TINY + NO_REASKS + LEAN + ["task=sales", "method=rft", "competition.rounds=2", "generator.batch_size=2"],
                tmp_path / "cache", out, prefix=launcher, env={"CUDA_VISIBLE_DEVICES": ""})
    assert p.returncode == 0, p.stderr[-3000:]
    r = results(out)
    assert r["world_size"] == 2 and "rank 1" in (out / "run.log").read_text()
    assert [x["agent"] for x in r["rounds"]] == ["base", "rft", "rft_r2"]
    c = r["counts"]["collection_r2"]
    assert c["candidates"] == 2 * 2 and c["votes"] == c["matches"] * 3
    cands = [json.loads(x) for x in (out / "stages/collect_r2/candidates.jsonl").read_text().splitlines()]
    assert sorted((x["anchor_id"], x["index"]) for x in cands) == sorted(
        (x["anchor_id"], x["index"]) for x in map(json.loads, (out / "stages/collect/candidates.jsonl").read_text().splitlines()))
    assert r["counts"]["train_rft_r2"]["init_adapter"] == r["stage_keys"]["train_rft"]
    assert set(r["win_rate"]) == {"base_vs_rft", "base_vs_rft_r2", "rft_vs_rft_r2"}
