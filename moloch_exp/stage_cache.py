"""Content-addressed stage cache: a stage's artifacts are stored under a key of everything that
determines them, so a re-run skips finished stages and the rft/tfb cells of one task share one
collection.

    <cache_dir>/stages/<stage>/<key>/        finished artifacts (+ key.json: what the key covers)
    <cache_dir>/stages/<stage>/<key>.partial  work in progress (removed on restart)

A file lock per key makes parallel jobs of a sweep compute a stage once: the second waits and
reuses. Under ``accelerate`` only rank 0 locks and writes; the other ranks follow its decision.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable

from filelock import FileLock

from moloch_exp.distributed import Dist

log = logging.getLogger(__name__)


def digest(material: object) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


class StageCache:
    def __init__(self, root: str | os.PathLike, output_dir: str | os.PathLike, dist: Dist, enabled: bool = True) -> None:
        self.root = Path(root) / "stages"
        self.output_dir = Path(output_dir)
        self.dist = dist
        self.enabled = enabled
        self.events: list[dict] = []  # what each stage did in this run: computed | reused

    def run(self, stage: str, label: str, material: dict, compute: Callable[[Path], None]) -> Path:
        """Return the directory of ``stage``'s artifacts for ``material``, computing them if needed.

        ``compute(workdir)`` runs on every rank; rank 0 writes the files. The artifacts are also
        linked into ``<output_dir>/stages/<label>/``.
        """
        key = digest(material)
        final = self.root / stage / key
        partial = self.root / stage / f"{key}.partial"
        started = time.time()
        lock = FileLock(str(final) + ".lock") if self.dist.is_main else None
        if lock:
            final.parent.mkdir(parents=True, exist_ok=True)
            lock.acquire()
        try:
            done = self.dist.broadcast(self.enabled and (final / "DONE").is_file())
            if not done:
                if self.dist.is_main:
                    shutil.rmtree(partial, ignore_errors=True)
                    shutil.rmtree(final, ignore_errors=True)
                    partial.mkdir(parents=True)
                self.dist.barrier()
                compute(partial)
                self.dist.barrier()
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
        self.events.append({"stage": stage, "label": label, "key": key, "status": status,
                            "seconds": round(time.time() - started, 2)})
        if self.dist.is_main:
            dest = self.output_dir / "stages" / label
            shutil.rmtree(dest, ignore_errors=True)
            shutil.copytree(final, dest, copy_function=_link_or_copy)
        self.dist.barrier()
        return final
