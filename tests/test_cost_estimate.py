"""The pre-flight cost estimate (moloch_exp/report/preflight.py): its counts against constructed cells,
tokens that follow the outputs and answers, dollars from genai-prices with cached input and the Batch
API, unpriced models and budgets, the prompt-cache model, a grid counting shared stages once, and the
paper's size.

    PYTHONPATH=$PWD python -m pytest tests/test_cost_estimate.py -q
"""
from __future__ import annotations

import json

import pytest
from genai_prices import Usage, calc_price

from compose_helper import compose
from moloch_exp.errors import BudgetError, ConfigError
from moloch_exp.llm.dry_run import PrefixCache, prompt_tokens
from moloch_exp.pipeline import build, cell_estimate
from moloch_exp.probes import controls as ctl
from moloch_exp.report.cost_estimate import grid_total
from moloch_exp.report.preflight import check_budget

SMALL = ["model=tiny", "task=elections", "audience.n_voters=5", "anchors.n_train=4", "anchors.n_test=3"]
HOSTED = ["audience=gpt4o_mini", "judge=gpt4o", "audience.n_voters=5"]  # the API's prices; no key is needed to estimate


def estimate(tmp_path, *overrides, objs_hook=None):
    cfg = compose([*SMALL, *overrides], tmp_path)
    objs = build(cfg)
    if objs_hook is not None:
        objs_hook(objs)
    return cell_estimate(cfg, objs)


def library_usd(model: str, t: dict, batch: bool = False) -> float:
    usage = Usage(input_tokens=t["input_tokens"], cache_read_tokens=t["cached_input_tokens"],
                  output_tokens=t["output_tokens"])
    return float(calc_price(usage, model, provider_id="openai",
                            price_context={"processing": "batch"} if batch else None).total_price)


def test_counts_follow_every_stage_of_the_cell(tmp_path):
    e = estimate(tmp_path, "method=tfb", "judge@judge2=local", "probe=[em_first_plot]",
                 "audience_reliability.retest_min_matches=2", "judge_controls.per_probe=null")
    em_samples = len(build(compose([*SMALL, "probe=[em_first_plot]"], tmp_path)).probes["em_first_plot"].samples(0))
    yes_no = len(ctl.load_yes_no_controls("disinformation")) + len(ctl.load_yes_no_controls("populism"))
    assert e.calls_of("collect_votes") == 4 * 5  # one collection for rft and tfb
    assert e.calls_of("evaluate_votes") == 2 * 3 * 5  # base_vs_tfb, rft_vs_tfb
    assert e.calls_of("retest_votes") == 5 * (2 + 2 * 2)  # 2 matches of the collection and of each pair
    # methods x probes x outputs
    assert e.calls_of("task_probe_judgments") == e.calls_of("judge2_judgments") == 3 * 2 * 3
    assert e.calls_of("model_probe_judgments") == 3 * 2 * em_samples  # alignment and coherence per sample
    assert e.calls_of("control_judgments") == e.calls_of("judge2_control_judgments") == \
        yes_no + 2 * len(ctl.load_em_controls())
    assert e.roles["audience"].calls == 20 + 30 + 30 and e.calls == sum(t.calls for t in e.terms)
    assert e.roles["judge"].calls + e.roles["judge2"].calls + e.roles["audience"].calls == e.calls
    base = estimate(tmp_path, "method=base")  # no collection, no pairs: judges only
    assert base.calls_of("collect_votes") == base.calls_of("evaluate_votes") == 0 and "audience" not in base.roles
    assert base.calls_of("task_probe_judgments") == 2 * 3


def test_tokens_follow_the_outputs_and_the_answers(tmp_path):
    short, long = estimate(tmp_path), estimate(tmp_path, "generator.max_new_tokens=256")
    votes, judged = short.term("evaluate_votes"), short.term("task_probe_judgments")
    # each ballot shows two outputs, each judge prompt one: 128 more tokens per output
    assert long.term("evaluate_votes").tally.input_tokens - votes.tally.input_tokens == votes.calls * 2 * 128
    assert long.term("task_probe_judgments").tally.input_tokens - judged.tally.input_tokens == judged.calls * 128
    # a vote's answer: {"thought": <240 characters>, "vote": "A"} (cost_estimate.free_text_chars), 4 characters a token
    answer = len(json.dumps({"thought": "x" * 240, "vote": "A"}))
    assert votes.tally.output_tokens == votes.calls * -(-answer // 4)
    shorter = estimate(tmp_path, "cost_estimate.free_text_chars=100").term("evaluate_votes")
    assert votes.tally.output_tokens - shorter.tally.output_tokens == votes.calls * 35
    capped = estimate(tmp_path, "audience.max_tokens=20").term("evaluate_votes")
    assert capped.tally.output_tokens == capped.calls * 20  # never more than max_tokens


def test_dollars_come_from_genai_prices_with_the_batch_discount(tmp_path):
    e = estimate(tmp_path, *HOSTED)
    terms = e.to_json()["terms"]
    for name, model in (("collect_votes", "gpt-4o-mini"), ("task_probe_judgments", "gpt-4o")):
        assert terms[name]["usd"] == pytest.approx(library_usd(model, terms[name]), rel=1e-9) and terms[name]["usd"] > 0
    assert e.usd == pytest.approx(e.roles["audience"].usd + e.roles["judge"].usd)

    def batch_audience(objs):
        objs.audience.service.batch = True  # audience.service.batch=true (the Batch API option)

    batched = estimate(tmp_path, *HOSTED, objs_hook=batch_audience)
    assert batched.roles["audience"].usd == pytest.approx(e.roles["audience"].usd / 2, rel=1e-9)
    assert batched.roles["judge"].usd == pytest.approx(e.roles["judge"].usd, rel=1e-9)
    assert batched.to_json()["terms"]["collect_votes"]["batch"] is True


def test_shared_ballots_are_served_from_the_prompt_cache(tmp_path):
    long = ["generator.max_new_tokens=600"]  # ballots past the API's 1,024-token caching threshold
    persona_first = estimate(tmp_path, *HOSTED, *long).term("evaluate_votes")
    shared = estimate(tmp_path, *HOSTED, *long, "audience.layout=shared_prefix_first").term("evaluate_votes")
    assert persona_first.tally.cached_input_tokens == 0  # each voter's persona comes first: no common prefix
    # shared_prefix_first: a voter finds the ballot cached when an earlier voter of the match saw the same
    # option order (two orders among five voters: 3 of 5 at most), in 128-token steps
    cached_share = shared.tally.cached_input_tokens / shared.tally.input_tokens
    assert 0.25 < cached_share < 3 / 5
    assert shared.usd < persona_first.usd


def test_the_prompt_cache_model():
    cache = PrefixCache()
    a = [("user", "x" * 6000 + "A" * 2000)]
    b = [("user", "x" * 6000 + "B" * 2000)]
    assert cache.cached_tokens(a) == 0  # nothing seen yet
    # common prefix: "user\x1f" + 6000 characters = 6005; cached in 128-token steps from 1,024 tokens: 5632 chars
    assert cache.cached_tokens(b) == 5632 // 4
    assert cache.cached_tokens(a) == (8006 // 512) * 512 // 4  # seen whole: up to its last full step
    assert cache.cached_tokens([("user", "x" * 3000)]) == 0  # under 1,024 tokens: never cached
    assert prompt_tokens(a) == 8000 // 4 + 3 + 3


def test_unpriced_models_and_budgets(tmp_path):
    e = estimate(tmp_path, "audience=openai_compatible", "audience.service.model=my-model",
                 "audience.service.base_url=http://127.0.0.1:9/v1")
    assert e.usd is None and e.unpriced == ("my-model",) and e.roles["audience"].usd is None
    assert e.roles["judge"].usd == 0.0 and e.roles["judge"].local_only  # the managed local judge: free
    assert e.to_json()["usd"] is None and e.to_json()["terms"]["collect_votes"]["price"] is None
    rows = {r[1]: r[-1] for r in e.table_rows() if r[0] == "all"}
    assert rows["total"] == "unpriced (my-model)"
    check_budget(e, None, "cell")  # no cap: nothing to refuse
    with pytest.raises(ConfigError, match="budget.max_usd=10 is set but model my-model has no known price"):
        check_budget(e, 10, "cell")
    hosted = estimate(tmp_path, *HOSTED)
    check_budget(hosted, hosted.usd * 1.01, "cell")
    with pytest.raises(BudgetError, match=r"the pre-flight estimate for this cell is \$0\.\d{4}, more than"):
        check_budget(hosted, hosted.usd * 0.99, "cell")


def test_a_grid_counts_stages_shared_by_its_cells_once(tmp_path):
    rft, tfb = estimate(tmp_path, "method=rft"), estimate(tmp_path, "method=tfb")
    controls = rft.calls_of("control_judgments")
    assert rft.calls == 20 + 15 + 5 * (2 + 2) + 2 * 2 * 3 + controls
    assert tfb.calls == 20 + 30 + 5 * (2 + 2 + 2) + 3 * 2 * 3 + controls
    # shared: the collection and its retest, base's and rft's judged outputs, the controls
    grid = grid_total([rft, tfb])
    assert grid.calls == 20 + (15 + 30) + 5 * (2 + 2 + 2 + 2) + 3 * 2 * 3 + controls
    assert grid_total([rft, rft]).calls == rft.calls  # the same cell twice is one cell's work


def test_finished_stages_are_not_counted_to_run(tmp_path):
    cache = tmp_path / "cache"
    e = estimate(tmp_path, f"paths.cache_dir={cache}")
    assert e.remaining == e.total and e.total.calls > 0
    stage, key = e.term("collect_votes").parts[0].key.split(":", 1)[1].split("/")
    (cache / "stages" / stage / key).mkdir(parents=True)
    (cache / "stages" / stage / key / "DONE").write_text("")  # as StageCache marks a finished stage
    again = estimate(tmp_path, f"paths.cache_dir={cache}")
    assert again.total == e.total and again.remaining.calls == e.calls - e.calls_of("collect_votes")
    assert any(r[1].startswith("to run") for r in again.table_rows())
    off = estimate(tmp_path, f"paths.cache_dir={cache}", "stage_cache=false")  # nothing will be reused
    assert off.remaining == off.total
    with pytest.raises(BudgetError):
        check_budget(estimate(tmp_path, *HOSTED).remaining, 1e-9, "cell")


def test_the_paper_cell_at_its_size(tmp_path, paper_dir):
    """1,024 + 1,024 anchors, 20 voters, 1,480-token outputs, gpt-4o-mini and gpt-4o (experiment=paper)."""
    cfg = compose(["experiment=paper", "task=elections", "model=tiny", f"data_dir={paper_dir}"], tmp_path)
    e = cell_estimate(cfg, build(cfg))
    assert e.calls_of("collect_votes") == e.calls_of("evaluate_votes") == 1024 * 20
    assert e.calls_of("task_probe_judgments") == 1024 * 2 * 2  # 2 probes, base and rft
    per_vote = e.term("collect_votes").tally.input_tokens / e.calls_of("collect_votes")
    assert 2 * 1480 < per_vote < 2 * 1480 + 1500  # two outputs, a persona and the reference's ballot
    assert e.unpriced == () and e.usd > 0
    assert e.usd == pytest.approx(sum(t.usd for t in e.terms))
