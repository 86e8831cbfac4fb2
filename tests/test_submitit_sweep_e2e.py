"""A sweep through submitit (``hydra/launcher=submitit_local``: real job subprocesses, SLURM's code path) of
four cells on the tiny model sharing one cache dir (the file-per-key response store, the cross-host
stage locks) and one audience/judge server, as on a cluster: the shared collection is computed once;
one job is killed with SIGKILL mid-way; the same command again computes only that cell, and the sweep
summary names it as missing before, with the last line of its log."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from compose_helper import REPO
from moloch_exp.llm import ManagedServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SMALL = ["model=tiny", "anchors.n_train=2", "anchors.n_test=2", "audience.n_voters=3", "audience.max_tokens=80",
         "audience.thought_max_chars=60", "judge.max_tokens=80", "judge.reasoning_max_chars=60",
         "generator.max_new_tokens=16", "generator.batch_size=4", "trainer.args.max_steps=1",
         "trainer.args.warmup_ratio=0", "trainer.args.per_device_train_batch_size=4",
         "judge_controls.enabled=false", "audience_reliability.retest_share=0", "audience_reliability.retest_min_matches=0", "stage_cache=true",
         "llm/cache_backend=files"]
CELLS = ["task=sales", "method=rft,tfb,dpo,base"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """One llama.cpp server for every job (on a cluster: a vLLM server the jobs reach)."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    with ManagedServer(kind="llamacpp", n_ctx=2048, threads=1, model_name="smollm2", log_path=str(log)) as srv:
        yield srv


def service(role: str, srv) -> list[str]:
    return [f"{role}=openai_compatible", f"{role}.service.model=smollm2", f"{role}.service.base_url={srv.base_url}",
            f"{role}.service.structured_output=llamacpp", f"{role}.service.client.concurrency=1",
            f"{role}.service.client.timeout_s=600"]


def statuses(cache: Path) -> list[dict]:
    found = []
    for path in (cache / "cells").glob("*/status.json"):
        try:
            found.append(json.loads(path.read_text()))
        except ValueError:  # being replaced
            pass
    return found


def results(sweep: Path) -> dict[str, dict]:
    return {r["cell"]["method"]: r for r in (json.loads(p.read_text()) for p in sweep.glob("*/results.json"))}


def test_submitit_sweep_shares_the_collection_and_a_rerun_computes_only_the_killed_cell(tmp_path, server):
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    cmd = [sys.executable, "run.py", "-m", "hydra/launcher=submitit_local", *CELLS, *SMALL,
           *service("audience", server), *service("judge", server), f"hydra.sweep.dir={sweep}", f"paths.cache_dir={cache}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # the tfb job, once past the shared collection: SIGKILL its process, as SLURM's OOM killer would
    deadline, victim = time.time() + 2400, None
    while victim is None:
        assert time.time() < deadline and first.poll() is None, "the tfb cell never got past its collection"
        victim = next((s for s in statuses(cache) if s["cell"]["method"] == "tfb" and s["status"] == "running"
                       and any(e["stage"] == "collect" for e in s["stages"])), None)
        time.sleep(0.2)
    os.kill(victim["pid"], signal.SIGKILL)
    out, _ = first.communicate(timeout=2400)
    assert first.returncode != 0, out[-3000:]  # Hydra reports the job that died
    done = results(sweep)
    assert set(done) == {"rft", "dpo", "base"}, out[-3000:]
    [killed] = [s for s in statuses(cache) if s["cell"]["method"] == "tfb"]
    assert killed["status"] == "running" and killed["pid"] == victim["pid"]  # no exit was ever recorded
    collects = [e for r in done.values() for e in r["stages"] if e["stage"] == "collect"]
    collects += [e for e in killed["stages"] if e["stage"] == "collect"]
    assert len(collects) == 3 and sorted(e["status"] for e in collects) == ["computed", "reused", "reused"]
    assert len({e["key"] for e in collects}) == 1 and len(list((cache / "stages" / "collect").glob("*/DONE"))) == 1

    # the same command again: finished cells are copied, the killed one runs, the summary says why it was missing
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=2400)
    assert second.returncode == 0, second.stderr[-3000:]
    again = results(sweep)
    assert {m: r["cell_run"]["status"] for m, r in again.items()} == \
        {"rft": "reused", "dpo": "reused", "base": "reused", "tfb": "computed"}
    for method in ("rft", "dpo", "base"):
        assert again[method]["win_rate"] == done[method]["win_rate"] and again[method]["probes"] == done[method]["probes"]
    tfb = again["tfb"]
    before = tfb["cell_run"]["previous"]
    assert before["status"] == "running" and before["state"].startswith("killed") and before["pid"] == victim["pid"]
    assert before["why"] != "(no log line)"
    finished_before = {e["label"] for e in killed["stages"]}
    assert all(e["status"] == "reused" for e in tfb["stages"] if e["label"] in finished_before)
    assert set(tfb["win_rate"]) == {"base_vs_tfb", "rft_vs_tfb"}
    summary = json.loads((sweep / "sweep_summary.json").read_text())
    assert summary["cells"] == 4 and summary["collections_computed_per_task"] == {}
    assert [(r["cell"], r["before"]["why"]) for r in summary["cells_missing_before"]] == \
        [("sales/tiny/tfb/s0", before["why"])]
    md = (sweep / "sweep_summary.md").read_text()
    assert "1 computed in this run, 3 reused (finished before), 0 did not finish; 1 were missing before this run." in md
    assert "sales/tiny/tfb/s0 | computed | killed (its process ended without recording an exit) at " in md
