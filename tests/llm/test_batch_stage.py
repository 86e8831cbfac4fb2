"""The real collect stage with its audience on the Batch API (the loopback fake of a hosted API):
lines that still fail after their resubmissions count against collect.max_failed_fraction (the stage
stops with the count and the cause, nothing stored as finished); the re-run submits only those lines,
and a synchronous re-run of the finished stage makes no call at all."""
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
from moloch_exp.stages import collect, prepare
from moloch_exp.stages.base import FailureTolerance, StageEnv
from moloch_exp.testing.fake_openai import FakeOpenAI

SMALL = ["model=tiny", "task=sales", "anchors.n_train=3", "anchors.n_test=1", "audience.n_voters=4",
         "audience.max_tokens=120", "audience.thought_max_chars=null", "audience.invalid_retries=1",
         "generator.max_new_tokens=12", "generator.batch_size=8"]


def _service(api, batch: bool) -> LLMService:
    return LLMService(model="gpt-4o-mini", base_url=api.base_url, structured_output="json_schema", batch=batch,
                      batch_settings={"poll_interval_s": 0.05, "max_resubmits": 1},
                      client={"concurrency": 8, "progress": False, "backoff_initial_s": 0.05})


def _collect(o, root: Path, service: LLMService, tolerance: float = 0.0):
    o.audience.service = service
    with ServiceHub(ResponseCache(root / "llm_cache.sqlite"), Ledger(), None, root / "logs") as hub:
        env = StageEnv(StageCache(root, root / "out", Dist()), Dist(), hub, seed=0,
                       tolerance=FailureTolerance(collect=tolerance))
        prepared = prepare.run(env, task=o.task, n_train=3, n_test=1)
        return collect.run(env, prepared=prepared, task=o.task, generator=o.generator, audience=o.audience,
                           k=2)


@pytest.mark.slow  # about 75 s here: the tiny agent's candidates are generated for each of the three runs
def test_failed_batch_lines_stop_the_stage_and_the_rerun_sends_only_them(cache_dir, tmp_path):
    cfg = compose([*SMALL, f"paths.cache_dir={cache_dir}"], tmp_path)
    o = build_objects(cfg)
    o.model.materialize(cache_dir)
    root = tmp_path / "run"
    with FakeOpenAI(batch_validating_s=0.05, batch_line_s=0.0, batch_finalizing_s=0.05, batch_fail_share=0.3,
                    latency_s=0.01) as api:
        with pytest.raises(StageError, match=r"of 12 LLM calls failed \(collect.max_failed_fraction=0\); "
                                             r"first cause: HTTP 500"):
            _collect(o, root, _service(api, batch=True))
        first = [b["request_counts"] for b in api.state.batches.values()]
        assert first[0]["total"] == 12 and first[1]["total"] == first[0]["failed"]  # resubmitted alone, once

        api.configure(batch_fail_share=0.0)
        n_before = len(api.state.batches)
        votes = _collect(o, root, _service(api, batch=True))
        later = [b["request_counts"]["total"] for b in list(api.state.batches.values())[n_before:]]
        assert later[0] == first[1]["failed"]  # only the lines that had failed
        assert votes.stats()["votes"] == 12 and votes.stats()["failed_votes"] == 0

        (root / "stages").rename(root / "stages_old")  # forget the finished stage, keep the response cache
        again = _collect(o, root, _service(api, batch=False))
        assert api.stats()["requests"] == 0
        assert [(v.match_id, v.voter, v.choice, v.thought) for v in again.votes()] == \
            [(v.match_id, v.voter, v.choice, v.thought) for v in votes.votes()]
