"""A cell's record in the shared cache, so that re-running a sweep runs only the cells that did not
finish, and says why they did not (this replaces a hand-written script relaunching dead SLURM shards):

    python run.py -m hydra/launcher=slurm task=sales,elections method=rft,tfb model=qwen   # some jobs die
    python run.py -m hydra/launcher=slurm task=sales,elections method=rft,tfb model=qwen   # the same command

    <cache_dir>/cells/<key>/status.json   running | failed | done; the cell; host, pid; started, updated;
                                          the last stage event and the finished stages; output dir and
                                          log files; the error line;
                                          ``previous``: the attempt before this one, when it did not finish
    <cache_dir>/cells/<key>/output/       the finished cell's outputs (hard links), without stages/: a re-run
                                          links those from the stage cache by the keys in results.json

The key is a digest of the cell's composed config without ``paths`` (where it runs and writes), so the
same command, or the same cell in another grid, finds it. In a ``-m`` sweep (``sweep.skip_finished``) a
cell whose record is done is not run again: its outputs are copied into the new output directory and
its results.json says ``cell_run.status: reused``. A job killed outright (SIGKILL, out of memory, a
time limit) records nothing at its end: its record still says ``running``; the next attempt finds its
process gone (on this host) or reports its last update (another host), with the last line of its log,
and keeps that in ``previous``. Each status is also written to the output directory as
``cell_status.json``, where the sweep summary (moloch_exp/report/sweep_cells.py) reads it.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path

import psutil

from moloch_exp.io import read_json, write_json
from moloch_exp.stage_cache import digest

STATUS = "status.json"
OUTPUT_STATUS = "cell_status.json"
#: Not kept from a finished cell: the new run's own Hydra config and job log, the record itself, and the
#: stage artifacts (already in the stage cache: relinked from there by their keys).
_NOT_KEPT = {".hydra", OUTPUT_STATUS, "stages"}


def _not_kept(names: list[str]) -> list[str]:
    return [n for n in names if n in _NOT_KEPT or n.endswith(".log")]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def last_line(path: str | os.PathLike, max_bytes: int = 65536) -> str | None:
    """The last non-empty line of a (log) file, without progress-bar carriage returns; None if unreadable."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - max_bytes))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    lines = [seg.strip() for line in text.splitlines() for seg in line.split("\r") if seg.strip()]
    return lines[-1][:500] if lines else None


def why_unfinished(status: dict) -> dict:
    """What an unfinished record says about its attempt: state, the one line that explains it, where."""
    logs = [p for p in status.get("log_files", []) if Path(p).is_file()]
    logs.sort(key=lambda p: Path(p).stat().st_mtime)
    log_line = next((line for p in reversed(logs) if (line := last_line(p))), None)
    if status.get("status") == "failed":
        state, line = "failed", status.get("error") or log_line
    elif status.get("host") != socket.gethostname():
        state, line = f"no exit recorded (on host {status.get('host')}, last update {status.get('updated')})", log_line
    else:
        try:
            alive = abs(psutil.Process(int(status["pid"])).create_time() - status.get("process_started", 0)) < 1.0
        except (psutil.Error, KeyError, ValueError):
            alive = False
        state = "still running" if alive else "killed (its process ended without recording an exit)"
        line = log_line
    return {"state": state, "why": line or "(no log line)", "stage": status.get("stage"),
            "host": status.get("host"), "pid": status.get("pid"), "started": status.get("started"),
            "updated": status.get("updated"), "output_dir": status.get("output_dir")}


class CellRecord:
    """The record of one cell (``material``: its composed config without paths); see the module docstring."""

    def __init__(self, cache_dir: str | os.PathLike, material: dict, cell: dict, output_dir: str | os.PathLike,
                 log_files: list[str]) -> None:
        self.key = digest(material)
        self.cache_dir = Path(cache_dir)
        self.dir = self.cache_dir / "cells" / self.key
        self.cell = cell
        self.output_dir = Path(output_dir)
        self.log_files = [str(p) for p in log_files]
        self.previous: dict | None = None
        self.status: dict = {}

    def read(self) -> dict | None:
        try:
            return read_json(self.dir / STATUS)
        except (OSError, ValueError):
            return None

    def _write(self) -> None:
        self.status["updated"] = _now()
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.dir / f".{STATUS}.{uuid.uuid4().hex[:8]}"  # a unique name: jobs on other hosts may write too
        tmp.write_text(json.dumps(self.status, indent=1, default=str), encoding="utf-8")
        os.replace(tmp, self.dir / STATUS)
        write_json(self.output_dir / OUTPUT_STATUS, self.status)

    # -- a finished cell -----------------------------------------------------
    def finished(self) -> dict | None:
        found = self.read()
        if found and found.get("status") == "done" and (self.dir / "output" / "results.json").is_file():
            return found
        return None

    def restore(self) -> dict:
        """Copy the finished cell's outputs into this run's output directory; return its results."""
        done = self.finished()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for item in (self.dir / "output").iterdir():
            dest = self.output_dir / item.name
            if item.is_dir():
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(item, dest, copy_function=_link_or_copy)
            elif item.name != "results.json":
                dest.unlink(missing_ok=True)  # never write through a hard link into the cached copy
                _link_or_copy(str(item), str(dest))
        results = read_json(self.dir / "output" / "results.json")
        for event in results.get("stages", []):  # the artifacts, hard-linked from the stage cache as in a run
            source, dest = self.cache_dir / "stages" / event["stage"] / event["key"], self.output_dir / "stages" / event["label"]
            if source.is_dir():
                shutil.rmtree(dest, ignore_errors=True)
                shutil.copytree(source, dest, copy_function=_link_or_copy)
        results["cell_run"] = {"status": "reused", "key": self.key, "finished": done["updated"],
                               "first_output_dir": done["output_dir"], "previous": None}
        (self.output_dir / "results.json").unlink(missing_ok=True)
        write_json(self.output_dir / "results.json", results)
        self.status = {**done, "reused_in": str(self.output_dir)}
        write_json(self.output_dir / OUTPUT_STATUS, self.status)
        return results

    # -- an attempt ------------------------------------------------------------
    def start(self) -> None:
        before = self.read()
        self.previous = {"status": before["status"], **why_unfinished(before)} \
            if before and before.get("status") != "done" else None
        self.status = {"status": "running", "cell": self.cell, "key": self.key, "host": socket.gethostname(),
                       "pid": os.getpid(), "process_started": psutil.Process().create_time(), "started": _now(),
                       "output_dir": str(self.output_dir), "log_files": self.log_files, "stage": None, "stages": [],
                       "error": None, "previous": self.previous}
        self._write()

    def run_info(self) -> dict:
        """What results.json says about this attempt."""
        return {"status": "computed", "key": self.key, "previous": self.previous}

    def on_event(self, event: dict) -> None:
        """A stage started or ended (StageCache's hook): where a killed attempt was."""
        self.status["stage"] = f"{event['label']} {event['status']}"
        if event["status"] != "started":
            self.status["stages"].append(event)
        self._write()

    def fail(self, err: BaseException) -> None:
        lines = [line.strip() for line in f"{type(err).__name__}: {err}".splitlines() if line.strip()]
        self.status.update(status="failed", error=lines[-1][:500] if lines else type(err).__name__)
        self._write()

    def finish(self) -> None:
        """Keep the outputs (hard links) under the record, then mark it done: a later sweep reuses the cell."""
        staging = self.dir / f"output.{uuid.uuid4().hex[:8]}.partial"
        shutil.copytree(self.output_dir, staging, copy_function=_link_or_copy,
                        ignore=lambda d, names: _not_kept(names) if Path(d) == self.output_dir else [])
        old = self.dir / "output"
        if old.exists():
            shutil.rmtree(old)
        os.replace(staging, old)
        self.status.update(status="done", error=None)
        self._write()
