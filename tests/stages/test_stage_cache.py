"""The stage cache on its own: finished stages are reused, a failing stage is never DONE, links into
the output directory, one computation per key across processes (the cross-host lock, with a compute
longer than the lock's timeout: the heartbeat carries it), and a holder whose lock was taken over
stores nothing."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from moloch_exp.distributed import Dist
from moloch_exp.errors import StageError
from moloch_exp.stage_cache import StageCache, digest

REPO = Path(__file__).resolve().parents[2]


def writer(calls: list, text: str = "hello"):
    def compute(work: Path) -> None:
        calls.append(work)
        (work / "out.txt").write_text(text)
    return compute


def test_finished_stage_is_reused_and_linked(tmp_path):
    calls: list = []
    first = StageCache(tmp_path / "cache", tmp_path / "out1", Dist())
    d1 = first.run("collect", "collect", {"a": 1}, writer(calls))
    second = StageCache(tmp_path / "cache", tmp_path / "out2", Dist())
    d2 = second.run("collect", "collect", {"a": 1}, writer(calls, "never written"))
    assert d1 == d2 and len(calls) == 1
    assert (d1 / "DONE").is_file() and json.loads((d1 / "key.json").read_text()) == {"a": 1}
    assert [e["status"] for e in first.events + second.events] == ["computed", "reused"]
    assert (tmp_path / "out2" / "stages" / "collect" / "out.txt").read_text() == "hello"
    assert d1.name == digest({"a": 1})


def test_other_material_other_key_and_disabled_cache_recomputes(tmp_path):
    calls: list = []
    cache = StageCache(tmp_path / "cache", tmp_path / "out", Dist())
    a = cache.run("build", "build_rft", {"builder": {"tie_rule": "drop"}}, writer(calls))
    b = cache.run("build", "build_rft", {"builder": {"tie_rule": "random"}}, writer(calls))
    assert a != b and len(calls) == 2
    StageCache(tmp_path / "cache", tmp_path / "out", Dist(), enabled=False).run(
        "build", "build_rft", {"builder": {"tie_rule": "drop"}}, writer(calls))
    assert len(calls) == 3


def test_failed_stage_is_not_done_and_the_next_run_computes_it(tmp_path):
    cache = StageCache(tmp_path / "cache", tmp_path / "out", Dist())

    def half_then_fail(work: Path) -> None:
        (work / "votes.jsonl").write_text("{}\n")
        raise StageError("collect: 3 of 6 LLM calls failed")

    with pytest.raises(StageError, match="3 of 6"):
        cache.run("collect", "collect", {"k": 2}, half_then_fail)
    key = digest({"k": 2})
    assert not (tmp_path / "cache" / "stages" / "collect" / key).exists()
    [partial] = (tmp_path / "cache" / "stages" / "collect").glob(f"{key}.*.partial")
    assert (partial / "votes.jsonl").is_file()
    assert not (tmp_path / "out" / "stages" / "collect").exists()
    calls: list = []
    d = cache.run("collect", "collect", {"k": 2}, writer(calls))
    assert len(calls) == 1 and (d / "DONE").is_file() and not list(d.parent.glob(f"{key}*.partial"))
    assert cache.events[-1]["status"] == "computed"


def test_a_bug_in_a_stage_is_not_done_and_carries_the_stage_name(tmp_path):
    """Not a UserError: the exception itself goes on (its traceback is what a developer needs), named
    with the stage for pipeline.run's one line; nothing is marked DONE or linked."""
    cache = StageCache(tmp_path / "cache", tmp_path / "out", Dist())

    def overflow(work: Path) -> None:
        (work / "votes.jsonl").write_text("{}\n")
        2.0 / 2 ** 1024  # the bug: int too large to convert to float

    with pytest.raises(OverflowError) as err:
        cache.run("evaluate", "evaluate_base_vs_rft", {"k": 3}, overflow)
    assert err.value.moloch_stage == "evaluate (evaluate_base_vs_rft)"
    assert "in stage evaluate (evaluate_base_vs_rft); not stored as finished" in err.value.__notes__
    key = digest({"k": 3})
    assert not (tmp_path / "cache" / "stages" / "evaluate" / key).exists()
    assert not (tmp_path / "out" / "stages" / "evaluate_base_vs_rft").exists()
    assert [e["stage"] for e in cache.events] == []  # no "computed" or "reused" event for it
    calls: list = []
    assert (cache.run("evaluate", "evaluate_base_vs_rft", {"k": 3}, writer(calls)) / "DONE").is_file()
    assert len(calls) == 1


WORKER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from moloch_exp.dir_lock import LockTiming
    from moloch_exp.distributed import Dist
    from moloch_exp.stage_cache import StageCache
    root, counter, name, seconds = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], float(sys.argv[4])
    def compute(work):
        with counter.open("a") as fh:
            fh.write(name + "\\n")
        time.sleep(seconds)
        (work / "out.txt").write_text(name)
    timing = LockTiming(heartbeat_s=0.2, stale_after_s=1.0, poll_s=0.05)
    d = StageCache(root / "cache", root / ("out" + name), Dist(), lock_timing=timing).run("collect", "collect", {"k": 1}, compute)
    print(d)
""")


def start_worker(tmp_path: Path, counter: Path, name: str, seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(counter), name, str(seconds)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})


def test_parallel_jobs_compute_a_key_once(tmp_path):
    counter = tmp_path / "computed"
    # each compute takes 3 s, three times the lock's 1 s timeout: only the heartbeat keeps the others waiting
    procs = [start_worker(tmp_path, counter, str(i), 3.0) for i in range(3)]
    dirs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(counter.read_text().split()) == 1  # the other jobs waited on the lock and reused
    assert len(dirs) == 1
    winner = counter.read_text().strip()
    for i in range(3):
        assert (tmp_path / f"out{i}" / "stages" / "collect" / "out.txt").read_text() == winner


def test_a_holder_whose_lock_was_taken_over_stores_nothing(tmp_path):
    """A job suspended past the timeout (its heartbeat silent) loses the lock to a waiter, which computes and
    stores; the suspended job, resumed, finds its lock gone and stops without storing its result."""
    counter = tmp_path / "computed"
    holder = start_worker(tmp_path, counter, "holder", 4.0)
    deadline = time.time() + 60
    while not (counter.exists() and counter.read_text()):
        assert time.time() < deadline and holder.poll() is None
        time.sleep(0.05)
    holder.send_signal(signal.SIGSTOP)
    try:
        waiter = start_worker(tmp_path, counter, "waiter", 0.1)
        out, err = waiter.communicate(timeout=120)
        assert waiter.returncode == 0, err[-2000:]
        assert "took over" in err and f"pid {holder.pid}" in err
    finally:
        holder.send_signal(signal.SIGCONT)
    _, err = holder.communicate(timeout=120)
    assert holder.returncode != 0
    assert "its lock" in err and "was taken over while computing" in err and "not stored" in err
    assert counter.read_text().split() == ["holder", "waiter"]
    final = Path(out.strip())
    assert (final / "out.txt").read_text() == "waiter" and (final / "DONE").is_file()
