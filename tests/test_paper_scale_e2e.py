"""A paper-size cell through `python run.py` (issue 19 item 2), killed twice and resumed.

1,024 + 1,024 anchors of the paper's sales splits, K = 2, 20 voters (`experiment=paper`), a tiny agent
(4 new tokens, 2 training steps), the audience and the judge on two loopback fakes of the hosted API, each
its own process (latency 50 ms, 2% 429s with `Retry-After`, `x-ratelimit-*` headers, usage, an API key),
concurrency 64: moloch_exp/testing/paper_cell.py. About 45,000 calls a run.

The run is killed (`kill -9` of its session) once half the collection's votes were answered (the audience
server's own count) and, re-run, again once half the evaluation's were (after its log says the rft outputs
are generated); a third run completes. Counted at the servers, per request-body digest: no run asks what
an earlier one had completed (its answer in the response cache), the last asks exactly what was missing
(its calls = all requests - those completed before the kills), and every request is answered once, but
for the few a kill struck between the server's reply and the client's commit (answered twice, at most
the concurrency per kill; their number is printed).

The undisturbed reference is a second run on a fresh cache against two fresh fakes with the same options:
the fakes answer from the request body alone, so the same requests get the same answers with nothing passed
from the killed runs. To keep it cheap, it is given only what no API answer went into: the converted tiny
model and the agent's own stages (the collection's candidates, the base model's test outputs); everything
from the first vote on (collect, build, train, the rft outputs, evaluate, probes, retests, controls) it
computes itself on an empty response cache. It must make exactly the requests of the killed runs, each
once, and its results.json findings, stage keys, votes and judgments must equal theirs.

    MOLOCH_SHARED_DATA=/work/shared/data PYTHONPATH=$PWD python -m pytest tests/test_paper_scale_e2e.py -m slow -q -s

9 min measured on the 2-core machine shared with other jobs (load average 4-6), most of it the tiny
agent's generation at the paper's size (4,096 prompts of ~350 tokens).
"""
from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from moloch_exp.testing.paper_cell import (COLLECT_VOTES, CONCURRENCY, EVALUATE_VOTES, ROLES, CellRun,
                                           FakeServices, cell_args, completed_digests, stage_lines,
                                           stored_answers, wait_until)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: results.json parts that are the cell's findings (timings, the ledger and the stage events differ by design)
FINDINGS = ("cell", "win_rate", "probes", "probe_changes", "reliability", "competition", "rounds", "stage_keys")


def answered(snapshot: dict) -> Counter:
    return Counter(snapshot["answered_by_digest"])


def findings(out: Path) -> dict:
    r = json.loads((out / "results.json").read_text())
    counts = json.loads(json.dumps(r["counts"]))
    counts["train_rft"].pop("runtime_s")
    return {k: r[k] for k in FINDINGS} | {"counts": counts}


def rows(path: Path, drop: tuple[str, ...] = ("attempts",)) -> list[dict]:
    """A stage's records without what depends on the path there (a cached answer has 0 attempts)."""
    lines = path.read_text().split("\n")  # not splitlines(): a text may hold U+2028 and the like
    return [{k: v for k, v in json.loads(line).items() if k not in drop} for line in lines if line]


def unfinished(cache: Path, stage: str) -> bool:
    d = cache / "stages" / stage
    return d.is_dir() and not any((k / "DONE").is_file() for k in d.iterdir())


@pytest.mark.timeout(2400)
def test_paper_size_cell_killed_in_collect_and_in_evaluate_reruns_only_the_missing_calls(paper_dir, tmp_path):
    t0 = time.monotonic()
    cache = tmp_path / "cache"
    with FakeServices(log_dir=tmp_path) as fakes:
        args = cell_args(paper_dir, fakes)

        # 1. killed once half the collection's votes were answered
        run1 = CellRun.start(args, cache, tmp_path / "run1")
        wait_until(lambda: fakes.answered("audience") >= COLLECT_VOTES // 2, run1)
        run1.kill9()
        snap1, stored1 = fakes.snapshot(), stored_answers(cache)
        assert snap1["judge"]["answered"] == 0
        assert unfinished(cache, "collect") and not (cache / "stages" / "evaluate").exists()
        assert any((k / "DONE").is_file() for k in (cache / "stages" / "candidates").iterdir())  # before any vote

        # 2. re-run, killed once half the evaluation's votes were answered
        run2 = CellRun.start(args, cache, tmp_path / "run2")
        wait_until(lambda: any(s["label"] == "generate_rft" for s in stage_lines(run2.log_text())), run2)
        at_evaluate = fakes.answered("audience")
        wait_until(lambda: fakes.answered("audience") >= at_evaluate + EVALUATE_VOTES // 2, run2)
        run2.kill9()
        snap2, stored2 = fakes.snapshot(), stored_answers(cache)
        assert snap2["judge"]["answered"] == 0 and unfinished(cache, "evaluate")
        statuses2 = {s["label"]: s["status"] for s in stage_lines(run2.log_text())}
        # the killed collection resumed on the candidates it had stored: none generated again
        assert statuses2["collect_candidates"] == "reused" and statuses2["collect"] == "computed"

        # 3. re-run to the end
        run3 = CellRun.start(args, cache, tmp_path / "run3")
        assert run3.wait() == 0, run3.tail()
        snap3 = fakes.snapshot()
    disturbed_s = time.monotonic() - t0

    r3 = json.loads((tmp_path / "run3" / "results.json").read_text())
    status3 = {e["label"]: e["status"] for e in r3["stages"]}
    assert status3["collect"] == status3["generate_rft"] == "reused" and status3["evaluate_base_vs_rft"] == "computed"
    collection = r3["counts"]["collection"]
    assert collection["votes"] == COLLECT_VOTES and collection["failed_votes"] == 0 and r3["ledger"]["failures"] == 0

    # the undisturbed reference: a fresh cache but for the agent's own work, fresh fakes with the same options
    ref_cache = tmp_path / "ref_cache"
    for part in ("models", "stages/candidates", f"stages/generate/{r3['stage_keys']['generate_base']}"):
        shutil.copytree(cache / part, ref_cache / part)
    with FakeServices(log_dir=tmp_path / "ref_fakes") as ref_fakes:
        ref = CellRun.start(cell_args(paper_dir, ref_fakes), ref_cache, tmp_path / "ref")
        assert ref.wait() == 0, ref.tail()
        ref_snap = ref_fakes.snapshot()
    ref_results = json.loads((tmp_path / "ref" / "results.json").read_text())
    ref_status = {e["label"]: e["status"] for e in ref_results["stages"]}
    assert ref_status["collect_candidates"] == ref_status["generate_base"] == "reused"
    assert {ref_status[s] for s in ("collect", "build_rft", "train_rft", "generate_rft", "evaluate_base_vs_rft",
                                    "probe_misrepresentation_base", "reliability_collect")} == {"computed"}

    lost_total = 0
    for role in ROLES:
        total = answered(snap3[role])
        per_run = [answered(snap1[role]), answered(snap2[role]) - answered(snap1[role]),
                   total - answered(snap2[role])]
        done1 = completed_digests(snap1[role], stored1)
        done2 = completed_digests(snap2[role], stored2)  # every answer stored by the end of run 2
        lost = [set(answered(snap1[role])) - done1, set(answered(snap2[role])) - done2 - set(answered(snap1[role]))]
        assert done1 <= done2
        # no run asked what an earlier one had completed; the last asked exactly what was missing
        assert not set(per_run[1]) & done1 and not set(per_run[2]) & done2
        assert set(per_run[2]) == set(total) - done2
        assert sum(per_run[2].values()) == len(total) - len(done2)
        # the requests are the undisturbed run's, each answered once there
        ref_counts = answered(ref_snap[role])
        assert set(ref_counts) == set(total) and set(ref_counts.values()) == {1}
        # each answered once in the killed runs too, but those a kill struck between reply and commit
        assert {d for d, n in total.items() if n > 1} == lost[0] | lost[1]
        assert set(total.values()) <= {1, 2} and all(len(x) <= CONCURRENCY for x in lost)
        lost_total += len(lost[0]) + len(lost[1])
        print(f"{role}: {len(total)} requests; calls per run {[sum(c.values()) for c in per_run]}; completed "
              f"before kill 1 {len(done1)}, before kill 2 {len(done2)}; answered but lost at the kills "
              f"{[len(x) for x in lost]}; reference {sum(ref_counts.values())} calls")
    assert len(answered(ref_snap["audience"])) > COLLECT_VOTES + EVALUATE_VOTES  # with the retests
    assert ref_snap["audience"]["fault_429"] > 0 and snap3["audience"]["fault_429"] > 0  # retried, never failed

    # equal results: the findings, and every vote and judgment
    assert findings(tmp_path / "run3") == findings(tmp_path / "ref")
    for stage, f in [("collect", "votes.jsonl"), ("evaluate_base_vs_rft", "votes.jsonl"),
                     ("probe_misrepresentation_rft", "judgments.jsonl"), ("collect", "candidates.jsonl")]:
        assert rows(tmp_path / "run3" / "stages" / stage / f) == rows(tmp_path / "ref" / "stages" / stage / f), stage
    print(f"killed runs {disturbed_s:.0f}s, reference {time.monotonic() - t0 - disturbed_s:.0f}s, "
          f"lost at the kills {lost_total}")
