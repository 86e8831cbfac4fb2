"""Subprocess for the teardown tests: start a ManagedServer, report its pid, then wait.

usage: python server_holder.py LOG_PATH
"""

import json
import sys
import time

from moloch_exp.llm import ManagedServer

if __name__ == "__main__":
    with ManagedServer(kind="llamacpp", n_ctx=512, threads=1, log_path=sys.argv[1]) as srv:
        print(json.dumps({"server_pid": srv.pid, "base_url": srv.base_url}), flush=True)
        time.sleep(600)
