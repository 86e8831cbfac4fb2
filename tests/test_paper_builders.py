"""Paper mode in the training-data builders: the reference's tie bug as a named option, and TFB rows
with the reference's feedback prompt (anchor shown, options in the voter's order) and target."""
import json

import pytest

from moloch_exp.prompts.paper import PaperPrompts
from moloch_exp.records import Anchor, Candidate, Vote
from moloch_exp.tasks.task import Task
from moloch_exp.training.builders import RFTBuilder, TFBBuilder


def cand(anchor, i):
    return Candidate(anchor, i, [{"role": "user", "content": f"prompt {anchor}"}],
                     f"<think>t{i}</think><post>{anchor}{i}</post>", f"t{i}", f"{anchor}{i}", "ok", seed=i)


def vote(anchor, voter, choice, order=(0, 1), thought="  nice  ", status="ok"):
    return Vote(f"collect:{anchor}", anchor, voter, list(order), 1, status, thought if status == "ok" else None,
                choice if status == "ok" else None)


def test_reference_tie_rule_duplicates_the_previous_winner():
    cands = [cand(a, i) for a in "abcd" for i in (0, 1)]
    votes = [vote("a", "v1", 1), vote("a", "v2", 1),        # a: winner 1
             vote("b", "v1", 0), vote("b", "v2", 1),        # b: tie -> a's winner again (the reference's bug)
             vote("c", "v1", None, status="invalid"),       # c: no valid vote: diff 0 -> duplicated too
             vote("d", "v1", 0)]                            # d: winner 0
    ex, stats = RFTBuilder(tie_rule="reference_duplicate_previous", replicate=1, shuffle=False).build(cands, votes)
    assert [e["completion"][0]["content"] for e in ex] == [cands[1].completion] * 3 + [cands[6].completion]
    assert [e["anchor_id"] for e in ex] == ["a", "a", "a", "d"]
    assert stats["ties_duplicated_previous"] == 2 and stats["ties"] == 2
    # The default drops the tie and the anchor without votes: the documented right thing.
    ex, stats = RFTBuilder(replicate=1, shuffle=False).build(cands, votes)
    assert [e["anchor_id"] for e in ex] == ["a", "d"] and stats["ties_dropped"] == 1


def test_reference_tie_rule_on_the_first_anchor_has_nothing_to_duplicate():
    # The reference raised UnboundLocalError here; the row is skipped and counted.
    cands = [cand("a", 0), cand("a", 1), cand("b", 0), cand("b", 1)]
    votes = [vote("a", "v1", 0), vote("a", "v2", 1), vote("b", "v1", 1)]
    ex, stats = RFTBuilder(tie_rule="reference_duplicate_previous", replicate=3, shuffle=False).build(cands, votes)
    assert [e["anchor_id"] for e in ex] == ["b"] * 3 and stats["ties_without_previous"] == 1


def test_tfb_rows_use_the_paper_prompt_with_anchor_and_voter_order(paper_dir):
    prompts = PaperPrompts(data_dir=str(paper_dir))
    task = Task(name="social_media", message_tag="tweet", option_noun="Post", anchor_fields=["article"],
                agent_system="s", agent_user="{article}", audience_frame="f", audience_question="q",
                feedback_request="r", judge_context="{article}", persona_aspect="x", paper_subdir="task_sm",
                prompts=prompts)
    anchors = {"a": Anchor("a", {"article": "ARTICLE"})}
    cands = [cand("a", 0), cand("a", 1)]
    votes = [vote("a", "v1", 0, order=(1, 0)), vote("a", "v2", 0, thought="")]
    ex, stats = TFBBuilder(rft=RFTBuilder(replicate=1)).build(cands, votes, task, anchors)
    rows = [e for e in ex if e["kind"] == "thought"]
    assert stats["thoughts_available"] == 1 and len(rows) == 1  # empty thoughts are skipped, as in get_tfb
    user = rows[0]["prompt"][1]["content"]
    assert "# Article\nARTICLE\n" in user
    # The voter saw candidate 1 as A: it is Option 1, so the thought's labels match the prompt.
    assert "## Option 1 (A or B): a1\n\n## Option 2 (A or B): a0" in user
    target = json.loads((paper_dir / "reference" / "golden" / "tfb_target_example.json").read_text())
    assert prompts.tfb_target(target["voter_thinks_input"][0]) == target["completion_rows_output"][0]
    assert rows[0]["completion"][0]["content"] == "<think> nice </think>"
    with pytest.raises(Exception, match="anchors"):
        TFBBuilder(rft=RFTBuilder(replicate=1)).build(cands, votes, task)
