"""A cell's record in the shared cache (moloch_exp/cell_record.py) and the sweep summary's Cells section:
an attempt killed outright is recognised as killed with its last log line, a failed one with its error
line, a finished cell is copied into a re-run without touching the cached copy, and the summary names
the cells that were missing before and why."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

from moloch_exp.cell_record import OUTPUT_STATUS, CellRecord
from moloch_exp.report.sweep_cells import cell_runs, cell_runs_markdown

CELL = {"task": "sales", "model": "tiny", "method": "tfb", "seed": 0}
MATERIAL = {"task": {"name": "sales"}, "method": {"name": "tfb"}, "anchors": {"n_train": 2}}


def record(tmp_path: Path, job: str) -> CellRecord:
    out = tmp_path / "sweep" / job
    (out / ".hydra").mkdir(parents=True, exist_ok=True)
    return CellRecord(tmp_path / "cache", MATERIAL, CELL, out, [str(out / "run.log")])


def test_killed_attempt_then_failed_attempt_then_finished_then_reused(tmp_path):
    # 1. an attempt whose process is killed with SIGKILL mid-stage: nothing is recorded at its end
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    first = record(tmp_path, "3_sales_tiny_tfb_s0")
    first.start()
    first.on_event({"stage": "collect", "label": "collect", "key": "k1", "status": "reused", "seconds": 0.1})
    first.on_event({"stage": "train", "label": "train_tfb", "key": "k2", "status": "started"})
    (first.output_dir / "run.log").write_text("[..][INFO] stage collect reused\ntrain_tfb:  40%|####  | 2/5\r"
                                               "train_tfb:  60%|######| 3/5\n")
    status = json.loads((first.dir / "status.json").read_text())
    status["pid"] = victim.pid  # the attempt was this process
    status["process_started"] = __import__("psutil").Process(victim.pid).create_time()
    (first.dir / "status.json").write_text(json.dumps(status))
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    # 2. the next attempt finds it killed, keeps why, and fails itself
    second = record(tmp_path, "3_sales_tiny_tfb_s0")
    assert second.key == first.key and second.finished() is None
    second.start()
    assert second.previous["state"] == "killed (its process ended without recording an exit)"
    assert second.previous["why"] == "train_tfb:  60%|######| 3/5" and second.previous["stage"] == "train_tfb started"
    assert second.previous["pid"] == victim.pid
    second.fail(RuntimeError("collect: 3 of 6 LLM calls failed\n  first cause: HTTP 503"))
    # 3. the third attempt sees the failure's last line, finishes and keeps its outputs
    third = record(tmp_path, "3_sales_tiny_tfb_s0")
    third.start()
    assert third.previous["state"] == "failed" and third.previous["why"] == "first cause: HTTP 503"
    artifact = tmp_path / "cache" / "stages" / "collect" / "k1"  # a stage the cell used, in the stage cache
    artifact.mkdir(parents=True)
    (artifact / "votes.jsonl").write_text("{}\n")
    (third.output_dir / "results.json").write_text(json.dumps({
        "cell": CELL, "cell_run": third.run_info(),
        "stages": [{"stage": "collect", "label": "collect", "key": "k1", "status": "reused"}]}))
    (third.output_dir / "plots").mkdir()
    (third.output_dir / "plots" / "win_rate.png").write_bytes(b"png")
    third.finish()
    assert (third.dir / "output" / "plots" / "win_rate.png").is_file()
    assert not (third.dir / "output" / "run.log").exists() and not (third.dir / "output" / ".hydra").exists()
    # 4. a re-run in another sweep directory copies it; the cached results are not written through the link
    again = record(tmp_path, "0_sales_tiny_tfb_s0")
    assert again.finished()["status"] == "done"
    results = again.restore()
    assert results["cell_run"]["status"] == "reused" and results["cell_run"]["first_output_dir"] == str(third.output_dir)
    assert json.loads((third.dir / "output" / "results.json").read_text())["cell_run"]["status"] == "computed"
    assert (again.output_dir / "plots" / "win_rate.png").read_bytes() == b"png"
    linked = again.output_dir / "stages" / "collect" / "votes.jsonl"
    assert linked.read_text() == "{}\n" and linked.stat().st_ino == (artifact / "votes.jsonl").stat().st_ino
    assert json.loads((again.output_dir / OUTPUT_STATUS).read_text())["status"] == "done"


def test_sweep_cells_section_names_what_was_missing_and_why(tmp_path):
    sweep = tmp_path / "sweep"
    rows = {"0_sales_tiny_rft_s0": {"status": "reused", "previous": None},
            "1_sales_tiny_tfb_s0": {"status": "computed", "previous": {
                "status": "running", "state": "killed (its process ended without recording an exit)",
                "why": "train_tfb:  60%|######| 3/5", "stage": "train_tfb started"}}}
    for job, run in rows.items():
        (sweep / job / ".hydra").mkdir(parents=True)
        method = job.split("_")[3]
        (sweep / job / "results.json").write_text(json.dumps({"cell": {**CELL, "method": method}, "cell_run": run}))
    failing = sweep / "2_sales_tiny_dpo_s0"
    (failing / ".hydra").mkdir(parents=True)
    (failing / OUTPUT_STATUS).write_text(json.dumps({"status": "failed", "cell": {**CELL, "method": "dpo"},
                                                     "error": "StageError: train_dpo: no preference pairs",
                                                     "stage": "build_dpo computed", "previous": None}))
    runs = cell_runs(sweep)
    assert [(r["cell"], r["now"]) for r in runs] == [("sales/tiny/rft/s0", "reused"), ("sales/tiny/tfb/s0", "computed"),
                                                    ("sales/tiny/dpo/s0", "failed")]
    md = cell_runs_markdown(runs)
    assert "1 computed in this run, 1 reused (finished before), 1 did not finish; 1 were missing before this run." in md
    assert ("| 1_sales_tiny_tfb_s0 | sales/tiny/tfb/s0 | computed | killed (its process ended without recording an "
            "exit) at train_tfb started: train_tfb:  60%\\|######\\| 3/5 |") in md
    assert "| failed: StageError: train_dpo: no preference pairs |" in md
