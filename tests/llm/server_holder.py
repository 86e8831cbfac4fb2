"""Subprocess for the teardown tests: start a ManagedServer, report its pid, then wait.

usage: python server_holder.py LOG_PATH

The ready line also says how SIGINT stood when the holder started (``inherited``) and after the server
started (``sigint``): "ok", "blocked" or "ignored". Twice in CI-sized runs the holder never saw the test's
SIGINT (its stack showed the main thread still in the sleep loop): a blocked or ignored SIGINT is inherited
across exec, and the test process may hold one that an earlier test's library left. So the holder starts
as a person's shell would start run.py, with SIGINT and SIGTERM unblocked and at their defaults, and the test
checks that ManagedServer itself leaves SIGINT working.
"""

import faulthandler
import json
import signal
import sys
import threading
import time
from pathlib import Path

from moloch_exp.llm import ManagedServer


def signal_state(sig: int) -> str:
    """How ``sig`` stands for this thread: "blocked", "ignored" or "ok" (Linux /proc)."""
    status = Path(f"/proc/self/task/{threading.get_native_id()}/status").read_text()
    masks = {k: int(v, 16) for k, v in (ln.split(":\t") for ln in status.splitlines() if ln.startswith(("SigBlk", "SigIgn")))}
    bit = 1 << (sig - 1)
    return "blocked" if masks["SigBlk"] & bit else "ignored" if masks["SigIgn"] & bit else "ok"


if __name__ == "__main__":
    inherited = signal_state(signal.SIGINT)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == signal.SIG_IGN:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    # if it hangs after the test's signal all the same, the test asks for every thread's stack with SIGUSR1
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    with ManagedServer(kind="llamacpp", n_ctx=512, threads=1, log_path=sys.argv[1]) as srv:
        print(json.dumps({"server_pid": srv.pid, "base_url": srv.base_url, "inherited": inherited,
                          "sigint": signal_state(signal.SIGINT)}), flush=True)
        # short sleeps, as a real run's main thread never blocks for long
        end = time.monotonic() + 600
        while time.monotonic() < end:
            time.sleep(0.2)
