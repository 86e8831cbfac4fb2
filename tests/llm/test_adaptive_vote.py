"""AudiencePanel.vote with a polling rule, against the real llama.cpp server (SmolLM2): voters are asked
in panel order until the rule stops each match, and the votes asked are the first ones of the full panel."""
from __future__ import annotations

import pytest
from hydra.utils import instantiate

from compose_helper import compose
from moloch_exp.audience.panel import AudiencePanel, Match
from moloch_exp.audience.personas import PersonaPool
from moloch_exp.audience.polling import ExactPolling, SequentialPolling, outcome, poll
from moloch_exp.connections import LLMService
from moloch_exp.evaluation.reliability import audience_reliability
from moloch_exp.seeding import derive_seed
from moloch_exp.llm import LLMClient, ResponseCache


@pytest.mark.slow  # about 2 minutes on 2 shared cores (16 ballots through SmolLM2)
def test_adaptive_polling_and_retest_against_a_real_audience(llama_server, tmp_path):
    task = instantiate(compose(["task=sales"], tmp_path).task)
    service = LLMService(model="smollm2", base_url=llama_server.base_url, structured_output="llamacpp")
    panel = AudiencePanel(service=service, personas=PersonaPool(), n_voters=4, max_tokens=64, invalid_retries=1)
    # a cache: the adaptive runs re-ask requests the full run made, and must get the same answers
    client = LLMClient(llama_server.base_url, "smollm2", structured_output="llamacpp", timeout_s=120, concurrency=2,
                       cache=ResponseCache(tmp_path / "cache.sqlite"), progress=False)
    matches = [Match(f"collect:a{i}", f"a{i}", [0, 1], [f"Buy our {item}: sturdy, cheap and loved by customers.",
                                                          f"{item.capitalize()}. Available."])
               for i, item in enumerate(("kettle", "backpack"))]
    full = panel.vote(client, task, matches, seed=0)
    assert len(full) == 8

    def key(v):
        return (v.voter, v.seed, v.order, v.status, v.choice)

    for rule in (ExactPolling(), SequentialPolling(confidence=0.51, min_votes=1)):
        adaptive = panel.vote(client, task, matches, seed=0, polling=rule)
        for m in matches:
            f = [v for v in full if v.match_id == m.match_id]
            a = [v for v in adaptive if v.match_id == m.match_id]
            prefs = [v.choice if v.status == "ok" else None for v in f]
            k = poll(rule, prefs)
            assert [key(v) for v in a] == [key(v) for v in f[:k]], (rule, m.match_id)
            if isinstance(rule, ExactPolling):
                assert outcome(prefs[:k]) == outcome(prefs)
    # the loose sequential rule stops each match at its first valid vote
    loose = panel.vote(client, task, matches, seed=0, polling=SequentialPolling(confidence=0.51, min_votes=1))
    if any(v.status == "ok" for v in full):
        assert len(loose) < len(full)

    # test-retest recipe (moloch_exp.evaluation.reliability): same personas, new seeds, paired by (match, voter)
    again = panel.vote(client, task, matches, seed=derive_seed(0, "retest"))
    assert [(v.match_id, v.voter) for v in again] == [(v.match_id, v.voter) for v in full]
    assert all(a.seed != f.seed for a, f in zip(again, full))
    r = audience_reliability(full, again)
    assert r.retest.n + r.retest.unpaired == len(full)
    assert r.retest.n == sum(a.status == "ok" and f.status == "ok" for a, f in zip(again, full))
