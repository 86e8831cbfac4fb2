"""Subprocess for the teardown tests: start a ManagedServer, report its pid, then wait.

usage: python server_holder.py LOG_PATH
"""

import faulthandler
import json
import signal
import sys
import time

from moloch_exp.llm import ManagedServer

if __name__ == "__main__":
    # if it hangs after the test's signal (2 of ~8 CI-sized runs under load), the test asks for every
    # thread's stack with SIGUSR1 and prints them
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    with ManagedServer(kind="llamacpp", n_ctx=512, threads=1, log_path=sys.argv[1]) as srv:
        print(json.dumps({"server_pid": srv.pid, "base_url": srv.base_url}), flush=True)
        # short sleeps, as a real run's main thread never blocks for long: a signal handled just before a
        # 600 s sleep's system call would wait for the sleep to end
        end = time.monotonic() + 600
        while time.monotonic() < end:
            time.sleep(0.2)
