"""The stage cache on its own: finished stages are reused, a failing stage is never DONE, links into
the output directory, and one computation per key across processes (the file lock)."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
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
    assert (tmp_path / "cache" / "stages" / "collect" / f"{key}.partial" / "votes.jsonl").is_file()
    assert not (tmp_path / "out" / "stages" / "collect").exists()
    calls: list = []
    d = cache.run("collect", "collect", {"k": 2}, writer(calls))
    assert len(calls) == 1 and (d / "DONE").is_file() and not (d.parent / f"{key}.partial").exists()
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
    from moloch_exp.distributed import Dist
    from moloch_exp.stage_cache import StageCache
    root, counter = Path(sys.argv[1]), Path(sys.argv[2])
    def compute(work):
        with counter.open("a") as fh:
            fh.write("x")
        time.sleep(2)
        (work / "out.txt").write_text("once")
    d = StageCache(root / "cache", root / ("out" + sys.argv[3]), Dist()).run("collect", "collect", {"k": 1}, compute)
    print(d)
""")


def test_parallel_jobs_compute_a_key_once(tmp_path):
    counter = tmp_path / "computed"
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path), str(counter), str(i)], cwd=REPO,
                              stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
             for i in range(2)]
    dirs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert counter.read_text() == "x"  # the second job waited on the lock and reused
    assert len(dirs) == 1
    for i in range(2):
        assert (tmp_path / f"out{i}" / "stages" / "collect" / "out.txt").read_text() == "once"
