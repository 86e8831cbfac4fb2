"""Ballot and judgment parsing never guesses; statistics give honest intervals."""
import pytest

from moloch_exp.prompts.ballots import parse_ballot
from moloch_exp.prompts.judgments import parse_judgment
from moloch_exp.evaluation.head_to_head import Dropped, summarize
from moloch_exp.evaluation.stats import fisher_p, mean_ci, relative_increase, wilson
from moloch_exp.records import Vote


def test_json_ballot_and_tag_fallback():
    assert parse_ballot('{"thought": "cheaper", "vote": "B"}', ["A", "B"]) == ("cheaper", "B")
    assert parse_ballot('```json\n{"thought": "x", "vote": "a"}\n```', ["A", "B"]) == ("x", "A")
    assert parse_ballot("<thought>ok</thought><vote>A</vote>", ["A", "B"]) == ("ok", "A")


@pytest.mark.parametrize("text", ['{"thought": "x", "vote": "C"}', "I like A better", "", '{"thought": "x"',
                                  '{"vote": "A or B"}'])
def test_unreadable_ballots_raise(text):
    with pytest.raises(ValueError):
        parse_ballot(text, ["A", "B"])


def test_judgment_parsing():
    assert parse_judgment('{"reasoning": "adds 50%", "answer": "yes"}') == ("adds 50%", True)
    assert parse_judgment("blah <answer>No</answer>") == (None, False)
    with pytest.raises(ValueError):
        parse_judgment('{"reasoning": "r", "answer": "maybe"}')


def test_intervals():
    lo, hi = wilson(3, 10)
    assert 0 < lo < 0.3 < hi < 1
    assert wilson(0, 0) == [None, None]
    mean, (lo, hi) = mean_ci([0.2, 0.8, 0.6, 0.4, 1.0, 0.0])
    assert mean == pytest.approx(0.5) and lo < 0.5 < hi
    assert relative_increase(0.1, 0.15) == pytest.approx(0.5)
    assert relative_increase(0.0, 0.2) is None
    assert fisher_p(9, 10, 1, 10) < 0.01


def test_head_to_head_summary_counts_invalid_and_averages_per_anchor():
    votes = [Vote("m1", "a1", "v1", [0, 1], 1, "ok", choice=1), Vote("m1", "a1", "v2", [1, 0], 2, "ok", choice=0),
             Vote("m1", "a1", "v3", [0, 1], 3, "invalid"),
             Vote("m2", "a2", "v1", [0, 1], 4, "ok", choice=1), Vote("m2", "a2", "v2", [0, 1], 5, "failed"),
             Vote("m3", "a3", "v1", [0, 1], 6, "invalid")]
    s = summarize(votes, Dropped("base", "rft", only_b_missing=2))
    assert s["mean"] == pytest.approx((0.5 + 1.0) / 2)
    assert (s["n_anchors"], s["invalid_votes"], s["failed_votes"]) == (2, 2, 1)
    assert s["anchors_without_valid_votes"] == 1 and s["anchors_missing_output"] == 2
    # shares 0.5 and 1.0: every sign pattern of (0, +0.5) is as extreme, so the exact p is 1; said in words
    assert s["p"] == pytest.approx(1.0) and s["significant"] is False and s["test"]["method"] == "exact"
    assert "indistinguishable from parity" in s["in_words"] and "n=2 anchors" in s["in_words"]
    # the dropped anchors, per method, in the summary and its sentence
    assert s["dropped"] == {"a": "base", "b": "rft", "only_a_missing": 0, "only_b_missing": 2, "both_missing": 0,
                            "total": 2, "missing_output": {"base": 0, "rft": 2}}
    assert ("3 anchors dropped: no output from rft on 2; 1 with no valid vote (uneven between the methods"
            in s["in_words"])
