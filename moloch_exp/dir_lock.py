"""A lock that holds across hosts on a shared directory (NFS, Lustre, GPFS), for the stage cache and the
converted models: one job of a SLURM sweep computes a key, the others wait and reuse it.

    with DirLock(Path("/shared/cache/stages/collect/ab12.lockdir"), LockTiming(heartbeat_s=10, stale_after_s=120)):
        ...                                        # held: no other process on any host is here

    python run.py stage_lock.stale_after_s=300     # a slower filesystem: wait longer before a takeover

Acquiring is ``mkdir`` (atomic on every network filesystem, unlike ``flock``/``fcntl`` locks, which
some do not carry between hosts). The holder writes ``owner.json`` in the directory (host, pid, the
process's start time, a random token, when it took the lock) and a heartbeat thread rewrites it every
``heartbeat_s`` with a growing ``beat`` (write to a temporary name, then rename: a reader sees a whole
file). A waiter never compares clocks across hosts: it takes the lock over when the owner file has
not changed for ``stale_after_s`` by its own clock, or at once when the holder ran on this host and its
process is gone (``same_host_check``). A takeover is serialised by a second directory,
``<lock>.break``: the breaker checks again, under it, that the owner is still the stale one before
moving the lock directory aside, so two waiters never break a fresh lock. A holder whose lock was
taken over (its heartbeat stalled past the timeout, e.g. a suspended job) sees it at its next beat:
``lost`` is set and the stage cache refuses to store what it computed.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from moloch_exp.errors import ConfigError

log = logging.getLogger(__name__)

OWNER = "owner.json"


@dataclass(frozen=True)
class LockTiming:
    """How often a holder beats and how long a waiter watches a silent lock before taking it over."""

    heartbeat_s: float = 10.0
    stale_after_s: float = 120.0
    poll_s: float = 1.0
    same_host_check: bool = True  # a holder on this host whose process is gone is taken over at once

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_s * 3 <= self.stale_after_s:
            raise ConfigError(f"stage_lock: stale_after_s ({self.stale_after_s}) must be at least 3 x heartbeat_s "
                              f"({self.heartbeat_s}), or a live holder may look dead between two beats")
        if self.poll_s <= 0:
            raise ConfigError(f"stage_lock.poll_s must be positive, not {self.poll_s}")


def _process_started(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


class DirLock:
    """A lock directory with an owner file and a heartbeat; see the module docstring."""

    def __init__(self, path: str | os.PathLike, timing: LockTiming | None = None) -> None:
        self.path = Path(path)
        self.timing = timing or LockTiming()
        self.lost = threading.Event()
        self.took_over: dict | None = None  # the owner this lock was taken from, if it was
        self._token: str | None = None
        self._dir_fd: int | None = None
        self._dir_id: tuple[int, int] | None = None
        self._stop = threading.Event()
        self._beater: threading.Thread | None = None

    def __enter__(self) -> "DirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    # -- acquiring -------------------------------------------------------------
    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        watched: tuple[object, float] | None = None  # (the owner's state, when this waiter first saw it)
        announced = False
        while True:
            try:
                os.mkdir(self.path)
            except FileExistsError:
                owner = self.read_owner()
                state = (owner.get("token"), owner.get("beat")) if owner else None
                now = time.monotonic()
                if watched is None or watched[0] != state:
                    watched = (state, now)
                if not announced:
                    log.info("waiting for %s, held by %s", self.path, self.describe(owner))
                    announced = True
                if self._holder_gone(owner) or now - watched[1] >= self.timing.stale_after_s:
                    self._break(state, owner)
                    watched = None
                    continue
                time.sleep(self.timing.poll_s)
                continue
            self._take()
            return

    def _take(self) -> None:
        self._token = uuid.uuid4().hex
        self._dir_fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        st = os.fstat(self._dir_fd)
        self._dir_id = (st.st_dev, st.st_ino)
        me = psutil.Process()
        self._owner = {"host": socket.gethostname(), "pid": os.getpid(), "process_started": me.create_time(),
                       "token": self._token, "since": time.time(), "beat": 0}
        self._write_owner()
        self.lost.clear()
        self._stop.clear()
        self._beater = threading.Thread(target=self._beat, name=f"heartbeat {self.path.name}", daemon=True)
        self._beater.start()

    def _holder_gone(self, owner: dict | None) -> bool:
        """The holder ran on this host and its process no longer exists (pid reuse: the start time differs)."""
        if not (self.timing.same_host_check and owner and owner.get("host") == socket.gethostname()):
            return False
        started = _process_started(int(owner.get("pid", -1)))
        return started is None or abs(started - float(owner.get("process_started", 0))) > 1.0

    def _break(self, state: object, owner: dict | None) -> None:
        """Move a dead holder's lock aside, unless it changed since this waiter judged it dead."""
        breaker = self.path.with_name(self.path.name + ".break")
        try:
            os.mkdir(breaker)
        except FileExistsError:  # another waiter is breaking it; a breaker that died holds it only briefly
            try:
                if time.time() - breaker.stat().st_mtime > self.timing.stale_after_s:
                    os.rmdir(breaker)
            except OSError:
                pass
            time.sleep(self.timing.poll_s)
            return
        try:
            current = self.read_owner()
            if ((current.get("token"), current.get("beat")) if current else None) != state:
                return  # it beat, or someone else took it over and a new holder is in: not dead
            grave = self.path.with_name(f"{self.path.name}.dead-{uuid.uuid4().hex[:8]}")
            try:
                os.rename(self.path, grave)
            except FileNotFoundError:
                return
            why = "its process is gone" if self._holder_gone(owner) else \
                f"no heartbeat for {self.timing.stale_after_s:.0f}s"
            log.warning("took over %s from %s (%s)", self.path, self.describe(owner), why)
            self.took_over = {**(owner or {}), "why": why}
            shutil.rmtree(grave, ignore_errors=True)
        finally:
            try:
                os.rmdir(breaker)
            except FileNotFoundError:
                pass

    # -- holding -----------------------------------------------------------------
    def _still_mine(self) -> bool:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._dir_id

    def _write_owner(self) -> None:
        """Through the directory's descriptor: after a takeover the write lands in the moved-aside directory,
        never in the new holder's."""
        tmp = f".{OWNER}.{self._owner['beat']}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=self._dir_fd)
        with os.fdopen(fd, "w") as fh:
            json.dump(self._owner, fh)
        os.rename(tmp, OWNER, src_dir_fd=self._dir_fd, dst_dir_fd=self._dir_fd)

    def _beat(self) -> None:
        while not self._stop.wait(self.timing.heartbeat_s):
            if not self._still_mine():
                self.lost.set()
                log.error("lost the lock %s: taken over by another process (no heartbeat seen for %.0fs)",
                          self.path, self.timing.stale_after_s)
                return
            self._owner["beat"] += 1
            try:
                self._write_owner()
            except OSError as err:  # a network filesystem hiccup: the next beat tries again
                log.warning("heartbeat of %s failed: %s", self.path, err)

    def release(self) -> None:
        if self._token is None:
            return
        self._stop.set()
        if self._beater is not None:
            self._beater.join()
        if not self.lost.is_set() and self._still_mine():
            grave = self.path.with_name(f"{self.path.name}.released-{self._token[:8]}")
            os.rename(self.path, grave)  # waiters see the lock whole or gone, never half removed
            shutil.rmtree(grave, ignore_errors=True)
        os.close(self._dir_fd)
        self._token = self._dir_fd = self._dir_id = self._beater = None

    # -- reading -----------------------------------------------------------------
    def read_owner(self) -> dict | None:
        try:
            return json.loads((self.path / OWNER).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None  # being created (mkdir done, owner not written yet), gone, or unreadable for now

    @staticmethod
    def describe(owner: dict | None) -> str:
        if not owner:
            return "a holder that has not written its owner file"
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(owner.get("since", 0)))
        return f"{owner.get('host')} pid {owner.get('pid')} since {since} (beat {owner.get('beat')})"
