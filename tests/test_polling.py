"""Adaptive polling rules: exactness by brute force over small panels, the sequential rule, the bench."""
from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import pytest

from moloch_exp.audience.polling import (ExactPolling, FullPolling, PollingRule, SequentialPolling, outcome, poll)
from moloch_exp.records import Vote, write_jsonl

ROOT = Path(__file__).resolve().parents[1]


def test_rules_follow_the_protocol_and_name_themselves():
    for rule in (FullPolling(), ExactPolling(), SequentialPolling()):
        assert isinstance(rule, PollingRule)
    assert SequentialPolling(0.9, 3).identity() == {"polling": "sequential", "confidence": 0.9, "min_votes": 3,
                                                    "prior": "beta(1,1)"}
    assert ExactPolling().identity() != FullPolling().identity()
    with pytest.raises(ValueError):
        SequentialPolling(confidence=0.5)
    with pytest.raises(ValueError):
        ExactPolling().should_stop([0] * 4, 3)


def test_full_polling_asks_everyone():
    assert [FullPolling().should_stop([1] * k, 5) for k in range(6)] == [False] * 5 + [True]
    assert poll(FullPolling(), [1] * 20) == 20


def test_exact_stops_when_the_lead_exceeds_the_remaining_voters():
    assert not ExactPolling().should_stop([1] * 10, 20)  # 10 more could tie it
    assert ExactPolling().should_stop([1] * 11, 20)
    assert not ExactPolling().should_stop([1] * 8 + [0] * 2 + [None] * 2, 20)  # 8 > 2 + 8 fails
    assert ExactPolling().should_stop([1] * 9 + [0] * 1 + [None] * 3, 20)  # 9 > 1 + 7
    assert not ExactPolling().should_stop([None] * 19, 20)
    assert poll(ExactPolling(), [1] * 20) == 11


@pytest.mark.parametrize("values,n", [((0, 1, None), 7), ((0, 1, 2, None), 5)])
def test_exact_rule_is_exact_and_tight_by_brute_force(values, n):
    """Every full panel: the exact rule's outcome equals the full panel's (ties and invalid votes included);
    and wherever it does not stop, some completion of the panel would change the outcome."""
    completions = {r: list(itertools.product(values, repeat=r)) for r in range(n + 1)}
    rule = ExactPolling()
    for panel in itertools.product(values, repeat=n):
        k = poll(rule, panel)
        assert outcome(panel[:k]) == outcome(panel), panel
    for asked in range(n):
        for prefix in itertools.product(values, repeat=asked):
            if not rule.should_stop(prefix, n):
                now = outcome(prefix)
                assert any(outcome(prefix + rest) != now for rest in completions[n - asked]), prefix


def test_sequential_posterior_and_minimum_votes():
    rule = SequentialPolling(confidence=0.96, min_votes=4)
    # 4-0: P(p > 0.5 | Beta(5, 1)) = 1 - 0.5^5 = 0.96875
    assert rule.posterior_confidence([1, 1, 1, 1]) == pytest.approx(1 - 0.5 ** 5)
    assert rule.should_stop([1, 1, 1, 1], 20)
    assert not SequentialPolling(confidence=0.97, min_votes=4).should_stop([1, 1, 1, 1], 20)
    assert not rule.should_stop([1, 1, 1], 20)  # below min_votes
    assert not rule.should_stop([None, None, 1, 1, 1], 20)  # invalid votes are no preferences
    assert not rule.should_stop([1, 0, 1, 0, 1, 0], 20)
    # the exact rule is part of it: stops at the end even with no valid vote
    assert rule.should_stop([None] * 20, 20)


def test_sequential_never_asks_more_than_exact():
    seq, ex = SequentialPolling(), ExactPolling()
    for panel in itertools.product((0, 1, None), repeat=6):
        assert poll(seq, panel) <= poll(ex, panel)


def test_outcome_keeps_ties_and_empty():
    assert outcome([0, 1, 1, None]) == frozenset({1})
    assert outcome([0, 1, None]) == frozenset({0, 1})
    assert outcome([None, None]) == frozenset()


def _bench():
    spec = importlib.util.spec_from_file_location("adaptive_polling_bench", ROOT / "bench" / "adaptive_polling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_replays_recorded_votes_and_meets_targets(tmp_path, capsys):
    bench = _bench()
    # a recorded file in the collect stage's format: 3 matches x 20 voters, one vote invalid
    votes = []
    for m, picks in enumerate(([1] * 20, [0, 1] * 10, [0] * 15 + [1] * 5)):
        for i, c in enumerate(picks):
            bad = m == 2 and i == 0
            votes.append(Vote(match_id=f"collect:a{m}", anchor_id=f"a{m}", voter=f"p{i}", order=[0, 1], seed=i,
                              status="invalid" if bad else "ok", choice=None if bad else c))
    path = tmp_path / "votes.jsonl"
    write_jsonl(path, votes)
    panels = bench.recorded_panels(str(path))
    assert [len(p) for p in panels] == [20, 20, 20] and panels[2][0] is None
    exact = bench.replay(ExactPolling(), panels)
    # match 0 stops after 11 votes; match 1 (a tie) asks everyone; match 2 (first vote invalid) stops
    # after 11 asked, when 0 leads 10-0 with 9 voters left
    assert (exact["calls"], exact["agreement"]) == (11 + 20 + 11, 1.0)
    rc = bench.main(["--votes", str(path), "--matches", "3000"])
    out = capsys.readouterr().out
    assert "recorded (3 matches, panel sizes [20])" in out and "Beta(0.5,0.5)" in out
    assert out.count("MET    ") == 4 and rc == 0
