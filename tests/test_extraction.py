"""Agent message extraction copes with missing tags, unclosed think blocks and Qwen3 thinking."""
from moloch_exp.tasks.extraction import extract


def test_well_formed():
    ex = extract("<think>plan it</think>\n<tweet>Hello world</tweet>", "tweet")
    assert (ex.thought, ex.message, ex.status) == ("plan it", "Hello world", "ok")


def test_missing_closing_task_tag():
    ex = extract("<think>x</think><sales_pitch>Buy this now", "sales_pitch")
    assert ex.message == "Buy this now" and ex.status == "ok"


def test_missing_task_tag_falls_back_to_text_and_says_so():
    ex = extract("<think>reason</think>\nVote for Maria!", "campaign_speech")
    assert (ex.message, ex.status, ex.thought) == ("Vote for Maria!", "untagged", "reason")


def test_unclosed_think_block_is_a_failure_not_an_empty_message():
    ex = extract("<think>I keep thinking and never stop", "tweet")
    assert ex.message is None and ex.status == "failed" and ex.thought.startswith("I keep")


def test_unclosed_think_with_task_tag_inside():
    ex = extract("<think>draft first <tweet>Final post</tweet>", "tweet")
    assert ex.message == "Final post" and ex.status == "ok"


def test_qwen3_native_thinking_without_opening_tag():
    ex = extract("the model thought here</think>\n\n<tweet>Post</tweet>", "tweet")
    assert (ex.thought, ex.message, ex.status) == ("the model thought here", "Post", "ok")


def test_empty_and_tag_only_outputs_fail():
    assert extract("", "tweet").status == "failed"
    assert extract("<think>a</think><tweet></tweet>", "tweet").status == "failed"


def test_wrong_tag_case_and_other_task_tag():
    assert extract("<TWEET>Hi</TWEET>", "tweet").message == "Hi"
    ex = extract("<sales_pitch>Buy</sales_pitch>", "tweet")
    assert ex.status == "untagged" and ex.message == "Buy"
