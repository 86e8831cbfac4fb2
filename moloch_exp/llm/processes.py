"""Process helpers for the managed servers (``server.py``): exit statuses, one-line log tails, free ports,
a child that dies with its parent, zombie detection, process-group signals, SIGTERM turned into SystemExit.
Not a public API; ``ManagedServer`` is.
"""
from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys
import threading

_PREV_SIGTERM = None
_SIGTERM_INSTALLED = False


def exit_status(returncode: int) -> str:
    """``-9`` -> ``"killed by signal SIGKILL"``, ``1`` -> ``"exited with code 1"``."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by signal {name}"
    return f"exited with code {returncode}"


def one_line(text: str, n_chars: int = 400) -> str:
    """The last ``n_chars`` of ``text`` with its lines joined by `` | `` (for one-line messages)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    joined = " | ".join(lines)
    return joined if len(joined) <= n_chars else "..." + joined[-(n_chars - 3):]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG = 1
    except Exception:
        pass


def _sigterm_to_exit(signum, frame):  # pragma: no cover - exercised via subprocess tests
    raise SystemExit(128 + signum)


def is_zombie(pid: int) -> bool:
    """True once ``pid`` has died but is not reaped yet (the watcher is about to): Linux /proc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X")
    except FileNotFoundError:
        return True
    except (OSError, IndexError):
        return False


def signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def install_sigterm_handler() -> None:
    """Turn SIGTERM into SystemExit (so ``with``/atexit clean-up runs) if nobody handles it."""
    global _PREV_SIGTERM, _SIGTERM_INSTALLED
    if _SIGTERM_INSTALLED or threading.current_thread() is not threading.main_thread():
        return
    try:
        prev = signal.getsignal(signal.SIGTERM)
        if prev in (signal.SIG_DFL, None):
            signal.signal(signal.SIGTERM, _sigterm_to_exit)
            _PREV_SIGTERM, _SIGTERM_INSTALLED = prev, True
    except (ValueError, OSError):  # pragma: no cover
        pass


def restore_sigterm_handler() -> None:
    global _SIGTERM_INSTALLED
    if not _SIGTERM_INSTALLED or threading.current_thread() is not threading.main_thread():
        return
    try:
        if signal.getsignal(signal.SIGTERM) is _sigterm_to_exit:
            signal.signal(signal.SIGTERM, _PREV_SIGTERM or signal.SIG_DFL)
    except (ValueError, OSError):  # pragma: no cover
        pass
    _SIGTERM_INSTALLED = False
