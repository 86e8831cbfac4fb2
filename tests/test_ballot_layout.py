"""audience.layout=shared_prefix_first: the shared ballot first, the persona last, requests grouped by option order."""
from __future__ import annotations

import os

import pytest
from compose_helper import compose
from hydra.utils import instantiate

from moloch_exp.errors import ConfigError
from moloch_exp.records import Match


def _objects(tmp_path, *overrides):
    cfg = compose(["task=sales", "audience.n_voters=5", *overrides], tmp_path)
    return instantiate(cfg.task), instantiate(cfg.audience)


def _text(req) -> str:
    return "\n".join(content for _, content in req.messages)


def _common_prefix(a: str, b: str) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


MATCHES = [Match("m0", "a0", [0, 1], ["first option text " * 20, "second option text " * 20]),
           Match("m1", "a1", [0, 1], ["third option text " * 20, "fourth option text " * 20])]


def test_shared_prefix_layout_puts_the_ballot_first_and_the_persona_last(tmp_path):
    task, panel = _objects(tmp_path, "audience.layout=shared_prefix_first")
    reqs, meta = panel.requests(task, MATCHES, seed=0)
    personas = {p.id: p.describe(task.persona_aspect) for p in panel.voters(0)}
    for req, m in zip(reqs, meta):
        text = _text(req)
        assert text.rstrip().endswith(personas[m["voter"]].rstrip())  # nothing after the persona
        assert text.index(personas[m["voter"]]) > text.index(m["match"].messages[0])  # persona after the options
    sent = [reqs[i] for i in panel.send_order(list(range(len(reqs))), meta)]
    sent_meta = [meta[i] for i in panel.send_order(list(range(len(reqs))), meta)]
    # consecutive requests of one match with the same option order share everything up to the persona
    for (r1, m1), (r2, m2) in zip(zip(sent, sent_meta), zip(sent[1:], sent_meta[1:])):
        if m1["match_pos"] == m2["match_pos"] and m1["order"] == m2["order"]:
            shared = _common_prefix(_text(r1), _text(r2))
            assert shared >= _text(r1).index("Who you are:")
    # grouped: within a match, option orders never alternate back
    for pos in (0, 1):
        orders = [tuple(m["order"]) for m in sent_meta if m["match_pos"] == pos]
        assert orders == sorted(orders)


def test_persona_first_layout_is_the_default_and_sends_in_panel_order(tmp_path):
    task, panel = _objects(tmp_path)
    assert panel.layout == "persona_first"
    reqs, meta = panel.requests(task, MATCHES, seed=0)
    assert panel.send_order(list(range(len(reqs))), meta) == list(range(len(reqs)))
    first = panel.voters(0)[0].describe(task.persona_aspect)
    assert first in reqs[0].messages[0][1]  # the persona leads (system message)
    # the shared-prefix layout is a different ballot, so it is a different stage key
    _, shared = _objects(tmp_path, "audience.layout=shared_prefix_first")
    assert shared.identity() != panel.identity()


def test_unknown_layout_and_paper_prompts_fail_before_any_work(tmp_path):
    with pytest.raises(Exception) as err:
        _objects(tmp_path, "audience.layout=persona_last")
    assert "audience.layout must be one of" in str(err.value.__cause__ or err.value)
    data = os.environ.get("MOLOCH_SHARED_DATA")
    task, panel = _objects(tmp_path, "audience.layout=shared_prefix_first", "prompts=paper",
                           f"data_dir={data or '/nonexistent'}")
    with pytest.raises(ConfigError, match="not available with prompts=paper"):
        panel.check(task)


def test_shared_prefix_waves_send_each_groups_first_voter_ahead_then_one_per_group_in_turn(tmp_path):
    task, panel = _objects(tmp_path, "audience.layout=shared_prefix_first", "audience.service.server.n_parallel=2",
                           "audience.service.server.replicas=1")
    reqs, meta = panel.requests(task, MATCHES, seed=0)
    every = list(range(len(reqs)))
    group = {i: (meta[i]["match_pos"], tuple(meta[i]["order"])) for i in every}
    groups = list(dict.fromkeys(group[i] for i in panel.send_order(every, meta)))
    assert len(groups) >= 3  # two matches, and both option orders occur among 5 voters of at least one
    waves = panel.send_waves(every, meta)  # two slots: windows of two groups
    assert sorted(i for w in waves for i in w) == every  # each request exactly once
    leaders, followers = waves[0], waves[1]
    assert [group[i] for i in leaders] == groups[:2]  # the first two groups' first voters, alone
    # then those groups' other voters, one per group in turn: a group's k-th voter never goes before another
    # group's (k-1)-th, so the requests in flight belong to different groups
    assert all(group[i] in groups[:2] for i in followers)
    rank = {i: [j for j in every if group[j] == group[i]].index(i) for i in followers}
    assert [rank[i] for i in followers] == sorted(rank[i] for i in followers)
    assert len({group[i] for i in followers}) == 2 or len(followers) <= 3
    # the next window starts with its own first voters
    assert [group[i] for i in waves[2]] == groups[2:4]
    # the default: two single-slot replicas are two slots, as one server with two
    _, replicas = _objects(tmp_path, "audience.layout=shared_prefix_first")
    assert replicas.service.slots() == 2 and replicas.send_waves(every, meta) == waves
    # one slot, or the paper's layout: the send order in one batch
    _, one_slot = _objects(tmp_path, "audience.layout=shared_prefix_first", "audience.service.server.replicas=1",
                          "audience.service.server.n_parallel=1")
    assert one_slot.send_waves(every, meta) == [one_slot.send_order(every, meta)]
    _, paper = _objects(tmp_path, "audience.service.server.n_parallel=8")
    assert paper.send_waves(every, meta) == [every]
