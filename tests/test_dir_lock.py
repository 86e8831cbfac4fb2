"""The cross-host lock of the stage cache (moloch_exp/dir_lock.py), with real processes: a holder killed
with SIGKILL is taken over after the timeout (or at once when it ran on this host), live contenders
never hold it together, and a lock directory holds who has it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from moloch_exp.dir_lock import DirLock, LockTiming
from moloch_exp.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

HOLDER = textwrap.dedent("""
    import sys, time
    from moloch_exp.dir_lock import DirLock, LockTiming
    lock = DirLock(sys.argv[1], LockTiming(heartbeat_s=0.2, stale_after_s=float(sys.argv[2]), poll_s=0.05))
    lock.acquire()
    print("held", flush=True)
    time.sleep(600)
""")


def start_holder(path: Path, stale_after_s: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(stale_after_s)], env=ENV,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("same_host_check", [False, True], ids=["as-if-another-host", "this-host"])
def test_a_holder_killed_with_sigkill_is_taken_over(tmp_path, same_host_check):
    path = tmp_path / "key.lockdir"
    holder = start_holder(path, 2.0)
    owner = json.loads((path / "owner.json").read_text())
    assert owner["host"] == socket.gethostname() and owner["pid"] == holder.pid and owner["since"] <= time.time()
    time.sleep(0.7)
    assert json.loads((path / "owner.json").read_text())["beat"] >= 1  # the heartbeat runs
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = DirLock(path, LockTiming(heartbeat_s=0.2, stale_after_s=2.0, poll_s=0.05, same_host_check=same_host_check))
    started = time.monotonic()
    lock.acquire()
    waited = time.monotonic() - started
    try:
        assert lock.took_over["pid"] == holder.pid and lock.took_over["host"] == socket.gethostname()
        if same_host_check:  # its process is gone: no need to wait out the timeout
            assert waited < 2.0 and lock.took_over["why"] == "its process is gone"
        else:  # a holder on another host: only the silence of its heartbeat tells, after the timeout
            assert 2.0 <= waited < 2.0 + 5.0, waited
            assert lock.took_over["why"] == "no heartbeat for 2s"
        assert json.loads((path / "owner.json").read_text())["pid"] == os.getpid()
    finally:
        lock.release()
    assert not path.exists() and list(tmp_path.iterdir()) == []  # nothing left behind


def test_a_live_holder_is_never_taken_over_and_the_waiter_gets_it_after_release(tmp_path):
    path = tmp_path / "key.lockdir"
    holder = start_holder(path, 1.0)
    lock = DirLock(path, LockTiming(heartbeat_s=0.2, stale_after_s=1.0, poll_s=0.05))
    try:
        import threading

        got = threading.Event()
        waiter = threading.Thread(target=lambda: (lock.acquire(), got.set()), daemon=True)
        waiter.start()
        assert not got.wait(4.0)  # four timeouts' worth: the beating holder keeps it
        holder.send_signal(signal.SIGTERM)  # dies without releasing: its process is gone on this host
        assert got.wait(10.0) and lock.took_over["pid"] == holder.pid
    finally:
        holder.kill()
        holder.wait()
        lock.release()


CONTENDER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from moloch_exp.dir_lock import DirLock, LockTiming
    path, counter, log, me, rounds = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    timing = LockTiming(heartbeat_s=0.25, stale_after_s=2.0, poll_s=0.02)
    for r in range(rounds):
        with DirLock(path, timing) as lock:
            start = time.time()
            n = int(counter.read_text()) if counter.exists() else 0   # read-modify-write: a lost update if two hold it
            time.sleep(4.0 if (me, r) == (0, 0) else 0.03)            # one hold twice the timeout: beats must carry it
            counter.write_text(str(n + 1))
            with log.open("a") as fh:
                fh.write(json.dumps([me, start, time.time(), lock.took_over is not None]) + "\\n")
""")


def test_live_contenders_never_hold_it_together(tmp_path):
    path, counter, log = tmp_path / "key.lockdir", tmp_path / "counter", tmp_path / "holds.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", CONTENDER, str(path), str(counter), str(log), str(i), "6"],
                              env=ENV, stderr=subprocess.PIPE, text=True) for i in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    assert counter.read_text() == "24"  # 4 processes x 6 rounds, no update lost
    holds = sorted(json.loads(line) for line in log.read_text().splitlines())
    holds.sort(key=lambda h: h[1])
    assert all(a[2] <= b[1] for a, b in zip(holds, holds[1:]))  # no two holds overlap
    assert not any(h[3] for h in holds)  # no live holder was ever taken over


def test_timing_must_leave_room_for_beats():
    with pytest.raises(ConfigError, match="at least 3 x heartbeat_s"):
        LockTiming(heartbeat_s=10, stale_after_s=20)
