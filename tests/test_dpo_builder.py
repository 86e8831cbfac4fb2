"""DPO pair builder: winner/loser pairs, vote margins, ties, invalid votes, K = 3, unshown candidates."""
import json

import pytest

from moloch_exp.errors import ConfigError
from moloch_exp.records import Candidate, Vote
from moloch_exp.training.dpo import DPOPairBuilder


def cand(anchor, i, message="ok"):
    return Candidate(anchor, i, [{"role": "user", "content": f"prompt {anchor}"}],
                     f"<think>t{i}</think><tweet>{anchor}{i}</tweet>", f"t{i}",
                     None if message is None else f"{anchor}{i}", "ok" if message else "failed", seed=i)


def votes_for(anchor, tallies, order=(0, 1), invalid=0, failed=0):
    """tallies: {candidate index: valid votes}; plus invalid/failed ballots that must not count."""
    vs, n = [], 0
    for choice, k in tallies.items():
        for _ in range(k):
            vs.append(Vote(f"collect:{anchor}", anchor, f"v{n}", list(order), n, "ok", "why", choice))
            n += 1
    for status, k in (("invalid", invalid), ("failed", failed)):
        for _ in range(k):
            vs.append(Vote(f"collect:{anchor}", anchor, f"v{n}", list(order), n, status))
            n += 1
    return vs


def build(cands, votes, **kw):
    return DPOPairBuilder(**{"shuffle": False, **kw}).build(cands, votes)


def text(msgs):
    return msgs[0]["content"]


def test_pair_is_winner_vs_loser_full_completions_in_trl_format():
    cands = [cand("a", 0), cand("a", 1)]
    pairs, stats = build(cands, votes_for("a", {1: 7, 0: 3}))
    assert len(pairs) == 1
    p = pairs[0]
    assert p["prompt"] == cands[1].prompt
    assert p["chosen"] == [{"role": "assistant", "content": cands[1].completion}]
    assert p["rejected"] == [{"role": "assistant", "content": cands[0].completion}]
    assert p["votes"] == [7, 3] and p["anchor_id"] == "a" and p["kind"] == "dpo"
    assert stats == {"anchors": 1, "invalid_votes": 0, "matches_used": 1, "too_few_messages": 0,
                     "pairs_unique": 1, "pairs": 1}
    json.dumps(pairs)  # train_examples.jsonl must hold them


def test_min_margin_drops_close_matches():
    cands = [cand(a, i) for a in "ab" for i in range(2)]
    votes = votes_for("a", {0: 11, 1: 9}) + votes_for("b", {0: 12, 1: 8})
    kept = {p["anchor_id"] for p in build(cands, votes, min_margin=2)[0]}
    assert kept == {"a", "b"}
    pairs, stats = build(cands, votes, min_margin=3)
    assert [p["anchor_id"] for p in pairs] == ["b"] and stats["margin_dropped"] == 1
    assert build(cands, votes, min_margin=5)[1]["margin_dropped"] == 2
    with pytest.raises(ConfigError, match="min_margin"):
        DPOPairBuilder(min_margin=0)


def test_invalid_and_failed_votes_do_not_count_towards_the_margin():
    cands = [cand("a", 0), cand("a", 1)]
    # 3-2 among valid votes; the 4 invalid/failed ballots must not make it look decisive or tied.
    votes = votes_for("a", {0: 3, 1: 2}, invalid=3, failed=1)
    pairs, stats = build(cands, votes, min_margin=2)
    assert pairs == [] and stats["margin_dropped"] == 1 and stats["invalid_votes"] == 4
    pairs, _ = build(cands, votes, min_margin=1)
    assert text(pairs[0]["chosen"]) == cands[0].completion and pairs[0]["votes"] == [3, 2]
    only_invalid = votes_for("a", {}, invalid=2, failed=1)
    pairs, stats = build(cands, only_invalid)
    assert pairs == [] and stats["no_valid_votes"] == 1


def test_ties_dropped_by_default_random_is_seeded_and_all_is_refused():
    cands = [cand("a", 0), cand("a", 1)]
    votes = votes_for("a", {0: 5, 1: 5})
    pairs, stats = build(cands, votes)
    assert pairs == [] and stats["ties"] == 1 and stats["ties_dropped"] == 1
    chosen = set()
    for seed in range(20):
        (p,), st = build(cands, votes, tie_rule="random", seed=seed)
        assert {text(p["chosen"]), text(p["rejected"])} == {c.completion for c in cands}
        assert p["votes"] == [5, 5] and st["ties"] == 1 and "ties_dropped" not in st
        chosen.add(text(p["chosen"]))
    assert chosen == {c.completion for c in cands}  # both sides possible ...
    assert build(cands, votes, tie_rule="random", seed=3) == build(cands, votes, tie_rule="random", seed=3)  # ... seeded
    with pytest.raises(ConfigError, match="tie_rule=all"):
        DPOPairBuilder(tie_rule="all")
    with pytest.raises(ConfigError, match="tie_rule"):
        DPOPairBuilder(tie_rule="previous")


def test_three_candidates_each_loser_or_worst():
    cands = [cand("a", i) for i in range(3)]
    votes = votes_for("a", {2: 6, 0: 3, 1: 1}, order=(2, 0, 1))
    pairs, stats = build(cands, votes, pairing="each_loser")
    assert [(text(p["chosen"]), text(p["rejected"]), p["votes"]) for p in pairs] == [
        (cands[2].completion, cands[0].completion, [6, 3]), (cands[2].completion, cands[1].completion, [6, 1])]
    (worst,), _ = build(cands, votes, pairing="worst")
    assert text(worst["rejected"]) == cands[1].completion
    # Margin is winner vs runner-up (6-3), so min_margin=4 drops the match even though 6-1 is wide.
    assert build(cands, votes, min_margin=4)[0] == []
    # A candidate shown but never voted for is still a loser (0 votes), and the worst one.
    votes0 = votes_for("a", {2: 4, 0: 1}, order=(0, 1, 2))
    (worst,), _ = build(cands, votes0, pairing="worst")
    assert text(worst["rejected"]) == cands[1].completion and worst["votes"] == [4, 0]
    with pytest.raises(ConfigError, match="pairing"):
        DPOPairBuilder(pairing="best")


def test_three_candidates_tied_top_with_random_pairs_against_the_rest():
    cands = [cand("a", i) for i in range(3)]
    votes = votes_for("a", {0: 4, 1: 4, 2: 1}, order=(0, 1, 2))
    assert build(cands, votes)[0] == []
    pairs, _ = build(cands, votes, tie_rule="random", seed=1)
    assert len(pairs) == 2 and len({text(p["chosen"]) for p in pairs}) == 1
    assert text(pairs[0]["chosen"]) in {cands[0].completion, cands[1].completion}
    assert sorted(p["votes"][1] for p in pairs) == [1, 4]


def test_unshown_candidates_are_never_rejected_and_anchors_without_a_match_are_counted():
    # Candidate 1 of anchor a failed extraction: only 0 and 2 were shown (Vote.order).
    cands = [cand("a", 0), cand("a", 1, message=None), cand("a", 2), cand("b", 0), cand("b", 1, message=None)]
    votes = votes_for("a", {0: 3, 2: 1}, order=(2, 0))
    pairs, stats = build(cands, votes)
    assert [(text(p["chosen"]), text(p["rejected"])) for p in pairs] == [(cands[0].completion, cands[2].completion)]
    assert stats["too_few_messages"] == 1  # anchor b never had a match


def test_replicate_shuffle_and_identity():
    cands = [cand(a, i) for a in "abc" for i in range(2)]
    votes = [v for a in "abc" for v in votes_for(a, {0: 2, 1: 1})]
    builder = DPOPairBuilder(replicate=3, seed=1)
    pairs, stats = builder.build(cands, votes)
    assert stats["pairs"] == 9 and stats["pairs_unique"] == 3
    assert sorted(p["anchor_id"] for p in pairs) == sorted("abc" * 3)
    assert pairs == DPOPairBuilder(replicate=3, seed=1).build(cands, votes)[0]
    assert DPOPairBuilder.needs_collection is True and builder.includes() == {} and builder.check() is None
    ident = builder.identity()
    assert ident["type"] == "dpo" and ident["min_margin"] == 1 and ident["pairing"] == "each_loser"
    assert DPOPairBuilder(min_margin=2).identity() != DPOPairBuilder().identity()
    assert DPOPairBuilder(tie_rule="random").identity() != DPOPairBuilder().identity()
    json.dumps(ident)


def test_method_dpo_selects_the_dpo_trainer_unless_told_otherwise(tmp_path):
    from compose_helper import compose

    from moloch_exp.pipeline import build
    from moloch_exp.training.dpo import LoraDPOTrainer
    from moloch_exp.training.trainer import LoraSFTTrainer

    objs = build(compose(["method=dpo", "model=tiny", f"paths.cache_dir={tmp_path}"], tmp_path))
    assert isinstance(objs.method.builder, DPOPairBuilder) and objs.method.compare_against == ["base"]
    assert type(objs.trainer) is LoraDPOTrainer and objs.trainer.lora.r == 16
    assert objs.trainer.example_format == objs.method.builder.example_format == "preference"
    assert type(build(compose(["method=rft", f"paths.cache_dir={tmp_path}"], tmp_path)).trainer) is LoraSFTTrainer
    explicit = compose(["method=dpo", "trainer=lora", f"paths.cache_dir={tmp_path}"], tmp_path)
    assert explicit.trainer._target_.endswith("LoraSFTTrainer")
