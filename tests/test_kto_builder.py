"""KTO builder: winners desirable, losers undesirable, on DPO's match rule (margins, ties, invalid votes,
K = 3, unshown candidates), balancing, replicate/shuffle, the paper's size; method=kto selects trainer=kto."""
import json
import random
import time

import pytest

from moloch_exp.errors import ConfigError
from moloch_exp.training.dpo import DPOPairBuilder
from moloch_exp.training.kto import KTOBuilder
from test_dpo_builder import cand, votes_for


def build(cands, votes, **kw):
    return KTOBuilder(**{"shuffle": False, **kw}).build(cands, votes)


def labelled(examples):
    """{(anchor, completion text): label} (and every example holds exactly one completion)."""
    assert all(len(e["completion"]) == 1 for e in examples)
    return {(e["anchor_id"], e["completion"][0]["content"]): e["label"] for e in examples}


def test_winner_is_desirable_loser_undesirable_in_trl_unpaired_format():
    cands = [cand("a", 0), cand("a", 1)]
    examples, stats = build(cands, votes_for("a", {1: 7, 0: 3}))
    assert [e["label"] for e in examples] == [True, False]
    win, lose = examples
    assert win["prompt"] == cands[1].prompt and lose["prompt"] == cands[0].prompt
    assert win["completion"] == [{"role": "assistant", "content": cands[1].completion}]
    assert lose["completion"] == [{"role": "assistant", "content": cands[0].completion}]
    assert (win["votes"], lose["votes"]) == (7, 3) and {e["kind"] for e in examples} == {"kto"}
    assert stats == {"anchors": 1, "invalid_votes": 0, "matches_used": 1, "too_few_messages": 0,
                     "desirable_unique": 1, "undesirable_unique": 1, "desirable": 1, "undesirable": 1, "examples": 2}
    json.dumps(examples)  # train_examples.jsonl must hold them


def test_matches_are_chosen_by_dpos_rule_margins_ties_and_invalid_votes():
    """Every setting of the shared rule: the KTO examples are exactly the DPO pairs' two sides."""
    cands = [cand(a, i) for a in "abcdef" for i in range(2)]
    votes = (votes_for("a", {0: 11, 1: 9}) + votes_for("b", {0: 12, 1: 8}) + votes_for("c", {0: 5, 1: 5})
             + votes_for("d", {0: 3, 1: 2}, invalid=3, failed=1) + votes_for("e", {}, invalid=2)
             + votes_for("f", {1: 4}, order=(0, 1)))
    for kw in ({}, {"min_margin": 3}, {"tie_rule": "random", "seed": 4}, {"min_margin": 2, "tie_rule": "random"}):
        examples, stats = build(cands, votes, **kw)
        pairs, pair_stats = DPOPairBuilder(shuffle=False, **kw).build(cands, votes)
        expected = {(p["anchor_id"], p["chosen"][0]["content"]): True for p in pairs}
        expected |= {(p["anchor_id"], p["rejected"][0]["content"]): False for p in pairs}
        assert labelled(examples) == expected, kw
        for key in ("anchors", "invalid_votes", "ties", "ties_dropped", "margin_dropped", "no_valid_votes"):
            assert stats.get(key) == pair_stats.get(key), (kw, key)
    examples, stats = build(cands, votes, min_margin=3)
    assert {e["anchor_id"] for e in examples} == {"b", "f"}  # 11-9, a tie, 3-2 and no valid vote are out
    assert stats["margin_dropped"] == 2 and stats["ties_dropped"] == 1 and stats["no_valid_votes"] == 1
    assert stats["invalid_votes"] == 6
    # f: candidate 0 was shown and got no vote: it is the undesirable one
    assert labelled(examples)[("f", cands[10].completion)] is False
    with pytest.raises(ConfigError, match="tie_rule=all"):
        KTOBuilder(tie_rule="all")
    with pytest.raises(ConfigError, match="min_margin"):
        KTOBuilder(min_margin=0)


def test_a_random_tie_break_is_seeded_and_labels_one_side_each_way():
    cands = [cand("a", 0), cand("a", 1)]
    votes = votes_for("a", {0: 5, 1: 5})
    assert build(cands, votes)[0] == []
    winners = set()
    for seed in range(20):
        examples, _ = build(cands, votes, tie_rule="random", seed=seed)
        assert sorted(e["label"] for e in examples) == [False, True]
        winners.add(next(e["completion"][0]["content"] for e in examples if e["label"]))
        assert examples == build(cands, votes, tie_rule="random", seed=seed)[0]
    assert winners == {c.completion for c in cands}


def test_three_candidates_losers_and_balance():
    cands = [cand(a, i) for a in "ab" for i in range(3)]
    votes = votes_for("a", {2: 6, 0: 3, 1: 1}, order=(2, 0, 1)) + votes_for("b", {0: 5, 1: 2, 2: 2}, order=(0, 1, 2))
    examples, stats = build(cands, votes)  # each_loser: one winner and two losers per match
    assert labelled(examples) == {("a", cands[2].completion): True, ("a", cands[0].completion): False,
                                  ("a", cands[1].completion): False, ("b", cands[3].completion): True,
                                  ("b", cands[4].completion): False, ("b", cands[5].completion): False}
    assert (stats["desirable"], stats["undesirable"]) == (2, 4)
    worst, _ = build(cands, votes, losers="worst")
    assert labelled(worst)[("a", cands[1].completion)] is False and len(worst) == 4
    # balance: equal class counts, from a seeded sample of the collection's own examples
    down, st = build(cands, votes, balance="downsample", seed=2)
    assert (st["desirable"], st["undesirable"], st["desirable_unique"], st["undesirable_unique"]) == (2, 2, 2, 4)
    assert set(labelled(down).items()) <= set(labelled(examples).items())
    up, st = build(cands, votes, balance="upsample", seed=2, replicate=2)
    assert (st["desirable"], st["undesirable"], st["examples"]) == (8, 8, 16)
    assert set(labelled(up).items()) == set(labelled(examples).items())  # winners repeated, nothing new
    assert build(cands, votes, balance="upsample", seed=2) == build(cands, votes, balance="upsample", seed=2)
    # K = 2 is balanced already: balance changes nothing
    two = [cand("c", 0), cand("c", 1)]
    assert build(two, votes_for("c", {0: 3, 1: 1}), balance="downsample") == build(two, votes_for("c", {0: 3, 1: 1}))
    for bad in ({"losers": "best"}, {"balance": "weights"}, {"replicate": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            KTOBuilder(**bad)


def test_unshown_candidates_are_never_undesirable_and_anchors_without_a_match_are_counted():
    cands = [cand("a", 0), cand("a", 1, message=None), cand("a", 2), cand("b", 0), cand("b", 1, message=None)]
    examples, stats = build(cands, votes_for("a", {0: 3, 2: 1}, order=(2, 0)))
    assert labelled(examples) == {("a", cands[0].completion): True, ("a", cands[2].completion): False}
    assert stats["too_few_messages"] == 1


def test_replicate_shuffle_and_identity():
    cands = [cand(a, i) for a in "abc" for i in range(2)]
    votes = [v for a in "abc" for v in votes_for(a, {0: 2, 1: 1})]
    builder = KTOBuilder(replicate=3, seed=1)
    examples, stats = builder.build(cands, votes)
    assert (stats["examples"], stats["desirable"], stats["undesirable"]) == (18, 9, 9)
    assert sorted(e["anchor_id"] for e in examples) == sorted("abc" * 6)
    assert examples == KTOBuilder(replicate=3, seed=1).build(cands, votes)[0]
    assert examples != KTOBuilder(replicate=3, seed=2).build(cands, votes)[0]  # the seed sets the order
    assert KTOBuilder.needs_collection is True and builder.includes() == {} and builder.check() is None
    assert KTOBuilder.example_format == "unpaired_preference"
    ident = builder.identity()
    assert ident["type"] == "kto" and ident["losers"] == "each_loser" and ident["balance"] == "none"
    for other in ({"min_margin": 2}, {"tie_rule": "random"}, {"balance": "upsample"}, {"losers": "worst"}):
        assert KTOBuilder(replicate=3, seed=1, **other).identity() != ident
    json.dumps(ident)


def test_the_papers_size_builds_in_well_under_a_second():
    """1,024 anchors, K = 2, 20 voters (20,480 votes, some invalid): counts add up, classes balanced."""
    rng = random.Random(0)
    cands, votes = [], []
    for i in range(1024):
        a = f"a{i}"
        cands += [cand(a, 0), cand(a, 1)]
        n0 = rng.randint(0, 19)
        votes += votes_for(a, {0: n0, 1: 19 - n0}, invalid=1)
    t0 = time.perf_counter()
    examples, stats = KTOBuilder(replicate=3, seed=0).build(cands, votes)
    seconds = time.perf_counter() - t0
    # 19 valid votes never tie: every match is used, one winner and one loser each, three times
    assert stats["anchors"] == stats["matches_used"] == 1024 and stats["invalid_votes"] == 1024
    assert (stats["desirable"], stats["undesirable"], len(examples)) == (3072, 3072, 6144)
    assert seconds < 2.0, seconds


def test_method_kto_selects_the_kto_trainer_unless_told_otherwise(tmp_path):
    from compose_helper import compose

    from moloch_exp.pipeline import build as build_objects, preflight
    from moloch_exp.stages.components import Settings
    from moloch_exp.training.kto import LoraKTOTrainer

    objs = build_objects(compose(["method=kto", "model=tiny", f"paths.cache_dir={tmp_path}"], tmp_path))
    assert isinstance(objs.method.builder, KTOBuilder) and objs.method.compare_against == ["base"]
    assert type(objs.trainer) is LoraKTOTrainer and objs.trainer.lora.r == 16
    assert objs.trainer.example_format == objs.method.builder.example_format == "unpaired_preference"
    assert objs.method.builder.replicate == 3 and objs.method.builder.seed == 0
    # an explicit SFT trainer cannot train unpaired examples: one line in pre-flight, before any work
    wrong = build_objects(compose(["method=kto", "trainer=lora", "model=tiny", f"paths.cache_dir={tmp_path}"], tmp_path))
    with pytest.raises(ConfigError, match="method=kto builds unpaired_preference examples.*drop the trainer override"):
        preflight(wrong, Settings(seed=0, n_train=2, n_test=2, candidates_per_anchor=2))
