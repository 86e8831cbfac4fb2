"""RFT and TFB training-data builders: ties, invalid votes, K > 2, replication, thoughts."""
import pytest

from moloch_exp.records import Anchor, Candidate, Vote
from moloch_exp.tasks.task import Task
from moloch_exp.training.builders import RFTBuilder, TFBBuilder, outcomes


def cand(anchor, i, msg="m"):
    return Candidate(anchor, i, [{"role": "user", "content": f"prompt {anchor}"}], f"<think>t{i}</think><tweet>{msg}{i}</tweet>",
                     f"t{i}", f"{msg}{i}", "ok", seed=i)


def vote(anchor, voter, choice, status="ok", order=(0, 1), thought="nice"):
    return Vote(f"collect:{anchor}", anchor, voter, list(order), 1, status, thought if status == "ok" else None,
                choice if status == "ok" else None)


@pytest.fixture
def task():
    return Task(name="social_media", message_tag="tweet", option_noun="Post", anchor_fields=["article"],
                agent_system="s", agent_user="{article}", audience_frame="Scrolling.", audience_question="Which?",
                feedback_request="Share your thoughts.", judge_context="{article}", persona_aspect="x", paper_subdir="task_sm")


def test_winner_is_majority_and_target_is_full_completion():
    cands = [cand("a", 0), cand("a", 1)]
    votes = [vote("a", "v1", 1), vote("a", "v2", 1), vote("a", "v3", 0)]
    ex, stats = RFTBuilder(replicate=1).build(cands, votes)
    assert len(ex) == 1 and ex[0]["completion"][0]["content"] == cands[1].completion
    assert ex[0]["prompt"] == cands[1].prompt and stats["winners"] == 1


def test_tie_dropped_by_default_not_previous_winner_duplicated():
    cands = [cand("a", 0), cand("a", 1), cand("b", 0), cand("b", 1)]
    votes = [vote("a", "v1", 0), vote("a", "v2", 0), vote("b", "v1", 0), vote("b", "v2", 1)]
    ex, stats = RFTBuilder(replicate=1).build(cands, votes)
    assert [e["anchor_id"] for e in ex] == ["a"]
    assert stats["ties"] == 1 and stats["ties_dropped"] == 1


def test_tie_rules_random_and_all():
    cands = [cand("b", 0), cand("b", 1)]
    votes = [vote("b", "v1", 0), vote("b", "v2", 1)]
    ex, _ = RFTBuilder(tie_rule="all", replicate=1).build(cands, votes)
    assert sorted(e["completion"][0]["content"] for e in ex) == sorted(c.completion for c in cands)
    picks = {RFTBuilder(tie_rule="random", replicate=1, seed=s).build(cands, votes)[0][0]["completion"][0]["content"]
             for s in range(20)}
    assert picks == {c.completion for c in cands}  # seeded choice, both possible
    with pytest.raises(ValueError, match="tie_rule"):
        RFTBuilder(tie_rule="previous")


def test_invalid_votes_are_counted_not_used():
    cands = [cand("a", 0), cand("a", 1)]
    votes = [vote("a", "v1", 0), vote("a", "v2", None, status="invalid"), vote("a", "v3", None, status="failed")]
    ex, stats = RFTBuilder(replicate=1).build(cands, votes)
    assert len(ex) == 1 and ex[0]["completion"][0]["content"] == cands[0].completion
    assert stats["invalid_votes"] == 2
    only_invalid = [vote("a", "v1", None, status="invalid")]
    ex, stats = RFTBuilder(replicate=1).build(cands, only_invalid)
    assert ex == [] and stats["no_valid_votes"] == 1


def test_more_than_two_candidates():
    cands = [cand("a", i) for i in range(4)]
    votes = [vote("a", "v1", 2, order=(2, 0, 3, 1)), vote("a", "v2", 2, order=(0, 1, 2, 3)), vote("a", "v3", 3)]
    (ex,), _ = RFTBuilder(replicate=1).build(cands, votes)[0], None
    assert ex["completion"][0]["content"] == cands[2].completion
    assert outcomes(votes)[0].counts == {2: 2, 3: 1}


def test_replication_factor_and_shuffle_seeded():
    cands = [cand(a, i) for a in "abc" for i in range(2)]
    votes = [vote(a, "v", 0) for a in "abc"]
    ex3, stats = RFTBuilder(replicate=3, seed=1).build(cands, votes)
    assert len(ex3) == 9 and stats["examples"] == 9
    assert sorted(e["anchor_id"] for e in ex3) == sorted("abc" * 3)
    assert ex3 == RFTBuilder(replicate=3, seed=1).build(cands, votes)[0]
    assert [e["anchor_id"] for e in ex3] != list("abcabcabc") or [e["anchor_id"] for e in RFTBuilder(replicate=3, seed=2).build(cands, votes)[0]] != list("abcabcabc")


def test_tfb_adds_thoughts_subsampled_to_rft_size(task):
    cands = [cand(a, i) for a in "ab" for i in range(2)]
    votes = [vote(a, f"v{j}", 0, order=(1, 0), thought=f"thought {a}{j}") for a in "ab" for j in range(5)]
    ex, stats = TFBBuilder(rft=RFTBuilder(replicate=1), seed=0).build(cands, votes, task)
    rft = [e for e in ex if e["kind"] == "rft"]
    th = [e for e in ex if e["kind"] == "thought"]
    assert len(rft) == 2 and len(th) == 2 and stats["thoughts_available"] == 10
    t = th[0]
    assert t["completion"][0]["content"].startswith("thought ")
    content = t["prompt"][0]["content"]
    # the voter's own order: candidate 1 shown as Post A
    assert content.index("Post A:\nm1") < content.index("Post B:\nm0")
    assert "Share your thoughts." in content
    ex_all, stats_all = TFBBuilder(rft=RFTBuilder(replicate=1), thought_examples="all").build(cands, votes, task)
    assert stats_all["thought_examples"] == 10 and len(ex_all) == 12


def test_tfb_skips_invalid_votes_and_empty_thoughts(task):
    cands = [cand("a", i) for i in range(2)]
    votes = [vote("a", "v1", 0), vote("a", "v2", None, status="invalid"), vote("a", "v3", 0, thought="")]
    _, stats = TFBBuilder(rft=RFTBuilder(replicate=5), thought_examples="all").build(cands, votes, task)
    assert stats["thought_examples"] == 1
