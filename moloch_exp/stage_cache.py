"""Content-addressed stage cache: a stage's artifacts are stored under a key of everything that
determines them, so a re-run skips finished stages and the rft/tfb cells of one task share one
collection.

    <cache_dir>/stages/<stage>/<key>/        finished artifacts (+ key.json: what the key covers)
    <cache_dir>/stages/<stage>/<key>.<id>.partial  work in progress (removed by the next holder)
    <cache_dir>/stages/<stage>/<key>.lockdir  the lock of a key being computed (moloch_exp/dir_lock.py)

A lock per key that holds across hosts on a shared directory (``mkdir``, a heartbeat, a takeover of a
holder that died: ``stage_lock`` settings) makes parallel jobs of a sweep compute a stage once: the
second waits and reuses. Under ``accelerate`` only rank 0 locks and writes; the other ranks follow its
decision. A holder whose lock was taken over (its heartbeat stalled past ``stage_lock.stale_after_s``)
does not store what it computed.
A stage whose ``compute`` raises (on any rank) is never marked DONE: its ``.partial`` directory
stays until the next run removes it and computes again. Each holder computes in a directory of its
own, so a displaced holder that wakes up never writes into its successor's.
The exception goes on with the stage named
(``moloch_stage``, and a note in its traceback), so ``pipeline.run`` can say where a bug struck.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Callable

from moloch_exp.dir_lock import DirLock, LockTiming
from moloch_exp.distributed import Dist
from moloch_exp.errors import StageError

log = logging.getLogger(__name__)


def digest(material: object) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class StageCache:
    def __init__(self, root: str | os.PathLike, output_dir: str | os.PathLike, dist: Dist, enabled: bool = True,
                 lock_timing: LockTiming | None = None, on_event: Callable[[dict], None] | None = None) -> None:
        self.root = Path(root) / "stages"
        self.output_dir = Path(output_dir)
        self.dist = dist
        self.enabled = enabled
        self.lock_timing = lock_timing or LockTiming()
        self.on_event = on_event  # told when a stage starts and ends (the cell's record in the shared cache)
        self.events: list[dict] = []  # what each stage did in this run: computed | reused

    def run(self, stage: str, label: str, material: dict, compute: Callable[[Path], None]) -> Path:
        """Return the directory of ``stage``'s artifacts for ``material``, computing them if needed.

        ``compute(workdir)`` runs on every rank; rank 0 writes the files. The artifacts are also
        linked into ``<output_dir>/stages/<label>/``.
        """
        key = digest(material)
        final = self.root / stage / key
        started = time.time()
        if self.on_event and self.dist.is_main:
            self.on_event({"stage": stage, "label": label, "key": key, "status": "started"})
        lock = DirLock(self.root / stage / f"{key}.lockdir", self.lock_timing) if self.dist.is_main else None
        if lock:
            lock.acquire()
        try:
            done = self.dist.broadcast(self.enabled and (final / "DONE").is_file())
            if not done:
                partial = None
                if self.dist.is_main:  # what dead or displaced holders left; each holder writes its own directory
                    for leftover in final.parent.glob(f"{key}*.partial"):
                        shutil.rmtree(leftover, ignore_errors=True)
                    shutil.rmtree(final, ignore_errors=True)
                    partial = final.parent / f"{key}.{uuid.uuid4().hex[:8]}.partial"
                    partial.mkdir(parents=True)
                partial = Path(self.dist.broadcast(str(partial)))
                self.dist.barrier()
                try:
                    self._compute(stage, label, compute, partial)
                finally:
                    if self.dist.broadcast(bool(lock and lock.lost.is_set())):  # every rank stops, none waits
                        raise StageError(f"stage {stage} ({label}): its lock {final}.lockdir was taken over while "
                                         f"computing (no heartbeat seen for {self.lock_timing.stale_after_s:.0f}s); "
                                         "not stored")
                if self.dist.is_main:
                    (partial / "key.json").write_text(json.dumps(material, indent=1, sort_keys=True, default=str))
                    (partial / "DONE").write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
                    os.replace(partial, final)
            self.dist.barrier()
        finally:
            if lock:
                lock.release()
        status = "reused" if done else "computed"
        log.info("stage %-9s %-24s %s (key %s, %.1fs)", stage, label, status, key, time.time() - started)
        # started (epoch seconds): a stage computed inside another (candidates inside collect) nests in its interval
        self.events.append({"stage": stage, "label": label, "key": key, "status": status,
                            "seconds": round(time.time() - started, 2), "started": round(started, 2)})
        if self.on_event and self.dist.is_main:
            self.on_event(self.events[-1])
        if self.dist.is_main:
            dest = self.output_dir / "stages" / label
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(final, dest, copy_function=_link_or_copy)
        self.dist.barrier()
        return final

    def _compute(self, stage: str, label: str, compute: Callable[[Path], None], partial: Path) -> None:
        """Run ``compute`` on every rank; when any rank fails (e.g. too many failed LLM calls on rank 0),
        every rank raises and nothing is marked DONE: the partial directory is discarded on the next run."""
        raised: BaseException | None = None
        try:
            compute(partial)
        except Exception as err:  # re-raised below, after the other ranks learned of it
            raised = err
        if self.dist.world > 1:  # every rank learns whether any failed (a collective, so no rank waits forever)
            failures = self.dist.gather_indexed([(self.dist.rank, f"{type(raised).__name__}: {raised}" if raised else None)])
            first = next(((r, f) for r, f in enumerate(failures) if f), None)
            if raised is None and first:
                raise StageError(f"stage {stage} ({label}) failed on rank {first[0]}: {first[1]}")
        if raised is not None:
            log.error("stage %s (%s) failed; not stored as finished", stage, label)
            if getattr(raised, "moloch_stage", None) is None:  # pipeline.run names the stage in its one line
                raised.moloch_stage = f"{stage} ({label})"  # type: ignore[attr-defined]
                raised.add_note(f"in stage {stage} ({label}); not stored as finished")
            raise raised
