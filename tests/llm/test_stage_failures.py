"""A collection whose audience calls fail is never stored as finished (issue 7 items 3, 4).

The real collect stage (tiny agent model, bundled personas) votes through the fault-injecting proxy
in front of the real llama.cpp server. The server "dies" after two answers (every later call gets
HTTP 503 past the retry budget): the stage stops with one line giving the count and the first
cause and stores nothing as finished. With the server back, a re-run sends exactly the calls that
had failed (the response cache kept the two successes) and its votes equal an undisturbed run's,
on the candidates the stopped run had stored (its candidates stage finished before the first vote).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from compose_helper import compose
from moloch_exp.connections import LLMService, ServiceHub
from moloch_exp.distributed import Dist
from moloch_exp.errors import StageError
from moloch_exp.llm import Ledger, ResponseCache
from moloch_exp.pipeline import build as build_objects
from moloch_exp.stage_cache import StageCache
from moloch_exp.stages import build, collect, prepare, train
from moloch_exp.stages.base import FailureTolerance, StageEnv

SMALL = ["model=tiny", "task=sales", "anchors.n_train=2", "anchors.n_test=1", "audience.n_voters=2",
         "audience.max_tokens=48", "audience.thought_max_chars=40", "audience.invalid_retries=0",
         "generator.max_new_tokens=12", "generator.batch_size=8"]


@pytest.fixture
def parts(proxy, cache_dir, tmp_path):
    cfg = compose([*SMALL, f"paths.cache_dir={cache_dir}"], tmp_path)
    o = build_objects(cfg)
    o.model.materialize(cache_dir)
    # The audience behind the proxy: one call at a time, one retry, so the counts are exact.
    o.audience.service = LLMService(model="smollm2", base_url=proxy.base_url, structured_output="llamacpp",
                                    client={"concurrency": 1, "timeout_s": 60, "max_retries": 1,
                                            "backoff_initial_s": 0.05, "backoff_max_s": 0.1, "progress": False})
    return o


def run_collect(o, root: Path, tolerance: float = 0.0, events: list | None = None):
    """One run: its own stage cache and response cache under ``root`` (kept between runs); ``events``
    receives the stage cache's events (computed | reused per stage), also when the stage stops."""
    cache = ResponseCache(root / "llm_cache.sqlite")
    stages = StageCache(root, root / "out", Dist())
    if events is not None:
        stages.events = events
    with ServiceHub(cache, Ledger(), None, root / "logs") as hub:
        env = StageEnv(stages, Dist(), hub, seed=0, tolerance=FailureTolerance(collect=tolerance))
        prepared = prepare.run(env, task=o.task, n_train=2, n_test=1)
        return collect.run(env, prepared=prepared, task=o.task, generator=o.generator, audience=o.audience,
                           k=2), len(cache)


def comparable(votes) -> list[tuple]:
    return [(v.match_id, v.voter, v.order, v.status, v.choice, v.thought) for v in votes]


def test_failed_votes_stop_the_stage_and_a_rerun_makes_only_those_calls(parts, proxy, tmp_path):
    undisturbed, _ = run_collect(parts, tmp_path / "undisturbed")
    n_votes = undisturbed.stats()["votes"]
    assert n_votes == 4 and proxy.hits == n_votes and undisturbed.stats()["failed_votes"] == 0

    proxy.reset()
    proxy.push("pass", "pass", *["503"] * (2 * n_votes))  # the server answers twice, then is gone
    stopped: list[dict] = []
    with pytest.raises(StageError) as err:
        run_collect(parts, tmp_path / "run", events=stopped)
    msg = str(err.value)
    n_failed = n_votes - 2
    assert "\n" not in msg
    assert f"collect: {n_failed} of {n_votes} LLM calls failed (collect.max_failed_fraction=0)" in msg
    assert "HTTP 503" in msg and "2 attempts" in msg
    stage_dirs = [p.name for p in (tmp_path / "run" / "stages" / "collect").iterdir()]
    assert not [d for d in stage_dirs if not d.endswith((".partial", ".lock"))]  # nothing stored as finished
    assert len(ResponseCache(tmp_path / "run" / "llm_cache.sqlite")) == 2  # the successes, never the failures

    assert [(e["label"], e["status"]) for e in stopped] == [("prepare", "computed"),
                                                            ("collect_candidates", "computed")]
    proxy.reset()  # the server is back
    resumed_events: list[dict] = []
    resumed, cached = run_collect(parts, tmp_path / "run", events=resumed_events)
    # the agent's candidates come from the stopped run: nothing generated twice, the ballots unchanged
    assert [(e["label"], e["status"]) for e in resumed_events] == [
        ("prepare", "reused"), ("collect_candidates", "reused"), ("collect", "computed")]
    assert proxy.hits == n_failed  # exactly the calls that had not completed
    assert cached == n_votes
    assert resumed.stats()["failed_votes"] == 0
    assert comparable(resumed.votes()) == comparable(undisturbed.votes())
    assert [c.completion for c in resumed.candidates()] == [c.completion for c in undisturbed.candidates()]


def test_tolerated_failures_are_counted_and_an_empty_build_names_them(parts, proxy, tmp_path):
    """collect.max_failed_fraction=1 lets a collection of failed votes finish; the build then has no
    examples and training stops before it starts, naming the failed votes as the cause."""
    proxy.push(*["503"] * 100)  # the server is gone for the whole collection
    coll, _ = run_collect(parts, tmp_path / "tolerant", tolerance=1.0)
    stats = coll.stats()
    assert stats["failed_votes"] == stats["votes"] == sum(v.status == "failed" for v in coll.votes()) == 4
    env = StageEnv(StageCache(tmp_path / "tolerant", tmp_path / "out", Dist()), Dist(), None, seed=0)
    built = build.run(env, name="rft", builder=parts.method.builder, task=parts.task, collected=coll)
    with pytest.raises(StageError) as err:
        train.run(env, name="rft", built=built, model=parts.model, trainer=parts.trainer,
                  cache_dir=str(tmp_path), collected=coll)
    assert f"{stats['votes']} votes: {stats['votes']} failed, 0 invalid" in str(err.value)
    assert not (tmp_path / "tolerant" / "stages" / "train").exists()
